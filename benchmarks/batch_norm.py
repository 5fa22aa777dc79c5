"""Batch norm under bf16 autocast: training images/s of FCRN, and of Net12 and Net3 in the project
variant (the papers' Eigen layers have no batch norm), for ways of running their BatchNorm layers, and
inference ms/image with each conv + BatchNorm pair folded into one convolution.

    python benchmarks/batch_norm.py [--models fcrn net12 net3] [--time-budget S] [--json PATH]
    python benchmarks/batch_norm.py --device cpu --smoke        # the same code path, tiny models, on CPU

Why: under bf16 autocast FCRN's batch norm is a third of its training step on an H200, slower than in
fp32 (benchmarks/README.md, section 5). Autocast passes batch_norm its bf16 input with the layer's
float32 weights, and ATen's choice of kernel (``_select_batch_norm_backend``) never gives cuDNN a bf16
input or weight, so PyTorch's native kernels run; cuDNN takes float32, or float16 input with float32
weights. The options, each a wrapper applied to the model here (nothing in the package changes):

- ``default``: as the training loop runs it, BN on bf16 activations (native kernels);
- ``bn fp32``: each BatchNorm runs with autocast off on a float32 copy of its input (cuDNN), its output
  cast back to bf16: two casts per layer buy the cuDNN kernel;
- ``bn fp16``: the same on a float16 copy (cuDNN too, half the bytes of float32; float16 overflows
  above 65504, and its gradients can underflow without a loss scaler, which the loop does not use);
- ``+ cudnn.benchmark``: the flags PyTorch 2.13 documents in ``torch.backends.cudnn`` are ``enabled``,
  ``benchmark``, ``benchmark_limit``, ``deterministic``, ``allow_tf32`` / ``fp32_precision`` and
  ``depthwise_kernel``; none picks batch norm's kernel except ``enabled``, which takes cuDNN's
  convolutions away too, so ``benchmark`` (autotuned convolution algorithms, which may suit the other
  layout of a float32 BN better) is the one measured, on ``default`` and ``bn fp32``;
- each in channels_last (the loop's CUDA layout) and contiguous;
- inference only: ``folded``, each BatchNorm2d whose input is a Conv2d module's output folded into that
  convolution (``torch.nn.utils.fusion.fuse_conv_bn_eval``; the BatchNorm becomes an identity). FCRN's
  up-projections apply their 5x5 weights functionally (the fast up-projection), so those BatchNorms stay;
  the table says how many were folded, and the folded model's output is checked against the original's
  (float32, BN statistics randomised so that the fold is not an identity).

A training step is ``depthtune.train.training_step`` (bf16 autocast, the model's loss, SGD) and
inference the evaluation forward, timed as gpu_throughput.py times them (fixed synthetic batch 16,
warm-up untimed, median of 5 windows of 10 steps, synchronised around each window). Ratios are against
``default`` in the same layout. A setting not started within ``--time-budget`` seconds is skipped and
recorded as such; ``--json`` is rewritten after every setting. Without CUDA (and without ``--device
cpu``) it measures nothing and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from gpu_throughput import (
    SMOKE_CONFIGS,
    Counts,
    device_name,
    fmt,
    infer_step,
    measure,
    synthetic_batch,
    train_step,
    write_json,
)
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from depthtune.models import build
from depthtune.profiles import model_config

logger = logging.getLogger("batch_norm")

BN_DTYPES: dict[str, torch.dtype | None] = {"default": None, "bn fp32": torch.float32, "bn fp16": torch.float16}
FOLDED = "folded"
FOLD_TOLERANCE = 1e-3  # relative: the folded model's float32 output against the original's


@dataclass(frozen=True)
class Option:
    """One way of running the model's batch norms: how BN's input is cast (``BN_DTYPES``) or
    ``folded`` (inference only), the memory layout, and cuDNN's autotuning."""

    bn: str
    channels_last: bool
    cudnn_benchmark: bool = False

    @property
    def layout(self) -> str:
        """'channels_last' or 'contiguous'."""
        return "channels_last" if self.channels_last else "contiguous"

    @property
    def label(self) -> str:
        """Short name, e.g. 'bn fp32 channels_last + cudnn.benchmark'."""
        return f"{self.bn} {self.layout}" + (" + cudnn.benchmark" if self.cudnn_benchmark else "")


OPTIONS: tuple[Option, ...] = (
    *(Option(bn, channels_last) for channels_last in (True, False) for bn in BN_DTYPES),
    Option("default", True, cudnn_benchmark=True),
    Option("bn fp32", True, cudnn_benchmark=True),
    *(Option(FOLDED, channels_last) for channels_last in (True, False)),
)


@dataclass
class Row:
    """Figures of one model under one option; ``error`` instead when it failed or was skipped."""

    model: str
    option: str
    bn: str
    layout: str
    cudnn_benchmark: bool
    train_images_per_s: float | None = None
    infer_ms_per_image: float | None = None
    note: str = ""
    error: str | None = None


class CastBatchNorm(nn.Module):
    """A BatchNorm run with autocast off on a ``dtype`` copy of its input (a dtype cuDNN's batch norm
    takes), its output cast back to the autocast dtype (or the input's dtype outside autocast)."""

    def __init__(self, bn: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.bn = bn
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped BatchNorm on ``x`` cast to ``dtype``, cast back (the memory layout is kept)."""
        kind = x.device.type
        out_dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
        with torch.autocast(device_type=kind, enabled=False):
            return self.bn(x.to(self.dtype)).to(out_dtype)


def batch_norms(model: nn.Module) -> list[str]:
    """Qualified names of the model's BatchNorm2d layers."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)]


def cast_batch_norms(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The model with every BatchNorm2d wrapped in CastBatchNorm (in place)."""
    for name in batch_norms(model):
        model.set_submodule(name, CastBatchNorm(model.get_submodule(name), dtype))
    return model


def conv_bn_pairs(name: str, cfg: dict) -> list[tuple[str, str]]:
    """(conv, BatchNorm) names where the BatchNorm's input is exactly that Conv2d module's output, found
    by hooks on one forward pass of a meta-device copy (no memory, no arithmetic)."""
    with torch.device("meta"):
        model = build(name, **cfg).eval()
    names = {module: qualified for qualified, module in model.named_modules()}
    produced: dict[int, tuple[torch.Tensor, str]] = {}  # the tensor is held so that its id stays unique
    pairs: list[tuple[str, str]] = []

    def conv_hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        produced[id(output)] = (output, names[module])

    def bn_hook(module: nn.Module, inputs: tuple) -> None:
        if id(inputs[0]) in produced:
            pairs.append((produced[id(inputs[0])][1], names[module]))

    handles = [
        module.register_forward_hook(conv_hook)
        if isinstance(module, nn.Conv2d)
        else module.register_forward_pre_hook(bn_hook)
        for module in model.modules()
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d))
    ]
    with torch.no_grad():
        model(torch.empty(1, 3, *model.input_size, device="meta"))
    for handle in handles:
        handle.remove()
    return pairs


def fold_batch_norms(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """The eval-mode model with each (conv, BatchNorm) pair folded into one convolution (in place)."""
    model.eval()
    for conv, bn in pairs:
        model.set_submodule(conv, fuse_conv_bn_eval(model.get_submodule(conv), model.get_submodule(bn)))
        model.set_submodule(bn, nn.Identity())
    return model


def randomise_statistics(model: nn.Module) -> None:
    """Give every BatchNorm2d non-trivial running statistics and affine parameters (seeded), so that a
    fold that got a pair wrong changes the output."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)


def fold_error(base: nn.Module, folded: nn.Module, image: torch.Tensor) -> float:
    """Largest |folded - original| of the float32 eval outputs, relative to the original's largest |value|."""
    with torch.no_grad():
        reference = base.eval()(image).float()
        difference = (folded.eval()(image).float() - reference).abs().max()
    return float(difference / reference.abs().max().clamp_min(1e-12))


def release(device: torch.device) -> None:
    """Free what the last option left, so that its memory does not weigh on the next."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_option(name: str, base: nn.Module, cfg: dict, option: Option, device: torch.device, counts: Counts) -> Row:
    """Time one option on a fresh copy of ``base`` (training, then inference; folded: inference only)."""
    row = Row(name, option.label, option.bn, option.layout, option.cudnn_benchmark)
    layout = torch.channels_last if option.channels_last else torch.contiguous_format
    model = copy.deepcopy(base)
    batch = synthetic_batch(name, cfg, counts.batch, device, option.channels_last)
    if option.bn == FOLDED:
        pairs = conv_bn_pairs(name, cfg)
        randomise_statistics(model)
        reference = copy.deepcopy(model).to(device, memory_format=layout)
        model = fold_batch_norms(model, pairs).to(device, memory_format=layout)
        error = fold_error(reference, model, batch[0])
        del reference
        if error > FOLD_TOLERANCE:
            row.error = f"failed: the folded model's output differs by {error:.2e} (relative)"
            return row
        row.note = f"{len(pairs)} of {len(batch_norms(base))} BatchNorms folded; output differs by {error:.1e}"
    else:
        dtype = BN_DTYPES[option.bn]
        if dtype is not None:
            cast_batch_norms(model, dtype)
        model = model.to(device, memory_format=layout).train()
        seconds, _ = measure(train_step(model, name, batch, bf16=True), device, counts, compiled=False)
        row.train_images_per_s = counts.batch / seconds
    model.eval()
    seconds, _ = measure(infer_step(model, batch[0], device, bf16=True), device, counts, compiled=False)
    row.infer_ms_per_image = seconds / counts.batch * 1e3
    return row


def run_guarded(name: str, base: nn.Module, cfg: dict, option: Option, device: torch.device, counts: Counts) -> Row:
    """run_option under the option's cudnn.benchmark mode; a failure (out of memory, a dtype a CPU kernel
    lacks) becomes the row's error instead of ending the run."""
    started = time.perf_counter()
    autotune = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = option.cudnn_benchmark
    try:
        row = run_option(name, base, cfg, option, device, counts)
    except Exception as exc:  # a benchmark row, not a crash: kernels and memory differ per option
        logger.debug("%s %s failed", name, option.label, exc_info=True)
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        row = Row(name, option.label, option.bn, option.layout, option.cudnn_benchmark, error=f"failed: {reason}")
    finally:
        torch.backends.cudnn.benchmark = autotune
        release(device)
    logger.info("%s %s: %s (%.1f s)", name, option.label, row.error or "measured", time.perf_counter() - started)
    return row


def model_cfgs(profile: str) -> dict[str, dict]:
    """Build configs with batch norm: FCRN as it is, Net12 and Net3 in the project variant (BatchNorm
    after their hidden convolutions), at the profile's size or the tiny smoke one."""
    if profile == "smoke":
        net12 = {**SMOKE_CONFIGS["net12"], "batch_norm": True}
        return {
            "fcrn": dict(SMOKE_CONFIGS["fcrn"]),
            "net12": net12,
            "net3": {**SMOKE_CONFIGS["net3"], "batch_norm": True, "residual": True, "net12_config": net12},
        }
    net12 = model_config(profile, "net12", "project")
    return {
        "fcrn": model_config(profile, "fcrn"),
        "net12": net12,
        "net3": {**model_config(profile, "net3", "project"), "net12_config": net12},
    }


def ratio(row: Row, reference: Row | None, key: str, higher_is_better: bool) -> str:
    """row's figure over the reference's, as speed (>1 faster), or '-'."""
    a, b = getattr(row, key), getattr(reference, key) if reference else None
    if a is None or b is None:
        return "-"
    return f"{a / b:.2f}x" if higher_is_better else f"{b / a:.2f}x"


def table(rows: list[Row]) -> str:
    """Markdown table of one model's rows with speed-ups against ``default`` in the same layout."""
    defaults = {r.layout: r for r in rows if r.bn == "default" and not r.cudnn_benchmark and r.error is None}
    lines = [
        "| option | train img/s | vs default | inference ms/img | vs default | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.option} | {r.error} | | | | |")
            continue
        reference = defaults.get(r.layout)
        lines.append(
            f"| {r.option} | {fmt(r.train_images_per_s, '.1f')} | {ratio(r, reference, 'train_images_per_s', True)} "
            f"| {fmt(r.infer_ms_per_image, '.3f')} | {ratio(r, reference, 'infer_ms_per_image', False)} | {r.note} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Measure every model's options, print a table per model, optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny models and counts: checks the code path")
    parser.add_argument("--profile", choices=("paper", "cpu"), default="paper", help="model sizes (without --smoke)")
    parser.add_argument("--models", nargs="+", choices=("fcrn", "net12", "net3"), default=["fcrn", "net12", "net3"])
    parser.add_argument("--batch", type=int, help="images per step (default 16; 2 with --smoke)")
    parser.add_argument("--time-budget", type=float, help="seconds after which options not started are skipped")
    parser.add_argument("--json", type=Path, help="write all figures to this file (rewritten after every option)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (failure tracebacks)")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    if args.device == "cuda" and not torch.cuda.is_available():
        print("batch_norm: no CUDA device was found, so nothing was measured (`--device cpu --smoke` checks it on CPU)")
        return 0
    started = time.perf_counter()
    device = torch.device(args.device)
    counts = Counts(batch=2, warmup=1, windows=2, iters=1) if args.smoke else Counts(16, 5, 5, 10)
    counts.batch = args.batch or counts.batch
    profile = "smoke" if args.smoke else args.profile
    configs = model_cfgs(profile)
    dev = device_name(device)
    header = (
        f"batch_norm [{dev}] torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version() if device.type == 'cuda' else '-'}, profile {profile} (Net12/Net3: project "
        f"variant), batch {counts.batch}, bf16 autocast, warm-up {counts.warmup}, {counts.windows} windows x "
        f"{counts.iters} steps"
    )
    print(header)
    results: dict[str, list[Row]] = {name: [] for name in args.models}
    for name, rows in results.items():
        torch.manual_seed(0)
        base = build(name, **configs[name])
        for option in OPTIONS:
            if args.time_budget is not None and time.perf_counter() - started > args.time_budget:
                skipped = "skipped: time budget spent"
                rows.append(Row(name, option.label, option.bn, option.layout, option.cudnn_benchmark, error=skipped))
            else:
                rows.append(run_guarded(name, base, configs[name], option, device, counts))
            if args.json:
                models = {
                    key: {"config": configs[key], "rows": [asdict(r) for r in value]} for key, value in results.items()
                }
                write_json(args.json, {"header": header, "device": dev, "torch": torch.__version__, "models": models})
        print(f"\n### {name} [{dev}] {len(batch_norms(base))} BatchNorm2d layers\n")
        print(table(rows))
        del base
    if args.json:
        print(f"\nbatch_norm [{dev}] figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
