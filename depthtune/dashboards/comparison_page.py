"""The model comparison dashboard: registered models side by side (metrics next to the published
NYUv2 rows, error by depth range and near edges, the same test images, latency and size), written
as one HTML file and logged to a comparison run in MLflow."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from mlflow import MlflowClient
from plotly.subplots import make_subplots

from depthtune.dashboards.model_evaluation import (
    DEPTH_BINS,
    SHOWN_IMAGES,
    ModelEntry,
    ModelResult,
    check_same_protocol,
    default_references,
    device_description,
    evaluate_entry,
    load_entry,
    test_data,
)
from depthtune.dashboards.page import write_page
from depthtune.dashboards.published import PUBLISHED, PUBLISHED_MARK, PublishedResult
from depthtune.metrics import PROTOCOLS
from depthtune.models import geometry
from depthtune.tracking.runs import RunLogger, training_experiment

logger = logging.getLogger(__name__)

TABLE_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")
ERRORS, ACCURACIES = TABLE_METRICS[:5], TABLE_METRICS[5:]
COMPARISON_EXPERIMENT = "depthtune-comparisons"
THUMBNAIL_STEP = 5  # show every 5th pixel: 96x128 maps keep the file a few MB


@dataclass
class Comparison:
    """Everything the dashboard shows: ``protocol`` is what the models were registered under (data,
    split, frames), ``evaluation`` the name of the metrics protocol this page evaluates them with."""

    entries: list[ModelEntry]
    results: list[ModelResult]
    protocol: dict
    shown: list[int]
    images: list[np.ndarray]
    truths: list[np.ndarray]
    device: str
    evaluation: str = "eigen"

    @property
    def published(self) -> dict[str, PublishedResult]:
        """The papers' rows measured under this page's protocol: only those stand beside its numbers."""
        return {name: row for name, row in PUBLISHED.items() if row.protocol == self.evaluation}


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def measured_description(entry: ModelEntry, protocol: dict, evaluation: str = "eigen") -> str:
    """What a measured row is: its data, split, model size and input, and the evaluation."""
    config, module = entry.train_config, entry.predictor.module
    size = "x".join(str(v) for v in geometry(module.name, **module.config).input_size)
    used = PROTOCOLS[evaluation]
    start = f"from ImageNet ({Path(config.encoder_weights).name})" if config.encoder_weights else "from scratch"
    return (
        f"measured here; trained {start} on {Path(config.data or '?').name} ({protocol.get('split', '?')}), "
        f"{entry.profile} profile, {entry.variant} variant, input {size}, "
        f"width {module.config.get('width', 1.0)}, {config.epochs} epochs; evaluated on "
        f"{protocol.get('test_frames', '?')} test frames, {used.crop} crop, depth cap {used.max_depth} m, "
        f"{'per-image means' if used.pooling == 'images' else 'pooled over pixels'} ({evaluation} protocol)"
    )


def metrics_table(comparison: Comparison) -> go.Figure:
    """Measured models, then the published rows, each saying what it was trained on and how it was evaluated."""
    rows = [
        (e.label, measured_description(e, comparison.protocol, comparison.evaluation), r.metrics)
        for e, r in zip(comparison.entries, comparison.results)
    ]
    rows += [(name, published.description, published.metrics) for name, published in comparison.published.items()]
    columns = [[r[0] for r in rows], [r[1] for r in rows], *[[_fmt(r[2].get(m)) for r in rows] for m in TABLE_METRICS]]
    colors = [["white"] * len(comparison.entries) + ["#eeeeee"] * len(comparison.published)]
    figure = go.Figure(
        go.Table(
            columnwidth=[200, 420, *([60] * len(TABLE_METRICS))],
            header=dict(values=["model", "training data and evaluation", *TABLE_METRICS], fill_color="#dde5f0"),
            cells=dict(
                values=columns, fill_color=colors, height=26, align=["left", "left", *(["center"] * len(TABLE_METRICS))]
            ),
        )
    )
    figure.update_layout(height=120 + 70 * len(rows), margin=dict(t=10, b=10))
    return figure


def metrics_bars(comparison: Comparison) -> go.Figure:
    """Grouped bars: errors (lower is better) and delta accuracies (higher is better)."""
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("errors (lower is better)", "delta accuracies (higher is better)")
    )
    series = [(e.label, r.metrics, 1.0, "") for e, r in zip(comparison.entries, comparison.results)]
    series += [
        (f"{name} ({PUBLISHED_MARK})", published.metrics, 0.45, "/") for name, published in comparison.published.items()
    ]
    for index, (name, values, opacity, pattern) in enumerate(series):
        for column, keys in ((1, ERRORS), (2, ACCURACIES)):
            figure.add_trace(
                go.Bar(
                    x=list(keys),
                    y=[values.get(k) for k in keys],
                    name=name,
                    legendgroup=name,
                    showlegend=column == 1,
                    opacity=opacity,
                    marker_pattern_shape=pattern,
                    marker_color=_color(index),
                ),
                row=1,
                col=column,
            )
    figure.update_layout(barmode="group", height=420, margin=dict(t=40), legend=dict(orientation="h", y=-0.15))
    return figure


def _color(index: int) -> str:
    palette = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d")
    return palette[index % len(palette)]


def breakdown_bars(comparison: Comparison) -> go.Figure:
    """abs rel by ground-truth depth range, and near depth edges versus elsewhere."""
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("abs rel by depth range", "abs rel near depth edges vs elsewhere")
    )
    for index, (entry, result) in enumerate(zip(comparison.entries, comparison.results)):
        for column, values in ((1, result.by_depth), (2, result.by_edges)):
            figure.add_trace(
                go.Bar(
                    x=list(values),
                    y=list(values.values()),
                    name=entry.label,
                    legendgroup=entry.label,
                    showlegend=column == 1,
                    marker_color=_color(index),
                ),
                row=1,
                col=column,
            )
    figure.update_layout(barmode="group", height=380, margin=dict(t=40))
    return figure


def image_grid(comparison: Comparison) -> go.Figure:
    """Per test image: RGB, ground truth, each model's prediction, each model's abs rel error map;
    depths of a row share one colour scale, errors another (0 to 0.5)."""
    names = [f"{e.name} v{e.version}" for e in comparison.entries]
    titles = ["RGB", "ground truth", *[f"{n}" for n in names], *[f"{n} error" for n in names]]
    rows, cols = len(comparison.shown), len(titles)
    figure = make_subplots(rows=rows, cols=cols, column_titles=titles, horizontal_spacing=0.005, vertical_spacing=0.01)
    step = THUMBNAIL_STEP
    for row, (frame, image, truth) in enumerate(zip(comparison.shown, comparison.images, comparison.truths), start=1):
        valid = truth > 0
        low, high = float(truth[valid].min()), float(truth[valid].max())
        depth_axis, error_axis = f"coloraxis{2 * row - 1}", f"coloraxis{2 * row}"
        figure.add_trace(go.Image(z=image[::step, ::step]), row=row, col=1)
        shown_truth = np.where(valid, truth, np.nan)[::step, ::step].astype(np.float32)
        figure.add_trace(go.Heatmap(z=shown_truth, coloraxis=depth_axis, name="ground truth"), row=row, col=2)
        for index, result in enumerate(comparison.results):
            prediction = result.predictions[row - 1]
            error = np.where(valid, np.abs(prediction - truth) / np.where(valid, truth, 1.0), np.nan)
            figure.add_trace(
                go.Heatmap(z=prediction[::step, ::step].astype(np.float32), coloraxis=depth_axis, name=names[index]),
                row=row,
                col=3 + index,
            )
            figure.add_trace(
                go.Heatmap(
                    z=error[::step, ::step].astype(np.float32), coloraxis=error_axis, name=f"{names[index]} error"
                ),
                row=row,
                col=3 + len(names) + index,
            )
        figure.update_layout(
            {
                depth_axis: dict(colorscale="Magma", reversescale=True, cmin=low, cmax=high, showscale=False),
                error_axis: dict(colorscale="Reds", cmin=0.0, cmax=0.5, showscale=False),
            }
        )
        figure.update_yaxes(title_text=f"frame {frame}<br>{low:.1f}-{high:.1f} m", title_font_size=10, row=row, col=1)
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False, autorange="reversed", scaleanchor=None)
    figure.update_layout(height=170 * rows + 60, width=max(900, 190 * cols), margin=dict(t=40, l=60, r=10, b=10))
    return figure


def cost_table(comparison: Comparison) -> go.Figure:
    """Inference latency per image and parameter count, measured where the dashboard was rendered."""
    figure = go.Figure(
        go.Table(
            header=dict(
                values=["model", "parameters (M)", "latency per 480x640 image (ms, median of 10)", "device"],
                fill_color="#dde5f0",
            ),
            cells=dict(
                values=[
                    [e.label for e in comparison.entries],
                    [f"{e.parameters / 1e6:.2f}" for e in comparison.entries],
                    [f"{r.latency_ms:.1f}" for r in comparison.results],
                    [comparison.device] * len(comparison.entries),
                ]
            ),
        )
    )
    figure.update_layout(height=90 + 30 * len(comparison.entries), margin=dict(t=10, b=10))
    return figure


def comparison_figures(comparison: Comparison) -> dict[str, go.Figure]:
    """Every figure of the dashboard by name (the test inspects these)."""
    return {
        "metrics_table": metrics_table(comparison),
        "metrics_bars": metrics_bars(comparison),
        "breakdown": breakdown_bars(comparison),
        "images": image_grid(comparison),
        "cost": cost_table(comparison),
    }


def build_comparison(
    client: MlflowClient,
    uri: str,
    references: list[str] | None = None,
    data: str | None = None,
    evaluation: str = "eigen",
) -> Comparison:
    """Load the models, check they share a protocol, evaluate each on the test split under the
    metrics protocol named ``evaluation`` (``eigen`` or ``laina``)."""
    if evaluation not in PROTOCOLS:
        raise ValueError(f"evaluation protocol {evaluation!r}: expected one of {sorted(PROTOCOLS)}")
    entries = [load_entry(client, uri, reference) for reference in (references or default_references(client))]
    protocol = check_same_protocol(entries)
    arrays, test = test_data(entries[0], protocol, data)
    shown = test[:SHOWN_IMAGES]
    results = []
    for entry in entries:
        logger.info("evaluating %s on %d test frames", entry.label, len(test))
        results.append(evaluate_entry(entry, arrays, test, shown, PROTOCOLS[evaluation]))
    return Comparison(
        entries=entries,
        results=results,
        protocol=protocol,
        shown=shown,
        images=[arrays.images[i] for i in shown],
        truths=[arrays.depths[i] for i in shown],
        device=device_description(),
        evaluation=evaluation,
    )


def write_comparison_dashboard(comparison: Comparison, path: str | Path) -> Path:
    """The dashboard as one self-contained HTML file."""
    figures = comparison_figures(comparison)
    protocol = ", ".join(f"{k}={v}" for k, v in sorted(comparison.protocol.items()))
    notes = [
        f"Models: {', '.join(e.label for e in comparison.entries)}. "
        "All evaluated here, on the same test frames, under the "
        f"{comparison.evaluation} metrics protocol; registered under: {protocol}.",
        f"Rows marked '{PUBLISHED_MARK}' are the papers' NYU Depth v2 numbers under the same metrics protocol, "
        "for reference only: they were not measured here and come from ImageNet-initialised networks "
        "trained on thousands to hundreds of thousands of real frames; a measured row says what it was "
        "trained on. Rows under another protocol are left out: "
        + (", ".join(name for name in PUBLISHED if name not in comparison.published) or "none")
        + ".",
    ]
    bins = ", ".join(label for label, _, _ in DEPTH_BINS)
    sections = [
        ("Metrics on the test split", "", figures["metrics_table"]),
        ("Metrics side by side", "Hatched, faded bars: published numbers.", figures["metrics_bars"]),
        (
            "Where the error is",
            f"abs rel pooled over all valid test pixels per group: ground-truth depth {bins}; "
            "pixels within 4 px of a depth edge (|log-depth step| > 0.1 between neighbours) versus the rest. "
            "The gradient-loss term targets the edges.",
            figures["breakdown"],
        ),
        (
            f"The same {len(comparison.shown)} test images",
            "Depth maps of a row share one colour scale (its ground-truth range, dark = far); "
            "error maps show abs rel from 0 to 0.5.",
            figures["images"],
        ),
        ("Cost", f"Measured on the machine that rendered this page ({comparison.device}).", figures["cost"]),
    ]
    return write_page(path, "depthtune model comparison", notes, sections)


def log_comparison(client: MlflowClient, comparison: Comparison, dashboard: Path) -> str:
    """A run in the comparisons experiment holding the dashboard and each model's numbers."""
    experiment_id = training_experiment(client, COMPARISON_EXPERIMENT)
    run = RunLogger.start(
        client,
        experiment_id,
        name="compare " + ", ".join(e.label for e in comparison.entries),
        params={
            "models": ", ".join(f"{e.name}/{e.version}" for e in comparison.entries),
            "device": comparison.device,
            "metrics_protocol": comparison.evaluation,
        },
        tags={"depthtune.kind": "comparison", "eval_protocol": str(comparison.protocol)},
    )
    values = {}
    for entry, result in zip(comparison.entries, comparison.results):
        prefix = f"{entry.name}_v{entry.version}"
        values.update({f"{prefix}.{k}": v for k, v in result.metrics.items()})
        values.update({f"{prefix}.latency_ms": result.latency_ms, f"{prefix}.parameters": float(entry.parameters)})
    run.log_epoch({k: v for k, v in values.items() if not math.isnan(v)}, step=0)
    client.log_artifact(run.run_id, str(dashboard))
    run.finish()
    return run.run_id


def run_compare(
    uri: str, references: list[str] | None, out: str | None, data: str | None = None, evaluation: str = "eigen"
) -> tuple[Path, str]:
    """Build, write and log the comparison; returns the HTML path and the comparison run id."""
    client = MlflowClient(uri)
    comparison = build_comparison(client, uri, references, data, evaluation)
    path = write_comparison_dashboard(comparison, out or f"comparison_{time.strftime('%Y%m%d-%H%M%S')}.html")
    run_id = log_comparison(client, comparison, path)
    return path, run_id
