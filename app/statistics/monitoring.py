"""Peeking-safe monitoring of a running study (see docs/monitoring.md for the method and references).

Group-sequential design with Lan-DeMets O'Brien-Fleming alpha spending on the two-way clustered
win rate (`app.statistics.clustered`): a look after every `look_every` preference ratings of a comparison,
up to the planned total (pairs x ratings per pair); at look k with information fraction
t_k = n_k / N (capped at 1) the statistic z_k = (w_k - 0.5) / SE_k is compared with the
boundary b_k that spends alpha(t) = 2 - 2 Phi(z_{1 - a/2} / sqrt t) with a = 0.025 per direction
(two-sided 0.05). The repeated confidence interval w_k +- b_k SE_k holds at every look at once
(Jennison & Turnbull 1989), so its verdict is safe to read at any time:

- lower end above 0.5: "stop: treatment preferred"; upper end below 0.5: "stop: baseline preferred";
- inside (0.5 - D, 0.5 + D): "stop: no difference larger than D";
- otherwise "continue: about N more ratings", N from SE shrinking like 1 / sqrt(ratings).

The first look that stops is the decision (later looks do not undo it). No stop before
`MIN_CLUSTERS` participants and prompts have decisive votes (the clustered SE needs them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import brentq
from scipy.special import ndtr
from scipy.stats import norm

from app.statistics.clustered import clustered_win_rate

ALPHA_ONE_SIDED = 0.025
LOOK_EVERY = 20
MARGIN = 0.05  # D: "no difference larger than D" on the win-rate scale
MIN_CLUSTERS = 5
MAX_LOOKS = 250  # a plan with more looks spaces them wider (planned / 250 ratings), to keep boundaries quick
TREATMENT, BASELINE, NO_DIFFERENCE = "stop: treatment preferred", "stop: baseline preferred", "stop: no difference"
METHOD = ("Lan-DeMets O'Brien-Fleming alpha spending (one-sided 0.025 per direction) over looks every "
          "{look_every} ratings up to {planned} planned ratings; two-way clustered (participants x prompts) "
          "standard error; repeated confidence intervals")


class MonitoringSettings(BaseModel):
    """The `monitoring` field of a study config (all optional)."""

    model_config = ConfigDict(extra="forbid")

    auto_close: bool = Field(default=False, description="close the study when every comparison says stop")
    look_every: int = Field(default=LOOK_EVERY, ge=5, le=10_000, description="preference ratings between looks")
    margin: float = Field(default=MARGIN, gt=0, lt=0.5, description="D of 'no difference larger than D'")


def obf_spending(t: np.ndarray | float, alpha: float = ALPHA_ONE_SIDED) -> np.ndarray:
    """Lan-DeMets O'Brien-Fleming-type spending function: alpha spent by information fraction t."""
    t = np.clip(np.asarray(t, dtype=float), 1e-12, 1.0)
    return 2.0 * norm.sf(norm.isf(alpha / 2.0) / np.sqrt(t))


def _propagate(y: np.ndarray, dens: np.ndarray, x: np.ndarray, h: float) -> np.ndarray:
    """sum_j dens_j phi((x - y_j) / h) / h at every x, summing only over |x - y_j| < 7 h (banded)."""
    lo, hi = np.searchsorted(y, x - 7 * h), np.searchsorted(y, x + 7 * h)
    j = lo[:, None] + np.arange(max(int((hi - lo).max()), 1))[None, :]
    valid = j < hi[:, None]
    j = np.minimum(j, y.size - 1)
    u = (x[:, None] - y[j]) / h
    return np.where(valid, np.exp(-0.5 * u * u) * dens[j], 0.0).sum(axis=1) / (h * math.sqrt(2 * math.pi))


def _boundaries(fractions: tuple[float, ...], alpha: float, grid: int | None = None) -> np.ndarray:
    """Upper boundaries b_k for looks at information fractions t_k (one-sided, recursive integration).

    Z_k on the continuation region (-inf, b_k) is carried as a density on a grid; the crossing
    probability at look k is solved to equal the alpha spent between t_{k-1} and t_k.
    """
    spent = obf_spending(np.array(fractions), alpha)
    if grid is None:  # grid step well below the sd of the smallest increment between looks
        step = 0.4 * math.sqrt(min(np.diff([0.0, *fractions]) / np.array(fractions)))
        grid = int(min(max(16.0 / step, 201), 801)) | 1
    bounds = np.empty(len(fractions))
    z = dens = None  # grid and density of Z_{k-1} restricted to (-inf, b_{k-1})
    prev_t = 0.0
    for k, t in enumerate(fractions):
        target = spent[k] - (spent[k - 1] if k else 0.0)
        if k == 0:
            bounds[k] = norm.isf(target) if target > 1e-14 else np.inf
        else:
            sd, r = math.sqrt(t - prev_t), math.sqrt(prev_t)

            def cross(b: float) -> float:
                return float(np.sum(dens * ndtr((r * z - b * math.sqrt(t)) / sd)))

            if target <= 1e-14 or cross(40.0) >= target:
                bounds[k] = np.inf if target <= 1e-14 else 40.0
            else:
                bounds[k] = brentq(lambda b: cross(b) - target, -8.0, 40.0, xtol=1e-8)
        # Density of Z_k on (-8, min(b_k, 8)) (Simpson weights folded into dens).
        hi = min(bounds[k], 8.0)
        new_z = np.linspace(-8.0, hi, grid)
        w = np.full(grid, 2.0)
        w[1::2], w[0], w[-1] = 4.0, 1.0, 1.0
        w *= (new_z[1] - new_z[0]) / 3.0
        if k == 0 or not np.isfinite(bounds[:k]).any():
            f = np.exp(-0.5 * new_z**2) / math.sqrt(2 * math.pi)  # no boundary yet: Z_k is N(0, 1)
        else:
            f = _propagate(z * math.sqrt(prev_t / t), dens, new_z, math.sqrt((t - prev_t) / t))
        z, dens, prev_t = new_z, f * w, t
    return bounds


@functools.lru_cache(maxsize=64)
def boundaries(look_every: int, planned: int, alpha: float = ALPHA_ONE_SIDED) -> tuple[np.ndarray, np.ndarray]:
    """(ratings at each look, boundary at each look) for looks every `look_every` ratings up to `planned`."""
    if look_every < 1 or planned < 1:
        raise ValueError("look_every and the planned number of ratings must be at least 1")
    looks = np.unique(np.append(np.arange(look_every, planned, look_every), planned))
    b = _boundaries(tuple((looks / planned).tolist()), alpha)
    b.setflags(write=False)
    looks.setflags(write=False)
    return looks, b


def _more_ratings(n: int, w: float, se: float, grid: np.ndarray, bounds: np.ndarray, margin: float) -> int:
    """Ratings until the first planned look whose repeated interval would decide, if the estimate
    stayed at w and the SE shrank like 1/sqrt(ratings); the rest of the plan when none would."""
    later = grid > n
    if not (math.isfinite(w) and math.isfinite(se) and se > 0) or not later.any():
        return int(max(grid[-1] - n, 0))
    half = bounds[later] * se * np.sqrt(n / grid[later])
    gap = max(abs(w - 0.5), margin - abs(w - 0.5))
    hits = np.flatnonzero(half < gap)
    return int((grid[later][hits[0]] if hits.size else grid[-1]) - n)


def decide(n: int, w: float, se: float, b: float, n_p: int, n_q: int, margin: float) -> tuple[str | None, str]:
    """(stop recommendation or None, rule) at one look."""
    if not (math.isfinite(w) and math.isfinite(se) and se > 0 and math.isfinite(b)):
        return None, "too little information at this look"
    if min(n_p, n_q) < MIN_CLUSTERS:
        return None, f"fewer than {MIN_CLUSTERS} participants or prompts with decisive votes"
    lo, hi = w - b * se, w + b * se
    if lo > 0.5:
        return TREATMENT, f"z = {(w - 0.5) / se:.3f} >= boundary {b:.3f}"
    if hi < 0.5:
        return BASELINE, f"z = {(w - 0.5) / se:.3f} <= -boundary {-b:.3f}"
    if 0.5 - margin < lo and hi < 0.5 + margin:
        return f"{NO_DIFFERENCE} larger than {margin:g}", \
            f"repeated interval [{lo:.3f}, {hi:.3f}] inside 0.5 +- {margin:g}"
    return None, "boundary not crossed"


def first_stops(w: np.ndarray, se: np.ndarray, n_p: np.ndarray, n_q: np.ndarray,
                b: np.ndarray, margin: float) -> np.ndarray:
    """Vectorised `decide` over (S, K) looks: code of the first stop per study, and its look index.

    Returns an (S, 2) int array: (code, look index) with code 0 none, 1 treatment, 2 baseline,
    3 no difference; look index -1 when nothing stopped.
    """
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(w) & (se > 0) & np.isfinite(b)[None, :] & (np.minimum(n_p, n_q) >= MIN_CLUSTERS)
        lo, hi = w - b[None, :] * se, w + b[None, :] * se
        code = np.where(ok & (lo > 0.5), 1, np.where(ok & (hi < 0.5), 2, np.where(
            ok & (lo > 0.5 - margin) & (hi < 0.5 + margin), 3, 0)))
    stopped = code > 0
    first = np.where(stopped.any(axis=1), stopped.argmax(axis=1), -1)
    return np.stack([np.where(first >= 0, code[np.arange(code.shape[0]), np.maximum(first, 0)], 0), first], axis=1)


def monitor(participant: np.ndarray, prompt: np.ndarray, score: np.ndarray, *, planned: int,
            look_every: int = LOOK_EVERY, margin: float = MARGIN) -> dict[str, Any]:
    """Monitoring of one comparison from its preference ratings in arrival order (JSON-ready)."""
    score = np.asarray(score)
    n = int(score.size)
    planned = max(int(planned), 1)
    look_every = max(int(look_every), math.ceil(planned / MAX_LOOKS))
    grid, bounds = boundaries(look_every, planned)
    done = grid[grid <= n]
    out: dict[str, Any] = {
        "method": METHOD.format(look_every=look_every, planned=planned), "look_every": look_every,
        "planned_ratings": planned, "margin": margin, "n_ratings": n, "looks_done": int(done.size),
        "boundary_final": float(bounds[-1]),
    }
    if done.size == 0:
        out.update(recommendation=f"continue: about {int(grid[0]) - n} more ratings before the first look",
                   stop=None, current=None)
        return out
    p = np.unique(participant, return_inverse=True)[1]
    q = np.unique(prompt, return_inverse=True)[1]
    est = clustered_win_rate(p, q, score, looks=done.tolist())
    w, se = est.win_rate[0], est.se[0]
    b = bounds[: done.size]
    stop = None
    for k in range(done.size):
        verdict, rule = decide(int(done[k]), float(w[k]), float(se[k]), float(b[k]), int(est.n_participants[0, k]),
                               int(est.n_prompts[0, k]), margin)
        if verdict is not None:
            stop = {"look": k + 1, "n_ratings": int(done[k]), "recommendation": verdict, "rule": rule,
                    "statistic": {"win_rate": float(w[k]), "se": float(se[k]), "z": float((w[k] - 0.5) / se[k]),
                                  "boundary": float(b[k])}}
            break
    k = done.size - 1
    current = {"look": k + 1, "n_ratings": int(done[k]), "information_fraction": float(done[k] / planned),
               "win_rate": _f(w[k]), "se": _f(se[k]), "z": _f((w[k] - 0.5) / se[k]) if se[k] > 0 else None,
               "boundary": _f(b[k]), "alpha_spent": float(obf_spending(done[k] / planned)),
               "interval_low": _f(w[k] - b[k] * se[k]), "interval_high": _f(w[k] + b[k] * se[k]),
               "confidence": 1 - 2 * ALPHA_ONE_SIDED}
    f = np.isfinite(b) & np.isfinite(se) & np.isfinite(w)
    out["history"] = {"n_ratings": done[f].tolist(), "win_rate": w[f].tolist(),
                      "interval_low": (w[f] - b[f] * se[f]).tolist(), "interval_high": (w[f] + b[f] * se[f]).tolist()}
    out.update(stop=stop, current=current)
    if stop is not None:
        out["recommendation"] = stop["recommendation"]
    elif done[-1] >= planned:
        out["recommendation"] = "stop: planned ratings reached without a clear preference"
    else:
        more = _more_ratings(n, float(w[k]), float(se[k]), grid, bounds, margin)
        out["recommendation"] = f"continue: about {more} more ratings"
    return out


def _f(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def monitor_comparisons(rows: list[Mapping[str, Any]], planned: Mapping[str, int], *,
                        look_every: int = LOOK_EVERY, margin: float = MARGIN,
                        participants: set[str] | None = None) -> dict[str, Any]:
    """Monitoring per comparison from export-style rows in arrival order (`rating_id` order).

    Uses preference ratings only (no gold, repeats or practice) of `participants` when given
    (the kept participants after exclusions). `planned`: planned ratings per comparison.
    """
    keep = [r for r in rows if not r["is_gold"] and not r["is_repeat"] and not r.get("is_practice")
            and (participants is None or str(r["participant"]) in participants)]
    keep.sort(key=lambda r: r["rating_id"])
    out = {}
    for label, total in planned.items():
        sub = [r for r in keep if r["comparison"] == label]
        out[label] = monitor(np.array([str(r["participant"]) for r in sub]),
                             np.array([str(r["prompt_id"]) for r in sub]),
                             np.array([int(r["score"]) for r in sub], dtype=np.int64),
                             planned=total, look_every=look_every, margin=margin)
    return out
