"""The one training loop for Net12, Net3 and FCRN: SGD + momentum with StepLR, evaluation on the
validation split after every epoch, a full checkpoint at each new best, the last epoch and every
``checkpoint_every``-th, and a callback that receives each epoch's metrics, its checkpoint
directory (None when it saved none) and the model. Bare runs and Ray Tune trials call ``train``
unchanged: a trial's callback forwards to ``tune.report``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from depthtune.checkpoints import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from depthtune.config import from_dict
from depthtune.data import EpochSampler, NYUArrays, NYUDepthV2, Splits, make_splits, read_nyu
from depthtune.losses import LossFn, loss_for_model
from depthtune.metrics import EIGEN_PROTOCOL, METRIC_NAMES, EvalProtocol, MetricAccumulator, higher_is_better, to_frame
from depthtune.models import MODEL_NAMES, build, to_depth

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, float], Path | None, nn.Module], None]
SELECTABLE_METRICS = ("val_loss",) + tuple(f"val_{name}" for name in METRIC_NAMES)
IMAGENET_ENCODERS = {"net12": "scale 1 (VGG-16)", "fcrn": "encoder (ResNet-50)"}
EPOCH_METRICS = ("epoch", "train_loss", *SELECTABLE_METRICS, "lr", "epoch_seconds", "images_per_second")


@dataclass
class TrainConfig:
    """Everything one training run needs; the tuned hyperparameters are lr, momentum,
    step_size and grad_weight. ``lr_multipliers`` maps parameter-name prefixes to multiples of
    ``lr`` (per-layer rates; ``parameter_groups``). ``encoder_weights`` is a local torchvision-format
    ImageNet file (VGG-16 for Net12's scale 1, ResNet-50 for FCRN's encoder) that a fresh model
    starts from; a resumed run takes its weights from the checkpoint. ``checkpoint_every`` spaces the
    checkpoints between new bests: a paper-size one takes seconds to write while the GPU waits
    (benchmarks/README.md, overhead)."""

    model: str = "net12"
    model_cfg: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    splits_file: str | None = None
    split_seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    step_size: int = 5
    gamma: float = 0.1
    grad_weight: float = 1.0
    seed: int = 0
    net12_checkpoint: str | None = None
    augment: bool = True
    num_workers: int = 0
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    select_metric: str = "val_abs_rel"
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    encoder_weights: str | None = None
    keep_checkpoints: int = 1
    checkpoint_every: int = 1

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "training config") -> "TrainConfig":
        config = from_dict(cls, values, where=where)
        config.validate()
        return config

    def validate(self) -> None:
        """Reject values that cannot train, naming the key, the value and what was expected."""
        problems = []
        if self.model not in MODEL_NAMES:
            problems.append(f"model={self.model!r}: expected one of {list(MODEL_NAMES)}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr={self.lr!r}: the learning rate must be a finite number > 0")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum={self.momentum!r}: expected 0 <= momentum < 1")
        if not (isinstance(self.step_size, int) and self.step_size >= 1):
            problems.append(f"step_size={self.step_size!r}: expected an integer >= 1 (epochs per lr step)")
        if not 0 < self.gamma <= 1:
            problems.append(f"gamma={self.gamma!r}: expected 0 < gamma <= 1")
        if self.grad_weight < 0:
            problems.append(f"grad_weight={self.grad_weight!r}: expected >= 0")
        if self.weight_decay < 0:
            problems.append(f"weight_decay={self.weight_decay!r}: expected >= 0")
        for key in ("epochs", "batch_size", "eval_batch_size", "keep_checkpoints", "checkpoint_every"):
            value = getattr(self, key)
            if not (isinstance(value, int) and value >= 1):
                problems.append(f"{key}={value!r}: expected an integer >= 1")
        if self.num_workers < 0:
            problems.append(f"num_workers={self.num_workers!r}: expected >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device={self.device!r}: expected 'auto', 'cpu' or 'cuda[:N]'")
        if self.select_metric not in SELECTABLE_METRICS:
            problems.append(f"select_metric={self.select_metric!r}: expected one of {list(SELECTABLE_METRICS)}")
        for group, multiplier in self.lr_multipliers.items():
            if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not multiplier > 0:
                problems.append(f"lr_multipliers[{group!r}]={multiplier!r}: expected a number > 0")
        if self.model == "net3" and self.encoder_weights:
            problems.append(
                "encoder_weights: a Net3 trains only scale 3 on a frozen Net12; "
                "give ImageNet weights to the Net12's run"
            )
        if self.model == "net3" and not self.net12_checkpoint:
            problems.append(
                "model='net3' needs net12_checkpoint: "
                "a trained Net12 to refine (a checkpoint path or models:/net12@ALIAS)"
            )
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a finished run leaves: per-epoch metrics and where the best and last checkpoints are."""

    history: list[dict[str, float]]
    best_epoch: int
    best_checkpoint: Path
    last_checkpoint: Path

    @property
    def best_metrics(self) -> dict[str, float]:
        return self.history[self.best_epoch]


def memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    """channels_last on CUDA when ``config.channels_last`` (bf16 training of Net12, Net3 and FCRN was
    1.64x, 1.27x and 0.95-1.19x as fast as contiguous on an H200; benchmarks/README.md section 5), else
    contiguous (the CPU kernels gain nothing consistent from it)."""
    return torch.channels_last if config.channels_last and device.type == "cuda" else torch.contiguous_format


def pick_device(name: str) -> torch.device:
    """'auto' -> first CUDA device when visible, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was requested but no CUDA device is visible")
    return device


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Lower is better for losses and errors, higher for the delta accuracies."""
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if higher_is_better(metric) else value < best


def load_net12(reference: str) -> nn.Module:
    """The Net12 a Net3 refines: a checkpoint path, or a registered model (``models:/net12@champion``,
    read from the current MLflow tracking URI)."""
    if reference.startswith("models:/"):
        from depthtune.loading import load_model

        module = load_model(reference).module
        if module.name != "net12":
            raise ValueError(f"net12_checkpoint: {reference} is a {module.name!r} model; expected a 'net12'")
        return module
    try:
        return model_from_checkpoint(reference, expected="net12")
    except CheckpointError as exc:
        raise ValueError(f"net12_checkpoint: {exc}") from exc


def build_model(config: TrainConfig, net12: nn.Module | None = None) -> nn.Module:
    """A fresh model for ``config``; Net3 wraps a frozen Net12: ``net12`` when given (a sweep passes
    the one it resolved once), else the one ``net12_checkpoint`` names."""
    if config.model == "net3":
        base = net12 if net12 is not None else load_net12(config.net12_checkpoint)
        return build("net3", net12=base, **config.model_cfg)
    if config.encoder_weights:
        return build(config.model, **config.model_cfg, encoder_weights=config.encoder_weights)
    return build(config.model, **config.model_cfg)


def data_splits(config: TrainConfig, scenes: Sequence[str]) -> Splits:
    """The train/val/test split a config asks for, of frames whose scenes ``scenes`` names."""
    return make_splits(
        scenes,
        splits_file=config.splits_file,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.split_seed,
    )


def evaluation_loader(
    arrays: NYUArrays,
    splits: Splits,
    split: str,
    model_name: str,
    model_cfg: dict,
    batch_size: int,
    num_workers: int = 0,
) -> DataLoader:
    """Un-augmented batches of a split with full-resolution ground truth for the metrics."""
    dataset = NYUDepthV2(arrays, split, model_name, train=False, model_cfg=model_cfg, splits=splits, full_depth=True)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator(),
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    loss_fn: LossFn | None = None,
    protocol: EvalProtocol = EIGEN_PROTOCOL,
    bf16: bool = True,
) -> dict[str, float]:
    """Loss (when given) and every depth metric of ``model`` over an evaluation loader."""
    model.eval()
    accumulator = MetricAccumulator(protocol)
    loss_total, seen = 0.0, 0
    for image, target, mask, full_depth in loader:
        image, target, mask = image.to(device), target.to(device), mask.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            output = model(image)
        output = output.float()
        depth = to_depth(output, model.predicts)
        # finite log-depths can still overflow to infinite depths (which resampling turns into NaN)
        if not bool((torch.isfinite(output) & torch.isfinite(depth)).all()):
            raise FloatingPointError("the model's predictions on the evaluation set are not finite: it diverged")
        if loss_fn is not None:
            loss_total += float(loss_fn(output, target, mask)) * image.shape[0]
            seen += image.shape[0]
        accumulator.update(to_frame(depth, output_region=model.output_region).cpu(), full_depth)
    metrics = accumulator.compute()
    if loss_fn is not None:
        metrics["loss"] = loss_total / seen
    return metrics


def _restore(model: nn.Module, optimizer, scheduler, state: dict, where: str) -> int:
    """Load a checkpoint's states into the live objects; returns the next epoch to run."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot resume from {where}: {exc}") from exc
    torch.set_rng_state(state["rng"]["torch"])
    if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["epoch"]) + 1


def parameter_groups(model: nn.Module, lr: float, multipliers: dict[str, float]) -> list[dict[str, Any]]:
    """The optimizer's parameter groups, one per named layer group of the model (``layer_groups``:
    Net12's scale1_convs, scale1_full, scale2_first, scale2_hidden, scale2_output; Net3's
    scale3_first, scale3_hidden, scale3_output; FCRN's encoder, decoder): each learns at ``lr``
    times its multiplier in ``multipliers`` (1 when not named), so the papers' per-layer rates are
    a base rate (the searched one) and fixed ratios. A name the model does not have is an error:
    it would silently do nothing."""
    layer_groups: dict[str, tuple[str, ...]] = model.layer_groups
    unknown = sorted(set(multipliers) - set(layer_groups))
    if unknown:
        raise ValueError(
            f"lr_multipliers: {unknown} name no layer group of {model.name}; its groups are {list(layer_groups)}"
        )
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    orphans = [
        name for name, _ in trainable if not any(name.startswith(prefixes) for prefixes in layer_groups.values())
    ]
    if orphans:
        raise ValueError(f"{model.name}: parameters {orphans[:5]} belong to no layer group; they would not be trained")
    groups = []
    for group, prefixes in layer_groups.items():
        params = [p for name, p in trainable if name.startswith(prefixes)]
        multiplier = float(multipliers.get(group, 1.0))
        groups.append({"params": params, "lr": lr * multiplier, "multiplier": multiplier, "name": group})
    return groups


def checkpoint_due(epoch: int, epochs: int, every: int, new_best: bool) -> bool:
    """Whether ``train`` checkpoints after ``epoch`` (0-based): at a new best (what a run or a trial
    keeps), at the last epoch, and every ``every`` epochs, which bounds what a resumed run retrains."""
    return new_best or epoch + 1 == epochs or (epoch + 1) % every == 0


def _prune_checkpoints(root: Path, keep: int, best_epoch: int) -> None:
    """Keep the newest ``keep`` epoch directories and the best one."""
    epochs = sorted(root.glob("epoch_*"))
    for directory in epochs[:-keep]:
        if directory.name != f"epoch_{best_epoch:03d}":
            shutil.rmtree(directory, ignore_errors=True)


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    image: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    amp: bool,
) -> torch.Tensor:
    """One SGD step on a batch already on the model's device: forward (bf16 autocast when ``amp``),
    the loss in fp32, backward, update. Returns the loss detached, without waiting for the device."""
    with torch.autocast(device_type=image.device.type, dtype=torch.bfloat16, enabled=amp):
        output = model(image)
    loss = loss_fn(output.float(), target, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train(
    config: TrainConfig,
    checkpoint_root: str | Path,
    *,
    arrays: NYUArrays | None = None,
    on_epoch: EpochCallback | None = None,
    resume_from: str | Path | None = None,
    net12: nn.Module | None = None,
) -> TrainResult:
    """Train ``config.model`` for ``config.epochs`` epochs, resuming exactly from a checkpoint
    when given; after each epoch, ``on_epoch(metrics, checkpoint_dir)`` is called. ``net12`` is
    the Net3's base when the caller already holds it."""
    config.validate()
    device = pick_device(config.device)
    if arrays is None:
        if not config.data:
            raise ValueError("training config has no data: set data to the path of an NYU-layout .mat file")
        arrays = read_nyu(config.data)
    splits = data_splits(config, arrays.scenes)
    resume_state = load_checkpoint(resume_from) if resume_from else None
    if resume_state is not None and resume_state.get("model_name") != config.model:
        raise CheckpointError(
            f"cannot resume a {config.model!r} run from {resume_from}: "
            f"it holds a {resume_state.get('model_name')!r} model"
        )

    torch.manual_seed(config.seed)
    if resume_state is not None:
        model = build(config.model, **resume_state["model_config"])
    else:
        model = build_model(config, net12)
        if config.model in IMAGENET_ENCODERS and not config.encoder_weights and model.width == 1.0:
            logger.warning(
                "%s starts its %s from random weights; the paper starts it from ImageNet: set encoder_weights "
                "(--encoder-weights) to a local torchvision file (docs/models.md)",
                config.model,
                IMAGENET_ENCODERS[config.model],
            )
    layout = memory_format(config, device)
    model.to(device, memory_format=layout)
    model_cfg = dict(model.config)
    loss_fn = loss_for_model(config.model, grad_weight=config.grad_weight)
    optimizer = torch.optim.SGD(
        parameter_groups(model, config.lr, config.lr_multipliers),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    start_epoch, history, best_epoch = 0, [], -1
    if resume_state is not None:
        start_epoch = _restore(model, optimizer, scheduler, resume_state, str(resume_from))
        history = list(resume_state["history"])
        best_epoch = int(resume_state["best_epoch"])
        logger.info("resumed %s from %s at epoch %d", config.model, resume_from, start_epoch)

    train_set = NYUDepthV2(
        arrays, "train", config.model, train=config.augment, model_cfg=model_cfg, splits=splits, seed=config.seed
    )
    val_loader = evaluation_loader(
        arrays, splits, "val", config.model, model_cfg, config.eval_batch_size, config.num_workers
    )
    root = Path(checkpoint_root)
    amp = config.bf16 and device.type == "cuda"
    # One loader for every epoch (workers start once). Loaders draw their worker seed from their own
    # generator, not the global RNG that dropout uses, so a run is the same with or without workers.
    sampler = EpochSampler(len(train_set), config.seed)
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0,
        generator=torch.Generator().manual_seed(config.seed),
    )

    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        lr = (
            optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["multiplier"]
        )  # the base rate (what is searched)
        model.train()
        started = time.perf_counter()
        loss_sum, images = torch.zeros((), device=device), 0
        for image, target, mask in loader:
            image = image.to(device, non_blocking=True, memory_format=layout)
            target, mask = target.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            loss = training_step(model, optimizer, loss_fn, image, target, mask, amp=amp)
            loss_sum += loss * image.shape[0]
            images += image.shape[0]
        train_loss = float(loss_sum) / images
        train_seconds = time.perf_counter() - started
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"{config.model} training loss became {train_loss} in epoch {epoch + 1} (lr={lr})")
        scheduler.step()
        try:
            val = evaluate(model, val_loader, device, loss_fn=loss_fn, bf16=config.bf16)
        except FloatingPointError as exc:
            raise FloatingPointError(f"{config.model}, epoch {epoch + 1} (lr={lr}): {exc}") from exc
        metrics = {
            "epoch": float(epoch),
            "train_loss": train_loss,
            "val_loss": val.pop("loss"),
            **{f"val_{name}": value for name, value in val.items()},
            "lr": lr,
            "epoch_seconds": time.perf_counter() - started,
            "images_per_second": images / train_seconds,
        }
        history.append(metrics)
        new_best = best_epoch < 0 or is_better(
            config.select_metric, metrics[config.select_metric], history[best_epoch][config.select_metric]
        )
        if new_best:
            best_epoch = epoch
        directory = (
            root / f"epoch_{epoch:03d}"
            if checkpoint_due(epoch, config.epochs, config.checkpoint_every, new_best)
            else None
        )
        if directory is not None:
            save_checkpoint(
                directory,
                {
                    "model_name": config.model,
                    "model_config": model_cfg,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    },
                    "history": history,
                    "best_epoch": best_epoch,
                    "train_config": config.as_dict(),
                },
            )
        logger.info(
            "%s epoch %d/%d  train_loss %.4f  val_loss %.4f  val_abs_rel %.3f  %.1f img/s",
            config.model,
            epoch + 1,
            config.epochs,
            metrics["train_loss"],
            metrics["val_loss"],
            metrics["val_abs_rel"],
            metrics["images_per_second"],
        )
        if on_epoch is not None:
            on_epoch(metrics, directory, model)
        _prune_checkpoints(root, config.keep_checkpoints, best_epoch)

    if not history:
        raise ValueError(f"nothing to train: the checkpoint already finished {start_epoch} of {config.epochs} epochs")
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        best_checkpoint=root / f"epoch_{best_epoch:03d}",
        last_checkpoint=root / f"epoch_{len(history) - 1:03d}",
    )
