"""One self-contained HTML page from several plotly figures: plotly.js is embedded once, so the
file opens offline and inside MLflow's artifact viewer."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 28px 0 4px; }
p.note { color: #555; font-size: 13px; max-width: 1100px; margin: 4px 0; }
"""


def write_page(path: str | Path, title: str, notes: list[str], sections: list[tuple[str, str, go.Figure]]) -> Path:
    """Write ``sections`` (heading, explanation, figure) under ``title`` to ``path``; returns it."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p class='note'>{html.escape(note)}</p>" for note in notes),
    ]
    for index, (heading, explanation, figure) in enumerate(sections):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if explanation:
            parts.append(f"<p class='note'>{html.escape(explanation)}</p>")
        parts.append(figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{index}"))
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
