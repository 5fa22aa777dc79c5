"""ImageNet weights for the papers' encoders from local torchvision-format files, never downloaded:
VGG-16 (``torchvision.models.vgg16``, or ``vgg16_bn`` for BatchNorm) into Net12's scale 1 and
ResNet-50 (``torchvision.models.resnet50``) into FCRN's encoder. docs/models.md says how to write
such a file once on a machine with internet access."""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

logger = logging.getLogger(__name__)

SHOWN_KEYS = 5  # offending keys named in a weight-loading error


def read_state_dict(model: str, path: str | os.PathLike[str], expected: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save``'d state dict at `path` (read with ``weights_only``), or an
    error naming the model, the file and what was `expected` in it."""
    where = f"{model}: encoder_weights file {os.fspath(path)!r}"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{where} could not be read as a state_dict: {exc}") from exc
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{where} holds {type(loaded).__name__}; expected {expected} (a dict of tensors)")
    return loaded


def load_pretrained(
    target: nn.Module,
    path: str | os.PathLike[str],
    *,
    model: str,
    expected: str,
    prefix: str = "",
    ignored: tuple[str, ...] = (),
) -> None:
    """Load the tensors of the file at `path` whose keys start with `prefix` (stripped) into
    `target`; keys starting with one of `ignored` (the ImageNet classifier) are left out. Every
    tensor of `target` must be in the file with its shape, and nothing else, or the error names
    the file, what it should hold and the first offending keys; nothing is copied then."""
    loaded = read_state_dict(model, path, expected)
    weights = {k[len(prefix) :]: v for k, v in loaded.items() if k.startswith(prefix) and not k.startswith(ignored)}
    foreign = [k for k in loaded if not k.startswith(prefix) and not k.startswith(ignored)]
    own = target.state_dict()
    problems = [
        # torchvision's older ImageNet files predate num_batches_tracked; BatchNorm fills it in on load
        ("missing keys", [prefix + k for k in own if k not in weights and not k.endswith(".num_batches_tracked")]),
        ("unexpected keys", [prefix + k for k in weights if k not in own] + foreign),
        (
            "shape mismatches",
            [
                f"{prefix}{k}: file {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
                for k, v in own.items()
                if k in weights and weights[k].shape != v.shape
            ],
        ),
    ]
    for kind, items in problems:
        if items:
            raise ValueError(
                f"{model}: encoder_weights file {os.fspath(path)!r} does not fit: expected {expected}; "
                f"{len(items)} {kind}, first: {', '.join(items[:SHOWN_KEYS])}"
            )
    target.load_state_dict(weights, strict=False)
    logger.info("%s: loaded %d ImageNet tensors from %s", model, len(weights), os.fspath(path))


def load_vgg16_features(features: nn.Module, path: str | os.PathLike[str], batch_norm: bool) -> None:
    """Load a torchvision VGG-16 state dict's ``features.*`` into Net12's scale 1 (``classifier.*``,
    ImageNet's fully connected layers, are not Eigen's full1/full2 and are left out)."""
    source = "torchvision's vgg16_bn" if batch_norm else "torchvision's vgg16"
    load_pretrained(
        features,
        path,
        model="net12",
        prefix="features.",
        ignored=("classifier.",),
        expected=f"{source} state dict at width 1.0 (batch_norm={batch_norm})",
    )


def load_resnet50_encoder(encoder: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a torchvision ResNet-50 state dict into FCRN's encoder (``fc.*``, the classifier, left out)."""
    load_pretrained(
        encoder,
        path,
        model="fcrn",
        ignored=("fc.",),
        expected="torchvision's resnet50 state dict (width=1.0, blocks=(3, 4, 6, 3))",
    )
