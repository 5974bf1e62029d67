"""A wild cluster bootstrap of the report's own t statistic, the null imposed: one of the two p-values
whose larger the report shows (`app.statistics.significance.cluster_tests`).

The report's t statistic (`robust.two_way` + `t_test`: the two-way CR2 variance, the arcsine
scale) is referred to its distribution under the null as well as to t(df): with a few raters
carrying most of the votes the t(df) reference rejected 0.0535 of null studies (issue 23,
docs/statistics.md). The null-imposed ("restricted") wild cluster bootstrap-t (WCR; Cameron,
Gelbach & Miller 2008; MacKinnon & Webb 2017; Roodman et al. 2019, Stata's `boottest`):

- residuals about the null, e_i = a_i - theta0 b_i, and in each draw every participant's votes
  are a*_i = theta0 b_i + w_g e_i with one weight w_g per participant (the participant is the
  cluster that carries the dependence the t(df) reference misses);
- the report's statistic is recomputed on every draw's votes: theta*, the two-way CR2 variance
  with its parts, working ratios rho and the V <= 0 rule, the arcsine scale;
- p = (1 + #{|t*| >= |t|}) / (draws + 1), two-sided (a symmetric test of theta = theta0).

Weights: Rademacher signs (+-1) with 12 participants or more; below that Webb's six-point
distribution (+-sqrt(1/2), +-1, +-sqrt(3/2), each 1/6), since 5 participants have only 32 sign
patterns and the test could never reject at 0.05 (MacKinnon & Webb 2017 draw the line at about
12). Signs reproduce what t(df) misses with heavy raters, the few big raters agreeing: on the same
3,000 null studies Rademacher rejected 0.042 (`benchmarks/wild_bootstrap_probe.py --seed 501`)
and Webb's weights 0.048 in a prototype run (t(df): 0.056). Draws are fixed (a seeded generator
per number of participants), so the same votes always give the same p-value (a reviewer
re-running `sfgeval analyze` gets the report's numbers).

Every draw is linear in the weights: per (participant, prompt) cell the sums of e and b are all
the draws need, so all draws are evaluated at once (no Python loop over draws): the participant
and prompt parts as rows of `robust.cr2_sum_of_rows`, the cells' part (no rho, the same weights
in every draw) from per-participant and per-stratum sums.

Flipping participants only, it cannot reproduce the prompt part's own noise: with 3 prompts per
stratum it rejected 0.051-0.068 at the true value where t(df) rejects 0.027-0.035, hence the
larger of the two.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import sparse

from app.statistics.robust import (
    SCALE,
    Estimate,
    _dense,
    _to_unit,
    cluster_weights,
    cr2_sum_of_rows,
    t_test,
)

DRAWS = 999
SEED = 20261203
WEBB_BELOW = 12  # participants: Webb's six-point weights below, Rademacher signs from here on
WEBB = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])
METHOD = ("wild cluster bootstrap-t, the null imposed (one weight per participant: Rademacher signs, Webb's six "
          f"points below {WEBB_BELOW} participants; {DRAWS} draws, fixed seed): the report's two-way CR2 t "
          "statistic on the arcsine scale recomputed on every draw (app.statistics.wild)")


@functools.lru_cache(maxsize=64)
def weights(clusters: int, draws: int = DRAWS, seed: int = SEED) -> np.ndarray:
    """(draws, clusters) weights (Rademacher, or Webb below WEBB_BELOW clusters), the same for every
    call with the same arguments (read-only)."""
    rng = np.random.default_rng([seed, clusters])
    if clusters < WEBB_BELOW:
        w = WEBB[rng.integers(0, 6, (draws, clusters))]
    else:
        w = np.where(rng.random((draws, clusters)) < 0.5, -1.0, 1.0)
    w.setflags(write=False)
    return w


def _statistic(theta: np.ndarray, v: np.ndarray, null: float, name: str) -> np.ndarray:
    """The t statistic of `t_test` (arcsine scale; the symmetric one if the scale is), for arrays."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if SCALE[name] == "symmetric":
            return (theta - null) / np.sqrt(v)
        u, span = _to_unit(theta, name)
        u0, _ = _to_unit(null, name)
        u = np.clip(u, 0.0, 1.0)
        se_g = np.sqrt(v) / span / (2 * np.sqrt(np.maximum(u * (1 - u), 1e-300)))
        return (np.arcsin(np.sqrt(u)) - np.arcsin(np.sqrt(float(u0)))) / se_g


def bootstrap_t(a: np.ndarray, b: np.ndarray, participant: np.ndarray, prompt: np.ndarray, stratum: np.ndarray,
                null: float, name: str, w: np.ndarray, pooled_vq: float | None = None) -> np.ndarray:
    """t* of every draw (rows of `w`, one column per participant in sorted order), votes with b != 0.

    pooled_vq: for a per-stratum group, the prompt part (unscaled, `robust.PromptPool.part`),
    pooled across strata from all the votes, held at its estimate in every draw.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    p, g = _dense(participant)
    q, n_q = _dense(prompt)
    _, s = np.unique(np.asarray(stratum), return_inverse=True)
    s = s.reshape(-1)
    n_s = int(s.max()) + 1
    cell, n_c = _dense(p * n_q + q)
    cell_p = np.zeros(n_c, dtype=np.int64)
    cell_q = np.zeros(n_c, dtype=np.int64)
    cell_p[cell], cell_q[cell] = p, q
    prompt_s = np.zeros(n_q, dtype=np.int64)
    prompt_s[q] = s
    cell_s = prompt_s[cell_q]
    e = a - null * b
    e_c, n_c_b = np.bincount(cell, e, n_c), np.bincount(cell, b, n_c)
    e_p, n_p = np.bincount(p, e, g), np.bincount(p, b, g)
    s2_p, x_p = np.bincount(p, e * e, g), np.bincount(p, e * b, g)
    n_q_b = np.bincount(q, b, n_q)
    n_h = np.bincount(s, b, n_s)
    total, b2 = float(b.sum()), float((b * b).sum())
    # e summed per (participant, stratum) and per (participant, prompt): the draws' stratum and prompt sums
    e_ph = sparse.csr_matrix((e_c, (cell_p, cell_s)), shape=(g, n_s))
    e_pq = sparse.csr_matrix((e_c, (cell_p, cell_q)), shape=(g, n_q))
    draws = w.shape[0]
    delta = (w @ e_p) / total  # theta* - theta0
    delta_h = np.asarray(e_ph.T @ w.T).T / np.where(n_h > 0, n_h, 1.0)  # theta_h* - theta0, (draws, strata)
    r_p = w * e_p - delta[:, None] * n_p
    r_q = np.asarray(e_pq.T @ w.T).T - delta_h[:, prompt_s] * n_q_b
    # sigma2* = sum (a* - theta* b)^2 / sum b, from per-participant sums
    sigma2 = ((w * w) @ s2_p - 2 * delta * (w @ x_p) + delta**2 * b2) / total
    v_p = cr2_sum_of_rows(r_p, n_p, np.zeros(g, dtype=np.int64), sigma2)
    v_q = np.full(draws, pooled_vq) if pooled_vq is not None else cr2_sum_of_rows(r_q, n_q_b, prompt_s, sigma2)
    # The cells' part has no rho, so its weights are the same in every draw, and with the cell totals
    # r_c = w_p e_c - delta_h n_c its sum expands into per-participant and per-stratum sums.
    d_c = cluster_weights(n_c_b, cell_s)[0]
    m_ph = sparse.csr_matrix((d_c * e_c * n_c_b, (cell_p, cell_s)), shape=(g, n_s))
    v_pq = ((w * w) @ np.bincount(cell_p, d_c * e_c * e_c, g) - 2 * (np.asarray(m_ph.T @ w.T).T * delta_h).sum(1)
            + (delta_h**2) @ np.bincount(cell_s, d_c * n_c_b**2, n_s))
    v = v_p + v_q - v_pq
    v = np.where(v > 0, v, np.maximum(v_p, v_q)) / total**2
    theta = null + delta
    t = _statistic(theta, v, null, name)
    tiny = ~(v > 1e-10 * (np.abs(theta) + 1) ** 2)  # as `robust.two_way`: no variance, certainty claimed
    return np.where(tiny, np.where(delta != 0, np.inf, 0.0), t)


def p_value(a: np.ndarray, b: np.ndarray, participant: np.ndarray, prompt: np.ndarray, stratum: np.ndarray,
            est: Estimate, null: float, name: str, draws: int = DRAWS,
            pooled_vq: float | None = None) -> float | None:
    """Two-sided WCR p-value of theta = null for the estimate `est` of these votes (None without a
    t statistic: no interval, see `est.reason`)."""
    t = t_test(est, null, name)["statistic"]
    if t is None:
        return None
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = b != 0
    a, b = a[keep], b[keep]
    participant, prompt, stratum = (np.asarray(x)[keep] for x in (participant, prompt, stratum))
    g = int(np.unique(participant).size)
    t_star = bootstrap_t(a, b, participant, prompt, stratum, null, name, weights(g, draws), pooled_vq)
    # a relative tolerance, so a draw that reproduces the data's own statistic counts as "as extreme"
    extreme = np.abs(t_star) >= abs(t) * (1 - 1e-9)
    return float((1 + extreme.sum()) / (draws + 1))
