"""The clustered paired-preference design, simulated in batches, and a fast clustered win rate.

Shared by sample-size planning (`app.statistics.planning`) and peeking-safe monitoring (`app.statistics.monitoring`).

Design: `n_strata` x `prompts_per_stratum` prompts, `seeds_per_prompt` pairs per prompt (one pair
= prompt x seed); every participant rates `ratings_per_participant` distinct pairs. Pairs are
handed out least-rated first, as `app.assignment` does: participant n gets the pairs at positions
n*M .. n*M+M-1 (mod the number of pairs) of a shuffled pair order, so counts stay balanced.

Model (latent scale, noise sd 1): latent = effect + participant + prompt + pair + noise, all
normal and independent; the vote is a treatment win when latent > t, a baseline win when
latent < -t, else a tie. `Effects` picks effect and t so that the population win rate (among
decisive votes) and tie rate are the ones asked for.

Estimator: the win rate (wins / decisive votes) with a two-way cluster-robust variance
(Cameron, Gelbach & Miller 2011): V = c_P V_P + c_Q V_Q - c_PQ V_PQ on the linearised ratio,
clusters participants (P), prompts (Q) and their intersections (PQ), c_G = G / (G - 1); a
negative V falls back to max(c_P V_P, c_Q V_Q). `clustered_win_rate` evaluates it for many
simulated studies and many looks at once (cumulative sums, no per-study Python loop).

`report_interval` is the ONE adapter to the report's own headline interval (`app.statistics`);
planning runs through it, and tests check that the fast estimator agrees with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class Design:
    """Strata x prompts per stratum prompts, seeds per prompt pairs each, ratings per participant."""

    n_strata: int = 3
    prompts_per_stratum: int = 20
    seeds_per_prompt: int = 1
    ratings_per_participant: int = 20

    @property
    def n_prompts(self) -> int:
        return self.n_strata * self.prompts_per_stratum

    @property
    def n_pairs(self) -> int:
        return self.n_prompts * self.seeds_per_prompt

    def check(self) -> None:
        for name in ("n_strata", "prompts_per_stratum", "seeds_per_prompt", "ratings_per_participant"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.ratings_per_participant > self.n_pairs:
            raise ValueError(f"ratings per participant ({self.ratings_per_participant}) exceed the number of "
                             f"pairs ({self.n_pairs}): a participant never rates a pair twice")


@dataclass(frozen=True)
class Effects:
    """Population win rate and tie rate, and random-effect sds on the latent scale (noise sd 1)."""

    win_rate: float = 0.6
    tie_rate: float = 0.2
    sd_participant: float = 0.5
    sd_prompt: float = 0.3
    sd_pair: float = 0.0

    def check(self) -> None:
        if not 0 < self.win_rate < 1:
            raise ValueError("win rate must be between 0 and 1")
        if not 0 <= self.tie_rate < 1:
            raise ValueError("tie rate must be at least 0 and below 1")
        if min(self.sd_participant, self.sd_prompt, self.sd_pair) < 0:
            raise ValueError("standard deviations must not be negative")

    @property
    def sd_total(self) -> float:
        return math.sqrt(1.0 + self.sd_participant**2 + self.sd_prompt**2 + self.sd_pair**2)

    def latent(self) -> tuple[float, float]:
        """(effect, threshold t) giving P(win) = (1 - tie) w and P(loss) = (1 - tie)(1 - w)."""
        s = self.sd_total
        a = norm.isf((1 - self.tie_rate) * self.win_rate)  # (t - effect) / s
        b = norm.ppf((1 - self.tie_rate) * (1 - self.win_rate))  # (-t - effect) / s
        return float(-s * (a + b) / 2), float(max(s * (a - b) / 2, 0.0))


def simulate_batch(design: Design, effects: Effects, n_participants: int, sims: int,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`sims` simulated studies with `n_participants` each, in rating order (participant by participant).

    Returns arrays of shape (sims, n_participants * M): participant, prompt, pair (int codes)
    and score (-1, 0, +1: baseline win, tie, treatment win).
    """
    d, e = design, effects
    d.check()
    e.check()
    m, n_pairs, n_prompts = d.ratings_per_participant, d.n_pairs, d.n_prompts
    effect, t = e.latent()
    order = np.argsort(rng.random((sims, n_pairs)), axis=1)  # a shuffled pair order per study
    slots = (np.arange(n_participants * m) % n_pairs)[None, :]
    pair = np.take_along_axis(order, np.broadcast_to(slots, (sims, slots.shape[1])), axis=1)
    participant = np.broadcast_to(np.repeat(np.arange(n_participants), m)[None, :], pair.shape)
    prompt = pair % n_prompts
    latent = effect + rng.normal(0.0, 1.0, pair.shape)
    for sd, codes, n in ((e.sd_participant, participant, n_participants), (e.sd_prompt, prompt, n_prompts),
                         (e.sd_pair, pair, n_pairs)):
        if sd > 0:
            latent += np.take_along_axis(rng.normal(0.0, sd, (sims, n)), codes, axis=1)
    score = (latent > t).astype(np.int8) - (latent < -t).astype(np.int8)
    return {"participant": np.ascontiguousarray(participant), "prompt": prompt, "pair": pair, "score": score}


def _cell_codes(participant: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """Compact codes (per row) of the (participant, prompt) cells."""
    key = participant.astype(np.int64) * (int(prompt.max()) + 1) + prompt
    order = np.argsort(key, axis=1, kind="stable")
    sk = np.take_along_axis(key, order, axis=1)
    new = np.ones(sk.shape, dtype=np.int64)
    new[:, 1:] = sk[:, 1:] != sk[:, :-1]
    codes = np.empty_like(new)
    np.put_along_axis(codes, order, np.cumsum(new, axis=1) - 1, axis=1)
    return codes


@dataclass(frozen=True)
class ClusteredLooks:
    """Per study (rows) and look (columns): win rate, its clustered standard error, counts."""

    n_ratings: np.ndarray  # (K,) ratings used at each look
    win_rate: np.ndarray  # (S, K), nan without decisive votes
    se: np.ndarray
    n_decisive: np.ndarray
    n_participants: np.ndarray  # clusters with a decisive vote
    n_prompts: np.ndarray


def clustered_win_rate(participant: np.ndarray, prompt: np.ndarray, score: np.ndarray,
                       looks: Sequence[int] | None = None) -> ClusteredLooks:
    """Win rate and two-way clustered SE of the first n ratings, for every n in `looks`.

    Inputs are (S, N) arrays (or 1-D for one study) in rating order; `looks` default: all N.
    """
    participant, prompt, score = (np.atleast_2d(np.asarray(a)) for a in (participant, prompt, score))
    s, n = score.shape
    looks = [n] if looks is None else [int(k) for k in looks]
    if any(b <= a for a, b in zip([0, *looks], looks)) or (looks and looks[-1] > n):
        raise ValueError("looks must increase and not exceed the number of ratings")
    win = (score > 0).astype(np.float64)
    dec = (score != 0).astype(np.float64)
    codes = [np.asarray(participant, dtype=np.int64), np.asarray(prompt, dtype=np.int64),
             _cell_codes(participant, prompt)]
    sizes = [int(c.max()) + 1 if c.size else 1 for c in codes]
    wsum = [np.zeros((s, g)) for g in sizes]
    dsum = [np.zeros((s, g)) for g in sizes]
    shape = (s, len(looks))
    out = {k: np.full(shape, np.nan) for k in ("w", "se")}
    counts = {k: np.zeros(shape, dtype=np.int64) for k in ("dec", "p", "q")}
    start = 0
    for j, end in enumerate(looks):
        for c, g, ws, ds in zip(codes, sizes, wsum, dsum):
            idx = (c[:, start:end] + (np.arange(s) * g)[:, None]).ravel()
            ws += np.bincount(idx, weights=win[:, start:end].ravel(), minlength=s * g).reshape(s, g)
            ds += np.bincount(idx, weights=dec[:, start:end].ravel(), minlength=s * g).reshape(s, g)
        start = end
        d_tot = dsum[0].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = wsum[0].sum(axis=1) / d_tot
            parts = []
            for ws, ds in zip(wsum, dsum):
                g_n = (ds > 0).sum(axis=1)
                c_g = np.where(g_n > 1, g_n / np.maximum(g_n - 1, 1), np.nan)
                parts.append(c_g * ((ws - w[:, None] * ds) ** 2).sum(axis=1) / d_tot**2)
            v = parts[0] + parts[1] - parts[2]
            v = np.where(v > 0, v, np.maximum(parts[0], parts[1]))
        out["w"][:, j], out["se"][:, j] = w, np.sqrt(v)
        counts["dec"][:, j] = d_tot
        counts["p"][:, j] = (dsum[0] > 0).sum(axis=1)
        counts["q"][:, j] = (dsum[1] > 0).sum(axis=1)
    return ClusteredLooks(np.asarray(looks), out["w"], out["se"], counts["dec"], counts["p"], counts["q"])


def report_interval(participant: np.ndarray, prompt: np.ndarray, score: np.ndarray, *,
                    confidence: float = 0.95, seed: int = 0, draws: int = 1000) -> tuple[float, float, float]:
    """THE adapter to the report's headline win-rate interval: (estimate, low, high) of one study.

    Repoint this function when `app.statistics` changes its interval; everything in planning and
    the agreement tests goes through it: the two-way cluster-robust interval of
    `app.statistics.robust` (one stratum; `seed` and `draws` are unused, kept for the signature).
    """
    from app.statistics.robust import robust_intervals

    score = np.asarray(score)
    r = robust_intervals(score, np.asarray(participant), np.asarray(prompt), np.zeros(score.shape, dtype=int),
                         confidence)["win_rate"]
    est, lo, hi = r["estimate"], r["ci_low"], r["ci_high"]
    nan = float("nan")
    return (nan if est is None else est, nan if lo is None else lo, nan if hi is None else hi)
