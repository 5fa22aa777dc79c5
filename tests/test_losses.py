"""Losses against brute-force numpy references written independently of the torch code."""

import math

import numpy as np
import pytest
import torch

from depthtune.losses import berhu_loss, gradient_matching, loss_for_model, scale_invariant_loss


def _random_case(seed: int, batch: int = 3, h: int = 6, w: int = 7):
    rng = np.random.default_rng(seed)
    target = rng.uniform(0.7, 10.0, size=(batch, 1, h, w))
    mask = rng.random((batch, 1, h, w)) > 0.25
    target[~mask] = 0.0
    pred_log = np.log(rng.uniform(0.5, 12.0, size=(batch, 1, h, w)))
    return pred_log, target, mask


def _torch(*arrays):
    return [torch.tensor(a) for a in arrays]


def _ref_gradient_term(d: np.ndarray, m: np.ndarray) -> float:
    h, w = d.shape
    sx, nx, sy, ny = 0.0, 0, 0.0, 0
    for i in range(h):
        for j in range(w):
            if j + 1 < w and m[i, j] and m[i, j + 1]:
                sx += (d[i, j + 1] - d[i, j]) ** 2
                nx += 1
            if i + 1 < h and m[i, j] and m[i + 1, j]:
                sy += (d[i + 1, j] - d[i, j]) ** 2
                ny += 1
    return sx / max(nx, 1) + sy / max(ny, 1)


def _ref_scale_invariant_pairwise(pred_log, target, mask, grad_weight, si_lambda):
    """Data term from its pairwise form: mean(d^2) - mean(d)^2 = 1/(2n^2) sum_ij (d_i - d_j)^2."""
    losses = []
    for b in range(pred_log.shape[0]):
        m = mask[b, 0]
        d_full = np.where(m, pred_log[b, 0] - np.log(np.where(m, target[b, 0], 1.0)), 0.0)
        d = d_full[m]
        n = len(d)
        pairwise = sum((d[i] - d[j]) ** 2 for i in range(n) for j in range(n)) / (2 * n * n)
        mean_sq = sum(x * x for x in d) / n
        # mean(d^2) - lambda*mean(d)^2 = (1 - lambda)*mean(d^2) + lambda*(pairwise form)
        data = (1 - si_lambda) * mean_sq + si_lambda * pairwise
        losses.append(data + grad_weight * _ref_gradient_term(d_full, m))
    return float(np.mean(losses))


@pytest.mark.parametrize("si_lambda", [0.5, 1.0])
@pytest.mark.parametrize("grad_weight", [0.0, 1.0, 2.5])
def test_scale_invariant_matches_pairwise_reference(si_lambda, grad_weight):
    pred_log, target, mask = _random_case(seed=1)
    got = scale_invariant_loss(*_torch(pred_log, target, mask), grad_weight=grad_weight, si_lambda=si_lambda)
    expected = _ref_scale_invariant_pairwise(pred_log, target, mask, grad_weight, si_lambda)
    assert float(got) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.2])
def test_scaled_prediction_has_zero_scale_invariant_terms(scale):
    _, target, mask = _random_case(seed=2)
    safe = np.where(mask, target, 1.0)
    pred_log = np.log(scale * safe)
    loss = scale_invariant_loss(*_torch(pred_log, target, mask), grad_weight=1.0, si_lambda=1.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-12)
    # With Eigen's training lambda = 0.5 a global scale error still costs 0.5 * log(scale)^2.
    half = scale_invariant_loss(*_torch(pred_log, target, mask), grad_weight=1.0, si_lambda=0.5)
    assert float(half) == pytest.approx(0.5 * math.log(scale) ** 2, abs=1e-12)


def test_invalid_pixels_do_not_matter():
    pred_log, target, mask = _random_case(seed=3)
    base = scale_invariant_loss(*_torch(pred_log, target, mask))
    changed = pred_log.copy()
    changed[~mask] = 50.0
    assert float(scale_invariant_loss(*_torch(changed, target, mask))) == pytest.approx(float(base), rel=1e-12)
    assert float(berhu_loss(*_torch(np.exp(changed), target, mask))) == pytest.approx(
        float(berhu_loss(*_torch(np.exp(pred_log), target, mask))), rel=1e-12
    )


def _ref_berhu(pred, target, mask, grad_weight):
    """berHu per image on depth, plus the gradient term on the depth residual."""
    residual = np.abs(pred - target)[mask]
    c = 0.2 * residual.max()
    losses = []
    for b in range(pred.shape[0]):
        m = mask[b, 0]
        r = np.abs(pred[b, 0] - target[b, 0])[m]
        per_pixel = [x if x <= c else (x * x + c * c) / (2 * c) for x in r]
        d_full = np.where(m, pred[b, 0] - target[b, 0], 0.0)
        losses.append(np.mean(per_pixel) + grad_weight * _ref_gradient_term(d_full, m))
    return float(np.mean(losses))


@pytest.mark.parametrize("grad_weight", [0.0, 0.7])
def test_berhu_matches_reference(grad_weight):
    pred_log, target, mask = _random_case(seed=4)
    pred = np.exp(pred_log)
    got = berhu_loss(*_torch(pred, target, mask), grad_weight=grad_weight)
    assert float(got) == pytest.approx(_ref_berhu(pred, target, mask, grad_weight), rel=1e-9)


def test_berhu_is_l1_below_threshold_and_zero_at_target():
    target = torch.tensor([[[[2.0, 3.0], [4.0, 5.0]]]], dtype=torch.float64)
    mask = torch.ones_like(target, dtype=torch.bool)
    assert float(berhu_loss(target, target, mask)) == pytest.approx(0.0, abs=1e-12)
    pred = target.clone()
    pred[0, 0, 0, 0] = 2.5  # the only residual is the max, so c = 0.1 and 0.5 > c is quadratic
    expected = ((0.5**2 + 0.1**2) / 0.2) / 4
    assert float(berhu_loss(pred, target, mask)) == pytest.approx(expected, rel=1e-9)


def test_image_without_valid_pixels_is_skipped_not_averaged():
    pred_log, target, mask = _random_case(seed=5, batch=2)
    only_first = scale_invariant_loss(*_torch(pred_log[:1], target[:1], mask[:1]))
    mask[1] = False
    both = scale_invariant_loss(*_torch(pred_log, target, mask))
    assert float(both) == pytest.approx(float(only_first), rel=1e-12)
    mask[:] = False
    assert float(scale_invariant_loss(*_torch(pred_log, target, mask))) == 0.0


def test_loss_is_differentiable_and_finite_with_zero_targets():
    pred_log, target, mask = _random_case(seed=6)
    pred = torch.tensor(pred_log, requires_grad=True)
    for fn in (scale_invariant_loss, berhu_loss):
        loss = fn(pred, torch.tensor(target), torch.tensor(mask), grad_weight=1.0)
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(grad).all()
        assert float(grad[~torch.tensor(mask)].abs().max()) == 0.0


def test_gradient_term_counts_only_valid_pairs():
    d = torch.tensor([[[[0.0, 1.0, 3.0]]]])
    mask = torch.tensor([[[[True, True, False]]]])
    assert float(gradient_matching(d, mask)[0]) == pytest.approx(1.0)


def test_loss_for_model():
    assert loss_for_model("net12", grad_weight=1.0).func is scale_invariant_loss
    assert loss_for_model("fcrn", grad_weight=1.0).func is berhu_loss
    with pytest.raises(ValueError, match="unet"):
        loss_for_model("unet", grad_weight=1.0)
