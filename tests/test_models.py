"""depthtune.models: paper shapes, computed output sizes, config round trips, Net3 freezing, FCRN weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from depthtune.models import FCRN, MODEL_NAMES, Net3, Net12, build, output_size
from depthtune.models.fcrn import ResNetEncoder, load_encoder_weights
from depthtune.models.geometry import chain_span

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


def torchvision_resnet50_keys() -> list[str]:
    """torchvision resnet50 state_dict keys, written out from its naming pattern (no torchvision import)."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for stage, count in enumerate((3, 4, 6, 3), start=1):
        for block in range(count):
            prefix = f"layer{stage}.{block}"
            for i in (1, 2, 3):
                keys.append(f"{prefix}.conv{i}.weight")
                keys += [f"{prefix}.bn{i}.{s}" for s in bn]
            if block == 0:
                keys.append(f"{prefix}.downsample.0.weight")
                keys += [f"{prefix}.downsample.1.{s}" for s in bn]
    return keys + ["fc.weight", "fc.bias"]


def torchvision_like_state_dict(model: FCRN) -> dict[str, torch.Tensor]:
    """Random tensors under torchvision's resnet50 keys with the shapes of `model`'s encoder, plus fc.*."""
    encoder = {k: v.shape for k, v in model.encoder.state_dict().items()}
    sd = {k: torch.randn(encoder[k]) for k in torchvision_resnet50_keys() if not k.startswith("fc.")}
    sd.update({k: torch.randint(0, 100, ()) for k in sd if k.endswith("num_batches_tracked")})
    sd["fc.weight"] = torch.randn(1000, 2048)
    sd["fc.bias"] = torch.randn(1000)
    return sd


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


@pytest.mark.parametrize("name", ["net12", "fcrn"])
def test_final_bias_is_log_init_depth(name: str) -> None:
    model = build(name, **small_config(name), init_depth=4.0)
    final = model.fuse[-1] if name == "net12" else model.head[-1]
    torch.testing.assert_close(final.bias, torch.full((1,), math.log(4.0)))


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
    torch.manual_seed(0)
    return Net3(width=0.25, net12_config={"input_size": list(SMALL), "width": 0.25})


def _resample_axis(values: np.ndarray, src: tuple[float, float], dst: tuple[float, float], n: int) -> np.ndarray:
    """Linear interpolation (edges clamped) of cells spanning ``src`` at the centres of n cells on ``dst``."""
    centres = dst[0] + (np.arange(n) + 0.5) * (dst[1] - dst[0]) / n
    index = (centres - src[0]) / ((src[1] - src[0]) / values.shape[-1]) - 0.5
    return np.stack([np.interp(index, np.arange(values.shape[-1]), row) for row in values.reshape(-1, values.shape[-1])]).reshape(*values.shape[:-1], n)


def test_net3_untrained_equals_net12_resampled_onto_its_grid(net3: Net3) -> None:
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


@pytest.mark.parametrize("layers", [((9, 2, 0), (2, 2, 0)), ((9, 2, 0), (2, 1, 0)), ((3, 1, 1), (3, 2, 1))])
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
    cells = (0, out.shape[-1] - 1) if all(p == 0 for _, _, p in layers) else (out.shape[-1] // 2,)  # padding clips borders
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
    assert net3.refine[-1].weight.grad.abs().sum() > 0
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


def test_fcrn_encoder_names_match_torchvision() -> None:
    with torch.device("meta"):
        model = build("fcrn")
    expected = [k for k in torchvision_resnet50_keys() if not k.startswith("fc.")]
    assert list(model.encoder.state_dict()) == expected


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision-style ResNet-50 state_dict file with random weights, and its contents."""
    with torch.device("meta"):
        model = build("fcrn")
    sd = torchvision_like_state_dict(model)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(sd, path)
    return path, sd


def save_variant(tmp_path: Path, name: str, sd: dict[str, torch.Tensor]) -> Path:
    """Save `sd` as tmp_path/name and return the path."""
    path = tmp_path / name
    torch.save(sd, path)
    return path


def meta_encoder() -> ResNetEncoder:
    """A paper-size encoder on the meta device, for checks that fail before any weight is copied."""
    with torch.device("meta"):
        return ResNetEncoder()


def test_fcrn_loads_torchvision_state_dict(resnet50_file) -> None:
    path, sd = resnet50_file
    loaded = build("fcrn", input_size=SMALL, encoder_weights=str(path))
    for k, v in loaded.encoder.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    assert "encoder_weights" not in loaded.config
    with torch.device("meta"):
        assert shapes(build("fcrn", **loaded.config)) == shapes(loaded)


def test_fcrn_loads_file_without_num_batches_tracked(resnet50_file, tmp_path) -> None:
    _, sd = resnet50_file
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    encoder = ResNetEncoder()
    load_encoder_weights(encoder, save_variant(tmp_path, "old_resnet50.pth", old))
    torch.testing.assert_close(encoder.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])


def test_fcrn_missing_weights_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        FCRN(input_size=SMALL, encoder_weights=tmp_path / "nope.pth")


def test_fcrn_weights_wrong_width(resnet50_file) -> None:
    path, _ = resnet50_file
    with pytest.raises(ValueError, match=r"resnet50\.pth.*shape mismatches.*conv1\.weight"):
        FCRN(input_size=SMALL, width=0.25, encoder_weights=path)


def test_fcrn_weights_bad_keys(resnet50_file, tmp_path) -> None:
    _, sd = resnet50_file
    missing = {k: v for k, v in sd.items() if k != "layer2.1.conv2.weight"}
    with pytest.raises(ValueError, match=r"broken\.pth.*missing keys.*layer2\.1\.conv2\.weight"):
        load_encoder_weights(meta_encoder(), save_variant(tmp_path, "broken.pth", missing))
    extra = {**sd, "layer5.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"extra\.pth.*unexpected keys.*layer5\.0\.conv1\.weight"):
        load_encoder_weights(meta_encoder(), save_variant(tmp_path, "extra.pth", extra))


def test_fcrn_weights_not_a_state_dict(tmp_path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_encoder_weights(meta_encoder(), path)
    with pytest.raises(ValueError, match=r"list\.pth.*expected a torchvision ResNet-50 state_dict"):
        load_encoder_weights(meta_encoder(), save_variant(tmp_path, "list.pth", [torch.zeros(1)]))


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
