"""Peeking-safe monitoring of a running study (see docs/monitoring.md for the method and references).

Group-sequential design with Lan-DeMets O'Brien-Fleming alpha spending on the report's own win
rate estimator (`app.statistics.robust` through `app.statistics.clustered`: the same CR2 variance,
df, strata and duplicate handling): a look after every `look_every` preference
ratings of a comparison, up to the planned total (pairs x ratings per pair); at look k with
information fraction t_k = n_k / N (capped at 1) the statistic t_k = (w_k - 0.5) / SE_k is
compared with the boundary b_k (on the normal scale) carried to the t scale of the look's df,
c_k = F_t^{-1}(Phi(b_k); df_k), where b_k spends alpha(t) = 2 - 2 Phi(z_{1 - a/2} / sqrt t) with
a = 0.025 per side: two-sided alpha 0.05 in total, 0.025 spent on each side. The repeated
confidence interval w_k +- c_k SE_k holds at every look at once (Jennison & Turnbull 1989), so
its verdict is safe to read at any time:

- lower end above 0.5: "stop: treatment preferred"; upper end below 0.5: "stop: baseline preferred";
- inside (0.5 - D, 0.5 + D): "stop: no difference larger than D";
- otherwise "continue: about N more ratings", N from SE shrinking like 1 / sqrt(ratings).

The first look that stops is the decision (later looks do not undo it). No stop before
`MIN_CLUSTERS` participants and prompts have decisive votes (the clustered SE needs them).

Rules for the caller that keeps the study (see `lock_planned_total` and `monitor_comparisons`):
the planned total is locked once a comparison has ratings (a later change is refused and
recorded, never used), and a recorded stop is immutable: later exclusions or data do not undo
it; the post-hoc state is shown beside it.
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
from scipy.stats import t as t_dist

from app.statistics.clustered import clustered_win_rate

ALPHA_ONE_SIDED = 0.025  # the budget per side: two-sided 0.05 in total
# What the boundaries spend of it: 10% is held back for the approximations (the clustered t statistic is
# only approximately normal, its df are estimated). Measured two-sided type-I errors: docs/monitoring.md.
DESIGN_ALPHA_ONE_SIDED = 0.0225
LOOK_EVERY = 20
MARGIN = 0.05  # D: "no difference larger than D" on the win-rate scale
MIN_CLUSTERS = 5
MAX_LOOKS = 250  # a plan with more looks spaces them wider (planned / 250 ratings), to keep boundaries quick
TREATMENT, BASELINE, NO_DIFFERENCE = "stop: treatment preferred", "stop: baseline preferred", "stop: no difference"
METHOD = ("Lan-DeMets O'Brien-Fleming alpha spending, two-sided alpha 0.05 as 0.025 on each side (the boundaries "
          "spend 0.0225 per side, 10% held back for the approximations), over "
          "looks every {look_every} ratings up to {planned} planned ratings (locked once ratings exist); the report's "
          "two-way cluster-robust win-rate SE and df (app.statistics.robust), boundaries carried to the t scale of "
          "each look's df; repeated confidence intervals")
ALPHA_TWO_SIDED = 2 * ALPHA_ONE_SIDED


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


def t_critical(b: np.ndarray | float, df: np.ndarray | float | None) -> np.ndarray:
    """Boundary b (normal scale) carried to the t scale of df: F_t^{-1}(Phi(b); df); b itself without df."""
    b = np.asarray(b, dtype=float)
    if df is None:
        return b
    df = np.asarray(df, dtype=float)
    with np.errstate(invalid="ignore"):
        c = t_dist.isf(norm.sf(b), np.where(np.isfinite(df) & (df > 0), df, np.inf))
    return np.where(np.isfinite(df) & (df > 0), c, np.where(np.isfinite(b), np.nan, b))


def decide(n: int, w: float, se: float, b: float, n_p: int, n_q: int, margin: float,
           df: float | None = None) -> tuple[str | None, str]:
    """(stop recommendation or None, rule) at one look; b on the normal scale, df of the look's t."""
    c = float(t_critical(b, df)) if df is not None else b
    if not (math.isfinite(w) and math.isfinite(se) and se > 0 and math.isfinite(c)):
        return None, "too little information at this look"
    if min(n_p, n_q) < MIN_CLUSTERS:
        return None, f"fewer than {MIN_CLUSTERS} participants or prompts with decisive votes"
    lo, hi = w - c * se, w + c * se
    if lo > 0.5:
        return TREATMENT, f"t = {(w - 0.5) / se:.3f} >= boundary {c:.3f} (normal-scale {b:.3f}, df {df or 0:.1f})"
    if hi < 0.5:
        return BASELINE, f"t = {(w - 0.5) / se:.3f} <= -boundary {-c:.3f} (normal-scale {-b:.3f}, df {df or 0:.1f})"
    if 0.5 - margin < lo and hi < 0.5 + margin:
        return f"{NO_DIFFERENCE} larger than {margin:g}", \
            f"repeated interval [{lo:.3f}, {hi:.3f}] inside 0.5 +- {margin:g}"
    return None, "boundary not crossed"


def first_stops(w: np.ndarray, se: np.ndarray, n_p: np.ndarray, n_q: np.ndarray,
                b: np.ndarray, margin: float, df: np.ndarray | None = None) -> np.ndarray:
    """Vectorised `decide` over (S, K) looks: code of the first stop per study, and its look index.

    Returns an (S, 2) int array: (code, look index) with code 0 none, 1 treatment, 2 baseline,
    3 no difference; look index -1 when nothing stopped.
    """
    c = t_critical(np.broadcast_to(b[None, :], w.shape), df) if df is not None else np.broadcast_to(b[None, :], w.shape)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(w) & (se > 0) & np.isfinite(c) & (np.minimum(n_p, n_q) >= MIN_CLUSTERS)
        lo, hi = w - c * se, w + c * se
        code = np.where(ok & (lo > 0.5), 1, np.where(ok & (hi < 0.5), 2, np.where(
            ok & (lo > 0.5 - margin) & (hi < 0.5 + margin), 3, 0)))
    stopped = code > 0
    first = np.where(stopped.any(axis=1), stopped.argmax(axis=1), -1)
    return np.stack([np.where(first >= 0, code[np.arange(code.shape[0]), np.maximum(first, 0)], 0), first], axis=1)


def lock_planned_total(locked: int | None, configured: int, n_ratings: int) -> dict[str, Any]:
    """The planned total monitoring must use, given the one locked earlier (or None).

    Before any rating the configured total is used (and may change freely). From the first
    rating on, the total is locked: the locked value is used whatever the configuration says
    now; a different configured value is refused and recorded, because choosing the total after
    seeing data (e.g. cutting it to the ratings so far near a boundary) inflates the type-I error
    (to 0.21 in issue 23's simulation). Returns {planned, locked, lock_now, refused_change}:
    `lock_now` true when the caller must store `planned` as the locked total now.
    """
    configured = max(int(configured), 1)
    if n_ratings <= 0 and locked is None:
        return {"planned": configured, "locked": False, "lock_now": False, "refused_change": None}
    if locked is None:
        return {"planned": configured, "locked": True, "lock_now": True, "refused_change": None}
    refused = None
    if int(locked) != configured:
        refused = {"configured": configured, "locked": int(locked),
                   "note": "the planned total is locked once ratings exist; the change is recorded and not used"}
    return {"planned": int(locked), "locked": True, "lock_now": False, "refused_change": refused}


def first_ratings_only(participant: np.ndarray, pair: np.ndarray | None) -> np.ndarray:
    """Mask of the ratings the report counts: a participant's first rating of a pair (arrival order)."""
    n = len(participant)
    if pair is None:
        return np.ones(n, dtype=bool)
    key = np.char.add(np.char.add(np.asarray(participant, dtype=str), "\x1f"), np.asarray(pair, dtype=str))
    _, first = np.unique(key, return_index=True)
    keep = np.zeros(n, dtype=bool)
    keep[first] = True
    return keep


def monitor(participant: np.ndarray, prompt: np.ndarray, score: np.ndarray, *, planned: int,
            look_every: int = LOOK_EVERY, margin: float = MARGIN, stratum: np.ndarray | None = None,
            pair: np.ndarray | None = None) -> dict[str, Any]:
    """Monitoring of one comparison from its preference ratings in arrival order (JSON-ready).

    stratum: each rating's prompt stratum (the report's strata); pair: each rating's pair, to
    drop a participant's later ratings of a pair as the report does (earliest kept).
    """
    keep = first_ratings_only(np.asarray(participant), None if pair is None else np.asarray(pair))
    participant, prompt, score = np.asarray(participant)[keep], np.asarray(prompt)[keep], np.asarray(score)[keep]
    stratum = None if stratum is None else np.asarray(stratum)[keep]
    n = int(score.size)
    planned = max(int(planned), 1)
    look_every = max(int(look_every), math.ceil(planned / MAX_LOOKS))
    grid, bounds = boundaries(look_every, planned, DESIGN_ALPHA_ONE_SIDED)
    done = grid[grid <= n]
    out: dict[str, Any] = {
        "method": METHOD.format(look_every=look_every, planned=planned), "look_every": look_every,
        "planned_ratings": planned, "margin": margin, "n_ratings": n, "looks_done": int(done.size),
        "boundary_final": float(bounds[-1]), "alpha_two_sided": ALPHA_TWO_SIDED, "alpha_per_side": ALPHA_ONE_SIDED,
        "alpha_spent_per_side_by_design": DESIGN_ALPHA_ONE_SIDED,
        "n_duplicates_dropped": int((~keep).sum()),
    }
    if done.size == 0:
        out.update(recommendation=f"continue: about {int(grid[0]) - n} more ratings before the first look",
                   stop=None, current=None)
        return out
    p = np.unique(participant, return_inverse=True)[1]
    q = np.unique(prompt, return_inverse=True)[1]
    h = None if stratum is None else np.unique(np.asarray(stratum, dtype=str), return_inverse=True)[1]
    est = clustered_win_rate(p, q, score, looks=done.tolist(), stratum=h)
    w, se, df = est.win_rate[0], est.se[0], est.df[0]
    b = bounds[: done.size]
    c = t_critical(b, df)
    stop = None
    for k in range(done.size):
        verdict, rule = decide(int(done[k]), float(w[k]), float(se[k]), float(b[k]), int(est.n_participants[0, k]),
                               int(est.n_prompts[0, k]), margin, float(df[k]))
        if verdict is not None:
            stop = {"look": k + 1, "n_ratings": int(done[k]), "recommendation": verdict, "rule": rule,
                    "statistic": {"win_rate": float(w[k]), "se": float(se[k]), "z": float((w[k] - 0.5) / se[k]),
                                  "t": float((w[k] - 0.5) / se[k]), "df": float(df[k]),
                                  "boundary": float(c[k]), "boundary_normal_scale": float(b[k])}}
            break
    k = done.size - 1
    current = {"look": k + 1, "n_ratings": int(done[k]), "information_fraction": float(done[k] / planned),
               "win_rate": _f(w[k]), "se": _f(se[k]), "z": _f((w[k] - 0.5) / se[k]) if se[k] > 0 else None,
               "df": _f(df[k]), "boundary": _f(c[k]), "boundary_normal_scale": _f(b[k]),
               "alpha_spent": float(obf_spending(done[k] / planned, DESIGN_ALPHA_ONE_SIDED)),
               "interval_low": _f(w[k] - c[k] * se[k]), "interval_high": _f(w[k] + c[k] * se[k]),
               "confidence": 1 - 2 * DESIGN_ALPHA_ONE_SIDED}
    f = np.isfinite(c) & np.isfinite(se) & np.isfinite(w)
    out["history"] = {"n_ratings": done[f].tolist(), "win_rate": w[f].tolist(),
                      "interval_low": (w[f] - c[f] * se[f]).tolist(), "interval_high": (w[f] + c[f] * se[f]).tolist()}
    out.update(stop=stop, current=current)
    if stop is not None:
        out["recommendation"] = stop["recommendation"]
    elif done[-1] >= planned:
        out["recommendation"] = "stop: planned ratings reached without a clear preference"
    else:
        more = _more_ratings(n, float(w[k]), float(se[k]), grid,
                             t_critical(bounds, df[k]) if np.isfinite(df[k]) else bounds, margin)
        out["recommendation"] = f"continue: about {more} more ratings"
    return out


def _f(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def monitor_comparisons(rows: list[Mapping[str, Any]], planned: Mapping[str, int], *,
                        look_every: int = LOOK_EVERY, margin: float = MARGIN,
                        participants: set[str] | None = None,
                        recorded_stops: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Monitoring per comparison from export-style rows in arrival order (`rating_id` order).

    Uses preference ratings only (no gold, repeats or practice) of `participants` when given
    (the kept participants after exclusions), the rows' `stratum` and `pair` when present (the
    report's strata and duplicate rule). `planned`: planned ratings per comparison (the locked
    totals, `lock_planned_total`). `recorded_stops`: per comparison, a stop recorded earlier: it
    stays the decision (immutable: later exclusions or ratings do not undo it) and the state
    computed now is shown beside it as `post_hoc`.
    """
    keep = [r for r in rows if not _true(r["is_gold"]) and not _true(r["is_repeat"]) and not _true(r.get("is_practice"))
            and (participants is None or str(r["participant"]) in participants)]
    keep.sort(key=lambda r: r["rating_id"])
    out = {}
    for label, total in planned.items():
        sub = [r for r in keep if r["comparison"] == label]
        has_stratum = bool(sub) and all("stratum" in r for r in sub)
        has_pair = bool(sub) and all("pair" in r for r in sub)
        m = monitor(np.array([str(r["participant"]) for r in sub]),
                    np.array([str(r["prompt_id"]) for r in sub]),
                    np.array([int(r["score"]) for r in sub], dtype=np.int64),
                    planned=total, look_every=look_every, margin=margin,
                    stratum=np.array([str(r["stratum"]) for r in sub]) if has_stratum else None,
                    pair=np.array([str(r["pair"]) for r in sub]) if has_pair else None)
        recorded = (recorded_stops or {}).get(label)
        if recorded:
            m = with_recorded_stop(m, recorded)
        out[label] = m
    return out


def with_recorded_stop(m: dict[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A comparison's monitoring with an earlier recorded stop kept as the decision.

    The recorded stop (as stored when it was taken) is `stop` and gives the recommendation; what
    the data say now (after later ratings or exclusions) is `post_hoc`, shown beside it.
    """
    post_hoc = {"recommendation": m["recommendation"], "stop": m.get("stop"), "current": m.get("current")}
    return {**m, "stop": dict(recorded), "recorded": True, "recommendation": recorded.get("recommendation",
                                                                                          m["recommendation"]),
            "post_hoc": post_hoc}


def _true(v: Any) -> bool:
    return v is True or v == 1 or (isinstance(v, str) and v.strip().lower() in {"1", "true", "t", "yes"})
