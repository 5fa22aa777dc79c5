"""depthtune.profiles: what each profile and variant builds, and the ways to pick them."""

from __future__ import annotations

import pytest
import torch

from depthtune.models import build
from depthtune.profiles import EIGEN_NET3_RATES, EIGEN_NET12_RATES, model_setup, resolve_variant
from depthtune.train import build_model, parameter_groups
from depthtune.train_config import TrainConfig


def test_the_paper_profile_builds_the_papers_networks_and_rates():
    net12, net3, fcrn = (model_setup("paper", name) for name in ("net12", "net3", "fcrn"))
    assert net12.variant == net3.variant == fcrn.variant == "paper"
    assert net12.model_cfg == {"batch_norm": False} and net12.lr_multipliers == EIGEN_NET12_RATES
    assert net3.model_cfg == {"batch_norm": False, "residual": False} and net3.lr_multipliers == EIGEN_NET3_RATES
    assert fcrn.model_cfg == {} and fcrn.lr_multipliers == {}


def test_the_cpu_profile_defaults_to_the_project_variant_and_can_take_the_papers():
    project = model_setup("cpu", "net3")
    assert project.variant == "project"
    assert project.model_cfg == {"width": 0.25, "batch_norm": True, "residual": True} and project.lr_multipliers == {}
    paper = model_setup("cpu", "net12", "paper")
    assert paper.model_cfg == {"input_size": (114, 152), "width": 0.25, "batch_norm": False}
    assert paper.lr_multipliers == EIGEN_NET12_RATES


@pytest.mark.parametrize("name", ["net12", "net3", "fcrn"])
@pytest.mark.parametrize("variant", ["paper", "project"])
def test_every_variant_builds_and_its_rates_name_real_layer_groups(name, variant):
    setup = model_setup("cpu", name, variant)
    cfg = dict(setup.model_cfg)
    if name == "net3":
        cfg["net12_config"] = model_setup("cpu", "net12", variant).model_cfg
    with torch.device("meta"):
        model = build(name, **cfg)
    groups = {g["name"]: g["lr"] for g in parameter_groups(model, 0.01, setup.lr_multipliers)}
    assert set(setup.lr_multipliers) <= set(groups)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match=r"unknown variant 'faithful'; expected one of \['paper', 'project'\]"):
        resolve_variant("cpu", "faithful")
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        model_setup("gpu", "net12")


def test_encoder_weights_reach_a_fresh_model_and_a_net3_is_refused_them(tmp_path):
    missing = tmp_path / "vgg16.pth"
    config = TrainConfig.from_dict(
        {"model": "net12", "model_cfg": {"input_size": [64, 80], "width": 0.125}, "encoder_weights": str(missing)}
    )
    with pytest.raises(FileNotFoundError, match=r"net12: encoder_weights file .*vgg16\.pth.* does not exist"):
        build_model(config)
    with pytest.raises(ValueError, match="encoder_weights: a Net3 trains only scale 3"):
        TrainConfig.from_dict({"model": "net3", "net12_checkpoint": "x", "encoder_weights": str(missing)})
