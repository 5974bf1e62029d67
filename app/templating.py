"""The one Jinja2 environment: server-rendered pages and the report (top-level `templates/` folder, or its copy in a wheel).

Filters for figures: `pct` (share as a percentage), `fmt` (fixed decimals), `p` (p-value),
`tojson_pretty` (indented, sorted JSON); all show a missing value as "–".
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.templating import Jinja2Templates

from app.resources import resource_dir

TEMPLATES_DIR = resource_dir("templates")
STATIC_DIR = resource_dir("static")

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def _pct(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    if x is None:
        return "–"
    return "< 0.0001" if x < 1e-4 else f"{x:.4f}"


def _json_pretty(v: Any) -> str:
    return json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True)


templates.env.filters.update(pct=_pct, fmt=_fmt, p=_p, tojson_pretty=_json_pretty)
