"""Bad input gets one clear line, never a traceback or a confident wrong answer: config values of the
wrong type, image files of every common kind, model files that are not what they claim, folders that
cannot hold a run, and tracking URIs that lead nowhere; and the command line turns each into exit
code 2."""

from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import TINY
from depthtune.images import check_against_input, read_rgb
from depthtune.models import build
from depthtune.predictor import DepthPredictor, save_model_files
from depthtune.serve.processes import free_port
from depthtune.storage_check import check_room, checkpoint_bytes
from depthtune.tracking.reachable import check_tracking_uri
from depthtune.train_config import TrainConfig


@pytest.mark.parametrize(
    "values, message",
    [
        ({"momentum": "abc"}, "momentum='abc': expected a number"),
        ({"epochs": 2.5}, "epochs=2.5: expected an integer"),
        ({"bf16": "yes"}, "bf16='yes': expected true or false"),
        ({"data": 3}, "data=3: expected a string or null"),
        ({"lr": True}, "lr=True: expected a number"),
        ({"model_cfg": [1]}, "model_cfg=[1]: expected a mapping"),
    ],
)
def test_config_values_of_the_wrong_type_are_named(values, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig.from_dict(values)


def test_an_int_is_a_number_and_a_missing_key_is_named():
    assert TrainConfig.from_dict({"lr": 1, "momentum": 0}).lr == 1
    from depthtune.paper_settings import PaperSettings

    with pytest.raises(
        ValueError, match=r"paper_settings: missing key\(s\) \['momentum', 'step_fraction', 'grad_weight', 'source'\]"
    ):
        PaperSettings.from_dict({"lr": 0.01})


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_images_of_every_common_kind_become_8_bit_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_rgb(_save(tmp_path / "rgb.png", rgb)), rgb)
    rgba = np.concatenate([rgb, np.full((48, 64, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(read_rgb(_save(tmp_path / "rgba.png", rgba)), rgb)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(read_rgb(_save(tmp_path / "grey.png", grey)), np.repeat(grey[..., None], 3, axis=2))
    # 16-bit greyscale: Pillow's own RGB conversion saturates almost every pixel to 255; here it scales
    wide = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    path = _save(tmp_path / "grey16.png", wide)
    assert Image.open(path).mode.startswith("I;16")
    assert (np.asarray(Image.open(path).convert("RGB")) == 255).mean() > 0.9
    scaled = read_rgb(path)
    np.testing.assert_array_equal(scaled[..., 1], np.round(wide / 257.0).astype(np.uint8))
    assert (scaled == 255).mean() < 0.01


def test_what_is_not_a_photograph_is_refused(tmp_path):
    floats = tmp_path / "float.tif"
    Image.fromarray(np.ones((8, 8), np.float32)).save(floats)
    with pytest.raises(ValueError, match="floating-point values"):
        read_rgb(floats)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="could not be read as an image"):
        read_rgb(text)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_rgb(tmp_path / "absent.png")


def test_small_or_distorted_images_are_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        check_against_input(np.zeros((480, 640, 3), np.uint8), (228, 304), "room.png")
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        check_against_input(np.zeros((7, 5, 3), np.uint8), (228, 304), "tiny.png")
    assert "tiny.png is 5x7, smaller than the model's 304x228 input" in caplog.text
    assert "tiny.png has aspect ratio 0.71 (width/height), the model 1.33" in caplog.text


class Foreign:
    """An object a weights-only load must refuse to unpickle."""


def test_model_files_that_are_not_what_they_claim_are_named(tmp_path):
    model = build("net12", **TINY["net12"])
    weights, config = save_model_files(model, tmp_path / "good")
    assert DepthPredictor.from_files(weights, config).input_size == (64, 80)
    no_name = tmp_path / "no_name.json"
    no_name.write_text(json.dumps({"model_config": {}}))
    with pytest.raises(ValueError, match="no_name.json: not a depthtune model description"):
        DepthPredictor.from_files(weights, no_name)
    for name, content in (("text.pt", b"hello"), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"{name}: not a weights file"):
            DepthPredictor.from_files(tmp_path / name, config)
    torch.save({"optimizer": Foreign()}, tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match="pickle.pt: not a weights file"):
        DepthPredictor.from_files(tmp_path / "pickle.pt", config)
    other = build("fcrn", **TINY["fcrn"])
    torch.save(other.state_dict(), tmp_path / "fcrn.pt")
    with pytest.raises(ValueError, match="fcrn.pt: the weights do not fit the net12"):
        DepthPredictor.from_files(tmp_path / "fcrn.pt", config)


def test_checkpoint_size_is_the_weights_and_momentum_of_what_trains():
    model = build("net12", **TINY["net12"])
    assert checkpoint_bytes("net12", TINY["net12"]) == 8 * sum(p.numel() for p in model.parameters())
    net3 = build("net3", net12=build("net12", width=0.125), **TINY["net3"])
    assert checkpoint_bytes("net3", TINY["net3"]) == 8 * sum(p.numel() for p in net3.parameters() if p.requires_grad)


def test_folders_that_cannot_hold_a_run_are_named(tmp_path):
    check_room(tmp_path / "new" / "run", 1, "run directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not __import__("os").access(locked, __import__("os").W_OK):  # root may write anywhere
            with pytest.raises(PermissionError, match="locked is not writable"):
                check_room(locked / "run", 1, "run directory")
    finally:
        locked.chmod(0o700)
    with pytest.raises(OSError, match="the disk is \\(nearly\\) full") as error:
        check_room(tmp_path, 10**18, "storage_path")
    assert error.value.errno == errno.ENOSPC
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        check_room(afile / "run", 1, "run directory")


def test_tracking_uris_that_lead_nowhere_are_named_at_once(tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match=f"tracking server {nowhere} did not answer within 1 s"):
        check_tracking_uri(nowhere, timeout=1)
    with pytest.raises(ValueError, match="folder .*missing does not exist"):
        check_tracking_uri(f"sqlite:///{tmp_path}/missing/mlflow.db")
    check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "depthtune.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "case",
    ["type in yaml", "port out of range", "synth into a folder", "read-only out"],
)
def test_the_command_line_turns_expected_failures_into_one_line_and_exit_2(tmp_path, synthetic_file, case):
    if case == "type in yaml":
        (tmp_path / "t.yaml").write_text(yaml.safe_dump({"momentum": "abc"}))
        out = _cli(
            "train",
            "--model",
            "net12",
            "--data",
            str(synthetic_file),
            "--config",
            str(tmp_path / "t.yaml"),
            cwd=tmp_path,
        )
        expected = "momentum='abc': expected a number"
    elif case == "port out of range":
        out = _cli("serve", "start", "--port", "99999", "--state-dir", str(tmp_path), cwd=tmp_path)
        expected = "argument --port: invalid port_number value: '99999'"
    elif case == "synth into a folder":
        out = _cli("data", "synth", "--n", "1", "--out", str(tmp_path), cwd=tmp_path)
        expected = "it is a directory"
    else:
        if __import__("os").geteuid() == 0:
            pytest.skip("root writes to read-only folders")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = _cli(
            "train",
            "--model",
            "net12",
            "--data",
            str(synthetic_file),
            "--epochs",
            "1",
            "--out",
            str(locked / "run"),
            cwd=tmp_path,
        )
        expected = "is not writable"
    assert out.returncode == 2, out.stderr[-3000:]
    assert expected in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
