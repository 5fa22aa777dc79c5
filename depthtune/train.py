"""The one training loop for Net12, Net3 and FCRN: SGD + momentum with StepLR, evaluation on the
validation split after every epoch, a full checkpoint at each new best, the last epoch and every
``checkpoint_every``-th (written in the background, depthtune.checkpoint_pipeline), and a callback
that receives each epoch's metrics and the model, and may return a step that runs once the epoch's
checkpoint is written. Bare runs and Ray Tune trials call ``train`` unchanged: a trial's step reports
to Tune. It takes models, never references to a registry: whoever asks for a Net3 resolves its
Net12 first.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from depthtune.checkpoint_pipeline import CheckpointPipeline, Publish, checkpoint_directory
from depthtune.checkpoints import BASE_KEY, CheckpointError, build_on_base, load_checkpoint, load_weights, without_base
from depthtune.data import EpochSampler, NYUArrays, NYUDepthV2, read_nyu
from depthtune.data.device_batches import DeviceBatches, fits_on_device
from depthtune.evaluation import data_splits, evaluate, evaluation_loader, pick_device
from depthtune.losses import LossFn, loss_for_model
from depthtune.models import build
from depthtune.names import improves
from depthtune.train_config import TrainConfig

logger = logging.getLogger(__name__)

# Called on the training thread after each epoch with its metrics and the live model; what it returns
# runs in the background, in epoch order, once the epoch's checkpoint is written (None: none saved).
EpochCallback = Callable[[dict[str, float], nn.Module], Publish | None]
IMAGENET_ENCODERS = {"net12": "scale 1 (VGG-16)", "fcrn": "encoder (ResNet-50)"}
Batch = TypeVar("Batch")


class TrainingStopped(Exception):
    """Training ended between two batches because its caller set the ``stop`` event."""


def _until_stopped(batches: Iterable[Batch], stop: threading.Event | None) -> Iterator[Batch]:
    """The batches, checking ``stop`` before each: a stop ends the run between two batches, never
    inside torch's code."""
    for batch in batches:
        if stop is not None and stop.is_set():
            raise TrainingStopped("training was asked to stop")
        yield batch


@dataclass
class TrainResult:
    """What a finished run leaves: per-epoch metrics and where the best and last checkpoints are."""

    history: list[dict[str, float]]
    best_epoch: int
    best_checkpoint: Path
    last_checkpoint: Path


@dataclass
class _Progress:
    """Where a run stands: the next epoch, every epoch's metrics so far and the best epoch (-1: none yet)."""

    start_epoch: int = 0
    history: list[dict[str, float]] | None = None
    best_epoch: int = -1


def memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    """channels_last on CUDA when ``config.channels_last`` (faster bf16 training there; benchmarks/README.md
    section 5), else contiguous (the CPU kernels gain nothing consistent from it)."""
    return torch.channels_last if config.channels_last and device.type == "cuda" else torch.contiguous_format


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` beats ``best`` in ``metric``'s direction; anything beats a missing or NaN best."""
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return improves(metric, value, best)


def build_model(config: TrainConfig, net12: nn.Module | None = None) -> nn.Module:
    """A fresh model for ``config``; a Net3 wraps ``net12``, the frozen Net12 its caller resolved."""
    if config.model == "net3":
        if net12 is None:
            raise ValueError(
                "a Net3 trains on a Net12 module: resolve net12_checkpoint first "
                "(depthtune.tracking.lineage.resolve_base_model)"
            )
        return build("net3", net12=net12, **config.model_cfg)
    if config.encoder_weights:
        return build(config.model, **config.model_cfg, encoder_weights=config.encoder_weights)
    return build(config.model, **config.model_cfg)


def _restore(model: nn.Module, optimizer, scheduler, state: dict, where: str) -> int:
    """Load a checkpoint's states into the live objects (a Net3's scale-3 weights into the Net3
    ``_starting_model`` built on its Net12); returns the next epoch to run."""
    try:
        load_weights(model, state["model"], state.get(BASE_KEY))
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


def _starting_model(config: TrainConfig, resume_state: dict | None, net12: nn.Module | None) -> nn.Module:
    """The architecture a resumed run recorded (a Net3 on ``net12``, refused unless its checkpoint
    refines the Net12 ``config.net12_checkpoint`` names), or a fresh model (warning when the paper
    starts it from ImageNet)."""
    if resume_state is not None:
        recorded = resume_state.get(BASE_KEY)
        if recorded is not None and recorded != config.net12_checkpoint:
            raise CheckpointError(
                f"cannot resume this Net3: its checkpoint refines the Net12 {recorded!r}, "
                f"but net12_checkpoint is {config.net12_checkpoint!r}"
            )
        return build_on_base(config.model, resume_state["model_config"], recorded, net12, "the checkpoint to resume")
    model = build_model(config, net12)
    if config.model in IMAGENET_ENCODERS and not config.encoder_weights and model.width == 1.0:
        logger.warning(
            "%s starts its %s from random weights; the paper starts it from ImageNet: set encoder_weights "
            "(--encoder-weights) to a local torchvision file (docs/models.md)",
            config.model,
            IMAGENET_ENCODERS[config.model],
        )
    return model


def _train_batches(
    config: TrainConfig, train_set: NYUDepthV2, device: torch.device, layout: torch.memory_format
) -> tuple[DataLoader | DeviceBatches, EpochSampler | DeviceBatches]:
    """The training batches and what selects their epoch: on a GPU with room for the split
    (``device_data_share``), the split kept and augmented there, the same batches as the CPU loader's
    without its workers (which cannot keep a fast GPU busy, benchmarks/README.md section 2); otherwise
    one loader for every epoch (workers start once). Loaders draw their worker seed from their own
    generator, not the global RNG that dropout uses, so a run is the same with or without workers."""
    if config.augment and fits_on_device(train_set, device, config.device_data_share):
        batches = DeviceBatches(train_set, config.batch_size, config.seed, device, layout)
        return batches, batches
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
    return loader, sampler


@dataclass
class _Loop:
    """The objects one run trains with: the model on its device and memory layout, the loss, the
    optimizer and its schedule, and the training and validation loaders."""

    config: TrainConfig
    model: nn.Module
    device: torch.device
    layout: torch.memory_format
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR
    loader: DataLoader | DeviceBatches
    sampler: EpochSampler | DeviceBatches
    val_loader: DataLoader
    stop: threading.Event | None

    @classmethod
    def build(
        cls,
        config: TrainConfig,
        model: nn.Module,
        arrays: NYUArrays,
        device: torch.device,
        stop: threading.Event | None,
    ) -> "_Loop":
        layout = memory_format(config, device)
        model.to(device, memory_format=layout)
        model_cfg = dict(model.config)
        optimizer = torch.optim.SGD(
            parameter_groups(model, config.lr, config.lr_multipliers),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        splits = data_splits(config, arrays.scenes)
        train_set = NYUDepthV2(
            arrays, "train", config.model, train=config.augment, model_cfg=model_cfg, splits=splits, seed=config.seed
        )
        loader, sampler = _train_batches(config, train_set, device, layout)
        val_loader = evaluation_loader(
            arrays, splits, "val", config.model, model_cfg, config.eval_batch_size, config.num_workers
        )
        loss_fn = loss_for_model(config.model, grad_weight=config.grad_weight)
        return cls(config, model, device, layout, loss_fn, optimizer, scheduler, loader, sampler, val_loader, stop)

    def _train_pass(self, amp: bool) -> tuple[float, int, float]:
        """One pass over the training set: mean loss, images seen and seconds spent."""
        self.model.train()
        started = time.perf_counter()
        loss_sum, images = torch.zeros((), device=self.device), 0
        for image, target, mask in _until_stopped(self.loader, self.stop):
            image = image.to(self.device, non_blocking=True, memory_format=self.layout)
            target, mask = target.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
            loss = training_step(self.model, self.optimizer, self.loss_fn, image, target, mask, amp=amp)
            loss_sum += loss * image.shape[0]
            images += image.shape[0]
        return float(loss_sum) / images, images, time.perf_counter() - started

    def epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch, step the schedule and validate; the epoch's metrics (on CUDA with the peak
        GPU memory so far, GiB). Raises FloatingPointError, naming the epoch and rate, when the loss or
        the predictions diverge."""
        config, optimizer = self.config, self.optimizer
        self.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["multiplier"]  # the base (searched) rate
        started = time.perf_counter()
        amp = config.bf16 and self.device.type == "cuda"
        train_loss, images, train_seconds = self._train_pass(amp)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"{config.model} training loss became {train_loss} in epoch {epoch + 1} (lr={lr})")
        self.scheduler.step()
        try:
            val = evaluate(
                self.model,
                _until_stopped(self.val_loader, self.stop),
                self.device,
                loss_fn=self.loss_fn,
                bf16=config.bf16,
            )
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
        if self.device.type == "cuda":
            metrics["gpu_peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return metrics


def _checkpoint_state(loop: _Loop, epoch: int, progress: _Progress) -> dict[str, Any]:
    """Everything an exact resume needs: weights, optimizer and scheduler, RNG states and the history.
    A Net3's weights are its scale 3's: its frozen Net12 is stored as the reference it was resolved from."""
    config, model, optimizer, scheduler = loop.config, loop.model, loop.optimizer, loop.scheduler
    base = {BASE_KEY: config.net12_checkpoint} if config.model == "net3" else {}
    return {
        "model_name": config.model,
        "model_config": dict(model.config),
        "model": without_base(model.state_dict()) if base else model.state_dict(),
        **base,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        "history": progress.history,
        "best_epoch": progress.best_epoch,
        "train_config": config.as_dict(),
    }


def _resume_state(config: TrainConfig, resume_from: str | Path | None) -> dict | None:
    """The checkpoint to resume from, refused when it holds another model."""
    if not resume_from:
        return None
    state = load_checkpoint(resume_from)
    if state.get("model_name") != config.model:
        raise CheckpointError(
            f"cannot resume a {config.model!r} run from {resume_from}: it holds a {state.get('model_name')!r} model"
        )
    return state


def _run_epoch(
    loop: _Loop, epoch: int, progress: _Progress, pipeline: CheckpointPipeline, on_epoch: EpochCallback | None
) -> None:
    """Train and validate one epoch, snapshot its checkpoint when one is due, call ``on_epoch`` and
    queue what it returns to run once the checkpoint is written."""
    config = loop.config
    metrics = loop.epoch(epoch)
    progress.history.append(metrics)
    best = progress.history[progress.best_epoch] if progress.best_epoch >= 0 else None
    metric = config.select_metric
    new_best = best is None or is_better(metric, metrics[metric], best[metric])
    if new_best:
        progress.best_epoch = epoch
    directory = None
    if checkpoint_due(epoch, config.epochs, config.checkpoint_every, new_best):
        directory = pipeline.save(epoch, _checkpoint_state(loop, epoch, progress))
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
    publish = on_epoch(metrics, loop.model) if on_epoch is not None else None
    pipeline.publish(directory, publish, progress.best_epoch)


def _close_after_failure(pipeline: CheckpointPipeline, stopped: bool) -> None:
    """Finish the checkpoints and reports queued before training failed or was stopped; a background
    failure is logged, so that the training's own error is the one raised. A stopped run's reporting
    step may have been ended too (Tune's stop), which is no news."""
    try:
        pipeline.close()
    except BaseException as exc:  # noqa: BLE001 - the training's error takes precedence
        if stopped:
            logger.debug("the stopped run's checkpoint thread ended with %r", exc)
        else:
            logger.warning("while stopping after a training error, the checkpoint thread failed too: %r", exc)


def train(
    config: TrainConfig,
    checkpoint_root: str | Path,
    *,
    arrays: NYUArrays | None = None,
    on_epoch: EpochCallback | None = None,
    resume_from: str | Path | None = None,
    net12: nn.Module | None = None,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train ``config.model`` for ``config.epochs`` epochs, resuming exactly from a checkpoint when
    given. After each epoch ``on_epoch(metrics, model)`` is called on the training thread; a step it
    returns is called with the epoch's checkpoint directory (None when it saved none) in the
    background once that checkpoint is written. ``net12`` is the frozen base of a fresh Net3. Setting
    ``stop`` ends the run at the next batch with TrainingStopped, after the queued checkpoints."""
    config.validate()
    device = pick_device(config.device)
    if arrays is None:
        if not config.data:
            raise ValueError("training config has no data: set data to the path of an NYU-layout .mat file")
        arrays = read_nyu(config.data)
    resume_state = _resume_state(config, resume_from)
    torch.manual_seed(config.seed)
    loop = _Loop.build(config, _starting_model(config, resume_state, net12), arrays, device, stop)
    progress = _Progress(history=[])
    if resume_state is not None:
        start = _restore(loop.model, loop.optimizer, loop.scheduler, resume_state, str(resume_from))
        progress = _Progress(start, list(resume_state["history"]), int(resume_state["best_epoch"]))
        logger.info("resumed %s from %s at epoch %d", config.model, resume_from, start)
    pipeline = CheckpointPipeline(Path(checkpoint_root), config.keep_checkpoints)
    try:
        for epoch in range(progress.start_epoch, config.epochs):
            _run_epoch(loop, epoch, progress, pipeline, on_epoch)
    except BaseException as exc:
        _close_after_failure(pipeline, stopped=isinstance(exc, TrainingStopped))
        raise
    pipeline.close()
    if not progress.history:
        raise ValueError(
            f"nothing to train: the checkpoint already finished {progress.start_epoch} of {config.epochs} epochs"
        )
    return TrainResult(
        history=progress.history,
        best_epoch=progress.best_epoch,
        best_checkpoint=checkpoint_directory(pipeline.root, progress.best_epoch),
        last_checkpoint=checkpoint_directory(pipeline.root, len(progress.history) - 1),
    )
