"""Training losses over valid pixels: Eigen's scale-invariant log loss and berHu, each with
the same gradient-matching term weighted by ``grad_weight`` (the tuned gradient-loss weight).

Eigen's networks predict log-depth (``pred_log``); FCRN predicts depth in metres, as Laina built
it. Targets are depth in metres. Both losses are computed per image over its valid pixels and then averaged over the
images that have any valid pixel, so a partial last batch or a mostly-invalid image does not
change the normalisation of the others.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

_EPS = 1e-6


def _log_difference(pred_log: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """d = log y - log y* on valid pixels, exactly 0 elsewhere (no NaN from log 0)."""
    safe_target = torch.where(mask, target, torch.ones_like(target))
    return torch.where(mask, pred_log - torch.log(safe_target.clamp_min(_EPS)), torch.zeros_like(pred_log))


def gradient_matching(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean((dx d)^2) + mean((dy d)^2) over neighbour pairs whose both pixels are valid.

    Shapes (B, 1, H, W); returns (B,). Finite differences: dx d(i,j) = d(i,j+1) - d(i,j).
    """
    mask_f = mask.to(d.dtype)
    pair_x = mask_f[..., :, 1:] * mask_f[..., :, :-1]
    pair_y = mask_f[..., 1:, :] * mask_f[..., :-1, :]
    dx2 = (d[..., :, 1:] - d[..., :, :-1]).pow(2) * pair_x
    dy2 = (d[..., 1:, :] - d[..., :-1, :]).pow(2) * pair_y
    per_image_x = dx2.flatten(1).sum(1) / pair_x.flatten(1).sum(1).clamp_min(1.0)
    per_image_y = dy2.flatten(1).sum(1) / pair_y.flatten(1).sum(1).clamp_min(1.0)
    return per_image_x + per_image_y


def _mean_over_images(per_image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average a (B,) tensor over the images that have at least one valid pixel (0 when none has),
    without reading anything back from the device: no host sync per training step."""
    has_valid = mask.flatten(1).any(1)
    kept = torch.where(has_valid, per_image, torch.zeros_like(per_image))
    return kept.sum() / has_valid.sum().clamp_min(1).to(per_image.dtype)


def scale_invariant_loss(
    pred_log: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    grad_weight: float = 1.0,
    si_lambda: float = 0.5,
) -> torch.Tensor:
    """Eigen & Fergus 2015: mean(d^2) - si_lambda * mean(d)^2 + grad_weight * gradient term.

    ``si_lambda`` = 1 makes the data term fully scale invariant (zero for y = c * y*); 0.5 is the
    value Eigen & Fergus train with.
    """
    d = _log_difference(pred_log, target, mask)
    n = mask.flatten(1).sum(1).to(d.dtype).clamp_min(1.0)
    mean_d2 = d.pow(2).flatten(1).sum(1) / n
    mean_d = d.flatten(1).sum(1) / n
    per_image = mean_d2 - si_lambda * mean_d.pow(2)
    if grad_weight:
        per_image = per_image + grad_weight * gradient_matching(d, mask)
    return _mean_over_images(per_image, mask)


def berhu_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    grad_weight: float = 0.0,
    threshold_fraction: float = 0.2,
) -> torch.Tensor:
    """Laina et al. 2016 reverse Huber on predicted depth, c = 0.2 * max residual of the batch, plus
    the gradient-matching term on the depth residual weighted by ``grad_weight``."""
    residual = torch.where(mask, (pred - target).abs(), torch.zeros_like(pred))
    c = (threshold_fraction * residual.max()).detach().clamp_min(_EPS)
    berhu = torch.where(residual <= c, residual, (residual.pow(2) + c.pow(2)) / (2 * c))
    berhu = torch.where(mask, berhu, torch.zeros_like(berhu))
    n = mask.flatten(1).sum(1).to(pred.dtype).clamp_min(1.0)
    per_image = berhu.flatten(1).sum(1) / n
    if grad_weight:
        per_image = per_image + grad_weight * gradient_matching(
            torch.where(mask, pred - target, torch.zeros_like(pred)), mask
        )
    return _mean_over_images(per_image, mask)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def loss_for_model(model_name: str, *, grad_weight: float) -> LossFn:
    """The paper's loss for a model family: scale-invariant on log-depth for Net12/Net3, berHu on
    depth for FCRN."""
    if model_name in ("net12", "net3"):
        return partial(scale_invariant_loss, grad_weight=grad_weight)
    if model_name == "fcrn":
        return partial(berhu_loss, grad_weight=grad_weight)
    raise ValueError(f"no loss defined for model {model_name!r}; expected one of 'net12', 'net3', 'fcrn'")
