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

Estimator: the report's (`app.statistics.robust`, one statistics core): the win rate (wins /
decisive votes) with the two-way cluster-robust variance V_P + V_Q - V_PQ (CR2 weights,
the df of each part's t statistic under the working model, prompts within strata).
`clustered_win_rate` evaluates it for many simulated studies and many looks at once (cumulative
sums, `robust.cluster_part` over all studies at once, no per-study Python loop); tests check it
equals `report_interval` study by study.
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


def heavy_rater_counts(n_participants: int, ratings: int, heavy: int = 5, share: float = 0.6) -> np.ndarray:
    """Ratings per participant when `heavy` of them give `share` of the votes and the rest `ratings` each."""
    light = n_participants - heavy
    per_heavy = int(round(share / (1 - share) * light * ratings / heavy))
    return np.concatenate([np.full(heavy, per_heavy), np.full(light, ratings)])


def simulate_batch(design: Design, effects: Effects, n_participants: int, sims: int,
                   rng: np.random.Generator, counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`sims` simulated studies with `n_participants` each, in rating order (participant by participant).

    Returns arrays of shape (sims, total ratings): participant, prompt, pair, stratum (int codes)
    and score (-1, 0, +1: baseline win, tie, treatment win). `counts`: ratings per participant
    (default M each); with unequal counts (e.g. `heavy_rater_counts`) the ratings arrive in a
    random interleaved order (heavy raters come back many times).
    """
    d, e = design, effects
    d.check()
    e.check()
    m, n_pairs, n_prompts = d.ratings_per_participant, d.n_pairs, d.n_prompts
    counts = np.full(n_participants, m) if counts is None else np.asarray(counts, dtype=np.int64)
    if counts.max() > n_pairs:
        raise ValueError(f"a participant would rate {counts.max()} of {n_pairs} pairs")
    total = int(counts.sum())
    effect, t = e.latent()
    order = np.argsort(rng.random((sims, n_pairs)), axis=1)  # a shuffled pair order per study
    slots = (np.arange(total) % n_pairs)[None, :]
    pair = np.take_along_axis(order, np.broadcast_to(slots, (sims, slots.shape[1])), axis=1)
    participant = np.broadcast_to(np.repeat(np.arange(n_participants), counts)[None, :], pair.shape)
    if np.ptp(counts) > 0:  # interleave arrivals
        arrival = np.argsort(rng.random((sims, total)), axis=1)
        pair = np.take_along_axis(pair, arrival, axis=1)
        participant = np.take_along_axis(participant, arrival, axis=1)
    prompt = pair % n_prompts
    latent = effect + rng.normal(0.0, 1.0, pair.shape)
    for sd, codes, n in ((e.sd_participant, participant, n_participants), (e.sd_prompt, prompt, n_prompts),
                         (e.sd_pair, pair, n_pairs)):
        if sd > 0:
            latent += np.take_along_axis(rng.normal(0.0, sd, (sims, n)), codes, axis=1)
    score = (latent > t).astype(np.int8) - (latent < -t).astype(np.int8)
    return {"participant": np.ascontiguousarray(participant), "prompt": prompt, "pair": pair, "score": score,
            "stratum": prompt // d.prompts_per_stratum}


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
    """Per study (rows) and look (columns): win rate, its clustered standard error and df, counts."""

    n_ratings: np.ndarray  # (K,) ratings used at each look
    win_rate: np.ndarray  # (S, K), nan without decisive votes
    se: np.ndarray  # nan where the report gives no interval
    n_decisive: np.ndarray
    n_participants: np.ndarray  # clusters with a decisive vote
    n_prompts: np.ndarray
    df: np.ndarray | None = None  # degrees of freedom of the t reference (the report's)


def clustered_win_rate(participant: np.ndarray, prompt: np.ndarray, score: np.ndarray,
                       looks: Sequence[int] | None = None, stratum: np.ndarray | None = None) -> ClusteredLooks:
    """Win rate, two-way clustered SE and df of the first n ratings, for every n in `looks`.

    Inputs are (S, N) arrays (or 1-D for one study) in rating order; `looks` default: all N;
    `stratum` (int codes of each rating's prompt's stratum; default one stratum). The variance,
    df and the cases without an interval are exactly the report's (`app.statistics.robust`:
    CR2 weights under the random-effects working model, df = min(df_P, df_Q, df_W) (`robust.DF_RULE`);
    prompts centred within strata): `cluster_part` evaluates every study at once.
    """
    from app.statistics.robust import DF_RULE, cluster_part, combine, working_rho

    participant, prompt, score = (np.atleast_2d(np.asarray(a)) for a in (participant, prompt, score))
    s, n = score.shape
    stratum = np.zeros_like(prompt) if stratum is None else np.atleast_2d(np.asarray(stratum))
    looks = [n] if looks is None else [int(k) for k in looks]
    if any(b <= a for a, b in zip([0, *looks], looks)) or (looks and looks[-1] > n):
        raise ValueError("looks must increase and not exceed the number of ratings")
    win = (score > 0).astype(np.float64)
    dec = (score != 0).astype(np.float64)
    codes = [np.asarray(participant, dtype=np.int64), np.asarray(prompt, dtype=np.int64),
             _cell_codes(participant, prompt)]
    sizes = [int(c.max()) + 1 if c.size else 1 for c in codes]
    n_h = int(stratum.max()) + 1 if stratum.size else 1
    # The stratum of each prompt and cell code (constant within a prompt).
    block_of = []
    for c, g in zip(codes, sizes):
        blk = np.zeros((s, g), dtype=np.int64)
        np.put_along_axis(blk, c, np.asarray(stratum, dtype=np.int64), axis=1)
        block_of.append(blk)
    wsum = [np.zeros((s, g)) for g in sizes]
    dsum = [np.zeros((s, g)) for g in sizes]
    shape = (s, len(looks))
    out = {k: np.full(shape, np.nan) for k in ("w", "se", "df")}
    counts = {k: np.zeros(shape, dtype=np.int64) for k in ("dec", "p", "q")}
    study_ids = np.arange(s)
    start = 0
    for j, end in enumerate(looks):
        for c, g, ws, ds in zip(codes, sizes, wsum, dsum):
            idx = (c[:, start:end] + (study_ids * g)[:, None]).ravel()
            ws += np.bincount(idx, weights=win[:, start:end].ravel(), minlength=s * g).reshape(s, g)
            ds += np.bincount(idx, weights=dec[:, start:end].ravel(), minlength=s * g).reshape(s, g)
        start = end
        d_tot = dsum[0].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = wsum[0].sum(axis=1) / d_tot
            # Each stratum's own ratio, for the prompt and cell residuals.
            wh = np.zeros((s, n_h))
            dh = np.zeros((s, n_h))
            for h in range(n_h):
                m = block_of[1] == h
                wh[:, h] = (wsum[1] * m).sum(axis=1)
                dh[:, h] = (dsum[1] * m).sum(axis=1)
            theta_h = wh / np.where(dh > 0, dh, 1.0)
            sigma2 = np.nan_to_num(w * (1 - w))
        parts = []
        for k, (ws, ds, blk) in enumerate(zip(wsum, dsum, block_of)):
            centre = np.nan_to_num(w)[:, None] if k == 0 else np.take_along_axis(theta_h, blk, axis=1)
            present = ds > 0
            r = (ws - centre * ds)[present]
            nn = ds[present]
            st_ids = np.broadcast_to(study_ids[:, None], ds.shape)[present]
            block = (st_ids * n_h + (0 if k == 0 else blk[present])) if k else st_ids
            rho = working_rho(r, nn, block, st_ids, s, sigma2) if k < 2 else 0.0
            parts.append(cluster_part(r, nn, block, st_ids, s, rho, t_df=k < 2))
        b2 = d_tot**2
        with np.errstate(invalid="ignore", divide="ignore"):
            v, df = combine(parts[0].v / b2, parts[1].v / b2, parts[2].v / b2, parts[0].df, parts[1].df, DF_RULE,
                            e=(parts[0].e, parts[1].e, parts[2].e))
            n_p = (dsum[0] > 0).sum(axis=1)
            n_q = (dsum[1] > 0).sum(axis=1)
            ok = (n_p >= 2) & (n_q >= 2) & np.isfinite(df) & (df > 0) & np.isfinite(v) & (v > 1e-10 * (w + 1) ** 2)
        out["w"][:, j] = w
        out["se"][:, j] = np.where(ok, np.sqrt(np.where(ok, v, 1.0)), np.nan)
        out["df"][:, j] = np.where(ok, df, np.nan)
        counts["dec"][:, j] = d_tot
        counts["p"][:, j] = n_p
        counts["q"][:, j] = n_q
    return ClusteredLooks(np.asarray(looks), out["w"], out["se"], counts["dec"], counts["p"], counts["q"], out["df"])


def report_interval(participant: np.ndarray, prompt: np.ndarray, score: np.ndarray, *,
                    confidence: float = 0.95, seed: int = 0, draws: int = 1000,
                    stratum: np.ndarray | None = None) -> tuple[float, float, float]:
    """THE adapter to the report's headline win-rate interval: (estimate, low, high) of one study.

    The two-way cluster-robust interval of `app.statistics.robust` (the same core as
    `clustered_win_rate`); `seed` and `draws` are unused, kept for the signature.
    """
    from app.statistics.robust import robust_intervals

    score = np.asarray(score)
    stratum = np.zeros(score.shape, dtype=int) if stratum is None else np.asarray(stratum)
    r = robust_intervals(score, np.asarray(participant), np.asarray(prompt), stratum, confidence)["win_rate"]
    est, lo, hi = r["estimate"], r["ci_low"], r["ci_high"]
    nan = float("nan")
    return (nan if est is None else est, nan if lo is None else lo, nan if hi is None else hi)
