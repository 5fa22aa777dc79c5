"""The sweep dashboard: the winner against the paper's settings, how lr, momentum, step size and
gradient-loss weight drove the validation metric, how every trial learned and where ASHA stopped
it (the paper-settings trial drawn dashed), which hyperparameters mattered, and the top trials
with their MLflow run ids."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from depthtune.dashboards.page import write_page
from depthtune.dashboards.sweep_record import SweepRecord, TrialRecord

logger = logging.getLogger(__name__)

IMPORTANCE_EVALUATOR = "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0)"
TOP_TRIALS = 10


def _label(record: SweepRecord) -> str:
    return f"best {record.metric} ({'lower' if record.mode == 'min' else 'higher'} is better)"


def parallel_coordinates(record: SweepRecord) -> go.Figure:
    """One line per trial with a value: the four hyperparameters -> the best validation metric."""
    ranked = record.ranked()
    dimensions = []
    for name, spec in record.space.items():
        values = [t.params.get(name, math.nan) for t in ranked]
        if spec.kind == "loguniform":
            ticks = _log_ticks(spec.low, spec.high)
            dimensions.append(
                dict(
                    label=f"{name} (log)",
                    values=[math.log10(v) for v in values],
                    range=[math.log10(spec.low), math.log10(spec.high)],
                    tickvals=[math.log10(t) for t in ticks],
                    ticktext=[f"{t:g}" for t in ticks],
                )
            )
        else:
            dimensions.append(dict(label=name, values=values, range=[spec.low, spec.high]))
    scores = [t.best(record.mode) for t in ranked]
    dimensions.append(dict(label=_label(record), values=scores))
    line = dict(color=scores, colorscale="Viridis", reversescale=record.mode == "min", showscale=True)
    figure = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    figure.update_layout(height=420, margin=dict(l=70, r=170, t=60, b=30))
    return figure


def _log_ticks(low: float, high: float) -> list[float]:
    """1, 2 and 5 times the powers of ten within [low, high]."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        ticks += [m * 10.0**exponent for m in (1, 2, 5) if low <= m * 10.0**exponent <= high]
    return ticks


def learning_curves(record: SweepRecord) -> go.Figure:
    """Validation metric per epoch of every trial; ASHA's stops marked, the winner drawn thick."""
    figure = go.Figure()
    for trial in record.trials:
        if not trial.curve:
            continue
        winner = trial.run_id == record.winner_run_id
        figure.add_trace(
            go.Scatter(
                x=[e for e, _ in trial.curve],
                y=[v for _, v in trial.curve],
                mode="lines+markers",
                name=(
                    f"{'winner ' if winner else ''}{'paper settings ' if trial.paper else ''}"
                    f"{trial.trial_id} ({trial.status.lower()})"
                ),
                line=dict(
                    width=5 if winner else 3 if trial.paper else 1.5,
                    dash="dash" if trial.paper else None,
                    color="black" if trial.paper and not winner else None,
                ),
                opacity=1.0 if winner or trial.paper else 0.75,
            )
        )
    stopped = [t for t in record.trials if record.stopped_early(t) and t.curve]
    figure.add_trace(
        go.Scatter(
            x=[t.curve[-1][0] for t in stopped],
            y=[t.curve[-1][1] for t in stopped],
            mode="markers",
            name="stopped by ASHA",
            marker=dict(symbol="x", size=14, color="black", line=dict(width=2)),
            text=[t.trial_id for t in stopped],
        )
    )
    positive = all(v > 0 for t in record.trials for _, v in t.curve)
    figure.update_layout(
        height=440,
        xaxis_title="epoch",
        yaxis_title=f"{record.metric}{' (log axis)' if positive else ''}",
        xaxis=dict(dtick=1, range=[0.5, record.epochs + 0.5]),
        yaxis_type="log" if positive else "linear",
        margin=dict(t=30),
    )
    return figure


def parameter_importance(record: SweepRecord) -> tuple[go.Figure, str]:
    """Optuna's fANOVA importances on the study of the trials that trained their whole budget."""
    finished = [t for t in record.finished() if t.best(record.mode) is not None and len(t.params) == len(record.space)]
    figure = go.Figure()
    if len(finished) < 2:
        figure.add_trace(go.Bar(x=[], y=[], orientation="h"))
        note = f"Needs at least 2 trials that trained all {record.epochs} epochs; this sweep has {len(finished)}."
        figure.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        figure.update_layout(height=260)
        return figure, note
    study = optuna.create_study(direction="minimize" if record.mode == "min" else "maximize")
    distributions = {name: spec.distribution() for name, spec in record.space.items()}
    for trial in finished:
        study.add_trial(
            optuna.trial.create_trial(params=trial.params, distributions=distributions, value=trial.best(record.mode))
        )
    importances = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    names = list(reversed(importances))
    figure.add_trace(go.Bar(x=[importances[n] for n in names], y=names, orientation="h", marker_color="#4c78a8"))
    figure.update_layout(height=300, xaxis_title="importance (share of variance)", margin=dict(t=30, l=110))
    note = (
        f"{IMPORTANCE_EVALUATOR} over the {len(finished)} trials that trained all {record.epochs} epochs "
        f"(ASHA-stopped trials have no comparable final value). With few trials this is indicative only."
    )
    return figure, note


def hyperparameter_scatter(record: SweepRecord) -> go.Figure:
    """Each hyperparameter against the best validation metric, one panel each (lr on a log axis)."""
    ranked = record.ranked()
    figure = make_subplots(rows=1, cols=len(record.space), subplot_titles=list(record.space), shared_yaxes=True)
    for column, (name, spec) in enumerate(record.space.items(), start=1):
        figure.add_trace(
            go.Scatter(
                x=[t.params.get(name) for t in ranked],
                y=[t.best(record.mode) for t in ranked],
                mode="markers",
                name=name,
                text=[f"{t.trial_id} ({t.status.lower()}, {t.epochs} epochs)" for t in ranked],
                marker=dict(
                    size=[16 if t.paper else 10 for t in ranked],
                    symbol=["star" if t.paper else "circle" for t in ranked],
                    color=[
                        "#e45756" if t.run_id == record.winner_run_id else "black" if t.paper else "#4c78a8"
                        for t in ranked
                    ],
                ),
                showlegend=False,
            ),
            row=1,
            col=column,
        )
        if spec.kind == "loguniform":
            figure.update_xaxes(type="log", row=1, col=column)
    figure.update_yaxes(title_text=record.metric, row=1, col=1)
    figure.update_layout(height=360, margin=dict(t=40))
    return figure


def _utilisation(trial: TrialRecord) -> str:
    """E.g. ``GPU 87%``: a starved GPU shows here; ``-`` for a run without system metrics."""
    use = trial.utilisation
    return f"{use.device} {use.mean_percent:.0f}%" if use else "-"


def top_trials_table(record: SweepRecord, count: int = TOP_TRIALS) -> go.Figure:
    """The best trials by validation metric, with their mean GPU (else CPU) utilisation and MLflow run ids."""
    top = record.ranked()[:count]
    header = [
        "rank",
        "trial",
        "status",
        "epochs",
        f"best {record.metric}",
        *record.space,
        "mean utilisation",
        "MLflow run id",
    ]
    columns = [
        list(range(1, len(top) + 1)),
        [
            f"{t.trial_id}{' (winner)' if t.run_id == record.winner_run_id else ''}"
            f"{' (paper settings)' if t.paper else ''}"
            for t in top
        ],
        [t.status for t in top],
        [t.epochs for t in top],
        [f"{t.best(record.mode):.4f}" for t in top],
        *[[f"{t.params.get(name, math.nan):.4g}" for t in top] for name in record.space],
        [_utilisation(t) for t in top],
        [t.run_id for t in top],
    ]
    widths = [40, 130, 80, 55, 90, *([75] * len(record.space)), 95, 260]
    figure = go.Figure(
        go.Table(columnwidth=widths, header=dict(values=header, fill_color="#dde5f0"), cells=dict(values=columns))
    )
    figure.update_layout(height=90 + 28 * len(top), margin=dict(t=10, b=10))
    return figure


def versus_paper_note(record: SweepRecord) -> str:
    """The winner against the paper-settings trial, as the sweep's run recorded it."""
    values, metric = record.versus_paper, record.metric
    paper = next((t for t in record.trials if t.paper), None)
    if f"gain_vs_paper_{metric}" not in values:
        return "Paper settings: " + (
            f"trial {paper.trial_id} ({paper.status.lower()}) has no comparison recorded."
            if paper
            else "this sweep has no paper-settings trial."
        )
    return (
        f"Paper settings (trial {paper.trial_id if paper else '?'}, dashed/star): "
        f"{metric} {values[f'baseline_{metric}']:.4f}, "
        f"test abs_rel {values['baseline_test_abs_rel']:.4f}. "
        f"Winner: {metric} {values[f'winner_{metric}']:.4f}, test abs_rel "
        f"{values['winner_test_abs_rel']:.4f}. Gain of tuning over the paper's settings: validation "
        f"{values[f'gain_vs_paper_{metric}']:+.1f}%, test abs_rel {values['gain_vs_paper_test_abs_rel']:+.1f}% "
        "(positive: the tuned settings are better; the winner was chosen on validation, test is reported only)."
    )


def sweep_figures(record: SweepRecord) -> tuple[dict[str, go.Figure], str]:
    """Every figure of the dashboard by name, and the note on how the importances were computed."""
    importance, note = parameter_importance(record)
    figures = {
        "parallel_coordinates": parallel_coordinates(record),
        "learning_curves": learning_curves(record),
        "importance": importance,
        "scatter": hyperparameter_scatter(record),
        "top_trials": top_trials_table(record),
    }
    return figures, note


def write_sweep_dashboard(record: SweepRecord, path: str | Path) -> Path:
    """The whole dashboard as one self-contained HTML file."""
    figures, importance_note = sweep_figures(record)
    stopped = sum(record.stopped_early(t) for t in record.trials)
    notes = [
        f"Sweep run {record.sweep_run_id} ({record.model}): {len(record.trials)} trials, "
        f"{len(record.finished())} trained all "
        f"{record.epochs} epochs, {stopped} stopped early by ASHA. Metric: {record.metric} ({record.mode}).",
        f"Winner: run {record.winner_run_id or 'not chosen yet'}.",
        versus_paper_note(record),
    ]
    sections = [
        (
            "Hyperparameters -> validation metric",
            "One line per trial; colour is the trial's best validation metric.",
            figures["parallel_coordinates"],
        ),
        (
            "Learning curves",
            "Validation metric per epoch; x marks where ASHA stopped a trial, the thick line is the winner.",
            figures["learning_curves"],
        ),
        ("Hyperparameter importance", importance_note, figures["importance"]),
        (
            "Each hyperparameter vs the validation metric",
            "Red: the winner. Each trial's best epoch.",
            figures["scatter"],
        ),
        (
            f"Top {min(TOP_TRIALS, len(record.ranked()))} trials",
            "Mean utilisation: of the trial's GPUs, or of its node's CPUs for a CPU trial (MLflow system metrics); "
            "a GPU well below 100% is waiting for data.",
            figures["top_trials"],
        ),
    ]
    written = write_page(path, f"depthtune sweep {record.name}", notes, sections)
    logger.info("sweep dashboard: %s", written)
    return written
