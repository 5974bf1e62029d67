"""Distribution and point estimates of the preference votes, and intervals that assume independent votes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as sps

from app.statistics.jsonsafe import _num, _share
from app.statistics.scoring import SCORE_NAMES, SCORES

INDEPENDENCE_NOTE = "assumes every vote is independent (ignores that votes share participants and prompts)"


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval for k successes in n independent trials."""
    if n == 0:
        return None, None
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return _num(ci.low), _num(ci.high)



def distribution(scores: np.ndarray) -> dict[str, Any]:
    """The five-answer distribution (un-flipped) and the paper-style shares.

    Shares are of all votes: `treatment_preferred` (score > 0), `no_preference`,
    `baseline_preferred`, and the "much better" (strong) shares for each side; the
    `*_strong_within_preferred` shares are of that side's preferences only.
    """
    scores = np.asarray(scores, dtype=np.int64)
    n = int(scores.size)
    counts = {str(s): int(np.count_nonzero(scores == s)) for s in SCORES}
    pos, neg = counts["1"] + counts["2"], counts["-1"] + counts["-2"]
    return {
        "n": n,
        "counts": counts,
        "labels": {str(s): SCORE_NAMES[s] for s in SCORES},
        "shares": {k: _share(v, n) for k, v in counts.items()},
        "treatment_preferred": _share(pos, n),
        "no_preference": _share(counts["0"], n),
        "baseline_preferred": _share(neg, n),
        "treatment_much_better": _share(counts["2"], n),
        "baseline_much_better": _share(counts["-2"], n),
        "treatment_strong_within_preferred": _share(counts["2"], pos),
        "baseline_strong_within_preferred": _share(counts["-2"], neg),
    }


def point_estimates(scores: np.ndarray) -> dict[str, float | None]:
    """Win rate among decisive votes, tie-as-half rate, mean score (see module docstring)."""
    scores = np.asarray(scores)
    n = scores.size
    wins, losses = int(np.count_nonzero(scores > 0)), int(np.count_nonzero(scores < 0))
    return {
        "win_rate": _share(wins, wins + losses),
        "tie_half_rate": _share(wins + 0.5 * (n - wins - losses), n),
        "mean_score": _num(scores.mean()) if n else None,
    }


def _t_interval(x: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    if x.size < 2:
        return None, None
    sem = x.std(ddof=1) / math.sqrt(x.size)
    if sem == 0:
        return _num(x.mean()), _num(x.mean())
    lo, hi = sps.t.interval(confidence, x.size - 1, loc=x.mean(), scale=sem)
    return _num(lo), _num(hi)
