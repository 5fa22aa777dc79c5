"""The settings of one training run, checked before anything trains. Torch-free: a sweep reads and
validates its trials' configs without importing torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from depthtune.config import from_dict
from depthtune.names import MODEL_NAMES, SELECTABLE_METRICS


@dataclass
class TrainConfig:
    """Everything one training run needs; the tuned hyperparameters are lr, momentum,
    step_size and grad_weight. ``lr_multipliers`` maps parameter-name prefixes to multiples of
    ``lr`` (per-layer rates; ``parameter_groups``). ``encoder_weights`` is a local torchvision-format
    ImageNet file (VGG-16 for Net12's scale 1, ResNet-50 for FCRN's encoder) that a fresh model
    starts from; a resumed run takes its weights from the checkpoint. ``checkpoint_every`` spaces the
    checkpoints between new bests: a paper-size one takes seconds to write while the GPU waits
    (benchmarks/README.md, overhead). ``device_data_share``: on CUDA, the training split is kept on the
    GPU and augmented there when it needs at most this share of the GPU's memory (0: always the CPU
    loader, which a CPU run uses anyway)."""

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
    device_data_share: float = 0.25

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
        if not (isinstance(self.device_data_share, (int, float)) and 0 <= self.device_data_share <= 1):
            problems.append(f"device_data_share={self.device_data_share!r}: expected a share of GPU memory in [0, 1]")
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
