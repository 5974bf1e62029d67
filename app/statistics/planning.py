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
from scipy.optimize import brentq, minimize
from scipy.special import log_ndtr, ndtri
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


def _intervals(batch: Mapping[str, np.ndarray], z: float, estimator: str, seed: int) -> tuple[np.ndarray, ...]:
    """(estimate, low, high, se) per simulated study."""
    if estimator == "fast":
        est = clustered_win_rate(batch["participant"], batch["prompt"], batch["score"])
        w, se = est.win_rate[:, 0], est.se[:, 0]
        return w, w - z * se, w + z * se, se
    confidence = 1 - 2 * norm.sf(z)
    rows = np.array([report_interval(batch["participant"][i], batch["prompt"][i], batch["score"][i],
                                     confidence=confidence, seed=seed + i) for i in range(batch["score"].shape[0])])
    return rows[:, 0], rows[:, 1], rows[:, 2], (rows[:, 2] - rows[:, 1]) / (2 * z)


def default_grid(req: PlanRequest) -> tuple[int, ...]:
    """Eight participant counts from half to six times the binomial answer (at least 3)."""
    n0 = max(closed_form_participants(req), 3.0)
    return tuple(sorted({max(3, int(round(x))) for x in np.geomspace(0.5 * n0, 6 * n0, 8)}))


def simulate_grid(req: PlanRequest, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """One row per participant count: half-width, power, SE (means over `req.sims` studies)."""
    req.check()
    z = norm.isf(req.alpha / 2)
    out = []
    grid = req.grid or default_grid(req)
    votes, slots = req.sims * max(grid) * req.design.ratings_per_participant, req.sims * req.design.n_pairs
    if slots > MAX_VALUES:
        raise ValueError(f"too many pairs to simulate ({req.design.n_pairs:,} pairs x {req.sims} studies; limit "
                         f"{MAX_VALUES:,}): lower the simulations per point")
    if votes > MAX_VALUES:
        raise ValueError(f"this plan would simulate {votes:,} votes at once (limit {MAX_VALUES:,}): the answer lies "
                         f"beyond {max(grid):,} participants; check the expected win rate, or lower the simulations")
    for i, n in enumerate(grid):
        rng = np.random.default_rng([req.seed, n])  # common seeds: each point reproducible on its own
        w, lo, hi, _ = _intervals(simulate_batch(req.design, req.effects, n, req.sims, rng), z, req.estimator,
                                   req.seed)
        ok = np.isfinite(lo) & np.isfinite(hi)
        hw = (hi - lo)[ok] / 2
        out.append({"participants": int(n), "ratings": int(n * req.design.ratings_per_participant),
                    "half_width": float(hw.mean()), "half_width_sq": float((hw**2).mean()),
                    "power": float(np.mean(ok & (lo > 0.5))), "rejections": int(np.sum(ok & (lo > 0.5))),
                    "sims": int(req.sims), "mean_win_rate": float(np.nanmean(w))})
        if progress:
            progress(i + 1, len(grid))
    return out


def _fit_width(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """(A, B) of mean squared half-width = A + B / N, least squares with A >= 0."""
    x = 1.0 / np.array([r["participants"] for r in rows], dtype=float)
    y = np.array([r["half_width_sq"] for r in rows])
    b, a = np.polyfit(x, y, 1)
    if a < 0:
        a, b = 0.0, float(np.dot(x, y) / np.dot(x, x))
    return float(a), float(b)


def _fit_power(rows: list[dict[str, Any]], a_w: float, b_w: float, z: float) -> tuple[float, float]:
    """(a, b) of power = Phi(a + b x) with x = z / half-width(N) = 1 / SE(N), probit MLE."""
    x = np.array([z / math.sqrt(a_w + b_w / r["participants"]) for r in rows])
    k = np.array([r["rejections"] for r in rows], dtype=float)
    n = np.array([r["sims"] for r in rows], dtype=float)

    def nll(p: np.ndarray) -> float:
        eta = p[0] + p[1] * x
        return float(-(k * log_ndtr(eta) + (n - k) * log_ndtr(-eta)).sum())

    res = minimize(nll, np.array([-z, 0.1]), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10,
                                                                             "maxiter": 4000})
    return float(res.x[0]), float(res.x[1])


def solve(req: PlanRequest, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Participants needed for the target, from the smoothed curves (None when out of reach)."""
    z = norm.isf(req.alpha / 2)
    a_w, b_w = _fit_width(rows)
    fit: dict[str, Any] = {"half_width_sq": {"A": a_w, "B": b_w, "form": "A + B / participants"}}
    need_sq = None
    if req.half_width is not None:
        need_sq = req.half_width**2
    else:
        a, b = _fit_power(rows, a_w, b_w, z)
        fit["power"] = {"a": a, "b": b, "form": "Phi(a + b z / half_width(participants))"}
        if b > 0:
            x = (float(ndtri(req.power)) - a) / b
            need_sq = (z / x) ** 2 if x > 0 else None
    n = b_w / (need_sq - a_w) if need_sq is not None and need_sq > a_w else None
    return {"participants": None if n is None else max(1, math.ceil(n - 1e-9)), "participants_exact": n, "fit": fit}


def fitted_curves(req: PlanRequest, fit: Mapping[str, Any], participants: Iterable[float]) -> dict[str, list[float]]:
    z = norm.isf(req.alpha / 2)
    n = np.asarray(list(participants), dtype=float)
    hw = np.sqrt(fit["half_width_sq"]["A"] + fit["half_width_sq"]["B"] / n)
    out = {"participants": n.tolist(), "half_width": hw.tolist()}
    if "power" in fit:
        out["power"] = norm.cdf(fit["power"]["a"] + fit["power"]["b"] * z / hw).tolist()
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
    out = {
        "request": {**asdict(req), "grid": [r["participants"] for r in rows]},
        "latent_model": {"effect": effect, "threshold": threshold, "sd_noise": 1.0},
        "target": {"half_width": req.half_width} if req.half_width is not None
        else {"power": req.power, "alpha": req.alpha},
        "participants": n, "participants_exact": sol["participants_exact"],
        "ratings": None if n is None else n * m,
        "cost": None if n is None or req.price_per_rating is None else round(n * m * req.price_per_rating, 2),
        "binomial_participants": closed_form_participants(req),
        "table": rows, "fit": sol["fit"],
        "curve": fitted_curves(req, sol["fit"], np.geomspace(rows[0]["participants"], rows[-1]["participants"], 40)),
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


def effects_from_pilot(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Win rate, tie rate and variance components estimated from a pilot study's rating rows.

    Preference ratings only (no gold, repeats or practice). Votes become +1 / 0 / -1; their
    covariance between two votes of the same participant on different prompts, of the same
    prompt by different participants on different pairs, and of the same pair by different
    participants (U-statistics over all such pairs of votes) are matched to the latent model
    of `app.statistics.clustered` (bivariate normal thresholds) to give correlations rho_P, rho_Q and
    rho_Q + rho_pair, hence sds relative to a noise sd of 1.
    """
    rows = [r for r in rows if not _true(r.get("is_gold")) and not _true(r.get("is_repeat"))
            and not _true(r.get("is_practice"))]
    if len(rows) < 20:
        raise ValueError(f"the pilot has {len(rows)} preference ratings; at least 20 are needed")
    y = np.sign(np.array([int(r["score"]) for r in rows], dtype=float))
    p = np.unique([str(r["participant"]) for r in rows], return_inverse=True)[1]
    q = np.unique([str(r["prompt_id"]) for r in rows], return_inverse=True)[1]
    pair = np.unique([str(r["pair"]) for r in rows], return_inverse=True)[1]
    wins, losses = int((y > 0).sum()), int((y < 0).sum())
    if min(wins, losses) == 0:
        raise ValueError("the pilot needs both treatment and baseline wins to estimate a win rate below 1")
    tie, win = 1 - (wins + losses) / y.size, wins / (wins + losses)
    c = y - y.mean()
    s_p, n_p = _pair_sums([p], c)
    s_pq, n_pq = _pair_sums([p, q], c)
    s_q, n_q = _pair_sums([q], c)
    s_pr, n_pr = _pair_sums([pair], c)
    s_prp, n_prp = _pair_sums([pair, p], c)
    cov = {
        "participant": (s_p - s_pq) / max(n_p - n_pq, 1),
        "prompt": (s_q - s_pq - (s_pr - s_prp)) / max(n_q - n_pq - (n_pr - n_prp), 1),
        "pair": (s_pr - s_prp) / max(n_pr - n_prp, 1),
    }
    mu_minus_tau = float(ndtri((1 - tie) * win))
    minus_tau_minus_mu = float(ndtri((1 - tie) * (1 - win)))
    mu, tau = (mu_minus_tau - minus_tau_minus_mu) / 2, max(-(mu_minus_tau + minus_tau_minus_mu) / 2, 0.0)
    top = _latent_cov(0.95, mu, tau)

    def rho(v: float) -> float:
        if v <= 0:
            return 0.0
        return 0.95 if v >= top else brentq(lambda r: _latent_cov(r, mu, tau) - v, 0.0, 0.95, xtol=1e-6)

    r_p, r_q = rho(cov["participant"]), rho(cov["prompt"])
    r_pair = max(rho(cov["pair"]) - r_q, 0.0)
    total = r_p + r_q + r_pair
    if total > 0.9:
        r_p, r_q, r_pair = (x * 0.9 / total for x in (r_p, r_q, r_pair))
    s2 = 1.0 / (1.0 - r_p - r_q - r_pair)
    effects = Effects(win_rate=win, tie_rate=tie, sd_participant=math.sqrt(r_p * s2), sd_prompt=math.sqrt(r_q * s2),
                      sd_pair=math.sqrt(r_pair * s2))
    return {"effects": effects, "n_ratings": int(y.size), "n_participants": int(p.max() + 1),
            "n_prompts": int(q.max() + 1), "vote_covariances": cov,
            "latent_correlations": {"participant": r_p, "prompt": r_q, "pair": r_pair}}


def _true(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() in {"1", "true", "t", "yes"}) or v == 1
