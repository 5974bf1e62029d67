"""Sample-size planning for the clustered paired-preference design (`sfgeval plan`, admin plan page).

For a grid of participant counts, seeded simulated studies of the design (`app.statistics.clustered`) are
analysed with the win-rate interval; the curves of mean interval half-width and of power (share
of studies whose two-sided 1 - alpha interval lies above 0.5) against participants are smoothed
and solved for the target:

- half-width: mean squared half-width = A + B / N (least squares; A > 0 when a fixed set of
  prompts puts a floor under the width, so some targets cannot be reached by participants alone);
- power: a probit fit power = Phi(a + b / SE(N)) on all simulated studies, SE(N) from the same
  A + B / N fit (normal theory says a = -z_{1-alpha/2}, b = |w - 0.5|).

`estimator="report"` runs every simulated study through `app.statistics.clustered.report_interval` (the
report's own interval); `"fast"` (default) uses the vectorised two-way clustered SE, which tests
check against the sampling spread and against the binomial closed form without random effects.
`effects_from_pilot` estimates win rate, tie rate and the participant, prompt and pair variance
components from a pilot study's ratings (moment estimators, see its docstring).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtri
from scipy.stats import multivariate_normal, norm

from app.statistics.clustered import (
    Design,
    Effects,
    clustered_win_rate,
    report_interval,
    simulate_batch,
)

ESTIMATORS = ("fast", "report")
MAX_VALUES = 20_000_000  # simulated votes (or pair slots) per grid point: keeps memory under ~1 GB


@dataclass(frozen=True)
class PlanRequest:
    design: Design = Design()
    effects: Effects = Effects()
    half_width: float | None = None  # target mean half-width of the interval, or
    power: float | None = 0.8  # target power (interval above 0.5) at `alpha`
    alpha: float = 0.05
    price_per_rating: float | None = None
    sims: int = 200
    seed: int = 0
    estimator: str = "fast"
    grid: tuple[int, ...] = field(default=())  # participant counts; default: around the closed form

    def check(self) -> None:
        self.design.check()
        self.effects.check()
        if (self.half_width is None) == (self.power is None):
            raise ValueError("give either a target half-width or a target power")
        if self.half_width is not None and not 0 < self.half_width < 0.5:
            raise ValueError("the target half-width must be between 0 and 0.5")
        if self.power is not None:
            if not 0 < self.power < 1:
                raise ValueError("the target power must be between 0 and 1")
            if self.effects.win_rate <= 0.5:
                raise ValueError("power needs an expected win rate above 0.5")
        if not 0 < self.alpha < 0.5:
            raise ValueError("alpha must be between 0 and 0.5")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}")
        if not 20 <= self.sims <= 100_000:
            raise ValueError("simulations per point must be between 20 and 100,000")
        if self.price_per_rating is not None and self.price_per_rating < 0:
            raise ValueError("the price per rating must not be negative")


def closed_form_decisive(win_rate: float, *, half_width: float | None = None, power: float | None = None,
                         alpha: float = 0.05) -> float:
    """Decisive votes needed when votes are independent (binomial, Wald interval)."""
    z = norm.isf(alpha / 2)
    var = win_rate * (1 - win_rate)
    if half_width is not None:
        return z * z * var / half_width**2
    return (z + norm.ppf(power)) ** 2 * var / (win_rate - 0.5) ** 2


def closed_form_participants(req: PlanRequest) -> float:
    """Participants needed without random effects (the binomial answer), fractional."""
    n = closed_form_decisive(req.effects.win_rate, half_width=req.half_width, power=req.power, alpha=req.alpha)
    return n / (req.design.ratings_per_participant * (1 - req.effects.tie_rate))


def _intervals(batch: Mapping[str, np.ndarray], alpha: float, estimator: str, seed: int,
               looks: list[int] | None = None) -> tuple[np.ndarray, ...]:
    """(estimate, low, high, se, df) per simulated study (rows) and look (columns): the report's
    two-sided 1 - alpha interval (its CR2 SE and t(df), `app.statistics.robust`)."""
    from app.statistics.robust import bounds

    n = batch["score"].shape[1]
    looks = looks or [n]
    if estimator == "fast":
        est = clustered_win_rate(batch["participant"], batch["prompt"], batch["score"], looks=looks,
                                 stratum=batch.get("stratum"))
        w, se = est.win_rate, est.se
        lo, hi = bounds(w, se, est.df, "win_rate", 1 - alpha)
        return w, lo, hi, se, est.df
    rows = np.array([[report_interval(batch["participant"][i, :k], batch["prompt"][i, :k], batch["score"][i, :k],
                                      confidence=1 - alpha, seed=seed + i,
                                      stratum=batch["stratum"][i, :k] if "stratum" in batch else None)
                      for k in looks] for i in range(batch["score"].shape[0])])
    est = clustered_win_rate(batch["participant"], batch["prompt"], batch["score"], looks=looks,
                             stratum=batch.get("stratum"))
    return rows[..., 0], rows[..., 1], rows[..., 2], est.se, est.df


def default_grid(req: PlanRequest) -> tuple[int, ...]:
    """Eight participant counts from half to six times the binomial answer (at least 3)."""
    n0 = max(closed_form_participants(req), 3.0)
    return tuple(sorted({max(3, int(round(x))) for x in np.geomspace(0.5 * n0, 6 * n0, 8)}))


def simulate_grid(req: PlanRequest, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """One row per participant count: half-width, power, SE (means over `req.sims` studies).

    Common random numbers: `req.sims` studies of the largest size are simulated once and every
    smaller size is the same studies' first participants (participants arrive one by one), so
    the power curve across sizes is not jagged by independent noise.
    """
    req.check()
    grid = sorted(req.grid or default_grid(req))
    m = req.design.ratings_per_participant
    votes, slots = req.sims * max(grid) * m, req.sims * req.design.n_pairs
    if slots > MAX_VALUES:
        raise ValueError(f"too many pairs to simulate ({req.design.n_pairs:,} pairs x {req.sims} studies; limit "
                         f"{MAX_VALUES:,}): lower the simulations per point")
    if votes > MAX_VALUES:
        raise ValueError(f"this plan would simulate {votes:,} votes at once (limit {MAX_VALUES:,}): the answer lies "
                         f"beyond {max(grid):,} participants; check the expected win rate, or lower the simulations")
    rng = np.random.default_rng([req.seed, 23])
    batch = simulate_batch(req.design, req.effects, max(grid), req.sims, rng)
    w, lo, hi, se, df = _intervals(batch, req.alpha, req.estimator, req.seed, [n * m for n in grid])
    out = []
    for i, n in enumerate(grid):
        ok = np.isfinite(lo[:, i]) & np.isfinite(hi[:, i])
        hw = (hi[:, i] - lo[:, i])[ok] / 2
        out.append({"participants": int(n), "ratings": int(n * m),
                    "half_width": float(hw.mean()) if hw.size else math.nan,
                    "half_width_sq": float((hw**2).mean()) if hw.size else math.nan,
                    "power": float(np.mean(ok & (lo[:, i] > 0.5))), "rejections": int(np.sum(ok & (lo[:, i] > 0.5))),
                    "sims": int(req.sims), "mean_win_rate": float(np.nanmean(w[:, i])),
                    "se_sq": float(np.nanmean(se[:, i] ** 2)) if np.isfinite(se[:, i]).any() else math.nan,
                    "df": float(np.nanmean(df[:, i])) if np.isfinite(df[:, i]).any() else math.nan})
        if progress:
            progress(i + 1, len(grid))
    return out


def realised_power(req: PlanRequest, participants: int | Iterable[int], sims: int = 2000,
                   seed: int = 99) -> float | dict[int, float]:
    """Power of `participants` (one size or several, common random numbers) checked by fresh simulated
    studies (another seed than the plan's) with the report's test."""
    sizes = sorted({int(participants)} if isinstance(participants, (int, np.integer)) else set(map(int, participants)))
    m = req.design.ratings_per_participant
    rng = np.random.default_rng([seed, max(sizes)])
    batch = simulate_batch(req.design, req.effects, max(sizes), sims, rng)
    _, lo, _, _, _ = _intervals(batch, req.alpha, "fast", seed, [n * m for n in sizes])
    power = {n: float(np.mean(np.isfinite(lo[:, i]) & (lo[:, i] > 0.5))) for i, n in enumerate(sizes)}
    return power[sizes[0]] if isinstance(participants, (int, np.integer)) else power


def refine_power(req: PlanRequest, n0: int, sims: int = 1000, points: int = 12) -> dict[str, Any] | None:
    """The size whose power, checked on fresh simulated studies (another seed than the plan's;
    common random numbers: every size is the same studies' first participants), reaches the
    target: `points` sizes from 0.6 to 1.5 times the fitted answer n0, the crossing interpolated on
    the probit scale and rounded up. None when too big to simulate."""
    m = req.design.ratings_per_participant
    top = max(int(math.ceil(1.5 * n0)), 4)
    if top * m * sims > MAX_VALUES:
        return None
    sizes = sorted({max(2, int(round(x))) for x in np.linspace(max(2, 0.6 * n0), top, points)})
    power = realised_power(req, sizes, sims)
    iso = np.maximum.accumulate([power[n] for n in sizes])
    above = np.flatnonzero(iso >= req.power)
    if above.size == 0:
        return {"participants": None, "power": power[sizes[-1]], "sims": sims, "checked": power,
                "note": f"no size up to {sizes[-1]} reaches the target in the check"}
    j = int(above[0])
    if j == 0:
        n = sizes[0]
    else:
        y0, y1 = (float(ndtri(min(max(v, 1e-4), 1 - 1e-4))) for v in (iso[j - 1], iso[j]))
        frac = (float(ndtri(req.power)) - y0) / (y1 - y0) if y1 > y0 else 1.0
        n = int(math.ceil(sizes[j - 1] + frac * (sizes[j] - sizes[j - 1]) - 1e-9))
    return {"participants": n, "sims": sims, "checked": power,
            "mc_error": math.sqrt(req.power * (1 - req.power) / sims),
            "note": "fresh simulated studies (another seed than the plan's) with the report's test at the sizes "
                    "in `checked`; the target's crossing interpolated on the probit scale, rounded up"}


def _fit_width(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """(A, B) of mean squared SE = A + B / N, least squares with A >= 0."""
    x = 1.0 / np.array([r["participants"] for r in rows], dtype=float)
    y = np.array([r["se_sq"] for r in rows])
    b, a = np.polyfit(x, y, 1)
    if a < 0:
        a, b = 0.0, float(np.dot(x, y) / np.dot(x, x))
    return float(a), float(b)


class _Curves:
    """Smoothed curves of the report's interval against participants N: SE(N)^2 = A + B / N,
    df(N) interpolated (log N) from the simulated mean df, critical value t(df(N)); half-width =
    crit(N) SE(N); power = Phi(a + b / SE(N) - (crit(N) - z)) (probit with an offset: the report's
    test is a t test, normal theory says a = -z, b = |w - 0.5|)."""

    def __init__(self, req: PlanRequest, rows: list[dict[str, Any]]):
        self.alpha = req.alpha
        self.z = float(norm.isf(req.alpha / 2))
        self.a_w, self.b_w = _fit_width(rows)
        self.log_n = np.log([r["participants"] for r in rows])
        self.df = np.array([r["df"] for r in rows], dtype=float)
        self.power_fit: tuple[float, float] | None = None

    def crit(self, n: np.ndarray | float) -> np.ndarray:
        from scipy.stats import t as t_dist

        ok = np.isfinite(self.df)
        if not ok.any():
            return np.full(np.shape(n), self.z)
        df = np.interp(np.log(n), self.log_n[ok], self.df[ok])
        return t_dist.isf(self.alpha / 2, np.maximum(df, 1.0))

    def se(self, n: np.ndarray | float) -> np.ndarray:
        return np.sqrt(np.maximum(self.a_w + self.b_w / np.asarray(n, dtype=float), 1e-12))

    def half_width(self, n: np.ndarray | float) -> np.ndarray:
        return self.crit(n) * self.se(n)

    def eta(self, n: np.ndarray | float, a: float, b: float) -> np.ndarray:
        return a + b / self.se(n) - (self.crit(n) - self.z)

    def fit_power(self, rows: list[dict[str, Any]]) -> tuple[float, float]:
        """Monotone power curve: the simulated power (common random numbers), made non-decreasing
        (pool-adjacent-violators), interpolated on the probit scale against log participants."""
        n_p = np.array([r["participants"] for r in rows], dtype=float)
        k = np.array([r["rejections"] for r in rows], dtype=float)
        n = np.array([r["sims"] for r in rows], dtype=float)
        p = (k + 0.5) / (n + 1.0)  # never exactly 0 or 1
        w = n.copy()
        blocks = [[p[0], w[0], 1]]
        for pi, wi in zip(p[1:], w[1:]):  # pool adjacent violators
            blocks.append([pi, wi, 1])
            while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
                b2, b1 = blocks.pop(), blocks.pop()
                blocks.append([(b1[0] * b1[1] + b2[0] * b2[1]) / (b1[1] + b2[1]), b1[1] + b2[1], b1[2] + b2[2]])
        iso = np.concatenate([[v] * c for v, _, c in blocks])
        self.power_points = (np.log(n_p), ndtri(iso))
        self.power_fit = (float(self.power_points[1][0]), float(self.power_points[1][-1]))
        return self.power_fit

    def power(self, n: np.ndarray | float) -> np.ndarray:
        x, y = self.power_points
        ln = np.log(np.asarray(n, dtype=float))
        slope_hi = (y[-1] - y[-2]) / (x[-1] - x[-2]) if x.size > 1 and x[-1] > x[-2] else 0.0
        slope_lo = (y[1] - y[0]) / (x[1] - x[0]) if x.size > 1 and x[1] > x[0] else 0.0
        val = np.interp(ln, x, y)
        val = np.where(ln > x[-1], y[-1] + max(slope_hi, 0.0) * (ln - x[-1]), val)
        val = np.where(ln < x[0], y[0] + max(slope_lo, 0.0) * (ln - x[0]), val)
        return norm.cdf(val)


def solve(req: PlanRequest, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Participants needed for the target, from the smoothed curves (None when out of reach)."""
    c = _Curves(req, rows)
    fit: dict[str, Any] = {"se_sq": {"A": c.a_w, "B": c.b_w, "form": "A + B / participants"},
                           "df": {"participants": [r["participants"] for r in rows], "df": c.df.tolist(),
                                  "form": "interpolated in log participants"}}
    if req.half_width is not None:
        def gap(log_n: float) -> float:
            return float(c.half_width(math.exp(log_n))) - req.half_width
    else:
        c.fit_power(rows)
        fit["power"] = {"participants": [r["participants"] for r in rows],
                        "power": norm.cdf(c.power_points[1]).tolist(), "b": 1.0,
                        "form": "simulated power made non-decreasing, interpolated on the probit scale in log "
                                "participants (extrapolated linearly beyond the grid)"}

        def gap(log_n: float) -> float:
            return req.power - float(c.power(math.exp(log_n)))

    lo, hi = 0.0, math.log(1e7)
    n = None
    if (req.power is None or fit["power"]["b"] > 0) and gap(hi) < 0:
        n = 1.0 if gap(lo) <= 0 else math.exp(brentq(gap, lo, hi, xtol=1e-9))
    return {"participants": None if n is None else max(1, math.ceil(n - 1e-9)), "participants_exact": n, "fit": fit,
            "_curves": c}


def fitted_curves(req: PlanRequest, fit: Mapping[str, Any], participants: Iterable[float],
                  curves: _Curves | None = None) -> dict[str, list[float]]:
    """Half-width (and power) of the smoothed curves at `participants`: monotone by construction."""
    n = np.asarray(list(participants), dtype=float)
    out = {"participants": n.tolist(), "half_width": curves.half_width(n).tolist()}
    if "power" in fit:
        out["power"] = np.maximum.accumulate(curves.power(n)).tolist()
    return out


def plan(req: PlanRequest, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Simulate, fit, solve: a JSON-ready plan."""
    rows = simulate_grid(req, progress)
    sol = solve(req, rows)
    top = rows[-1]["participants"]
    if not req.grid and sol["participants"] is not None and sol["participants"] > 1.5 * top:
        # The answer lies beyond the default grid: simulate again around it (once).
        n = sol["participants"]
        req = replace(req, grid=tuple(sorted({max(3, int(round(x))) for x in np.geomspace(0.5 * n, 2 * n, 8)})))
        rows = simulate_grid(req, progress)
        sol = solve(req, rows)
    n = sol["participants"]
    m = req.design.ratings_per_participant
    effect, threshold = req.effects.latent()
    check = None
    if n is not None and req.power is not None:
        check = refine_power(req, n)
        if check is not None and check["participants"] is not None:
            check["fitted_participants"] = n
            n = check["participants"]
            check["power"] = realised_power(req, n, 1000, seed=7)
    out = {
        "request": {**asdict(req), "grid": [r["participants"] for r in rows]},
        "latent_model": {"effect": effect, "threshold": threshold, "sd_noise": 1.0},
        "target": {"half_width": req.half_width} if req.half_width is not None
        else {"power": req.power, "alpha": req.alpha},
        "participants": n, "participants_exact": sol["participants_exact"],
        "ratings": None if n is None else n * m,
        "cost": None if n is None or req.price_per_rating is None else round(n * m * req.price_per_rating, 2),
        "binomial_participants": closed_form_participants(req),
        "table": rows, "fit": sol["fit"], "realised_power": check,
        "curve": fitted_curves(req, sol["fit"], np.geomspace(rows[0]["participants"], rows[-1]["participants"], 40),
                               sol["_curves"]),
    }
    if n is None:
        out["note"] = ("the target is out of reach by adding participants with this many prompts: the prompt-level "
                       "variance puts a floor under the interval; add prompts or seeds")
    return out


# ------------------------------------------------------------------ pilot studies

def _pair_sums(codes: list[np.ndarray], c: np.ndarray) -> tuple[float, float]:
    """(sum over pairs i != j of c_i c_j, number of such pairs) within groups given by `codes`."""
    key = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)[1].ravel()
    s, t, n = np.bincount(key, c), np.bincount(key, c * c), np.bincount(key)
    return float((s * s - t).sum()), float((n * (n - 1)).sum())


def _latent_cov(rho: float, mu: float, tau: float) -> float:
    """Cov of two votes (+1 / 0 / -1) whose standardised latents have correlation rho."""
    cov = [[1.0, rho], [rho, 1.0]]
    up, lo = tau - mu, -tau - mu  # thresholds for the standardised variable minus its mean
    both_hi = multivariate_normal.cdf([-up, -up], mean=[0, 0], cov=cov)
    both_lo = multivariate_normal.cdf([lo, lo], mean=[0, 0], cov=cov)
    hi_lo = multivariate_normal.cdf([-up, lo], mean=[0, 0], cov=[[1.0, -rho], [-rho, 1.0]])
    p_hi, p_lo = norm.sf(up), norm.cdf(lo)
    return float(both_hi + both_lo - 2 * hi_lo - (p_hi - p_lo) ** 2)


def _pilot_arrays(rows: list[Mapping[str, Any]], exclusion_rules: Mapping[str, Any] | None,
                  min_response_ms: float | None) -> tuple[np.ndarray, ...] | None:
    """(score, participant, prompt, pair codes) of the pilot's preference ratings as the report counts
    them: the study's exclusion rules applied, gold / repeats / practice and later duplicates left out.
    None when the rows lack the export columns the rules need."""
    from app.statistics import StatisticsInputError, apply_exclusions, normalise_rules, quality_summary
    from app.statistics.rows import REQUIRED_COLUMNS, preference_mask, ratings_from_rows

    if not rows or not all(set(REQUIRED_COLUMNS) <= r.keys() for r in rows):
        if exclusion_rules:
            raise ValueError("the pilot's rows lack the export columns its exclusion rules need")
        return None
    try:
        r = ratings_from_rows(rows)
        rules = normalise_rules(exclusion_rules, min_response_ms)
        quality = quality_summary(r, rules.get("min_response_ms", min_response_ms), rules["consistency_tolerance"])
        kept = apply_exclusions(quality["participants"], rules)["kept"]
    except StatisticsInputError as e:
        raise ValueError(f"pilot: {e}") from None
    mask = preference_mask(r) & np.isin(r.participants[r.participant], kept)
    return (np.sign(r.score[mask]).astype(float), r.participant[mask], r.prompt[mask], r.pair[mask])


def _jackknife_se(groups: np.ndarray, stat: Callable[[np.ndarray], float], n_groups: int = 20) -> float:
    """Delete-a-group jackknife SE of stat(mask), clusters split into at most `n_groups` groups."""
    labels = np.unique(groups)
    g = min(n_groups, labels.size)
    if g < 2:
        return math.inf
    part = np.searchsorted(labels, groups) % g
    reps = np.array([stat(part != k) for k in range(g)])
    return float(math.sqrt((g - 1) / g * ((reps - reps.mean()) ** 2).sum()))


def effects_from_pilot(rows: Iterable[Mapping[str, Any]], exclusion_rules: Mapping[str, Any] | None = None,
                       min_response_ms: float | None = None, floor: bool = True) -> dict[str, Any]:
    """Win rate, tie rate and variance components estimated from a pilot study's rating rows.

    Preference ratings only, counted as the report counts them: with export rows, the pilot
    study's `exclusion_rules` (and minimum response time) are applied, and gold, repeats,
    practice and later duplicates are left out. Votes become +1 / 0 / -1; their covariance
    between two votes of the same participant on different prompts, of the same prompt by
    different participants on different pairs, and of the same pair by different participants
    (U-statistics over all such pairs of votes) are matched to the latent model of
    `app.statistics.clustered` (bivariate normal thresholds) to give correlations rho_P, rho_Q and
    rho_Q + rho_pair, hence sds relative to a noise sd of 1.

    floor: each covariance is floored at its own jackknife standard error (participants, or
    prompts, deleted in groups): a small pilot cannot tell a component below that from zero, and
    planning with an estimate of ~0 would promise far too few participants.
    """
    rows = list(rows)
    arrays = _pilot_arrays(rows, exclusion_rules, min_response_ms)
    if arrays is None:
        rows = [r for r in rows if not _true(r.get("is_gold")) and not _true(r.get("is_repeat"))
                and not _true(r.get("is_practice"))]
        y = np.sign(np.array([int(r["score"]) for r in rows], dtype=float))
        p = np.unique([str(r["participant"]) for r in rows], return_inverse=True)[1].reshape(-1)
        q = np.unique([str(r["prompt_id"]) for r in rows], return_inverse=True)[1].reshape(-1)
        pair = np.unique([str(r["pair"]) for r in rows], return_inverse=True)[1].reshape(-1)
    else:
        y, p, q, pair = arrays
    if y.size < 20:
        raise ValueError(f"the pilot has {y.size} preference ratings; at least 20 are needed")
    wins, losses = int((y > 0).sum()), int((y < 0).sum())
    if min(wins, losses) == 0:
        raise ValueError("the pilot needs both treatment and baseline wins to estimate a win rate below 1")
    tie, win = 1 - (wins + losses) / y.size, wins / (wins + losses)

    def covariances(m: np.ndarray) -> dict[str, float]:
        c = y[m] - y[m].mean()
        pm, qm, prm = p[m], q[m], pair[m]
        s_p, n_p = _pair_sums([pm], c)
        s_pq, n_pq = _pair_sums([pm, qm], c)
        s_q, n_q = _pair_sums([qm], c)
        s_pr, n_pr = _pair_sums([prm], c)
        s_prp, n_prp = _pair_sums([prm, pm], c)
        return {
            "participant": (s_p - s_pq) / max(n_p - n_pq, 1),
            "prompt": (s_q - s_pq - (s_pr - s_prp)) / max(n_q - n_pq - (n_pr - n_prp), 1),
            "pair": (s_pr - s_prp) / max(n_pr - n_prp, 1),
        }

    every = np.ones(y.size, dtype=bool)
    cov = covariances(every)
    floors = {"participant": 0.0, "prompt": 0.0, "pair": 0.0}
    if floor:
        floors = {"participant": _jackknife_se(p, lambda m: covariances(m)["participant"]),
                  "prompt": _jackknife_se(q, lambda m: covariances(m)["prompt"]),
                  "pair": _jackknife_se(q, lambda m: covariances(m)["pair"])}
    used = {k: max(v, floors[k]) if math.isfinite(floors[k]) else v for k, v in cov.items()}
    mu_minus_tau = float(ndtri((1 - tie) * win))
    minus_tau_minus_mu = float(ndtri((1 - tie) * (1 - win)))
    mu, tau = (mu_minus_tau - minus_tau_minus_mu) / 2, max(-(mu_minus_tau + minus_tau_minus_mu) / 2, 0.0)
    top = _latent_cov(0.95, mu, tau)

    def rho(v: float) -> float:
        if v <= 0:
            return 0.0
        return 0.95 if v >= top else brentq(lambda r: _latent_cov(r, mu, tau) - v, 0.0, 0.95, xtol=1e-6)

    r_p, r_q = rho(used["participant"]), rho(used["prompt"])
    r_pair = max(rho(used["pair"]) - r_q, 0.0)
    total = r_p + r_q + r_pair
    if total > 0.9:
        r_p, r_q, r_pair = (x * 0.9 / total for x in (r_p, r_q, r_pair))
    s2 = 1.0 / (1.0 - r_p - r_q - r_pair)
    effects = Effects(win_rate=win, tie_rate=tie, sd_participant=math.sqrt(r_p * s2), sd_prompt=math.sqrt(r_q * s2),
                      sd_pair=math.sqrt(r_pair * s2))
    return {"effects": effects, "n_ratings": int(y.size), "n_participants": int(np.unique(p).size),
            "n_prompts": int(np.unique(q).size), "vote_covariances": cov, "covariance_floors": floors,
            "covariances_used": used, "exclusion_rules_applied": arrays is not None,
            "latent_correlations": {"participant": r_p, "prompt": r_q, "pair": r_pair}}


def _true(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() in {"1", "true", "t", "yes"}) or v == 1
