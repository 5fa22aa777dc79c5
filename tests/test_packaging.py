"""depthtune as an installed package (`pip install .`, not editable): the wheel carries the shipped
configs, and the CLI finds them with importlib.resources from any folder, not from a checkout."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from depthtune.cli import main
from depthtune.config import read_yaml
from depthtune.configs import SHIPPED, shipped_config
from depthtune.demo import DemoConfig
from depthtune.names import MODEL_NAMES
from depthtune.sweep.config import SweepConfig

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built the way `pip install .` builds one, from a copy of the sources, so that the
    build's scratch folders (build/, *.egg-info) land in the copy and not in the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO / "depthtune", source / "depthtune", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (built,) = tmp.glob("depthtune-*.whl")
    return built


def test_the_wheel_carries_the_shipped_configs_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in SHIPPED:
            member = f"depthtune/configs/{name}.yaml"
            assert member in names
            assert archive.read(member) == shipped_config(name).read_bytes()
        (info,) = {n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA")}
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "depthtune = depthtune.cli:main" in entry_points
    required = {Requirement(r).name for r in metadata.get_all("Requires-Dist")}
    assert {"psutil", "nvidia-ml-py"} <= required
    assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)


def test_an_installed_copy_reads_its_own_configs_from_an_empty_folder(wheel, tmp_path):
    """Installed without the checkout on the path: the configs come from the installed package."""
    target, empty = tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    code = "from depthtune.configs import shipped_config; print(shipped_config('net12'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=empty,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path == target / "depthtune" / "configs" / "net12.yaml" and path.is_file()


def test_the_shipped_configs_load_as_the_cli_loads_them():
    for model in MODEL_NAMES:
        path = shipped_config(model)
        values = read_yaml(path)
        assert values["model"] == model
        SweepConfig.from_dict(values, profile="cpu", where=str(path))
    DemoConfig.from_dict(read_yaml(shipped_config("demo")), where="demo")
    with pytest.raises(ValueError, match="no shipped config 'unet'"):
        shipped_config("unet")


def test_config_command_prints_a_shipped_config_to_copy(capsys):
    assert main(["config", "net3"]) == 0
    printed = capsys.readouterr().out
    assert printed == shipped_config("net3").read_text()
    assert yaml.safe_load(printed)["model"] == "net3"
