"""`depthtune` command line: data, single training runs, the demo, sweeps, the registry's models,
dashboards, the tracking service and the Ray cluster file (`depthtune cluster`).

Exit codes: 0 done; 2 a failure with a known cause (bad input or config, a missing or unwritable
file, a full disk, an unreachable server), told in one line (-v adds the details); 130 stopped by
Ctrl-C or SIGTERM. Anything else is a bug and prints its traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from depthtune.config import read_yaml
from depthtune.configs import SHIPPED, shipped_config
from depthtune.names import MODEL_NAMES
from depthtune.sweep.errors import SweepInterrupted

logger = logging.getLogger("depthtune")

TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "step_size",
    "gamma",
    "grad_weight",
    "seed",
    "net12_checkpoint",
    "splits_file",
    "device",
    "num_workers",
    "encoder_weights",
)
VARIANT_HELP = (
    "layers and per-layer rates: paper (the papers' networks) or project (BatchNorm, ...; docs/models.md); "
    "default: the profile's"
)
ENCODER_WEIGHTS_HELP = "local torchvision ImageNet file: vgg16 state dict for net12, resnet50 for fcrn (docs/models.md)"


def _add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="generate synthetic rooms in the NYU Depth v2 labelled-file layout")
    synth.add_argument("--n", type=int, default=300, help="number of frames (default 300)")
    synth.add_argument(
        "--views-per-room",
        dest="views_per_room",
        type=int,
        default=3,
        help="frames of each room, one scene in the file's 'scenes' (default 3; NYU has about 3)",
    )
    synth.add_argument("--out", required=True, help="output .mat path")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=1, help="processes rendering in parallel")
    split = data.add_parser("split", help="the train/val/test split a run of FILE uses: frames and scenes per split")
    split.add_argument("file", help="nyu_depth_v2_labeled.mat or a file in its layout")
    split.add_argument(
        "--splits-file",
        dest="splits_file",
        help="NYU splits.mat (official test set; validation from its training scenes)",
    )
    split.add_argument(
        "--val-fraction",
        dest="val_fraction",
        type=float,
        help="share of frames for validation (default: the training config's)",
    )
    split.add_argument(
        "--test-fraction", dest="test_fraction", type=float, help="share of frames for test without --splits-file"
    )
    split.add_argument(
        "--seed", dest="split_seed", type=int, help="which scenes are drawn (the training config's split_seed)"
    )
    split.add_argument("--json", action="store_true", help="print indices and scene names of every split as JSON")


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="one training run (no sweep)")
    train.add_argument("--model", required=True, choices=MODEL_NAMES)
    train.add_argument("--data", required=True, help="nyu_depth_v2_labeled.mat or a file in its layout")
    train.add_argument("--config", help="YAML file of training settings (flags override it)")
    train.add_argument("--profile", default="auto", help="model size: auto (paper on GPU, cpu otherwise), paper, cpu")
    train.add_argument("--variant", help=VARIANT_HELP)
    train.add_argument("--out", help="run directory (default runs/<model>-<time>)")
    train.add_argument("--resume", help="checkpoint (file or epoch directory) to continue from")
    for flag in TRAIN_FLAGS:
        kind = {"epochs": int, "batch_size": int, "step_size": int, "seed": int, "num_workers": int}.get(flag)
        kind = kind or (str if flag in ("net12_checkpoint", "splits_file", "device", "encoder_weights") else float)
        train.add_argument(
            "--" + flag.replace("_", "-"),
            dest=flag,
            type=kind,
            help=ENCODER_WEIGHTS_HELP if flag == "encoder_weights" else None,
        )


def _add_demo_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="synthetic data (or --data) -> Net12 -> Net3 -> results table")
    demo.add_argument("--config", help="demo YAML (default: the shipped one, `depthtune config demo` prints it)")
    demo.add_argument("--data", help="use this NYU-layout file instead of synthetic scenes")
    demo.add_argument("--splits-file", dest="splits_file", help="NYU splits.mat for the standard Eigen split")
    demo.add_argument("--profile", help="auto, paper or cpu")
    demo.add_argument("--variant", help=VARIANT_HELP)


SWEEP_FLAGS = (
    "data",
    "splits_file",
    "num_samples",
    "max_concurrent",
    "gpus_per_trial",
    "tracking_uri",
    "storage_path",
    "name",
    "net12_model",
    "ray_address",
    "searcher",
    "scheduler",
    "variant",
)
# Environment a cluster's nodes set for every sweep: above the YAML, below the flags.
SWEEP_ENVIRONMENT = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "storage_path": "DEPTHTUNE_STORAGE_PATH",
    "ray_address": "RAY_ADDRESS",
}


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `depthtune tune` (experiments/tune_*.py call it with their model name)."""
    parser.add_argument(
        "--config", help="sweep YAML (default: the shipped <model>.yaml, `depthtune config <model>` prints it)"
    )
    parser.add_argument("--data", help="nyu_depth_v2_labeled.mat or a file in its layout (default: synthetic)")
    parser.add_argument("--splits-file", dest="splits_file", help="NYU splits.mat for the standard Eigen split")
    parser.add_argument("--num-samples", dest="num_samples", type=int, help="trials to run")
    parser.add_argument("--max-concurrent", dest="max_concurrent", type=int, help="trials at once")
    parser.add_argument(
        "--gpus-per-trial", dest="gpus_per_trial", type=float, help="GPUs per trial (fractions allowed)"
    )
    parser.add_argument("--epochs", type=int, help="epochs per trial (ASHA's budget)")
    parser.add_argument("--searcher", help="tpe (default) or random: the brute-force baseline")
    parser.add_argument("--scheduler", help="asha (default) or fifo: every trial trains all its epochs")
    parser.add_argument(
        "--resume", action="store_true", help="continue a sweep whose driver died (--name, or the latest)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,  # also `depthtune -v tune ...`: the subcommand must not reset it
        help="debug logging, and Ray's, MLflow's and Optuna's own console output (result boxes, run links)",
    )
    parser.add_argument(
        "--extend",
        metavar="SWEEP",
        help="add --num-samples trials to the finished sweep SWEEP: its settings, run and Optuna study",
    )
    parser.add_argument(
        "--warm-start",
        dest="warm_start",
        metavar="SWEEP",
        help="a new sweep whose TPE starts from the finished trials of the earlier sweep SWEEP",
    )
    parser.add_argument(
        "--tracking-uri",
        dest="tracking_uri",
        help="MLflow server, e.g. http://head:5000 (default: MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    parser.add_argument(
        "--storage-path",
        dest="storage_path",
        help="Tune storage, shared by all nodes on a cluster (default: DEPTHTUNE_STORAGE_PATH or the YAML's)",
    )
    parser.add_argument(
        "--address",
        dest="ray_address",
        help="Ray cluster to run on, e.g. 10.0.0.5:6379 (default: RAY_ADDRESS, else a local Ray)",
    )
    parser.add_argument(
        "--name", help="sweep name (default <model>-<date>-<time>; --resume without it takes the latest)"
    )
    parser.add_argument("--profile", default="auto", help="auto (paper on GPU, cpu otherwise), paper, cpu")
    parser.add_argument("--variant", help=VARIANT_HELP)
    parser.add_argument("--encoder-weights", dest="encoder_weights", help=ENCODER_WEIGHTS_HELP)
    parser.add_argument(
        "--net12-model",
        dest="net12_model",
        help="net3 only: the Net12 to refine (default models:/net12@champion; or NAME/VERSION, a checkpoint)",
    )


def _add_tune_parser(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser("tune", help="hyperparameter sweep on Ray Tune, tracked in MLflow")
    tune.add_argument("model", choices=MODEL_NAMES)
    add_tune_arguments(tune)


def _add_config_parser(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser("config", help="print a shipped config, to copy and edit (then pass it as --config)")
    config.add_argument("name", choices=SHIPPED)


def _add_predict_parser(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="depth map of an image with a registered model")
    predict.add_argument("image", help="image file (PNG/JPEG): 8-bit RGB, RGBA or greyscale, or 16-bit greyscale")
    predict.add_argument("--model", required=True, help="registered model: NAME@ALIAS, NAME/VERSION or models:/...")
    predict.add_argument("--out", required=True, help="output: .npy (metres, float32) or .png (16-bit millimetres)")
    predict.add_argument(
        "--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)"
    )


def _add_dashboard_parser(commands: argparse._SubParsersAction) -> None:
    dashboard = commands.add_parser("dashboard", help="(re)write a sweep's plotly dashboard from MLflow")
    dashboard.add_argument("sweep_run_id", help="the sweep's parent run id (printed at the end of the sweep)")
    dashboard.add_argument("--out", help="HTML file (default sweep_dashboard_<run id>.html here)")
    dashboard.add_argument(
        "--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)"
    )


def _add_compare_parser(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser("compare", help="plotly dashboard comparing registered models on the same test split")
    compare.add_argument(
        "models", nargs="*", help="NAME@ALIAS, NAME/VERSION or models:/... (default: the champions that exist)"
    )
    compare.add_argument("--out", help="HTML file (default comparison_<date>-<time>.html here)")
    compare.add_argument(
        "--data", help="the NYU-layout file the models were evaluated on (default: the one they were trained on)"
    )
    compare.add_argument(
        "--protocol",
        default="eigen",
        choices=("eigen", "laina"),
        help="metrics: eigen (crop, 10 m cap, per-image means; default) or laina (full frame, pooled over pixels, "
        "as Laina et al.'s released code); the papers' rows shown are those under the same protocol",
    )
    compare.add_argument(
        "--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)"
    )


def _add_serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="the shared MLflow tracking service of a cluster: start, stop, status")
    serve_commands = serve.add_subparsers(dest="serve_command", required=True)
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir",
        dest="state_dir",
        help="pid file, log, auth config (default: $DEPTHTUNE_STATE_DIR or ~/.depthtune/tracking)",
    )
    start = serve_commands.add_parser(
        "start",
        parents=[state],
        help=(
            "start mlflow server (detached) with basic-auth; "
            "admin credentials from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        ),
    )
    start.add_argument(
        "--backend-store-uri",
        dest="backend_store_uri",
        help=(
            "e.g. postgresql://mlflow@db:5432/mlflow (default: $DEPTHTUNE_BACKEND_STORE_URI; "
            "a missing password comes from $DEPTHTUNE_DB_PASSWORD)"
        ),
    )
    start.add_argument(
        "--artifacts-destination",
        dest="artifacts_destination",
        help=(
            "shared folder or s3://bucket/path, proxied through the server (default: $DEPTHTUNE_ARTIFACTS_DESTINATION)"
        ),
    )
    start.add_argument(
        "--host",
        help="address to bind (default: $DEPTHTUNE_TRACKING_HOST or 127.0.0.1; on a cluster the head's private IP)",
    )
    start.add_argument("--port", type=port_number, help="default: $DEPTHTUNE_TRACKING_PORT or 5000")
    start.add_argument(
        "--no-auth", dest="no_auth", action="store_true", help="no basic-auth (only for a server nobody else can reach)"
    )
    start.add_argument(
        "--auth-database-uri",
        dest="auth_database_uri",
        help=(
            "users and permissions (default: $DEPTHTUNE_AUTH_DATABASE_URI, "
            "else database mlflow_auth on the backend's PostgreSQL, else SQLite in the state dir)"
        ),
    )
    start.add_argument(
        "--default-permission",
        dest="default_permission",
        default="READ",
        choices=("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"),
        help="what users get on experiments they did not create (default READ)",
    )
    start.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    start.add_argument(
        "--allowed-hosts",
        dest="allowed_hosts",
        help="Host headers to accept besides localhost and private IPs (e.g. head.example.org)",
    )
    start.add_argument("--foreground", action="store_true", help="serve until Ctrl-C / SIGTERM instead of detaching")
    serve_commands.add_parser(
        "stop", parents=[state], help="stop the server started from --state-dir (its whole process group)"
    )
    serve_commands.add_parser("status", parents=[state], help="is it running and answering? (exit 3 if not)")
    postgres = serve_commands.add_parser(
        "postgres", help="a private PostgreSQL for a single head node (password from $DEPTHTUNE_DB_PASSWORD)"
    )
    postgres_commands = postgres.add_subparsers(dest="postgres_command", required=True)
    postgres_start = postgres_commands.add_parser(
        "start", help="initdb on first use, start detached on 127.0.0.1, create the databases"
    )
    postgres_start.add_argument("--dir", required=True, help="cluster directory (data/, postgres.log)")
    postgres_start.add_argument("--port", type=port_number, default=5432)
    postgres_start.add_argument("--user", default="mlflow", help="role (default mlflow)")
    postgres_start.add_argument(
        "--database",
        dest="databases",
        action="append",
        help="database to create (repeatable; default mlflow and mlflow_auth)",
    )
    postgres_stop = postgres_commands.add_parser("stop", help="pg_ctl stop -m fast on --dir")
    postgres_stop.add_argument("--dir", required=True)


def _add_cluster_parser(commands: argparse._SubParsersAction) -> None:
    cluster = commands.add_parser(
        "cluster", help="check a ray up file against the sweeps; its local fake_multinode twin"
    )
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    check = cluster_commands.add_parser(
        "check", help="can every sweep's trial be placed on a node type of FILE? (exit 2 naming the resources if not)"
    )
    check.add_argument("file", nargs="?", default="ray_cluster.yaml", help="cluster file (default ray_cluster.yaml)")
    check.add_argument(
        "--config", action="append", help="sweep YAML to check (repeatable; default: the shipped net12, net3, fcrn)"
    )
    check.add_argument("--profile", default="paper", help="profile whose per-trial resources count (default paper)")
    check.add_argument(
        "--gpus-per-trial", dest="gpus_per_trial", type=float, help="as `depthtune tune --gpus-per-trial`"
    )
    fake = cluster_commands.add_parser(
        "fake-config",
        help="print FILE's autoscaling as a fake_multinode config for RAY_FAKE_CLUSTER=1 ray start --head",
    )
    fake.add_argument("file", nargs="?", default="ray_cluster.yaml", help="cluster file (default ray_cluster.yaml)")
    fake.add_argument("--gcs-address", dest="gcs_address", required=True, help="the local head's address, host:port")
    fake.add_argument(
        "--idle-timeout-minutes", dest="idle_timeout_minutes", type=float, help="shorter idle timeout (default FILE's)"
    )


def port_number(text: str) -> int:
    """A TCP port, 1-65535 (argparse turns the ValueError into a usage error)."""
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(text)
    return port


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="depthtune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    root.add_argument("--version", action="version", version=f"depthtune {metadata.version('depthtune')}")
    commands = root.add_subparsers(dest="command", required=True)
    _add_data_parser(commands)
    _add_train_parser(commands)
    _add_demo_parser(commands)
    _add_tune_parser(commands)
    _add_config_parser(commands)
    _add_predict_parser(commands)
    _add_dashboard_parser(commands)
    _add_compare_parser(commands)
    _add_serve_parser(commands)
    _add_cluster_parser(commands)
    return root


def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _data(args: argparse.Namespace) -> None:
    if args.data_command == "synth":
        _synth(args)
    else:
        _split(args)


def _split(args: argparse.Namespace) -> None:
    import json

    from depthtune.data import read_nyu_scenes
    from depthtune.evaluation import data_splits
    from depthtune.train_config import TrainConfig

    scenes = read_nyu_scenes(args.file)
    config = TrainConfig.from_dict(
        _overrides(args, ("splits_file", "val_fraction", "test_fraction", "split_seed")), where="command line"
    )
    described = data_splits(config, scenes).describe(scenes)
    if args.json:
        print(json.dumps(described))
        return
    print(f"{args.file}: {len(scenes)} frames of {len(set(scenes))} scenes, split {described['source']}")
    for name in ("train", "val", "test"):
        print(f"  {name:5s} {described[name]['frames']:6d} frames {described[name]['scenes']:5d} scenes")


def _synth(args: argparse.Namespace) -> None:
    from depthtune.data import generate_dataset

    path = generate_dataset(args.out, args.n, views_per_room=args.views_per_room, seed=args.seed, workers=args.workers)
    logger.info("wrote %d synthetic frames (%d views of each room) to %s", args.n, args.views_per_room, path)


def _train(args: argparse.Namespace) -> None:
    from depthtune.profiles import model_setup
    from depthtune.train_config import TrainConfig

    setup = model_setup(args.profile, args.model, args.variant)
    values: dict[str, Any] = {"model": args.model, "model_cfg": setup.model_cfg, "lr_multipliers": setup.lr_multipliers}
    if args.config:
        values.update(read_yaml(args.config))
    values.update({"data": args.data, **_overrides(args, TRAIN_FLAGS)})
    config = TrainConfig.from_dict(values, where=args.config or "command line")
    # Imported once the config is valid: torch and MLflow take seconds, a bad flag's answer should not.
    from depthtune.runner import run_training

    run_dir = Path(args.out or Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    outcome = run_training(config, run_dir, resume_from=args.resume)
    logger.info(
        "best epoch %d: test abs_rel %.4f, rmse %.4f; checkpoint %s; metrics %s",
        outcome.result.best_epoch + 1,
        outcome.test_metrics["abs_rel"],
        outcome.test_metrics["rmse"],
        outcome.result.best_checkpoint,
        run_dir / "metrics.jsonl",
    )


def run_tune(args: argparse.Namespace) -> None:
    """Sweep ``args.model`` with the YAML config and flag overrides; print the summary."""
    from depthtune.profiles import resolve_profile
    from depthtune.sweep.config import SweepConfig
    from depthtune.sweep.driver import run_sweep
    from depthtune.sweep.summary import summary_text

    path = Path(args.config) if args.config else shipped_config(args.model)
    values = read_yaml(path)
    if values.get("model", args.model) != args.model:
        raise ValueError(f"{path} configures model {values['model']!r}, not {args.model!r}")
    overrides = {key: os.environ[name] for key, name in SWEEP_ENVIRONMENT.items() if os.environ.get(name)}
    overrides.update(_overrides(args, SWEEP_FLAGS))
    overrides["train"] = _overrides(args, ("epochs", "encoder_weights"))
    profile = resolve_profile(args.profile, cluster=bool(overrides.get("ray_address")))
    config = SweepConfig.from_dict(values, profile=profile, where=str(path), overrides=overrides)
    if args.extend and (args.resume or args.warm_start or args.name or args.num_samples is None):
        raise ValueError("--extend SWEEP takes --num-samples N, and neither --resume, --warm-start nor --name")
    if args.warm_start and args.resume:
        raise ValueError("--warm-start starts a new sweep; it does not combine with --resume")
    outcome = run_sweep(
        config, resume=args.resume, extend=args.extend, warm_start=args.warm_start, verbose=args.verbose
    )
    logger.info("\n%s", summary_text(outcome, config))


def _predict(args: argparse.Namespace) -> None:
    import numpy as np
    from PIL import Image

    from depthtune.images import check_against_input, read_rgb
    from depthtune.tracking.loading import load_model

    out = Path(args.out)
    if out.suffix not in (".npy", ".png"):
        raise ValueError(f"--out {out}: expected a .npy or .png file name")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist")
    rgb = read_rgb(args.image)
    model = load_model(args.model, tracking_uri=args.tracking_uri)
    check_against_input(rgb, model.input_size, args.image)
    depth = model.predict(rgb)
    if out.suffix == ".npy":
        np.save(out, depth.astype(np.float32))
    else:
        Image.fromarray(np.clip(depth * 1000.0, 0, 65535).astype(np.uint16)).save(out)
    logger.info(
        "depth of %s (%dx%d, %.2f-%.2f m) -> %s",
        args.image,
        depth.shape[1],
        depth.shape[0],
        depth.min(),
        depth.max(),
        out,
    )


def _dashboard(args: argparse.Namespace) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from depthtune.dashboards.sweep_page import write_sweep_dashboard
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

    from depthtune.dashboards.comparison_page import run_compare

    uri = args.tracking_uri or mlflow.get_tracking_uri()
    path, run_id = run_compare(uri, args.models or None, args.out, args.data, args.protocol)
    logger.info(
        "comparison dashboard: %s (logged to MLflow run %s; look at it with: mlflow ui)", Path(path).resolve(), run_id
    )


def _print_config(args: argparse.Namespace) -> None:
    sys.stdout.write(shipped_config(args.name).read_text())


def _demo(args: argparse.Namespace) -> None:
    from depthtune.demo import DemoConfig, run_demo

    path = Path(args.config) if args.config else shipped_config("demo")
    values = read_yaml(path)
    values.update(_overrides(args, ("data", "splits_file", "profile", "variant")))
    run_demo(DemoConfig.from_dict(values, where=str(path)))


def _cluster(args: argparse.Namespace) -> None:
    import yaml

    from depthtune.cluster_file import ClusterFile, check_trials_fit, fake_multinode_config, trial_resources
    from depthtune.sweep.config import SweepConfig

    cluster = ClusterFile.read(args.file)
    if args.cluster_command == "fake-config":
        config = fake_multinode_config(cluster, args.gcs_address, args.idle_timeout_minutes)
        sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
        return
    overrides = _overrides(args, ("gpus_per_trial",))
    for path in [Path(p) for p in args.config or ()] or [shipped_config(m) for m in MODEL_NAMES]:
        config = SweepConfig.from_dict(read_yaml(path), args.profile, where=str(path), overrides=overrides)
        asked = trial_resources(config)
        fits = check_trials_fit(cluster, asked, where=f"{path} (profile {args.profile})")
        wanted = ", ".join(f"{key} {value:g}" for key, value in asked.items())
        print(f"{path.name}: a trial asks {wanted}; per node: " + ", ".join(f"{n} {c}" for n, c in fits.items()))


def _serve(args: argparse.Namespace) -> None:
    from depthtune.serve import service

    try:
        if args.serve_command == "start":
            config = service.service_config(
                args.backend_store_uri,
                args.artifacts_destination,
                args.state_dir,
                args.host,
                args.port,
                auth=not args.no_auth,
                auth_database_uri=args.auth_database_uri,
                default_permission=args.default_permission,
                workers=args.workers,
                allowed_hosts=args.allowed_hosts,
            )
            status = service.start_service(config, foreground=args.foreground)
            if not args.foreground:
                print(service.started_message(status), flush=True)
        elif args.serve_command == "stop":
            state_dir = args.state_dir or service.default_state_dir()
            print("stopped" if service.stop_service(state_dir) else f"no mlflow server was running from {state_dir}")
        elif args.serve_command == "status":
            status = service.service_status(args.state_dir or service.default_state_dir())
            print(status.describe())
            if not (status.running and status.healthy):
                raise SystemExit(3)
        elif args.postgres_command == "start":
            postgres = service.start_postgres(
                args.dir, args.port, args.user, tuple(args.databases or ("mlflow", "mlflow_auth"))
            )
            print(
                f"PostgreSQL running on 127.0.0.1:{postgres.port} "
                f"(pid {postgres.pid}, data {postgres.data_dir}, log {postgres.log_path})\n"
                "  backend store: "
                f"DEPTHTUNE_BACKEND_STORE_URI=postgresql://{postgres.user}@127.0.0.1:{postgres.port}/mlflow "
                "with DEPTHTUNE_DB_PASSWORD set\n"
                f"  stop it: depthtune serve postgres stop --dir {args.dir}"
            )
        else:
            print("stopped" if service.stop_postgres(args.dir) else f"no PostgreSQL was running in {args.dir}")
    except (RuntimeError, TimeoutError) as exc:
        logger.error("%s", exc)
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    handlers = {
        "data": _data,
        "train": _train,
        "demo": _demo,
        "tune": run_tune,
        "config": _print_config,
        "predict": _predict,
        "dashboard": _dashboard,
        "compare": _compare,
        "serve": _serve,
        "cluster": _cluster,
    }
    try:
        handlers[args.command](args)
    except SweepInterrupted as exc:
        logger.error("%s", resume_hint(exc, args))
        return 130
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    except (ValueError, OSError) as exc:  # the expected failures: bad input, files, disks, servers
        logger.error("%s", exc)
        logger.debug("details", exc_info=True)
        return 2
    return 0


def resume_hint(interrupted: SweepInterrupted, args: argparse.Namespace) -> str:
    """What an interrupted sweep left, and the command that continues it, as it can be run."""
    command = [
        "depthtune",
        "tune",
        args.model,
        "--resume",
        "--name",
        interrupted.name,
        "--storage-path",
        str(interrupted.storage),
    ]
    command += [f"--config {args.config}"] if args.config else []
    return f"{interrupted}. Continue it with: {' '.join(command)}"


if __name__ == "__main__":
    sys.exit(main())
