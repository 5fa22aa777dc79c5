"""Is a tracking URI there at all? Checked once, in seconds, before work starts: MLflow's client
retries an unreachable server for minutes, which is right for a server that goes away during a
sweep and wrong for a typo."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

TIMEOUT_S = 5.0


def check_tracking_uri(uri: str, timeout: float = TIMEOUT_S) -> None:
    """An ``http(s)://`` server must answer (any HTTP status: a login wall is an answer) within
    ``timeout``; a ``sqlite:///`` or file store's folder must exist. Anything else is MLflow's to
    judge. Raises ValueError naming the URI and what failed."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ValueError(
                f"tracking server {uri} did not answer within {timeout:.0f} s ({reason}); is it running, "
                "and is the URI right (MLFLOW_TRACKING_URI or --tracking-uri)?"
            ) from None
    elif parts.scheme in ("sqlite", "file", ""):
        path = Path(parts.path if parts.scheme else uri)
        folder = path.parent if parts.scheme == "sqlite" else path
        if not folder.exists():
            raise ValueError(f"tracking store {uri}: folder {folder} does not exist")
