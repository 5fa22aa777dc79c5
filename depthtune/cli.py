"""`depthtune` command line: data generation, single training runs and the demo."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from depthtune.config import read_yaml
from depthtune.models import MODEL_NAMES

logger = logging.getLogger("depthtune")

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
DEMO_CONFIG = EXPERIMENTS / "configs" / "demo.yaml"
TRAIN_FLAGS = ("epochs", "batch_size", "lr", "momentum", "step_size", "gamma", "grad_weight", "seed", "net12_checkpoint", "splits_file", "device", "num_workers")


def _add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="generate synthetic scenes in the NYU Depth v2 labelled-file layout")
    synth.add_argument("--n", type=int, default=300, help="number of scenes (default 300)")
    synth.add_argument("--out", required=True, help="output .mat path")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=1, help="processes rendering in parallel")


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="one training run (no sweep)")
    train.add_argument("--model", required=True, choices=MODEL_NAMES)
    train.add_argument("--data", required=True, help="nyu_depth_v2_labeled.mat or a file in its layout")
    train.add_argument("--config", help="YAML file of training settings (flags override it)")
    train.add_argument("--profile", default="auto", help="model size: auto (paper on GPU, cpu otherwise), paper, cpu")
    train.add_argument("--out", help="run directory (default runs/<model>-<time>)")
    train.add_argument("--resume", help="checkpoint (file or epoch directory) to continue from")
    for flag in TRAIN_FLAGS:
        kind = {"epochs": int, "batch_size": int, "step_size": int, "seed": int, "num_workers": int}.get(flag)
        kind = kind or (str if flag in ("net12_checkpoint", "splits_file", "device") else float)
        train.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind)


def _add_demo_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="synthetic data (or --data) -> Net12 -> Net3 -> results table")
    demo.add_argument("--config", default=str(DEMO_CONFIG), help=f"demo YAML (default {DEMO_CONFIG})")
    demo.add_argument("--data", help="use this NYU-layout file instead of synthetic scenes")
    demo.add_argument("--splits-file", dest="splits_file", help="NYU splits.mat for the standard Eigen split")
    demo.add_argument("--profile", help="auto, paper or cpu")


SWEEP_FLAGS = ("data", "splits_file", "num_samples", "max_concurrent", "gpus_per_trial", "tracking_uri", "storage_path", "name", "net12_model")


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep flags shared by `depthtune tune` and experiments/tune_*.py."""
    parser.add_argument("--config", help="sweep YAML (default experiments/configs/<model>.yaml)")
    parser.add_argument("--data", help="nyu_depth_v2_labeled.mat or a file in its layout (default: synthetic)")
    parser.add_argument("--splits-file", dest="splits_file", help="NYU splits.mat for the standard Eigen split")
    parser.add_argument("--num-samples", dest="num_samples", type=int, help="trials to run")
    parser.add_argument("--max-concurrent", dest="max_concurrent", type=int, help="trials at once")
    parser.add_argument("--gpus-per-trial", dest="gpus_per_trial", type=float, help="GPUs per trial (fractions allowed)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (ASHA's budget)")
    parser.add_argument("--resume", action="store_true", help="continue a sweep whose driver died (--name, or the latest)")
    parser.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow server, e.g. http://head:5000 (default: ./mlflow.db)")
    parser.add_argument("--storage-path", dest="storage_path", help="Tune storage (shared on a cluster)")
    parser.add_argument("--name", help="sweep name (default <model>-<date>-<time>; --resume without it takes the latest)")
    parser.add_argument("--profile", default="auto", help="auto (paper on GPU, cpu otherwise), paper, cpu")
    parser.add_argument(
        "--net12-model", dest="net12_model", help="net3 only: the Net12 to refine (default models:/net12@champion; or NAME/VERSION, a checkpoint)"
    )


def _add_tune_parser(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser("tune", help="hyperparameter sweep on Ray Tune, tracked in MLflow")
    tune.add_argument("model", choices=MODEL_NAMES)
    add_tune_arguments(tune)


def _add_predict_parser(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="depth map of an image with a registered model")
    predict.add_argument("image", help="RGB image file (PNG/JPEG)")
    predict.add_argument("--model", required=True, help="registered model: NAME@ALIAS, NAME/VERSION or models:/...")
    predict.add_argument("--out", required=True, help="output: .npy (metres, float32) or .png (16-bit millimetres)")
    predict.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")


def _add_dashboard_parser(commands: argparse._SubParsersAction) -> None:
    dashboard = commands.add_parser("dashboard", help="(re)write a sweep's plotly dashboard from MLflow")
    dashboard.add_argument("sweep_run_id", help="the sweep's parent run id (printed at the end of the sweep)")
    dashboard.add_argument("--out", help="HTML file (default sweep_dashboard_<run id>.html here)")
    dashboard.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")


def _add_compare_parser(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser("compare", help="plotly dashboard comparing registered models on the same test split")
    compare.add_argument("models", nargs="*", help="NAME@ALIAS, NAME/VERSION or models:/... (default: the champions that exist)")
    compare.add_argument("--out", help="HTML file (default comparison_<date>-<time>.html here)")
    compare.add_argument("--data", help="the NYU-layout file the models were evaluated on (default: the one they were trained on)")
    compare.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="depthtune", description=__doc__)
    root.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = root.add_subparsers(dest="command", required=True)
    _add_data_parser(commands)
    _add_train_parser(commands)
    _add_demo_parser(commands)
    _add_tune_parser(commands)
    _add_predict_parser(commands)
    _add_dashboard_parser(commands)
    _add_compare_parser(commands)
    return root


def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _synth(args: argparse.Namespace) -> None:
    from depthtune.data import generate_dataset

    path = generate_dataset(args.out, args.n, seed=args.seed, workers=args.workers)
    logger.info("wrote %d synthetic scenes to %s", args.n, path)


def _train(args: argparse.Namespace) -> None:
    from depthtune.profiles import model_config
    from depthtune.runner import run_training
    from depthtune.train import TrainConfig

    values: dict[str, Any] = {"model": args.model, "model_cfg": model_config(args.profile, args.model)}
    if args.config:
        values.update(read_yaml(args.config))
    values.update({"data": args.data, **_overrides(args, TRAIN_FLAGS)})
    config = TrainConfig.from_dict(values, where=args.config or "command line")
    run_dir = Path(args.out or Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    outcome = run_training(config, run_dir, resume_from=args.resume)
    logger.info(
        "best epoch %d: test abs_rel %.4f, rmse %.4f; checkpoint %s; metrics %s",
        outcome.result.best_epoch + 1, outcome.test_metrics["abs_rel"], outcome.test_metrics["rmse"],
        outcome.result.best_checkpoint, run_dir / "metrics.jsonl",
    )


def run_tune(args: argparse.Namespace) -> None:
    """Sweep ``args.model`` with the YAML config and flag overrides; print the summary."""
    from depthtune.profiles import resolve_profile
    from depthtune.sweep_config import SweepConfig
    from depthtune.tune import run_sweep, summary_text

    path = Path(args.config) if args.config else EXPERIMENTS / "configs" / f"{args.model}.yaml"
    values = read_yaml(path)
    if values.get("model", args.model) != args.model:
        raise ValueError(f"{path} configures model {values['model']!r}, not {args.model!r}")
    overrides = _overrides(args, SWEEP_FLAGS)
    if args.epochs is not None:
        overrides["train"] = {"epochs": args.epochs}
    profile = resolve_profile(args.profile)
    config = SweepConfig.from_dict(values, profile=profile, where=str(path), overrides=overrides)
    logger.info(
        "sweeping %s (%s profile): %d trials, %d at a time, %d epochs each",
        args.model, profile, config.num_samples, config.max_concurrent, config.epochs,
    )
    outcome = run_sweep(config, resume=args.resume)
    logger.info("\n%s", summary_text(outcome, config))


def _predict(args: argparse.Namespace) -> None:
    import numpy as np
    from PIL import Image

    from depthtune.loading import load_model

    out = Path(args.out)
    if out.suffix not in (".npy", ".png"):
        raise ValueError(f"--out {out}: expected a .npy or .png file name")
    image_path = Path(args.image)
    if not image_path.is_file():
        raise FileNotFoundError(f"image {image_path} does not exist")
    try:
        rgb = np.asarray(Image.open(image_path).convert("RGB"))
    except OSError as exc:
        raise ValueError(f"image {image_path} could not be read as an image: {exc}") from exc
    depth = load_model(args.model, tracking_uri=args.tracking_uri).predict(rgb)
    if out.suffix == ".npy":
        np.save(out, depth.astype(np.float32))
    else:
        Image.fromarray(np.clip(depth * 1000.0, 0, 65535).astype(np.uint16)).save(out)
    logger.info("depth of %s (%dx%d, %.2f-%.2f m) -> %s", image_path, depth.shape[1], depth.shape[0], depth.min(), depth.max(), out)


def _dashboard(args: argparse.Namespace) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from depthtune.dashboards.sweep import write_sweep_dashboard
    from depthtune.dashboards.sweep_record import load_sweep

    client = MlflowClient(args.tracking_uri or mlflow.get_tracking_uri())
    try:
        record = load_sweep(client, args.sweep_run_id)
    except MlflowException as exc:
        raise ValueError(f"no sweep run {args.sweep_run_id!r} at {client.tracking_uri}: {exc.message}") from None
    path = write_sweep_dashboard(record, args.out or f"sweep_dashboard_{args.sweep_run_id}.html")
    client.log_artifact(args.sweep_run_id, str(path))
    logger.info("wrote %s (%d trials) and logged it to run %s", path, len(record.trials), args.sweep_run_id)


def _compare(args: argparse.Namespace) -> None:
    import mlflow

    from depthtune.dashboards.compare import run_compare

    uri = args.tracking_uri or mlflow.get_tracking_uri()
    path, run_id = run_compare(uri, args.models or None, args.out, args.data)
    logger.info("comparison dashboard: %s (logged to MLflow run %s; look at it with: mlflow ui)", Path(path).resolve(), run_id)


def _demo(args: argparse.Namespace) -> None:
    from depthtune.demo import DemoConfig, run_demo

    values = read_yaml(args.config)
    values.update(_overrides(args, ("data", "splits_file", "profile")))
    run_demo(DemoConfig.from_dict(values, where=args.config))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    handlers = {"data": _synth, "train": _train, "demo": _demo, "tune": run_tune, "predict": _predict, "dashboard": _dashboard, "compare": _compare}
    try:
        handlers[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        logger.error("%s", exc)
        logger.debug("details", exc_info=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
