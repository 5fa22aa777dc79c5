"""The demo: data (synthetic unless a file is given) -> Net12 -> Net3 on that Net12
(-> FCRN) -> test-split table against constant-depth baselines, every result under one run folder."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from depthtune.baselines import constant_baselines
from depthtune.config import from_dict
from depthtune.data import read_nyu
from depthtune.data.source import resolve_data
from depthtune.evaluation import data_splits
from depthtune.names import METRIC_NAMES, MODEL_NAMES
from depthtune.profiles import model_setup, resolve_profile, resolve_variant
from depthtune.runner import RunOutcome, run_training
from depthtune.train_config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Settings of the demo; ``profile`` and ``variant`` pick sizes and layers (depthtune.profiles),
    ``models`` lists the stages in order and ``net12``/``net3``/``fcrn`` hold each one's training settings."""

    data: str | None = None
    splits_file: str | None = None
    synthetic_frames: int = 300
    synthetic_seed: int = 0
    synthetic_path: str = "data/synthetic_nyu_300f_3v.mat"
    profile: str = "auto"
    variant: str | None = None
    output_dir: str = "runs"
    workers: int = max(1, min(4, os.cpu_count() or 1))
    models: list[str] = field(default_factory=lambda: ["net12", "net3", "fcrn"])
    net12: dict[str, Any] = field(default_factory=dict)
    net3: dict[str, Any] = field(default_factory=dict)
    fcrn: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "demo config") -> "DemoConfig":
        config = from_dict(cls, values, where=where)
        unknown = [m for m in config.models if m not in MODEL_NAMES]
        if unknown or len(set(config.models)) != len(config.models):
            raise ValueError(f"{where}: models={config.models}; expected distinct names from {list(MODEL_NAMES)}")
        if "net3" in config.models and "net12" not in config.models[: config.models.index("net3")]:
            raise ValueError(f"{where}: models={config.models}; net3 refines a Net12, so net12 must come before it")
        return config


def _stage_config(config: DemoConfig, model: str, profile: str, data: Path, overrides: dict[str, Any]) -> TrainConfig:
    setup = model_setup(profile, model, config.variant)
    values = {
        "model": model,
        "model_cfg": setup.model_cfg,
        "lr_multipliers": setup.lr_multipliers,
        "data": str(data),
        "splits_file": config.splits_file,
    }
    return TrainConfig.from_dict({**values, **overrides}, where=f"demo config, section {model}")


def results_table(rows: dict[str, dict[str, float]], reference: str) -> str:
    """Markdown table of test metrics with each row's abs rel change against ``reference``."""
    header = "| model | " + " | ".join(METRIC_NAMES) + f" | abs rel vs {reference} |"
    lines = [header, "|" + "---|" * (len(METRIC_NAMES) + 2)]
    base = rows[reference]["abs_rel"]
    for name, metrics in rows.items():
        change = f"{100 * (metrics['abs_rel'] / base - 1):+.1f}%"
        lines.append(f"| {name} | " + " | ".join(f"{metrics[m]:.3f}" for m in METRIC_NAMES) + f" | {change} |")
    return "\n".join(lines)


STAGE_LABELS = {"net12": "Net12", "net3": "Net3 (on Net12)", "fcrn": "FCRN"}


def run_demo(config: DemoConfig) -> Path:
    """Run the whole demo; returns the run folder holding summary.md and each stage's results."""
    started = time.perf_counter()
    profile = resolve_profile(config.profile)
    variant = resolve_variant(profile, config.variant)
    data = resolve_data(
        config.data,
        synthetic_path=config.synthetic_path,
        synthetic_frames=config.synthetic_frames,
        synthetic_seed=config.synthetic_seed,
        workers=config.workers,
    )
    arrays = read_nyu(data)
    run_dir = Path(config.output_dir) / time.strftime("demo-%Y%m%d-%H%M%S")
    stage_configs = {}
    for model in config.models:
        overrides = dict(getattr(config, model))
        if model == "net3":
            overrides["net12_checkpoint"] = str(run_dir / "net12" / "best")
        stage_configs[model] = _stage_config(config, model, profile, data, overrides)
    splits = data_splits(stage_configs[config.models[0]], arrays.scenes)

    rows = constant_baselines(arrays, splits)
    outcomes: dict[str, RunOutcome] = {}
    for model, stage in stage_configs.items():
        logger.info(
            "training %s (%s profile, %s variant) -> %s", STAGE_LABELS[model], profile, variant, run_dir / model
        )
        outcomes[model] = run_training(stage, run_dir / model, arrays=arrays)
        _link_best(outcomes[model])
        rows[STAGE_LABELS[model]] = outcomes[model].test_metrics

    table = results_table(rows, reference="train mean depth")
    summary = {
        "data": str(data),
        "profile": profile,
        "variant": variant,
        "test_frames": int(len(splits.test)),
        "seconds": time.perf_counter() - started,
        "test_metrics": rows,
        "checkpoints": {model: str(o.result.best_checkpoint) for model, o in outcomes.items()},
        "configs": {model: asdict(stage) for model, stage in stage_configs.items()},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "summary.md").write_text(
        f"# depthtune demo ({profile} profile, {variant} variant, data {data})\n\n{table}\n"
    )
    logger.info("test split (%d frames), Eigen crop, depth cap 10 m:\n%s", summary["test_frames"], table)
    logger.info(
        "done in %.0f s. Results: %s (summary.md, %s)",
        summary["seconds"],
        run_dir,
        ", ".join(f"{m}/" for m in outcomes),
    )
    return run_dir


def _link_best(outcome: RunOutcome) -> None:
    """``<run>/best`` -> the best epoch's checkpoint directory, a stable name for the next stage."""
    link = outcome.run_dir / "best"
    link.symlink_to(outcome.result.best_checkpoint.resolve(), target_is_directory=True)
