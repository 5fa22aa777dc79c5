"""torchvision's own model definitions (vgg16, vgg16_bn, resnet50) for tests that check the
ImageNet loaders against real torchvision state dicts. The CPU torch build used here cannot
import the torchvision package as a whole (its compiled operators do not load against it), so the
model modules are imported from the installed package's source without running its __init__:
the key names and shapes are torchvision's, not a hand-written copy."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REQUIRED = os.environ.get("DEPTHTUNE_REQUIRE_TORCHVISION") == "1"


@contextmanager
def torchvision_models() -> Iterator[types.SimpleNamespace]:
    """``vgg16``, ``vgg16_bn`` and ``resnet50`` builders from torchvision's source; skips the test
    when torchvision is not installed (CI installs it and sets DEPTHTUNE_REQUIRE_TORCHVISION=1)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        if REQUIRED:
            raise RuntimeError("torchvision is not installed but DEPTHTUNE_REQUIRE_TORCHVISION=1")
        pytest.skip("torchvision is not installed (scripts/env.sh installs the one matching the CPU torch)")
    saved = {
        name: module for name, module in sys.modules.items() if name == "torchvision" or name.startswith("torchvision.")
    }
    package = types.ModuleType("torchvision")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["torchvision"] = package
    try:
        vgg = importlib.import_module("torchvision.models.vgg")
        resnet = importlib.import_module("torchvision.models.resnet")
        yield types.SimpleNamespace(vgg16=vgg.vgg16, vgg16_bn=vgg.vgg16_bn, resnet50=resnet.resnet50)
    finally:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules.update(saved)
