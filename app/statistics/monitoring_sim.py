"""Monitoring checked by simulation: type-I error under peeking and ratings saved at equal power.

Used by `benchmarks/monitoring.py` (4,000 null studies per design: balanced, heavy raters, 15
prompts) and `tests/test_monitoring.py` (a fast version). Each simulated study is the clustered design of `app.statistics.clustered` (participant, prompt and
pair effects), rated participant by participant; monitoring looks after every `look_every`
ratings up to the planned total and stops at the first look where `app.statistics.monitoring` says stop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm
from scipy.stats import t as t_dist

from app.statistics.clustered import Design, Effects, clustered_win_rate, heavy_rater_counts, simulate_batch
from app.statistics.monitoring import ALPHA_ONE_SIDED, DESIGN_ALPHA_ONE_SIDED, LOOK_EVERY, MARGIN, boundaries, first_stops, t_critical

CODES = {0: "none", 1: "treatment preferred", 2: "baseline preferred", 3: "no difference"}


@dataclass(frozen=True)
class Scenario:
    design: Design = Design()
    effects: Effects = Effects(win_rate=0.5)
    n_participants: int = 60
    look_every: int = LOOK_EVERY
    margin: float = MARGIN
    heavy: bool = False  # 5 participants give 60% of the votes (the rest rate M pairs each)

    def counts(self) -> np.ndarray | None:
        if not self.heavy:
            return None
        return heavy_rater_counts(self.n_participants, self.design.ratings_per_participant)

    @property
    def planned(self) -> int:
        c = self.counts()
        return int(c.sum()) if c is not None else self.n_participants * self.design.ratings_per_participant


def simulate_looks(sc: Scenario, sims: int, seed: int, batch: int = 250) -> dict[str, np.ndarray]:
    """Win rate, SE and cluster counts at every look for `sims` studies: arrays (sims, looks)."""
    looks, _ = boundaries(sc.look_every, sc.planned, DESIGN_ALPHA_ONE_SIDED)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("w", "se", "df", "p", "q")}
    for start in range(0, sims, batch):
        b = simulate_batch(sc.design, sc.effects, sc.n_participants, min(batch, sims - start), rng, sc.counts())
        est = clustered_win_rate(b["participant"], b["prompt"], b["score"], looks=looks.tolist(), stratum=b["stratum"])
        for key, value in (("w", est.win_rate), ("se", est.se), ("df", est.df), ("p", est.n_participants),
                           ("q", est.n_prompts)):
            parts[key].append(value)
    return {k: np.concatenate(v) for k, v in parts.items()} | {"looks": np.asarray(looks)}


def _rate(hits: np.ndarray) -> dict[str, float]:
    p = float(np.mean(hits))
    return {"rate": p, "mc_error": math.sqrt(p * (1 - p) / hits.size)}


def run(sc: Scenario, sims: int, seed: int) -> dict[str, Any]:
    """Outcome shares of monitoring, with Monte Carlo errors, and the expected ratings used."""
    sim = simulate_looks(sc, sims, seed)
    looks, bounds = boundaries(sc.look_every, sc.planned, DESIGN_ALPHA_ONE_SIDED)
    stops = first_stops(sim["w"], sim["se"], sim["p"], sim["q"], bounds, sc.margin, sim["df"])
    code, at = stops[:, 0], stops[:, 1]
    used = np.where(at >= 0, looks[np.maximum(at, 0)], sc.planned)
    # Stricter than the recommendation: the upper boundary crossed at any look, even after a stop.
    crit = t_critical(np.broadcast_to(bounds[None, :], sim["w"].shape), sim["df"])
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (sim["se"] > 0) & (np.minimum(sim["p"], sim["q"]) >= 5)
        ever_upper = (ok & (sim["w"] - crit * sim["se"] > 0.5)).any(axis=1)
        ever_lower = (ok & (sim["w"] + crit * sim["se"] < 0.5)).any(axis=1)
        z = (sim["w"] - 0.5) / sim["se"]
    out = {
        "scenario": {**asdict(sc), "planned_ratings": sc.planned, "true_win_rate": sc.effects.win_rate},
        "sims": sims, "seed": seed, "looks": int(looks.size),
        "outcomes": {name: _rate(code == c) for c, name in CODES.items()},
        "ever_crosses_treatment_boundary": _rate(ever_upper),
        # Two-sided type-I error under continuous looks: either boundary crossed at any look.
        "ever_crosses_either_boundary": _rate(ever_upper | ever_lower),
        "two_sided_stop": _rate((code == 1) | (code == 2)),
        "mean_ratings_used": float(used.mean()),
        "mean_ratings_used_mc_error": float(used.std(ddof=1) / math.sqrt(sims)),
        "_z": z, "_df": sim["df"], "_used": used, "_code": code,
    }
    return out


def fixed_power_curve(z: np.ndarray, looks: np.ndarray, alpha: float = ALPHA_ONE_SIDED,
                      df: np.ndarray | None = None) -> np.ndarray:
    """Power of a fixed-size study of looks[k] ratings (one-sided alpha, the report's t statistic and df)."""
    crit = norm.isf(alpha) if df is None else t_dist.isf(alpha, np.where(np.isfinite(df), df, np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.mean(np.nan_to_num(z, nan=0.0) >= crit, axis=0)


def savings(sc: Scenario, sims: int, seed: int) -> dict[str, Any]:
    """Average ratings saved by monitoring against the fixed plan with the same power.

    Power of monitoring = share of studies that stop with "treatment preferred". The fixed plan
    is the smallest size whose fixed one-sided test (same clustered z, alpha 0.025) reaches that
    power in the same simulated studies (linear interpolation between looks).
    """
    res = run(sc, sims, seed)
    looks, _ = boundaries(sc.look_every, sc.planned, DESIGN_ALPHA_ONE_SIDED)
    power = res["outcomes"]["treatment preferred"]["rate"]
    curve = fixed_power_curve(res["_z"], looks, df=res["_df"])
    above = np.flatnonzero(curve >= power)
    if above.size == 0:
        n_fixed = math.nan
    elif above[0] == 0:
        n_fixed = float(looks[0])
    else:
        k = above[0]
        frac = (power - curve[k - 1]) / max(curve[k] - curve[k - 1], 1e-12)
        n_fixed = float(looks[k - 1] + frac * (looks[k] - looks[k - 1]))
    saved = n_fixed - res["mean_ratings_used"]
    return {
        **{k: v for k, v in res.items() if not k.startswith("_")},
        "power_sequential": power,
        "fixed_ratings_same_power": n_fixed,
        "ratings_saved": saved,
        "share_saved": saved / n_fixed if n_fixed else math.nan,
    }


def type_one_error(sc: Scenario, sims: int, seed: int) -> dict[str, Any]:
    """Monitoring under no true preference: how often it ever says "treatment preferred"."""
    if sc.effects.win_rate != 0.5:
        raise ValueError("type-I error needs a true win rate of 0.5")
    return {k: v for k, v in run(sc, sims, seed).items() if not k.startswith("_")}
