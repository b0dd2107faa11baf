"""The report as one self-contained HTML page: the sections of eanet.report.files, the tables as
HTML tables, the plots embedded as base64 PNGs, the style inline; no script, nothing fetched.

One file, so it reads the same opened from disk, from a copy, or in the MLflow UI's artifact
view (which shows an HTML artifact in a frame); tests/test_report_html.py opens it in
headless Chromium.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; max-width: 110em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #c8c8c8; padding: 0.25em 0.55em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
ul.verdicts li { margin: 0.3em 0; font-weight: 600; }
code { background: #f3f3f3; padding: 0 0.2em; }
img { max-width: 100%; margin: 0.5em 1em 0.5em 0; border: 1px solid #e0e0e0; }
"""


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            "</figure>")


def html_page(title: str, sections: list) -> str:
    parts = [f"<h1>Report: {html.escape(title)}</h1>"]
    for heading, blocks in sections:
        if heading:
            parts.append(f"<h2>{_inline(heading)}</h2>")
        for block in blocks:
            if isinstance(block, pd.DataFrame):
                parts.append(_table(block))
            elif isinstance(block, list):
                parts.append('<ul class="verdicts">'
                             + "".join(f"<li>{_inline(item)}</li>" for item in block) + "</ul>")
            elif isinstance(block, Path):
                parts.append(_image(block))
            else:
                parts.append(f"<p>{_inline(block)}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Report: {html.escape(title)}</title><style>{STYLE}</style></head>"
            "<body>\n" + "\n".join(parts) + "\n</body></html>\n")
