"""Plotly dashboards written as self-contained HTML (plotly.js embedded, no CDN): one per sweep
and one comparing registered models."""
