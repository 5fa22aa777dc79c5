"""The `depthtune` command end to end: synthetic data, a training run, the demo, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from depthtune.configs import shipped_config

REPO = Path(__file__).resolve().parent.parent


def depthtune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "depthtune.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_synth_then_train(tmp_path, synthetic_file):
    out = depthtune("data", "synth", "--n", "3", "--out", str(tmp_path / "s.mat"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s.mat").read_bytes()[:6] == b"MATLAB"

    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY["net12"].items()},
                "batch_size": 8,
            }
        )
    )
    run = depthtune(
        "train",
        "--model",
        "net12",
        "--data",
        str(synthetic_file),
        "--config",
        str(config),
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--out",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    test_metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert 0 < test_metrics["abs_rel"] < 2
    assert "test abs_rel" in run.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "net12", "--data", "missing.mat"], "missing.mat"),
        (["train", "--model", "net12", "--data", "{data}", "--lr", "-1"], "lr=-1.0"),
        (["train", "--model", "net12", "--data", "{data}", "--step-size", "0"], "step_size=0"),
        (["train", "--model", "net3", "--data", "{data}"], "net12_checkpoint"),
        (["train", "--model", "net3", "--data", "{data}", "--net12-checkpoint", "nope.pt"], "nope.pt"),
        (["train", "--model", "net12", "--data", "{data}", "--profile", "gpu"], "profile 'gpu'"),
        (["train", "--model", "net12", "--data", "{data}", "--variant", "faithful"], "unknown variant 'faithful'"),
        (
            ["train", "--model", "fcrn", "--data", "{data}", "--encoder-weights", "resnet.pth"],
            "fcrn: encoder_weights file 'resnet.pth' does not exist",
        ),
        (["data", "synth", "--n", "0", "--out", "x.mat"], "n=0"),
        (["compare"], "no champion of ['net12', 'net3', 'fcrn'] is registered"),
        (["compare", "unet@champion"], "no registered model 'unet'"),
        (["dashboard", "abc123"], "no sweep run 'abc123'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, synthetic_file, args, message):
    out = depthtune(*[a.replace("{data}", str(synthetic_file)) for a in args], cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_version_is_the_installed_package_version(tmp_path):
    from importlib import metadata

    out = depthtune("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"depthtune {metadata.version('depthtune')}"


def test_unknown_model_is_rejected_by_the_parser(tmp_path):
    out = depthtune("train", "--model", "unet", "--data", "x.mat", cwd=tmp_path)
    assert out.returncode == 2 and "unet" in out.stderr


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    config = yaml.safe_load(shipped_config("demo").read_text())
    config.update(
        synthetic_frames=20,
        synthetic_path=str(tmp_path / "synth.mat"),
        output_dir=str(tmp_path / "runs"),
        profile="cpu",
    )
    for model in config["models"]:
        config[model].update(epochs=1)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    out = depthtune("demo", "--config", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["test_metrics"]) == {
        "train mean depth",
        "best constant depth",
        "Net12",
        "Net3 (on Net12)",
        "FCRN",
    }
    for model in config["models"]:
        assert (run_dir / model / "best" / "checkpoint.pt").is_file()
    assert summary["configs"]["net3"]["net12_checkpoint"] == str(run_dir / "net12" / "best")
    assert "Results: " + str(run_dir) in out.stderr
    assert "| Net3 (on Net12) |" in (run_dir / "summary.md").read_text()


@pytest.mark.slow
def test_net3_sweep_without_a_registered_net12_says_what_exists(tmp_path, synthetic_file):
    out = depthtune("tune", "net3", "--data", str(synthetic_file), "--profile", "cpu", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no registered model 'net12'; registered models: none" in out.stderr
    assert not list(tmp_path.rglob("depthtune_sweep.json")), "a failed start must not leave a sweep to --resume"
