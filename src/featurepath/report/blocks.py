"""HTML building blocks of the report page: a section, a table, a figure, an absent input.

Every string that reaches the page goes through :func:`featurepath.report.format.esc`."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from featurepath.report.data import NOT_RUN, Loaded
from featurepath.report.format import _sort_key, esc, fmt


def _section(sid: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return (f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{note_html}{body}</section>')


def _absent(loaded: Loaded, what: str) -> str:
    return f'<p class="not-run">{esc(what)}: {esc(loaded.problem or NOT_RUN)}</p>'


def _table(df: pd.DataFrame, table_id: str | None = None, classes: str = "data",
           headers: dict[str, str] | None = None,
           cell_class: Callable[[str, Any], str] | None = None) -> str:
    """A plain HTML table, every cell escaped, numbers right-aligned with a sort key.

    ``cell_class(column, value)`` may add a CSS class to a cell (a verdict's colour)."""
    headers = headers or {}
    tid = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f'<th data-col="{esc(c)}">{esc(headers.get(str(c), c))}</th>'
                   for c in df.columns)
    body = []
    for row in df.itertuples(index=False, name=None):
        cells = []
        for col, v in zip(df.columns, row, strict=True):
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            names = " ".join(n for n in ("num" if num else "",
                                         cell_class(str(col), v) if cell_class else "") if n)
            cls = f' class="{esc(names)}"' if names else ""
            cells.append(f'<td{cls} data-sort="{esc(_sort_key(v))}">{esc(fmt(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table{tid} class="{esc(classes)}"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


def _figure(fig: Any, alt: str, fig_id: str, caption: str | None = None) -> str:
    """A figure as a data URI; ``caption`` (already escaped HTML) replaces the alt text."""
    if fig is None:
        return ""
    data = base64.b64encode(Path(fig.png).read_bytes()).decode("ascii")
    return (f'<figure id="{esc(fig_id)}"><img alt="{esc(alt)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{caption or esc(alt)} — also saved as '
            f'<code>figures/{esc(Path(fig.png).name)}</code> and '
            f'<code>figures/{esc(Path(fig.svg).name)}</code></figcaption></figure>')
