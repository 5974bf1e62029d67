"""Crossed (pigeonhole) bootstrap: participants and prompts (within strata) resampled independently.

A vote weighs (participant copies) x (prompt copies). Its percentile interval is reported as a
cross-check only: it counts the vote-level noise about three times (once per resampled factor
and once more for their product; Owen 2007), so it is conservative. The headline intervals are
`app.statistics.robust`'s.
"""

from __future__ import annotations

import numpy as np

from app.statistics.jsonsafe import _num


def bootstrap_weights(n_participants: int, n_prompts: int, draws: int, seed: int,
                      prompt_strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resampling counts for a crossed bootstrap: shapes (draws, P) and (draws, Q), float32.

    Row b holds how many copies of each participant / prompt draw b took: P participants drawn
    uniformly with replacement; prompts likewise, or, given `prompt_strata` (an int stratum
    code per prompt), drawn within each stratum, so every draw keeps each stratum's number of
    prompts (strata are fixed by design). One numpy Generator seeded with `seed` draws both,
    participants first.
    """
    rng = np.random.default_rng(seed)

    def counts(n: int, groups: np.ndarray) -> np.ndarray:
        order = np.argsort(groups, kind="stable")
        _, start, size = np.unique(groups[order], return_index=True, return_counts=True)
        slot = np.repeat(np.arange(start.size), size)  # the stratum of each of the n slots
        picks = order[start[slot] + rng.integers(0, size[slot], size=(draws, n))]
        picks += (np.arange(draws) * n)[:, None]
        return np.bincount(picks.ravel(), minlength=draws * n).reshape(draws, n).astype(np.float32)

    strata = np.zeros(n_prompts, dtype=np.int64) if prompt_strata is None else np.asarray(prompt_strata)
    return counts(n_participants, np.zeros(n_participants, dtype=np.int64)), counts(n_prompts, strata)


# Per-vote components summed in the bootstrap: count, decisive, treatment win, score.
N_COMPONENTS = 4


def crossed_bootstrap_sums(
    participant: np.ndarray,
    prompt: np.ndarray,
    scores: np.ndarray,
    wp: np.ndarray,
    wq: np.ndarray,
    cell: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sums per bootstrap draw and cell: (cell ids, array (draws, n_cells, 4)).

    participant, prompt: int codes (length N) into the columns of wp (draws, P) and wq
    (draws, Q); cell: optional int group of each vote (e.g. comparison x stratum), so one
    pass serves every group that is a union of cells. A vote's weight in draw b is
    wp[b, participant] * wq[b, prompt]; the 4 sums are of weight x (1, decisive, win, score).

    Votes are first aggregated per (participant, unit) with unit = (cell, prompt), so a draw
    costs one row of a matrix product: sum_i wp[b,p_i] wq[b,q_i] x_i =
    sum_u wq[b,q_u] (wp[b] @ X)[u] with X[p, u] = sum of x over the votes of p in unit u.
    """
    scores = np.asarray(scores, dtype=np.float64)
    cell = np.zeros(scores.size, dtype=np.int64) if cell is None else np.asarray(cell, dtype=np.int64)
    n_q = wq.shape[1]
    used_p, p = np.unique(participant, return_inverse=True)
    used_u, u = np.unique(cell * n_q + prompt, return_inverse=True)  # sorted: units of a cell are contiguous
    n_p, n_u, k = used_p.size, used_u.size, N_COMPONENTS
    comps = np.stack([np.ones_like(scores), scores != 0, scores > 0, scores], axis=1)
    flat = (p * n_u + u)[:, None] * k + np.arange(k)[None, :]
    x = np.bincount(flat.ravel(), weights=comps.ravel(), minlength=n_p * n_u * k).astype(np.float32)
    per_unit = (wp[:, used_p] @ x.reshape(n_p, n_u * k)).reshape(wp.shape[0], n_u, k)
    per_unit *= wq[:, used_u % n_q][:, :, None]
    cells, starts = np.unique(used_u // n_q, return_index=True)
    return cells, np.add.reduceat(per_unit, starts, axis=1).astype(np.float64)


def estimates_from_sums(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Win rate, tie-as-half rate and mean score from (..., 4) bootstrap sums (nan if undefined)."""
    n, decisive, wins, total = np.moveaxis(sums, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "win_rate": wins / decisive,
            "tie_half_rate": (wins + 0.5 * (n - decisive)) / n,
            "mean_score": total / n,
        }


def crossed_bootstrap_estimates(
    participant: np.ndarray,
    prompt: np.ndarray,
    scores: np.ndarray,
    wp: np.ndarray,
    wq: np.ndarray,
) -> dict[str, np.ndarray]:
    """Win rate, tie-as-half rate and mean score of all the votes in every bootstrap draw.

    See `crossed_bootstrap_sums`; returns arrays of length draws.
    """
    _, sums = crossed_bootstrap_sums(participant, prompt, scores, wp, wq)
    return estimates_from_sums(sums.sum(axis=1))


def percentile_interval(draws: np.ndarray, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile interval of bootstrap draws, ignoring draws where the statistic is undefined."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return None, None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return _num(lo), _num(hi)
