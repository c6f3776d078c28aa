"""Formatting for the report: escaping, numbers for table cells, JSON that is safe in a page.

Why strict: responses, words and even condition strings are written by a model (or come from
files we did not write), so every string goes through :func:`html.escape` and every JSON island
escapes ``<``, ``>`` and ``&`` so that ``</script>`` inside data cannot end the block.
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import Any

import pandas as pd


def esc(value: Any) -> str:
    """HTML-escape anything (quotes too, so the result is safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any) -> str:
    """Readable text for a table cell: integers plain, floats to about three digits."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_jsonable(value))
    if _is_missing(value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (hasattr(value, "dtype") and "int" in str(value.dtype)):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, float) or hasattr(value, "dtype"):
        try:
            v = float(value)
        except (TypeError, ValueError):
            return str(value)
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v == 0:
            return "0"
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.3g}"
    return str(value)


def _sort_key(value: Any) -> str:
    """A value for ``data-sort`` that the page's JS sorts numerically when it can."""
    if _is_missing(value):
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        try:
            return repr(float(value))
        except (TypeError, ValueError):
            pass
    return str(value)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN/inf become null (JSON has no NaN), numpy scalars become Python."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.tolist())
    if isinstance(obj, float):
        return None if (math.isnan(obj) or math.isinf(obj)) else obj
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if _is_missing(obj):
        return None
    return str(obj)


def json_for_script(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c`` etc., which JSON.parse reads back unchanged but
    which the HTML parser can never see as ``</script>`` or ``<!--``.
    """
    text = json.dumps(_jsonable(obj), ensure_ascii=False, allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _json_island(element_id: str, obj: Any) -> str:
    return (f'<script type="application/json" id="{esc(element_id)}">'
            f"{json_for_script(obj)}</script>")


def _round(value: Any, digits: int = 4) -> Any:
    """A float to ``digits`` significant digits (for compact JSON); other values unchanged."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{digits}g}")
    return value


def _feature_name(layer: Any, fid: Any, given: Any = None) -> str:
    if isinstance(given, str) and given:
        return given
    return f"L{_int(layer)}-{_int(fid)}"


def feature_order(name: str) -> tuple[bool, int, int, str]:
    """Sort key of a feature label: ``L{layer}-{id}`` by layer and id, anything else after
    them, behavioural directions (``L{layer}~direction``) last."""
    m = re.match(r"L(\d+)-(\d+)$", name)
    return ("~direction" in name, int(m.group(1)) if m else 10**6,
            int(m.group(2)) if m else 0, name)


def _int(value: Any) -> int | None:
    try:
        return None if _is_missing(value) else int(value)
    except (TypeError, ValueError):
        return None


def _key(layer: Any, fid: Any) -> str:
    return f"{_int(layer)}:{_int(fid)}"


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return _jsonable(df.to_dict(orient="records"))
