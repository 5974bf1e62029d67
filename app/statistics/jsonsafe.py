"""JSON-safe numbers: plain floats, None for nan/inf/missing, shares of zero totals as None."""

from __future__ import annotations

import math
from typing import Any


def _num(x: Any) -> float | None:
    """A JSON-safe float: None for nan/inf/None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _share(k: float, n: float) -> float | None:
    return _num(k / n) if n else None

