"""Load a registered depthtune model by name from any process that has only this package and the
tracking URI: ``load_model("fcrn@champion")``, ``"fcrn/3"`` or a full ``models:/`` URI."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from depthtune.predictor import CONFIG_FILE, WEIGHTS_FILE, DepthPredictor
from depthtune.tracking.reachable import check_tracking_uri
from depthtune.tracking.registry import tracking_uri as tracking_uri_scope

_REFERENCE = re.compile(r"^(?:models:/)?(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def parse_reference(reference: str) -> tuple[str, str | None, str | None]:
    """'fcrn@champion' | 'fcrn/3' | 'models:/fcrn@champion' -> (name, alias, version)."""
    match = _REFERENCE.match(reference.strip())
    if not match:
        raise ValueError(
            f"model reference {reference!r}: expected NAME@ALIAS, NAME/VERSION or models:/..., e.g. fcrn@champion"
        )
    return match["name"], match["alias"], match["version"]


def check_exists(client: MlflowClient, name: str, alias: str | None, version: str | None) -> None:
    """Unknown names and aliases are errors that list what does exist."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        raise ValueError(f"no registered model {name!r}; registered models: {names or 'none'}") from None
    if alias is not None and alias not in model.aliases:
        raise ValueError(
            f"model {name!r} has no alias {alias!r}; its aliases: {dict(sorted(model.aliases.items())) or 'none'}"
        )
    if version is not None:
        try:
            client.get_model_version(name, version)
        except MlflowException:
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            raise ValueError(f"model {name!r} has no version {version}; versions: {versions}") from None


def load_model(reference: str, tracking_uri: str | None = None, device: str = "cpu") -> DepthPredictor:
    """A DepthPredictor for a registered model (``.predict(rgb) -> depth``, ``.module`` the torch model)."""
    name, alias, version = parse_reference(reference)
    uri = tracking_uri or mlflow.get_tracking_uri()
    check_tracking_uri(uri)
    check_exists(MlflowClient(uri), name, alias, version)
    model_uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory() as directory, tracking_uri_scope(uri):  # models:/ resolves via the registry URI
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=directory))
        try:
            return DepthPredictor.from_files(
                local / "artifacts" / WEIGHTS_FILE, local / "artifacts" / CONFIG_FILE, device
            )
        except ValueError as exc:  # it names the downloaded copy; say which registered model that was
            raise ValueError(f"registered model {model_uri}: {str(exc).replace(str(local) + '/', '')}") from None
