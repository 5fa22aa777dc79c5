"""The package's floors (docs/layout.md): no module imports from a floor above its own, and reading a
config imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "depthtune"
# Longest prefix wins: depthtune.sweep.config is a settings module inside the sweep package.
FLOORS = {
    "depthtune.names": 0,
    "depthtune.config": 0,
    "depthtune.configs": 0,
    "depthtune.train_config": 0,
    "depthtune.search_space": 0,
    "depthtune.paper_settings": 0,
    "depthtune.profiles": 0,
    "depthtune.sweep.config": 0,
    "depthtune.cluster_file": 0,
    "depthtune.data": 1,
    "depthtune.models": 1,
    "depthtune.losses": 1,
    "depthtune.metrics": 1,
    "depthtune.checkpoints": 1,
    "depthtune.checkpoint_pipeline": 1,
    "depthtune.predictor": 1,
    "depthtune.evaluation": 1,
    "depthtune.train": 1,
    "depthtune.baselines": 1,
    "depthtune.storage_check": 1,
    "depthtune.images": 1,
    "depthtune.tracking": 2,
    "depthtune.serve": 3,
    "depthtune.runner": 4,
    "depthtune.demo": 4,
    "depthtune.sweep": 4,
    "depthtune.dashboards": 4,
    "depthtune.cli": 5,
}


def _floor(module: str) -> int:
    matches = [prefix for prefix in FLOORS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise AssertionError(f"{module} has no floor: add it to FLOORS and to docs/layout.md")
    return FLOORS[max(matches, key=len)]


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "depthtune":  # the package's lazy load_model sits above every floor
            found.append((name, path))
    return found


def _imports(path: Path, module: str) -> set[str]:
    names = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return {name for name in names if name == "depthtune" or name.startswith("depthtune.")}


@pytest.mark.parametrize("module, path", _modules(), ids=[name for name, _ in _modules()])
def test_no_import_runs_up_a_floor(module, path):
    own = _floor(module)
    upward = sorted(name for name in _imports(path, module) if _floor(name) > own)
    assert not upward, f"{module} (floor {own}) imports from higher floors: {upward}"


@pytest.mark.parametrize("module", ["depthtune.sweep.config", "depthtune.train_config", "depthtune.profiles"])
def test_reading_a_config_imports_no_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules, 'ray' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"], f"importing {module} loads torch, ray, mlflow: {out}"
