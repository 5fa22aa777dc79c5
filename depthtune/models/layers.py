"""A model's layer table as its code builds it (kernel, channels, stride, output size of every
convolution, pooling and fully connected layer, and of FCRN's residual and up-projection blocks as
one row each, as Laina's figure draws them), read by a forward pass on the meta device, so the
tables in docs/models.md and the tests' comparison with the papers come from the code itself.
``python -m depthtune.models.layers`` prints the tables of docs/models.md (all but the paper's layer names)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from depthtune.models import MODEL_NAMES, build
from depthtune.profiles import model_setup

from .fcrn import Bottleneck, UpProjection

TABLED = (nn.Conv2d, nn.MaxPool2d, nn.Linear, Bottleneck, UpProjection)
BLOCKS = (Bottleneck, UpProjection)  # one row each; the layers inside them are not listed


@dataclass(frozen=True)
class LayerRow:
    """One layer: its module name, kind (conv, pool, full, res-block, up-projection), kernel,
    stride, padding, output channels (units for full) and output (h, w) (None for full)."""

    name: str
    kind: str
    kernel: int | None
    stride: int | None
    padding: int | None
    channels: int
    output_size: tuple[int, int] | None

    def cells(self) -> list[str]:
        """Markdown cells: name (as code), kind, kernel, stride, padding, channels, output size (h x w)."""
        size = f"{self.output_size[0]}x{self.output_size[1]}" if self.output_size else "-"
        kernel = f"{self.kernel}x{self.kernel}" if self.kernel else "-"
        return [
            f"`{self.name}`",
            self.kind,
            kernel,
            str(self.stride or "-"),
            str(self.padding if self.padding is not None else "-"),
            str(self.channels),
            size,
        ]


def _first(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value


def layer_rows(model: nn.Module, skip: tuple[str, ...] = ()) -> list[LayerRow]:
    """The conv, pool and fully connected layers of ``model`` in the order its forward runs them,
    with their output shapes for one input at ``model.input_size``; modules under ``skip``
    prefixes (e.g. Net3's frozen ``net12.``) are left out. ``model`` must live on the meta device."""
    rows: list[LayerRow] = []
    names = {module: name for name, module in model.named_modules()}
    inside_blocks = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, BLOCKS))

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        name = names[module]
        if name.startswith(skip) or name.startswith(inside_blocks):
            return
        size = tuple(output.shape[-2:]) if output.ndim == 4 else None
        if isinstance(module, Bottleneck):
            rows.append(LayerRow(name, "res-block", 3, _first(module.conv2.stride), None, int(output.shape[1]), size))
        elif isinstance(module, UpProjection):
            rows.append(LayerRow(name, "up-projection", 5, None, None, int(output.shape[1]), size))
        elif isinstance(module, nn.Linear):
            rows.append(LayerRow(name, "full", None, None, None, module.out_features, None))
        elif isinstance(module, nn.Conv2d):
            rows.append(
                LayerRow(
                    name,
                    "conv",
                    _first(module.kernel_size),
                    _first(module.stride),
                    _first(module.padding),
                    module.out_channels,
                    size,
                )
            )
        else:
            rows.append(
                LayerRow(
                    name,
                    "pool",
                    _first(module.kernel_size),
                    _first(module.stride),
                    _first(module.padding),
                    int(output.shape[1]),
                    size,
                )
            )

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, TABLED)]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, 3, *model.input_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return rows


def markdown_table(rows: list[LayerRow]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| code's module | kind | kernel | stride | pad | channels | output (h x w) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    """Print every model's layer table under the paper profile (Net3 without its frozen Net12)."""
    for name in MODEL_NAMES:
        with torch.device("meta"):
            model = build(name, **model_setup("paper", name).model_cfg)
        print(f"### {name}\n\n{markdown_table(layer_rows(model, skip=('net12.',)))}\n")


if __name__ == "__main__":
    main()
