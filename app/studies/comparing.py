"""How participants compared the two images: the per-answer log and its summary for the report.

The trial page reports, with each answer, whether the participant zoomed and flickered in the
compare view, the largest zoom they used (1 = fitted to the screen), the time spent in the compare
view (side by side, zoomed) and in flicker mode, and how long after the trial arrived the answer
buttons unlocked (images loaded + `min_response_ms`). All times in ms, client-measured. The
columns are stored on `Rating` and exported at the end of the export's columns (`COMPARE_COLUMNS`).
"""

from __future__ import annotations

from statistics import median
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.store.models import COMPARE_COLUMNS  # noqa: F401  (the columns live with the model)

_DAY_MS = 86_400_000


class Compared(BaseModel):
    """The `compared` object of an answer (all fields optional; unknown fields are refused)."""

    model_config = ConfigDict(extra="forbid")

    used_zoom: bool = False
    used_flicker: bool = False
    max_zoom: float = Field(default=1.0, ge=1, le=1000)
    compare_view_ms: int = Field(default=0, ge=0, le=_DAY_MS)
    flicker_ms: int = Field(default=0, ge=0, le=_DAY_MS)
    unlock_ms: int | None = Field(default=None, ge=0, le=_DAY_MS)


def _wilson(k: int, n: int) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _group(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Votes, treatment win rate among decisive votes (Wilson 95% interval, assumes independent
    votes) and mean score (-2..+2, positive = treatment better) of `rows`."""
    wins = sum(r["score"] > 0 for r in rows)
    decisive = sum(r["score"] != 0 for r in rows)
    low, high = _wilson(wins, decisive)
    return {
        "n": len(rows),
        "decisive": decisive,
        "win_rate": wins / decisive if decisive else None,
        "win_rate_ci_low": low,
        "win_rate_ci_high": high,
        "mean_score": sum(r["score"] for r in rows) / len(rows) if rows else None,
    }


def _median(values: list[float]) -> float | None:
    return float(median(values)) if values else None


def compare_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How participants compared, and whether it goes with their verdicts.

    rows: export rows (practice and gold trials are left out here: gold checks are no verdict on
    the methods). Returns {"n", "logged", "by": {"used_zoom"|"used_flicker": {"yes", "no"}},
    "share_used": {...}, "median_ms": {"compare_view", "flicker", "unlock"}, "median_max_zoom"}.
    "logged" counts answers that carry the log (API clients may not send it).
    """
    verdicts = [r for r in rows if not r.get("is_gold") and not r.get("is_practice")]
    logged = [r for r in verdicts if r.get("used_zoom") is not None]
    out: dict[str, Any] = {"n": len(verdicts), "logged": len(logged), "by": {}, "share_used": {}}
    for key in ("used_zoom", "used_flicker"):
        yes = [r for r in logged if r[key]]
        out["by"][key] = {"yes": _group(yes), "no": _group([r for r in logged if not r[key]])}
        out["share_used"][key] = len(yes) / len(logged) if logged else None
    out["median_ms"] = {
        "compare_view": _median([r["compare_view_ms"] for r in logged if r.get("compare_view_ms")]),
        "flicker": _median([r["flicker_ms"] for r in logged if r.get("flicker_ms")]),
        "unlock": _median([r["unlock_ms"] for r in logged if r.get("unlock_ms") is not None]),
    }
    out["median_max_zoom"] = _median([r["max_zoom"] for r in logged if r.get("used_zoom")])
    return out
