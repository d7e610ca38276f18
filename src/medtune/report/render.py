"""The report's two renderings, HTML (self-contained: inline CSS, figures as base64 PNG) and Markdown.

A :class:`Section` collects its paragraphs, tables and images in both forms at once, so the two pages always say
the same; :func:`html_page` and :func:`markdown_page` put the sections together.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.9em}.fail{color:#b00}
img{max-width:100%;height:auto;border:1px solid #eee}
nav a{margin-right:1em}
"""


def fmt_table(df: pd.DataFrame, pct: Sequence[str] = (), pvals: Sequence[str] = ()) -> pd.DataFrame:
    """A table as the report prints it (``pct`` columns in % to 0.1, ``pvals`` to 3 significant digits, other
    floats to 4, missing values empty): one rule for the HTML, the Markdown and the console headline."""
    out = df.copy()
    for c in out.columns:
        if c in pct:
            out[c] = out[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                else f"{100 * float(v):.1f}")
        elif c in pvals:
            out[c] = out[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                else f"{float(v):.3g}")
        elif out[c].dtype.kind == "f":
            out[c] = out[c].map(lambda v: "" if math.isnan(v) else f"{v:.4g}")
    return out


@dataclass
class Section:
    """One section of the report, kept as HTML and as Markdown side by side."""

    id: str
    title: str
    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)

    def text(self, text: str) -> None:
        self.html.append(f"<p class='note'>{html.escape(text)}</p>")
        self.md.append(text + "\n")

    def table(self, df: pd.DataFrame, pct: Sequence[str] = (), pvals: Sequence[str] = ()) -> None:
        f = fmt_table(df, pct, pvals)
        self.html.append(f.to_html(index=False, escape=True, border=0, na_rep=""))
        self.md.append(f.to_markdown(index=False) + "\n")

    def image(self, png: bytes, path: Path, alt: str) -> None:
        b64 = base64.b64encode(png).decode("ascii")
        self.html.append(f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'></p>")
        self.md.append(f"![{alt}](figures/{path.name})\n")


def html_page(title: str, sections: Sequence[Section]) -> str:
    """The HTML report: a title, a link to each section, then the sections."""
    nav = " ".join(f"<a href='#{x.id}'>{html.escape(x.title)}</a>" for x in sections)
    body = "\n".join(f"<section id='{x.id}'><h2>{html.escape(x.title)}</h2>\n" + "\n".join(x.html) + "</section>"
                     for x in sections)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>\n{body}\n</body></html>\n")


def markdown_page(title: str, sections: Sequence[Section]) -> str:
    """The Markdown report: the same sections as the HTML one, figures linked from ``figures/``."""
    return f"# {title}\n\n" + "\n".join(f"## {x.title}\n\n" + "\n".join(x.md) for x in sections)
