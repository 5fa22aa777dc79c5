"""GPU throughput: training images/s and inference ms/image of Net12, Net3 and FCRN (paper configuration,
batch 16) for fp32 vs bf16 autocast, contiguous vs channels_last, cuDNN autotuning (benchmark mode)
off/on, eager vs torch.compile, with each
model's FLOPs per image (torch.utils.flop_counter) and the model FLOPs utilisation (MFU) of the best
training setting against the GPU's dense bf16 peak.

    python benchmarks/gpu_throughput.py [--models net12 net3 fcrn] [--compile best|all|off]
                                        [--time-budget S] [--json PATH]
    python benchmarks/gpu_throughput.py --device cpu --smoke     # the same code path, tiny, on CPU

A training step is the one in ``depthtune.train``: forward under autocast, the model's loss
(``loss_for_model``) on ``pred.float()`` against a synthetic target and mask of the output's shape,
backward, SGD with TrainConfig's defaults; fp32 convolutions use TF32 on CUDA as in training (PyTorch's
default ``cudnn.allow_tf32``, printed in the header; ``--no-tf32`` turns it off for a full-precision
fp32 baseline). Inference is eval mode under ``no_grad``. FLOPs
are what FlopCounterMode counts (convolutions, matrix products; not the loss or elementwise ops),
counted once per model on the meta device; Net3's frozen Net12 counts forward only. Warm-up steps are
not timed (the first one's excess over a steady step is reported as compile time); each figure is the
median over timed windows with the device synchronised around each window. The four eager
dtype/layout settings run for every model first, then the fastest of them again with
``cudnn.benchmark`` on, then compiled settings: ``--compile best`` (default) compiles only the fastest
eager setting, ``--compile all`` all four; a compiled setting not started within ``--time-budget``
seconds of the start is skipped (recorded as such), so a bounded GPU lease still gets every eager
figure. ``--json`` is rewritten after every setting, so a run cut short keeps what it measured.
``--smoke`` uses tiny models (``SMOKE_CONFIGS``), tiny counts and the ``aot_eager`` compile backend
(Inductor's C++ code generation takes minutes per model on a small CPU; ``--compile-backend inductor``
tries it). Without CUDA (and without ``--device cpu``) it measures nothing and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from depthtune.losses import loss_for_model
from depthtune.models import MODEL_NAMES, build, geometry
from depthtune.profiles import model_config
from depthtune.train import training_step
from depthtune.train_config import TrainConfig

logger = logging.getLogger(__name__)

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, matched in order against the lower-cased
# torch.cuda.get_device_name(); from NVIDIA's datasheets (the sparse figures halved).
PEAK_BF16_TFLOPS: tuple[tuple[str, str, float], ...] = (
    (r"h100.*nvl", "H100 NVL datasheet", 835.0),
    (r"h100.*(pcie|hbm2e)", "H100 PCIe datasheet", 756.0),
    (r"h100", "H100 SXM datasheet", 989.0),  # "NVIDIA H100 80GB HBM3"
    (r"h200.*nvl", "H200 NVL datasheet", 835.0),
    (r"h200", "H200 SXM / GH200 datasheet", 989.0),
    (r"a100", "A100 datasheet", 312.0),
    (r"a10g", "A10 datasheet, taken for the A10G (unverified)", 125.0),
    (r"\bl4\b", "L4 datasheet", 121.0),
)
# --smoke: the models' layouts at a fraction of the 'cpu' profile's cost (both sides >= 32 as they need).
SMOKE_CONFIGS: dict[str, dict] = {
    "net12": {"input_size": (64, 96), "width": 0.125},
    "net3": {"width": 0.125},
    "fcrn": {"input_size": (64, 96), "width": 0.125, "blocks": (1, 1, 1, 1)},
}
FCRN_BAR = 2.0  # bf16 training images/s >= 2x fp32 for FCRN
LOOP_CHANNELS_LAST: bool = TrainConfig.__dataclass_fields__["channels_last"].default  # the training loop's CUDA layout
GIB = 2**30


@dataclass(frozen=True)
class Setting:
    """One combination of numeric type, memory layout and compilation."""

    bf16: bool
    channels_last: bool
    compiled: bool
    cudnn_benchmark: bool = False

    @property
    def label(self) -> str:
        """Short name, e.g. 'bf16 channels_last compiled' (+ ' cudnn.benchmark' when autotuned)."""
        words = [
            "bf16" if self.bf16 else "fp32",
            "channels_last" if self.channels_last else "contiguous",
            "compiled" if self.compiled else "eager",
        ]
        return " ".join(words + (["cudnn.benchmark"] if self.cudnn_benchmark else []))


EAGER_SETTINGS = tuple(Setting(bf16, cl, False) for bf16 in (False, True) for cl in (False, True))


@dataclass
class Counts:
    """Batch size and iteration counts of one run."""

    batch: int
    warmup: int
    windows: int
    iters: int


@dataclass
class Result:
    """Measured figures of one model under one setting; `error` is set instead when it failed."""

    model: str
    setting: str
    bf16: bool
    channels_last: bool
    compiled: bool
    cudnn_benchmark: bool
    train_images_per_s: float | None = None
    infer_ms_per_image: float | None = None
    train_tflops: float | None = None
    infer_tflops: float | None = None
    compile_train_s: float | None = None
    compile_infer_s: float | None = None
    peak_memory_gib: float | None = None
    error: str | None = None


def sizes(profile: str, name: str) -> dict:
    """Size config of `name` under a depthtune profile, or the tiny one for 'smoke'."""
    return dict(SMOKE_CONFIGS[name]) if profile == "smoke" else model_config(profile, name)


def model_cfg(profile: str, name: str) -> dict:
    """Build config of `name` under `profile`; Net3 wraps a frozen Net12 of the same profile."""
    cfg = sizes(profile, name)
    if name == "net3":
        cfg["net12_config"] = sizes(profile, "net12")
    return cfg


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else lambda: None


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.is_file() else []
    return f"CPU {names[0] if names else platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def peak_tflops(name: str, override: float | None) -> tuple[float | None, str]:
    """Dense bf16 peak (TFLOP/s) for a device name and where it comes from; None when unknown."""
    if override is not None:
        return override, "--peak-tflops"
    for pattern, label, value in PEAK_BF16_TFLOPS:
        if re.search(pattern, name.lower()):
            return value, f"{label}, dense bf16"
    return None, "unknown device: no dense bf16 peak known (give --peak-tflops)"


def count_flops(name: str, cfg: dict, batch: int) -> tuple[float, float]:
    """Model FLOPs per image (training forward+backward, inference forward), counted on the meta device."""
    with torch.device("meta"):
        model = build(name, **cfg)
    x = torch.empty(batch, 3, *model.input_size, device="meta")
    model.train()
    with FlopCounterMode(display=False) as train_counter:
        model(x).float().mean().backward()
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as infer_counter:
        model(x)
    return train_counter.get_total_flops() / batch, infer_counter.get_total_flops() / batch


def synthetic_batch(
    name: str, cfg: dict, batch: int, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised images, depth targets (0.5-10 m) and a ~90% valid mask at the model's output size."""
    geo = geometry(name, **cfg)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, *geo.input_size, generator=generator)
    target = torch.rand(batch, 1, *geo.output_size, generator=generator) * 9.5 + 0.5
    mask = torch.rand(batch, 1, *geo.output_size, generator=generator) < 0.9
    image = image.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return image, target.to(device), mask.to(device)


def train_step(model: nn.Module, name: str, batch: tuple[torch.Tensor, ...], bf16: bool) -> Callable[[], None]:
    """depthtune.train's own training step on a fixed batch, with TrainConfig's default SGD."""
    defaults = TrainConfig()
    loss_fn = loss_for_model(name, grad_weight=defaults.grad_weight)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=defaults.lr,
        momentum=defaults.momentum,
        weight_decay=defaults.weight_decay,
    )
    image, target, mask = batch

    def step() -> None:
        """Forward, loss, backward and optimizer step on the fixed batch."""
        training_step(model, optimizer, loss_fn, image, target, mask, amp=bf16)

    return step


def infer_step(model: nn.Module, image: torch.Tensor, device: torch.device, bf16: bool) -> Callable[[], None]:
    """One evaluation forward as depthtune.evaluation.evaluate runs it (eval mode, no_grad, autocast)."""

    def step() -> None:
        """Forward pass on the fixed batch."""
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            model(image).float()

    return step


def warm_up(step: Callable[[], None], sync: Callable[[], None], iterations: int) -> float:
    """Run `iterations` untimed steps; return the seconds of the first (compilation included)."""
    sync()
    started = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - started
    for _ in range(iterations - 1):
        step()
    sync()
    return first


def timed_step_seconds(step: Callable[[], None], sync: Callable[[], None], counts: Counts) -> float:
    """Median over `counts.windows` windows of the seconds per step, synchronised around each window."""
    per_step = []
    for _ in range(counts.windows):
        sync()
        started = time.perf_counter()
        for _ in range(counts.iters):
            step()
        sync()
        per_step.append((time.perf_counter() - started) / counts.iters)
    return statistics.median(per_step)


def measure(
    step: Callable[[], None], device: torch.device, counts: Counts, compiled: bool
) -> tuple[float, float | None]:
    """Seconds per steady step, and the compile seconds (first step minus a steady one) when compiled."""
    sync = synchronizer(device)
    first = warm_up(step, sync, counts.warmup)
    seconds = timed_step_seconds(step, sync, counts)
    return seconds, (first - seconds if compiled else None)


def run_setting(
    name: str,
    cfg: dict,
    setting: Setting,
    device: torch.device,
    counts: Counts,
    flops: tuple[float, float],
    backend: str,
) -> Result:
    """Build a fresh model for `setting`, time its training then its inference, and return the figures."""
    result = empty_result(name, setting)
    torch.manual_seed(0)
    if setting.compiled:
        torch.compiler.reset()  # fresh caches: no recompile limit carried over from earlier models
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    layout = torch.channels_last if setting.channels_last else torch.contiguous_format
    model = build(name, **cfg).to(device, memory_format=layout)
    runner = torch.compile(model, backend=backend) if setting.compiled else model
    batch = synthetic_batch(name, cfg, counts.batch, device, setting.channels_last)
    model.train()
    seconds, result.compile_train_s = measure(
        train_step(runner, name, batch, setting.bf16), device, counts, setting.compiled
    )
    result.train_images_per_s = counts.batch / seconds
    result.train_tflops = flops[0] * result.train_images_per_s / 1e12
    model.eval()
    seconds, result.compile_infer_s = measure(
        infer_step(runner, batch[0], device, setting.bf16), device, counts, setting.compiled
    )
    result.infer_ms_per_image = seconds / counts.batch * 1e3
    result.infer_tflops = flops[1] / (seconds / counts.batch) / 1e12
    if device.type == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / GIB
    return result


def empty_result(name: str, setting: Setting, error: str | None = None) -> Result:
    """A result row for `setting` with no figures yet (or only an error)."""
    return Result(
        name, setting.label, setting.bf16, setting.channels_last, setting.compiled, setting.cudnn_benchmark, error=error
    )


def run_guarded(
    name: str,
    cfg: dict,
    setting: Setting,
    device: torch.device,
    counts: Counts,
    flops: tuple[float, float],
    backend: str,
) -> Result:
    """run_setting under the setting's cudnn.benchmark mode, recording a failure (compile error, out of
    memory) as the result instead of raising."""
    started = time.perf_counter()
    autotune = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = setting.cudnn_benchmark
    try:
        result = run_setting(name, cfg, setting, device, counts, flops, backend)
    except Exception as exc:  # a benchmark row, not a crash: compile/OOM failures differ per setting
        logger.debug("%s %s failed", name, setting.label, exc_info=True)
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        result = empty_result(name, setting, f"failed: {type(exc).__name__}: {reason}")
    finally:
        torch.backends.cudnn.benchmark = autotune
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    logger.info(
        "%s %s: %s (%.1f s)",
        name,
        setting.label,
        result.error or f"{result.train_images_per_s:.1f} img/s",
        time.perf_counter() - started,
    )
    return result


def as_setting(result: Result) -> Setting:
    """The setting a result was measured under."""
    return Setting(result.bf16, result.channels_last, result.compiled, result.cudnn_benchmark)


def autotuned_setting(eager: list[Result]) -> list[Setting]:
    """The fastest eager dtype/layout again with cudnn.benchmark on (none when every eager one failed)."""
    best = best_training(eager)
    return [] if best is None else [replace(as_setting(best), cudnn_benchmark=True)]


def settings_to_compile(mode: str, eager: list[Result]) -> list[Setting]:
    """Settings to run compiled: none, all four, or the fastest eager one (cudnn.benchmark as measured best)."""
    if mode == "off":
        return []
    best = best_training(eager)
    autotune = best is not None and best.cudnn_benchmark
    if mode == "all":
        return [replace(s, compiled=True, cudnn_benchmark=autotune) for s in EAGER_SETTINGS]
    return [] if best is None else [replace(as_setting(best), compiled=True)]


def best_training(results: list[Result]) -> Result | None:
    """The successful result with the most training images/s."""
    ok = [r for r in results if r.error is None]
    return max(ok, key=lambda r: r.train_images_per_s) if ok else None


def bf16_ratios(results: list[Result]) -> dict[str, float]:
    """bf16/fp32 training images/s for each layout+compile pair measured in both, plus best vs best."""
    by_key = {(r.bf16, r.channels_last, r.compiled): r for r in results if r.error is None and not r.cudnn_benchmark}
    ratios = {}
    for (bf16, cl, compiled), r in by_key.items():
        fp32 = by_key.get((False, cl, compiled))
        if bf16 and fp32 is not None:
            key = Setting(True, cl, compiled).label.removeprefix("bf16 ")
            ratios[key] = r.train_images_per_s / fp32.train_images_per_s
    best_bf16 = best_training([r for r in results if r.bf16])
    best_fp32 = best_training([r for r in results if not r.bf16])
    if best_bf16 and best_fp32:
        ratios[f"best ({best_bf16.setting} / {best_fp32.setting})"] = (
            best_bf16.train_images_per_s / best_fp32.train_images_per_s
        )
    return ratios


def fmt(value: float | None, spec: str) -> str:
    """Format a figure, or '-' when absent."""
    return "-" if value is None else format(value, spec)


def table(results: list[Result]) -> str:
    """Markdown table of one model's results."""
    lines = [
        (
            "| setting | train img/s | train TFLOP/s | inference ms/img | inference TFLOP/s "
            "| compile s (train/infer) | peak GiB |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.setting} | {r.error} | | | | | |")
            continue
        compile_s = f"{r.compile_train_s:.1f} / {r.compile_infer_s:.1f}" if r.compiled else "-"
        lines.append(
            f"| {r.setting} | {r.train_images_per_s:.1f} | {r.train_tflops:.3g} | {r.infer_ms_per_image:.3f} | "
            f"{r.infer_tflops:.3g} | {compile_s} | {fmt(r.peak_memory_gib, '.1f')} |"
        )
    return "\n".join(lines)


def report_model(
    name: str,
    dev: str,
    profile: str,
    counts: Counts,
    flops: tuple[float, float],
    results: list[Result],
    peak: tuple[float | None, str],
) -> dict:
    """Print one model's block (table, bf16/fp32 ratios, MFU) and return its figures for the JSON."""
    cfg = model_cfg(profile, name)
    geo = geometry(name, **cfg)
    print(
        f"\n### {name} [{dev}] {profile} config, batch {counts.batch}, input {geo.input_size[0]}x{geo.input_size[1]}"
        f" -> output {geo.output_size[0]}x{geo.output_size[1]}; model GFLOPs/image: train {flops[0] / 1e9:.1f},"
        f" inference {flops[1] / 1e9:.1f}\n"
    )
    print(table(results))
    ratios = bf16_ratios(results)
    loop_setting = "channels_last eager" if LOOP_CHANNELS_LAST else "contiguous eager"
    loop_ratio = ratios.get(loop_setting)
    verdict = ""
    if name == "fcrn" and loop_ratio is not None:
        verdict = (
            f"; bar >= {FCRN_BAR:g}x at the training loop's CUDA setting ({loop_setting}): "
            f"{'met' if loop_ratio >= FCRN_BAR else 'NOT met'}"
        )
    shown = ", ".join(f"{key} {value:.2f}x" for key, value in ratios.items()) or "no pair measured"
    print(f"\n{name} [{dev}] bf16/fp32 training images/s: {shown}{verdict}")
    best = best_training(results)
    mfu = None
    if best is not None:
        achieved = best.train_tflops
        if peak[0] is None:
            print(f"{name} [{dev}] best training setting {best.setting}: {achieved:.3g} TFLOP/s ({peak[1]})")
        else:
            mfu = achieved / peak[0]
            print(
                f"{name} [{dev}] MFU of best training setting ({best.setting}): {mfu:.1%} "
                f"({achieved:.3g} of {peak[0]:g} TFLOP/s, {peak[1]})"
            )
    return {
        "config": cfg,
        "input_size": list(geo.input_size),
        "output_size": list(geo.output_size),
        "flops_train_per_image": flops[0],
        "flops_infer_per_image": flops[1],
        "results": [asdict(r) for r in results],
        "bf16_over_fp32_train": ratios,
        "best_train_setting": best.setting if best else None,
        "mfu": mfu,
    }


class Run:
    """Every model's results so far, rewritten to ``--json`` after each setting so a cut-short run keeps them."""

    def __init__(
        self,
        models: list[str],
        profile: str,
        device: torch.device,
        counts: Counts,
        backend: str,
        header: dict,
        json_path: Path | None,
    ) -> None:
        self.profile, self.device, self.counts, self.backend = profile, device, counts, backend
        self.header, self.json_path = header, json_path
        self.configs = {name: model_cfg(profile, name) for name in models}
        self.flops = {name: count_flops(name, cfg, counts.batch) for name, cfg in self.configs.items()}
        self.results: dict[str, list[Result]] = {name: [] for name in models}

    def measure(self, name: str, setting: Setting) -> None:
        """Measure one setting of one model and save the figures so far."""
        result = run_guarded(
            name, self.configs[name], setting, self.device, self.counts, self.flops[name], self.backend
        )
        self.record(result)

    def record(self, result: Result) -> None:
        """Add a result row and rewrite the partial JSON."""
        self.results[result.model].append(result)
        if self.json_path is not None:
            partial = {name: [asdict(r) for r in rows] for name, rows in self.results.items()}
            write_json(self.json_path, {**self.header, "partial": True, "results": partial})


def write_json(path: Path, report: dict) -> None:
    """Write the figures to `path` (replacing it whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def benchmark(run: Run, compile_mode: str, time_budget: float | None, started: float) -> None:
    """Every model's eager settings, then each one's best with cudnn.benchmark, then the compiled ones
    that start within the time budget."""
    for name in run.results:
        for setting in EAGER_SETTINGS:
            run.measure(name, setting)
    for name in run.results:
        for setting in autotuned_setting(run.results[name]):
            run.measure(name, setting)
    for name in run.results:
        for setting in settings_to_compile(compile_mode, run.results[name]):
            elapsed = time.perf_counter() - started
            if time_budget is not None and elapsed > time_budget:
                logger.info(
                    "%s %s: skipped (%.0f s of the %.0f s budget spent)", name, setting.label, elapsed, time_budget
                )
                run.record(empty_result(name, setting, f"skipped: time budget {time_budget:.0f} s spent"))
                continue
            run.measure(name, setting)


def resolve_counts(args: argparse.Namespace) -> Counts:
    """Batch and iteration counts: the flags when given, else tiny ones for --smoke or the GPU defaults."""
    smoke = {"batch": 2, "warmup": 1, "windows": 2, "iters": 1}
    full = {"batch": 16, "warmup": 5, "windows": 5, "iters": 10}
    base = smoke if args.smoke else full
    return Counts(**{key: getattr(args, key) or default for key, default in base.items()})


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not valid; expected an integer >= 1")
    return value


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny models and counts: checks the code path")
    parser.add_argument(
        "--profile",
        choices=("paper", "cpu", "smoke"),
        help="model sizes: a depthtune profile or the tiny smoke one (default: paper; smoke with --smoke)",
    )
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument(
        "--compile",
        choices=("best", "all", "off"),
        default="best",
        help="best: compile only the fastest eager dtype/layout (default); all: all four",
    )
    parser.add_argument("--compile-backend", help="torch.compile backend (default: inductor; aot_eager with --smoke)")
    parser.add_argument("--batch", type=positive_int)
    parser.add_argument("--warmup", type=positive_int, help="untimed steps per phase")
    parser.add_argument("--windows", type=positive_int, help="timed windows per phase; the median is reported")
    parser.add_argument("--iters", type=positive_int, help="steps per timed window")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the device in TFLOP/s, for MFU")
    parser.add_argument(
        "--time-budget",
        type=float,
        help="seconds from the start after which compiled settings are skipped (eager ones always run)",
    )
    parser.add_argument(
        "--no-tf32",
        action="store_true",
        help="fp32 convolutions and matrix products in full IEEE fp32 (cudnn.allow_tf32 off)",
    )
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (failure tracebacks)")
    return parser.parse_args()


def main() -> int:
    """Measure every model and setting, print the tables, optionally write the JSON."""
    started = time.perf_counter()
    args = parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_throughput: no CUDA device was found, so nothing was measured "
            "(`--device cpu --smoke` checks the code path on CPU)"
        )
        return 0
    device = torch.device(args.device)
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    counts = resolve_counts(args)
    profile = args.profile or ("smoke" if args.smoke else "paper")
    backend = args.compile_backend or ("aot_eager" if args.smoke else "inductor")
    dev = device_name(device)
    peak = peak_tflops(dev, args.peak_tflops) if device.type == "cuda" or args.peak_tflops else (None, "CPU: no peak")
    print(
        f"gpu_throughput [{dev}] torch {torch.__version__}, CUDA {torch.version.cuda}, profile {profile}, "
        f"batch {counts.batch}, warm-up {counts.warmup}, {counts.windows} windows x {counts.iters} steps, "
        f"compile {args.compile} ({backend}), cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, "
        f"matmul precision {torch.get_float32_matmul_precision()}, peak: {fmt(peak[0], 'g')} TFLOP/s ({peak[1]})"
    )
    report = {
        "device": dev,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "profile": profile,
        "counts": asdict(counts),
        "compile": args.compile,
        "compile_backend": backend,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "peak_bf16_tflops": peak[0],
        "peak_source": peak[1],
        "time_budget_s": args.time_budget,
    }
    run = Run(args.models, profile, device, counts, backend, report, args.json)
    benchmark(run, args.compile, args.time_budget, started)
    report["models"] = {
        name: report_model(name, dev, profile, counts, run.flops[name], results, peak)
        for name, results in run.results.items()
    }
    if args.json:
        write_json(args.json, report)
        print(f"\ngpu_throughput [{dev}] figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
