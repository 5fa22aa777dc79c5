"""depthtune.models: paper shapes, computed output sizes, config round trips, Net3 freezing, FCRN weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision_source import torchvision_models

from depthtune.models import FCRN, MODEL_NAMES, Net3, Net12, build, output_size
from depthtune.models.fcrn import ResNetEncoder, UpProjection, unpool2x
from depthtune.models.geometry import chain_span
from depthtune.models.pretrained import load_resnet50_encoder

PAPER_INPUT = (228, 304)
PAPER_OUTPUT = {"net12": (55, 74), "net3": (109, 147), "fcrn": (128, 160)}
SMALL = (114, 152)


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """Use one intra-op thread here: on a busy 2-core machine two OpenMP threads ran ~3x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(name: str, input_size: tuple[int, int] = SMALL, width: float = 0.25) -> dict:
    """A CPU-sized config of model `name`."""
    if name == "net3":
        return {"width": width, "net12_config": {"input_size": list(input_size), "width": width}}
    if name == "fcrn":
        return {"input_size": list(input_size), "width": width, "blocks": [1, 1, 1, 1]}
    return {"input_size": list(input_size), "width": width}


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """state_dict key -> tensor shape."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("batch", [1, 3])
def test_paper_shapes_on_meta(name: str, batch: int) -> None:
    with torch.device("meta"):
        model = build(name).eval()
        out = model(torch.empty(batch, 3, *PAPER_INPUT))
    assert tuple(out.shape) == (batch, 1, *PAPER_OUTPUT[name])
    assert output_size(name) == PAPER_OUTPUT[name]
    assert model.input_size == PAPER_INPUT


@pytest.fixture(scope="module")
def paper_net12() -> Net12:
    torch.manual_seed(0)
    return Net12().eval()


def check_paper_forward(name: str, model: torch.nn.Module) -> None:
    """Real CPU forward of a paper-config model at batch 1 and 3: shapes, finiteness, batch independence."""
    x = torch.randn(3, 3, *PAPER_INPUT)
    with torch.no_grad():
        one = model(x[:1])
        three = model(x)
    assert tuple(one.shape) == (1, 1, *PAPER_OUTPUT[name])
    assert tuple(three.shape) == (3, 1, *PAPER_OUTPUT[name])
    torch.testing.assert_close(three[:1], one, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(three).all()


@pytest.mark.slow
def test_paper_net12_and_net3_run_on_cpu(paper_net12: Net12) -> None:
    check_paper_forward("net12", paper_net12)
    check_paper_forward("net3", build("net3", net12=paper_net12).eval())


@pytest.mark.slow
def test_paper_fcrn_runs_on_cpu() -> None:
    torch.manual_seed(0)
    check_paper_forward("fcrn", build("fcrn").eval())


def test_paper_parameter_counts() -> None:
    with torch.device("meta"):
        counts = {name: sum(p.numel() for p in build(name).parameters()) for name in MODEL_NAMES}
    assert 200e6 < counts["net12"] < 230e6  # dominated by the two FC layers
    assert counts["net3"] > counts["net12"]
    assert 60e6 < counts["fcrn"] < 66e6  # Laina et al. report ~63M


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(
    ("input_size", "width"), [(SMALL, 0.25), ((120, 160), 0.25), ((64, 96), 0.125), ((97, 131), 0.2)]
)
def test_output_size_matches_real_forward(name: str, input_size: tuple[int, int], width: float) -> None:
    cfg = small_config(name, input_size, width)
    model = build(name, **cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *input_size))
    assert tuple(out.shape) == (2, 1, *output_size(name, **cfg))


def test_output_size_of_net3_given_a_net12_instance() -> None:
    net12 = Net12(input_size=(120, 160), width=0.25)
    expected = output_size("net3", **Net3(net12, width=0.25).config)
    assert output_size("net3", net12=net12, width=0.25) == expected


def test_output_size_of_fcrn_reads_no_weights(tmp_path) -> None:
    assert output_size("fcrn", encoder_weights=tmp_path / "absent.pth") == PAPER_OUTPUT["fcrn"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_round_trip_small(name: str) -> None:
    model = build(name, **small_config(name))
    config = json.loads(json.dumps(model.config))
    assert config == model.config
    assert shapes(build(name, **config)) == shapes(model)
    assert model.name == name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_round_trip_paper_on_meta(name: str) -> None:
    with torch.device("meta"):
        model = build(name)
        rebuilt = build(name, **json.loads(json.dumps(model.config)))
    assert shapes(rebuilt) == shapes(model)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batch_items_are_independent_in_eval(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, **small_config(name)).eval()
    x = torch.randn(3, 3, *SMALL)
    with torch.no_grad():
        whole = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(whole, single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "cfg", "bias"),
    [
        ("net12", {}, math.log(4.0)),
        ("net3", {"residual": False}, math.log(4.0)),
        ("net3", {"residual": True}, 0.0),  # adds to the Net12's log-depth
        ("fcrn", {}, 4.0),  # FCRN regresses depth itself
    ],
)
def test_output_starts_at_init_depth(name: str, cfg: dict, bias: float) -> None:
    model = build(name, **small_config(name), **cfg, init_depth=4.0)
    final = model.head[-1] if name == "fcrn" else model.output
    torch.testing.assert_close(final.bias, torch.full((1,), bias))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_train_step_batch_one(name: str) -> None:
    model = build(name, **small_config(name)).train()
    out = model(torch.randn(1, 3, *SMALL))
    out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_width_scales_channels() -> None:
    model = Net12(input_size=SMALL, width=0.25)
    assert model.features[0].out_channels == 16
    assert model.coarse[1].out_features == 1024
    assert Net12(input_size=SMALL, width=0.001).features[0].out_channels == 1


@pytest.fixture
def net3() -> Net3:
    """A CPU-size Net3 in the project's variant (BatchNorm, residual start) on a BatchNorm Net12."""
    torch.manual_seed(0)
    return Net3(
        width=0.25,
        batch_norm=True,
        residual=True,
        net12_config={"input_size": list(SMALL), "width": 0.25, "batch_norm": True},
    )


def _resample_axis(values: np.ndarray, src: tuple[float, float], dst: tuple[float, float], n: int) -> np.ndarray:
    """Linear interpolation (edges clamped) of cells spanning ``src`` at the centres of n cells on ``dst``."""
    centres = dst[0] + (np.arange(n) + 0.5) * (dst[1] - dst[0]) / n
    index = (centres - src[0]) / ((src[1] - src[0]) / values.shape[-1]) - 0.5
    return np.stack(
        [np.interp(index, np.arange(values.shape[-1]), row) for row in values.reshape(-1, values.shape[-1])]
    ).reshape(*values.shape[:-1], n)


def test_residual_net3_untrained_equals_net12_resampled_onto_its_grid(net3: Net3) -> None:
    net3.train()
    x = torch.randn(2, 3, *SMALL)
    out = net3(x)
    with torch.no_grad():
        coarse = net3.net12(x).double().numpy()
    t12, l12, b12, r12 = net3.net12.output_region
    t3, l3, b3, r3 = net3.output_region
    along_x = _resample_axis(coarse, (l12, r12), (l3, r3), out.shape[-1])
    both = _resample_axis(along_x.swapaxes(-1, -2), (t12, b12), (t3, b3), out.shape[-2]).swapaxes(-1, -2)
    torch.testing.assert_close(out.double(), torch.from_numpy(both), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "layers", [((9, 2, 1), (3, 2, 0)), ((9, 2, 1), (3, 1, 0)), ((9, 2, 0), (2, 2, 0)), ((3, 1, 1), (3, 2, 1))]
)
def test_output_region_is_where_output_cells_look(layers) -> None:
    """Brute force: the centre of the input pixels that reach an output cell."""
    size = 57
    x = torch.zeros(1, 1, 1, size, requires_grad=True)
    net = nn.Sequential(*[nn.Conv2d(1, 1, (1, k), stride=(1, s), padding=(0, p), bias=False) for k, s, p in layers])
    for conv in net:
        nn.init.ones_(conv.weight)
    out = net(x)
    start, end = chain_span(layers, size)
    step = (end - start) * size / out.shape[-1]
    cells = (
        (0, out.shape[-1] - 1) if all(p == 0 for _, _, p in layers) else (out.shape[-1] // 2,)
    )  # padding clips borders
    for cell in cells:
        (grad,) = torch.autograd.grad(out[0, 0, 0, cell], x, retain_graph=True)
        hit = torch.nonzero(grad[0, 0, 0]).flatten()
        weights = grad[0, 0, 0, hit]
        centroid = float((weights * (hit + 0.5)).sum() / weights.sum())
        assert start * size + step * (cell + 0.5) == pytest.approx(centroid)


def test_net3_keeps_net12_frozen_and_in_eval(net3: Net3) -> None:
    net3.train()
    assert net3.training and not net3.net12.training
    assert not any(m.training for m in net3.net12.modules())
    assert all(not p.requires_grad for p in net3.net12.parameters())
    before = {k: v.clone() for k, v in net3.net12.state_dict().items()}
    net3(torch.randn(2, 3, *SMALL)).square().mean().backward()
    assert all(p.grad is None for p in net3.net12.parameters())
    own = [p for n, p in net3.named_parameters() if not n.startswith("net12.")]
    assert own and all(p.requires_grad and p.grad is not None for p in own)
    assert net3.output.weight.grad.abs().sum() > 0
    for k, v in net3.net12.state_dict().items():
        torch.testing.assert_close(v, before[k])  # BatchNorm running stats untouched too
    net3.eval()
    assert not net3.training and not net3.net12.training


def test_net3_state_dict_holds_net12(net3: Net3) -> None:
    net12_keys = {f"net12.{k}" for k in net3.net12.state_dict()}
    assert net12_keys <= set(net3.state_dict())
    rebuilt = build("net3", **net3.config)
    rebuilt.load_state_dict(net3.state_dict())
    x = torch.randn(1, 3, *SMALL)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), net3.eval()(x))


def test_build_net3_uses_given_net12() -> None:
    net12 = Net12(input_size=SMALL, width=0.25)
    model = build("net3", net12=net12, width=0.25)
    assert model.net12 is net12
    assert model.input_size == SMALL
    assert model.config["net12_config"] == net12.config


@pytest.fixture(scope="module")
def imagenet_files(tmp_path_factory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """torchvision's vgg16, vgg16_bn and resnet50 as freshly initialised by torchvision (random,
    not ImageNet: the keys, shapes and layout are what matter), saved as state dict files."""
    folder = tmp_path_factory.mktemp("imagenet")
    files = {}
    with torchvision_models() as tv:
        for name in ("vgg16", "vgg16_bn", "resnet50"):
            torch.manual_seed(0)
            sd = getattr(tv, name)().state_dict()
            torch.save(sd, folder / f"{name}.pth")
            files[name] = (folder / f"{name}.pth", sd)
    return files


def save_variant(tmp_path: Path, name: str, sd) -> Path:
    """Save `sd` as tmp_path/name and return the path."""
    path = tmp_path / name
    torch.save(sd, path)
    return path


def meta_encoder() -> ResNetEncoder:
    """A paper-size encoder on the meta device, for checks that fail before any weight is copied."""
    with torch.device("meta"):
        return ResNetEncoder()


def predictions_change(name: str, path: Path, **cfg) -> tuple[nn.Module, bool]:
    """Build `name` at paper width with and without `path` from the same seed; whether the loaded
    weights change its predictions on the same input."""
    x = torch.randn(1, 3, *SMALL)
    torch.manual_seed(0)
    plain = build(name, input_size=SMALL, **cfg).eval()
    torch.manual_seed(0)
    loaded = build(name, input_size=SMALL, encoder_weights=str(path), **cfg).eval()
    with torch.no_grad():
        return loaded, not torch.allclose(plain(x), loaded(x))


@pytest.mark.parametrize(("file", "batch_norm"), [("vgg16", False), ("vgg16_bn", True)])
def test_net12_loads_torchvision_vgg16_into_scale1(imagenet_files, file: str, batch_norm: bool) -> None:
    path, sd = imagenet_files[file]
    model, changed = predictions_change("net12", path, batch_norm=batch_norm)
    own = model.features.state_dict()
    assert {f"features.{k}" for k in own} == {
        k for k in sd if k.startswith("features.")
    }  # nothing missing, nothing extra
    for key, value in own.items():
        torch.testing.assert_close(value, sd[f"features.{key}"])
    assert changed
    assert "encoder_weights" not in model.config


def test_fcrn_loads_torchvision_resnet50_into_its_encoder(imagenet_files) -> None:
    path, sd = imagenet_files["resnet50"]
    model, changed = predictions_change("fcrn", path)
    own = model.encoder.state_dict()
    assert set(own) == {k for k in sd if not k.startswith("fc.")}  # nothing missing, nothing extra
    for key, value in own.items():
        torch.testing.assert_close(value, sd[key])
    assert changed
    assert "encoder_weights" not in model.config
    with torch.device("meta"):
        assert shapes(build("fcrn", **model.config)) == shapes(model)


def test_fcrn_loads_file_without_num_batches_tracked(imagenet_files, tmp_path) -> None:
    _, sd = imagenet_files["resnet50"]
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    encoder = ResNetEncoder()
    load_resnet50_encoder(encoder, save_variant(tmp_path, "old_resnet50.pth", old))
    torch.testing.assert_close(encoder.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])


def test_missing_weights_file_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="fcrn: encoder_weights file .*nope.pth"):
        FCRN(input_size=SMALL, encoder_weights=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="net12: encoder_weights file .*nope.pth"):
        Net12(input_size=SMALL, encoder_weights=tmp_path / "nope.pth")


def test_wrong_file_for_the_model_is_a_clear_error(imagenet_files) -> None:
    vgg, _ = imagenet_files["vgg16"]
    resnet, _ = imagenet_files["resnet50"]
    with pytest.raises(
        ValueError, match=r"fcrn: .*vgg16\.pth.*expected torchvision's resnet50.*missing keys.*conv1\.weight"
    ):
        FCRN(input_size=SMALL, encoder_weights=vgg)
    with pytest.raises(
        ValueError, match=r"net12: .*resnet50\.pth.*expected torchvision's vgg16 .*missing keys.*features\.0\.weight"
    ):
        Net12(input_size=SMALL, encoder_weights=resnet)
    with pytest.raises(
        ValueError, match=r"net12: .*vgg16\.pth.*vgg16_bn.*batch_norm=True.*missing keys.*features\.1\.weight"
    ):
        Net12(input_size=SMALL, batch_norm=True, encoder_weights=vgg)
    with pytest.raises(ValueError, match=r"resnet50\.pth.*shape mismatches.*conv1\.weight"):
        FCRN(input_size=SMALL, width=0.25, encoder_weights=resnet)


def test_weights_with_bad_keys_copy_nothing(imagenet_files, tmp_path) -> None:
    _, sd = imagenet_files["resnet50"]
    missing = {k: v for k, v in sd.items() if k != "layer2.1.conv2.weight"}
    with pytest.raises(ValueError, match=r"broken\.pth.*missing keys.*layer2\.1\.conv2\.weight"):
        load_resnet50_encoder(meta_encoder(), save_variant(tmp_path, "broken.pth", missing))
    extra = {**sd, "layer5.0.conv1.weight": torch.zeros(1)}
    encoder = ResNetEncoder()
    before = encoder.conv1.weight.clone()
    with pytest.raises(ValueError, match=r"extra\.pth.*unexpected keys.*layer5\.0\.conv1\.weight"):
        load_resnet50_encoder(encoder, save_variant(tmp_path, "extra.pth", extra))
    torch.testing.assert_close(encoder.conv1.weight, before)


def test_weights_file_that_is_not_a_state_dict(tmp_path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth.*could not be read"):
        load_resnet50_encoder(meta_encoder(), path)
    with pytest.raises(ValueError, match=r"list\.pth.*holds list; expected torchvision's resnet50"):
        load_resnet50_encoder(meta_encoder(), save_variant(tmp_path, "list.pth", [torch.zeros(1)]))


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match=r"'vgg'.*net12, net3, fcrn"):
        build("vgg")
    with pytest.raises(ValueError, match="'vgg'"):
        output_size("vgg")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unknown_config_key(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown config key 'depth'.*accepted keys: .*width"):
        build(name, depth=3)
    with pytest.raises(ValueError, match="'depth'"):
        output_size(name, depth=3)


def test_unknown_net12_config_key() -> None:
    with pytest.raises(ValueError, match=r"net12_config.*'blocks'"):
        build("net3", net12_config={"blocks": [1, 1, 1, 1]})


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("width", [0, -1.0, float("nan"), "wide"])
def test_bad_width(name: str, width) -> None:
    with pytest.raises(ValueError, match=rf"{name}: width="):
        build(name, width=width)


@pytest.mark.parametrize("name", ["net12", "fcrn"])
@pytest.mark.parametrize("input_size", [(16, 304), (228, 31), (228,), "228x304", (228.5, 304)])
def test_bad_input_size(name: str, input_size) -> None:
    with pytest.raises(ValueError, match=rf"{name}: input_size="):
        build(name, input_size=input_size)


def test_bad_other_args() -> None:
    with pytest.raises(ValueError, match="init_depth=0"):
        build("net12", init_depth=0)
    with pytest.raises(ValueError, match=r"blocks=\[3, 4, 0, 3\]"):
        build("fcrn", blocks=[3, 4, 0, 3])
    with pytest.raises(ValueError, match="not both"):
        build("net3", net12=Net12(input_size=SMALL, width=0.25), net12_config={"width": 0.25})
    with pytest.raises(ValueError, match="expected a Net12"):
        build("net3", net12=torch.nn.Linear(1, 1))


def test_wrong_input_shape_is_a_clear_error() -> None:
    model = Net12(input_size=SMALL, width=0.25)
    with pytest.raises(ValueError, match=r"expected \(B, 3, 114, 152\)"):
        model(torch.randn(1, 3, 120, 160))


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 4, 1, 1), (3, 6, 4, 4)])
def test_fast_up_projection_is_unpool_then_conv5_with_the_same_weights(shape) -> None:
    """Laina's fast form computes exactly the naive unpool + 5x5 convolution, forward and backward."""
    from depthtune.models.fcrn import unpool2x, unpool_conv5

    torch.manual_seed(1)
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(5, shape[1], 5, 5, requires_grad=True)
    naive = nn.functional.conv2d(unpool2x(x), weight, padding=2)
    fast = unpool_conv5(x, weight)
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-5)
    probe = torch.randn_like(naive)
    grads_naive = torch.autograd.grad((naive * probe).sum(), (x, weight))
    grads_fast = torch.autograd.grad((fast * probe).sum(), (x, weight))
    for got, want in zip(grads_fast, grads_naive):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_up_projection_module_equals_naive_unpool_then_convolutions() -> None:
    """The fast UpProjection computes Laina's naive block (unpool, 5x5 conv, ...) with the same weights."""
    torch.manual_seed(2)
    block = UpProjection(6, 4).eval()
    for bn in (block.bn1, block.bn2, block.bn_proj):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        u = unpool2x(x)
        branch = block.bn2(block.conv2(torch.relu(block.bn1(nn.functional.conv2d(u, block.conv1.weight, padding=2)))))
        naive = torch.relu(branch + block.bn_proj(nn.functional.conv2d(u, block.proj.weight, padding=2)))
        torch.testing.assert_close(block(x), naive, atol=1e-5, rtol=1e-5)


# The papers' tables, written out from the papers (not from this code): (kind, kernel, stride,
# channels, output h x w) for a 3x228x304 input. Eigen & Fergus 2015, architecture table, VGG
# version for depth: scale 1 = VGG-16's convolutions, full1 4096, full2 64 maps of 14x19 (17024);
# scale 2 = conv_s2_1 96 9x9 /2, pool_s2_1 3x3 /2 -> 55x74, three 64 5x5, output 5x5; scale 3 =
# conv_s3_1 64 9x9 /2, pool_s3_1 3x3 /1 -> 109x147, two 64 5x5, output 5x5.
VGG16_PAPER = [
    row
    for stage, (channels, size) in enumerate(
        [(64, (228, 304)), (128, (114, 152)), (256, (57, 76)), (512, (28, 38)), (512, (14, 19))]
    )
    for row in [("conv", 3, 1, channels, size)] * (2 if stage < 2 else 3)
    + [("pool", 2, 2, channels, (size[0] // 2, size[1] // 2))]
]
EIGEN_NET12 = VGG16_PAPER + [
    ("full", None, None, 4096, None),
    ("full", None, None, 64 * 14 * 19, None),
    ("conv", 9, 2, 96, (111, 149)),
    ("pool", 3, 2, 96, (55, 74)),
    *[("conv", 5, 1, 64, (55, 74))] * 3,
    ("conv", 5, 1, 1, (55, 74)),
]
EIGEN_NET3 = [
    ("conv", 9, 2, 64, (111, 149)),
    ("pool", 3, 1, 64, (109, 147)),
    *[("conv", 5, 1, 64, (109, 147))] * 2,
    ("conv", 5, 1, 1, (109, 147)),
]
# Laina et al. 2016, figure 1: ResNet-50 (conv 7x7 64 /2, max pool 3x3 /2, 3-4-6-3 residual blocks of
# 256-512-1024-2048), conv 1x1 1024, up-projections to 512, 256, 128, 64, conv 3x3 to depth 128x160.
LAINA_FCRN = [
    ("conv", 7, 2, 64, (114, 152)),
    ("pool", 3, 2, 64, (57, 76)),
    *[
        ("res-block", 3, 2 if block == 0 and stage > 0 else 1, channels, size)
        for stage, (count, channels, size) in enumerate(
            [(3, 256, (57, 76)), (4, 512, (29, 38)), (6, 1024, (15, 19)), (3, 2048, (8, 10))]
        )
        for block in range(count)
    ],
    ("conv", 1, 1, 1024, (8, 10)),
    *[("up-projection", 5, None, c, (8 * 2**i, 10 * 2**i)) for i, c in enumerate((512, 256, 128, 64), start=1)],
    ("conv", 3, 1, 1, (128, 160)),
]


@pytest.mark.parametrize(("name", "paper"), [("net12", EIGEN_NET12), ("net3", EIGEN_NET3), ("fcrn", LAINA_FCRN)])
def test_paper_profile_is_the_papers_table_layer_for_layer(name: str, paper: list) -> None:
    from depthtune.models.layers import layer_rows
    from depthtune.profiles import model_setup

    with torch.device("meta"):
        model = build(name, **model_setup("paper", name).model_cfg)
    rows = [(r.kind, r.kernel, r.stride, r.channels, r.output_size) for r in layer_rows(model, skip=("net12.",))]
    assert rows == paper
    if name == "net12":
        assert isinstance(model.coarse[-1], nn.ReLU)  # full2's 64 maps are rectified before scale 2 sees them
    assert not any(
        isinstance(m, nn.BatchNorm2d) for n, m in model.named_modules() if name != "fcrn" and not n.startswith("net12.")
    )
