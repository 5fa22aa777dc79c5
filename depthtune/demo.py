"""The README's main job: data (synthetic unless a file is given) -> Net12 -> Net3 on that Net12
-> test-split table against constant-depth baselines, with every result under one run folder."""

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
from depthtune.data import generate_dataset, read_nyu
from depthtune.metrics import METRIC_NAMES
from depthtune.profiles import model_config, resolve_profile
from depthtune.runner import RunOutcome, run_training
from depthtune.train import TrainConfig, data_splits

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Settings of the demo; ``net12``/``net3`` hold training settings for each stage."""

    data: str | None = None
    splits_file: str | None = None
    synthetic_scenes: int = 300
    synthetic_seed: int = 0
    synthetic_path: str = "data/synthetic_nyu.mat"
    profile: str = "auto"
    output_dir: str = "runs"
    workers: int = max(1, min(4, os.cpu_count() or 1))
    net12: dict[str, Any] = field(default_factory=dict)
    net3: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "demo config") -> "DemoConfig":
        return from_dict(cls, values, where=where)


def ensure_data(config: DemoConfig) -> Path:
    """The user's file when given, else the synthetic twin (generated once, then reused)."""
    if config.data:
        return Path(config.data)
    path = Path(config.synthetic_path)
    if path.is_file():
        logger.info("using the synthetic dataset already at %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("no --data given: generating %d synthetic scenes into %s", config.synthetic_scenes, path)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            logger.info("  synthetic scenes %d/%d", done, total)

    generate_dataset(path, config.synthetic_scenes, seed=config.synthetic_seed, workers=config.workers, progress=progress)
    logger.info("generated %s in %.0f s", path, time.perf_counter() - started)
    return path


def _stage_config(config: DemoConfig, model: str, profile: str, data: Path, overrides: dict[str, Any]) -> TrainConfig:
    values = {"model": model, "model_cfg": model_config(profile, model), "data": str(data), "splits_file": config.splits_file}
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


def run_demo(config: DemoConfig) -> Path:
    """Run the whole demo; returns the run folder holding summary.md and each stage's results."""
    started = time.perf_counter()
    profile = resolve_profile(config.profile)
    data = ensure_data(config)
    arrays = read_nyu(data)
    run_dir = Path(config.output_dir) / time.strftime("demo-%Y%m%d-%H%M%S")
    net12_config = _stage_config(config, "net12", profile, data, config.net12)
    net3_overrides = {**config.net3, "net12_checkpoint": str(run_dir / "net12" / "best")}
    net3_config = _stage_config(config, "net3", profile, data, net3_overrides)

    baselines = constant_baselines(arrays, data_splits(net12_config, len(arrays)))
    logger.info("training Net12 (%s profile) -> %s", profile, run_dir / "net12")
    net12 = run_training(net12_config, run_dir / "net12", arrays=arrays)
    _link_best(net12)
    logger.info("training Net3 on that Net12 -> %s", run_dir / "net3")
    net3 = run_training(net3_config, run_dir / "net3", arrays=arrays)
    _link_best(net3)

    rows = {**baselines, "Net12": net12.test_metrics, "Net3 (on Net12)": net3.test_metrics}
    table = results_table(rows, reference="train mean depth")
    summary = {
        "data": str(data),
        "profile": profile,
        "test_frames": int(len(data_splits(net12_config, len(arrays)).test)),
        "seconds": time.perf_counter() - started,
        "test_metrics": rows,
        "checkpoints": {"net12": str(net12.result.best_checkpoint), "net3": str(net3.result.best_checkpoint)},
        "configs": {"net12": asdict(net12_config), "net3": asdict(net3_config)},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "summary.md").write_text(f"# depthtune demo ({profile} profile, data {data})\n\n{table}\n")
    logger.info("test split (%d frames), Eigen crop, depth cap 10 m:\n%s", summary["test_frames"], table)
    logger.info("done in %.0f s. Results: %s (summary.md, net12/, net3/)", summary["seconds"], run_dir)
    return run_dir


def _link_best(outcome: RunOutcome) -> None:
    """``<run>/best`` -> the best epoch's checkpoint directory, a stable name for the next stage."""
    link = outcome.run_dir / "best"
    link.symlink_to(outcome.result.best_checkpoint.resolve(), target_is_directory=True)
