"""Both dashboards rendered from real sweeps (real Ray, real MLflow): their content, and a headless
Chromium that loads them without JavaScript errors and draws every plot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest
from mlflow import MlflowClient

from depthtune.dashboards.comparison_page import (
    Comparison,
    build_comparison,
    comparison_figures,
    log_comparison,
    write_comparison_dashboard,
)
from depthtune.dashboards.model_evaluation import DEPTH_BINS, ModelEntry, check_same_protocol
from depthtune.dashboards.published import PUBLISHED, PUBLISHED_MARK
from depthtune.dashboards.sweep_page import IMPORTANCE_EVALUATOR, sweep_figures, versus_paper_note
from depthtune.dashboards.sweep_record import load_sweep
from depthtune.sweep.driver import DASHBOARD_FILE

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("finished_sweep")]

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
ERROR_CATCHER = (
    "<script>\n"
    "document.documentElement.setAttribute('data-js-errors', '[]');\n"
    "const __errors = [];\n"
    "const __record = m => { __errors.push(String(m)); "
    "document.documentElement.setAttribute('data-js-errors', JSON.stringify(__errors)); };\n"
    "window.addEventListener('error', e => __record(e.message));\n"
    "const __consoleError = console.error; "
    "console.error = (...a) => { __record(a.join(' ')); __consoleError(...a); };\n"
    "</script>"
)
DRAWN_COUNTER = """<script>
document.documentElement.setAttribute('data-plots-drawn',
  String([...document.querySelectorAll('.js-plotly-plot')].filter(d => d.querySelector('.main-svg')).length));
</script>"""


@pytest.fixture(scope="module")
def sweep_dashboard(finished_sweep):
    workdir, outcome = finished_sweep
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    return workdir, outcome, load_sweep(client, outcome.sweep_run_id)


@pytest.fixture(scope="module")
def comparison(finished_sweep, net3_sweep) -> tuple[Path, Comparison, Path, str]:
    workdir, _ = finished_sweep
    uri = f"sqlite:///{workdir}/mlflow.db"
    client = MlflowClient(uri)
    built = build_comparison(client, uri)
    path = write_comparison_dashboard(built, workdir / "comparison.html")
    return workdir, built, path, log_comparison(client, built, path)


def test_sweep_dashboard_is_written_logged_and_self_contained(sweep_dashboard):
    workdir, outcome, _ = sweep_dashboard
    assert outcome.dashboard == outcome.results_path / DASHBOARD_FILE and outcome.dashboard.is_file()
    logged = list((workdir / "mlruns").glob(f"*/{outcome.sweep_run_id}/artifacts/{DASHBOARD_FILE}"))
    assert len(logged) == 1
    html = outcome.dashboard.read_text()
    assert (
        "<script src=" not in html and "<link " not in html and "Plotly.newPlot" in html
    )  # plotly.js embedded, nothing fetched


def test_sweep_dashboard_content(sweep_dashboard):
    _, outcome, record = sweep_dashboard
    assert len(record.trials) == outcome.trials == 4
    figures, importance_note = sweep_figures(record)
    (parcoords,) = figures["parallel_coordinates"].data
    assert parcoords.type == "parcoords" and len(parcoords.line.color) == 4
    assert [d.label for d in parcoords.dimensions][:4] == ["lr (log)", "momentum", "step_size", "grad_weight"]
    curves = figures["learning_curves"].data
    assert [t.type for t in curves] == ["scatter"] * 5
    stopped = [t for t in record.trials if t.status == "KILLED"]
    assert curves[-1].name == "stopped by ASHA" and len(curves[-1].x) == len(stopped) >= 1
    assert sum(t.name.startswith("winner") for t in curves) == 1
    (paper,) = [t for t in record.trials if t.paper]
    (paper_curve,) = [t for t in curves if "paper settings" in t.name]
    assert paper_curve.line.dash == "dash" and len(paper_curve.x) == record.epochs
    assert any(
        paper.trial_id in str(row) and "(paper settings)" in str(row)
        for row in figures["top_trials"].data[0].cells.values[1]
    )
    assert f"Paper settings (trial {paper.trial_id}" in versus_paper_note(
        record
    ) and "Gain of tuning over the paper's settings" in versus_paper_note(record)
    (bars,) = figures["importance"].data
    assert bars.type == "bar" and (set(bars.y) == set(record.space) or len(record.finished()) < 2)
    assert importance_note.startswith(IMPORTANCE_EVALUATOR if len(bars.y) else "Needs at least 2 trials")
    scatter = figures["scatter"]
    assert [t.type for t in scatter.data] == ["scatter"] * 4 and scatter.layout.xaxis.type == "log"
    (table,) = figures["top_trials"].data
    assert table.type == "table" and set(table.cells.values[-1]) == {t.run_id for t in record.trials}
    assert table.header.values[-2] == "mean utilisation"
    shown = table.cells.values[-2]  # "-": a trial too short for a second system-metrics sample
    assert all(re.fullmatch(r"CPU \d+%", cell) or cell == "-" for cell in shown) and any(c != "-" for c in shown)


def test_comparison_content(comparison):
    workdir, result, path, run_id = comparison
    labels = [e.label for e in result.entries]
    assert labels == ["net12 v1 (@champion)", "net3 v1 (@champion)"]
    figures = comparison_figures(result)
    (table,) = figures["metrics_table"].data
    eigen_rows = [name for name, row in PUBLISHED.items() if row.protocol == "eigen"]
    assert (
        list(table.cells.values[0]) == [*labels, *eigen_rows] and len(eigen_rows) == 2
    )  # Laina's row is under another protocol
    descriptions = list(table.cells.values[1])
    assert all(
        d.startswith(PUBLISHED_MARK) and "ImageNet" in d and "654 official test frames" in d
        for d in descriptions[len(labels) :]
    )
    for description in descriptions[: len(labels)]:
        assert description.startswith("measured here; trained from scratch on synth20.mat")
        assert "cpu profile, project variant, input 64x80, width 0.125" in description
        assert "eigen crop, depth cap 10.0 m, per-image means (eigen protocol)" in description
    assert [t.type for t in figures["metrics_bars"].data] == ["bar"] * 2 * (len(labels) + len(eigen_rows))
    breakdown = figures["breakdown"].data
    assert len(breakdown) == 4 and list(breakdown[0].x) == [label for label, _, _ in DEPTH_BINS]
    assert list(breakdown[1].x) == ["near edges", "elsewhere"]
    rows = len(result.shown)
    assert rows == min(6, 3)  # the 20-frame file has 3 test frames (one room of 3 views)
    types = [t.type for t in figures["images"].data]
    assert types.count("image") == rows and types.count("heatmap") == rows * (1 + 2 * len(labels))
    cost = figures["cost"].data[0].cells.values
    assert all(float(ms) > 0 for ms in cost[2]) and all(device.startswith(("cpu", "cuda")) for device in cost[3])


def test_comparison_recomputes_the_registered_test_metrics(comparison):
    workdir, result, _, _ = comparison
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    for entry, measured in zip(result.entries, result.results):
        tags = client.get_model_version(entry.name, entry.version).tags
        for metric in ("abs_rel", "rmse", "delta1"):
            assert measured.metrics[metric] == pytest.approx(float(tags[f"test_{metric}"]), rel=2e-3), (
                entry.label,
                metric,
            )


def test_under_lainas_protocol_only_lainas_row_stands_beside_the_models(comparison, finished_sweep):
    workdir, eigen, _, _ = comparison
    uri = f"sqlite:///{workdir}/mlflow.db"
    laina = build_comparison(MlflowClient(uri), uri, evaluation="laina")
    (table,) = comparison_figures(laina)["metrics_table"].data
    assert list(table.cells.values[0])[len(laina.entries) :] == ["Laina et al. 2016, FCRN (ResNet-50)"]
    assert "full frame without a crop" in table.cells.values[1][-1]
    assert "none crop, depth cap inf m, pooled over pixels (laina protocol)" in table.cells.values[1][0]
    assert (
        laina.results[0].metrics["rmse"] != eigen.results[0].metrics["rmse"]
    )  # the same predictions, another protocol


def test_comparison_is_logged_to_its_own_run(comparison):
    workdir, result, path, run_id = comparison
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["models"] == "net12/1, net3/1"
    assert "net3_v1.abs_rel" in run.data.metrics and "net12_v1.latency_ms" in run.data.metrics
    assert [a.path for a in client.list_artifacts(run_id)] == [path.name]


def test_models_under_different_protocols_are_refused(comparison):
    _, result, _, _ = comparison
    first, second = result.entries
    other = ModelEntry(
        second.label,
        second.name,
        second.version,
        {**second.protocol, "split": "splits.mat"},
        second.train_config,
        second.predictor,
    )
    with pytest.raises(ValueError, match="different protocols.*net3 v1"):
        check_same_protocol([first, other])


def _open_in_chromium(html: Path, tmp_path: Path) -> tuple[list[str], int]:
    """Load the page headless; return the JavaScript errors it raised and how many plots it drew."""
    page = tmp_path / html.name
    text = html.read_text().replace("<head>", "<head>" + ERROR_CATCHER, 1)
    page.write_text(text[: text.rindex("</body>")] + DRAWN_COUNTER + "</body></html>")
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=30000",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--dump-dom",
        page.as_uri(),
    ]
    # Chromium keeps its profile, crash-report settings and caches under XDG_CONFIG_HOME / XDG_CACHE_HOME
    # (by default in $HOME): the test's own folder instead, so the suite leaves nothing in the home directory.
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    out = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    root = out.stdout[: out.stdout.find(">", out.stdout.find("<html")) + 1]
    errors = re.search(r'data-js-errors="([^"]*)"', root)
    drawn = re.search(r'data-plots-drawn="(\d+)"', root)
    assert errors and drawn, f"the page's scripts did not run: {root!r}"
    return json.loads(unescape(errors[1])), int(drawn[1])


@pytest.mark.skipif(
    BROWSER is None and not os.environ.get("DEPTHTUNE_REQUIRE_BROWSER"),
    reason="no chromium here (apt-get install chromium; .ci/run installs it and sets DEPTHTUNE_REQUIRE_BROWSER=1)",
)
def test_both_dashboards_render_in_headless_chromium(sweep_dashboard, comparison, tmp_path):
    assert BROWSER, "DEPTHTUNE_REQUIRE_BROWSER is set but chromium is not installed"
    _, outcome, _ = sweep_dashboard
    _, _, compare_path, _ = comparison
    for html in (outcome.dashboard, compare_path):
        errors, drawn = _open_in_chromium(html, tmp_path)
        assert errors == [], (html.name, errors)
        assert drawn == 5, (html.name, drawn)
