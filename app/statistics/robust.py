"""Two-way cluster-robust intervals for the headline estimates (participants x prompts crossed).

This module is THE statistics core: the report (`app.statistics.results`), monitoring
(`app.statistics.monitoring` through `app.statistics.clustered`) and planning (`app.statistics.planning`) all use `cluster_part`
and the rules below, so they cannot drift apart.

The three estimates are ratios of vote sums, theta = sum(a) / sum(b):
win rate a = 1{s > 0}, b = 1{s != 0}; tie-as-half rate a = 1{s > 0} + 0.5 * 1{s = 0}, b = 1;
mean score a = s, b = 1. Their linearised residuals a_i - theta b_i are summed per cluster and
the variance is the two-way cluster-robust one (Cameron, Gelbach & Miller 2011):

    V = (V_P + V_Q - V_PQ) / sum(b)^2

V_P: participants as clusters; V_Q: prompts as clusters, with residuals about each stratum's own
ratio (strata are fixed by design, so only the within-stratum spread of prompts is random);
V_PQ: (participant, prompt) cells, within strata: the votes that V_P and V_Q both count. Should
V come out <= 0 (tiny samples) the larger of V_P and V_Q is used.

Each part is a bias-reduced ("CR2") cluster sum: sum_g d_g r_g^2 with r_g the cluster's residual
total and d_g = w_g / (w_g (1 - 2 h_g) + h_g^2 sum_k w_k), h_g the cluster's share of its block's
weight and w_g = n_g + rho n_g^2 its working variance (n_g votes; rho = between-cluster /
within-vote variance, a moment estimate). This makes each part unbiased under the working model
(Bell & McCaffrey 2002; Pustejovsky & Tipton 2018, with an intercept-only model and a
random-effects working model it has this closed form). In balanced designs d_g = G / (G - 1), the
familiar factor; a participant who gives 12% of the votes gets a larger one, which is what the old
G / (G - 1) missed (its variance was 6-12% small with few effective clusters).

Degrees of freedom: per factor, the df of that factor's t statistic under the same working model
(`working_t_df`): the t distribution whose 97.5% quantile is that of |sum(u)| / sqrt(CR2 sum) when
the cluster totals u are independent normals with the working variances. It equals G - 1 for G
equal clusters. With unequal clusters the estimate and the variance move together (a rater who
gives a third of the votes moves both), so the statistic has lighter tails than the
Bell-McCaffrey / Satterthwaite df tr(AW)^2 / tr((AW)^2) (`Part.df_bm`, which treats the variance as
independent of the estimate) assumes: 12 Zipf raters had df 2.4 and covered 0.98-0.99, and now
about 5. The df of the interval is min(df_P, df_Q, df_W) ("min-working"): the factor with fewer
effective clusters limits how well V is known, and df_W = E^2 / (E_P^2 / df_P + E_Q^2 / df_Q),
the Satterthwaite df of the sum from the parts' working expectations E (E = E_P + E_Q - E_PQ, at
least max(E_P, E_Q); not the noisy estimates, so it cannot collapse when they nearly cancel),
lowers it where the prompt part's noise adds variance to V (no random effects: min(df_P, df_Q) =
14 covered 0.928-0.937).

The interval is the t interval on the arcsine-square-root scale of the estimate's range (rates:
theta; mean score: (m + 2) / 4), mapped back (`bounds`): near the middle of the range it is
theta +- t(df) sqrt(V); towards an end it reaches further towards the middle, where the symmetric
interval missed (5 participants: coverage 0.92). `t_test` uses the same scale, so its t(df) test
rejects exactly when the interval excludes the null; the report's p-value is the larger of that
one and the same statistic's wild cluster bootstrap p-value (`app.statistics.significance`: t(df)
rejected 0.0535 of null studies with heavy raters). Chosen by `benchmarks/calibration.py`
against CR1 with df = min(P - 1, Q - strata) (before issue 23), CR2 with df = min(df_P, df_Q) and
a symmetric interval (before this change) and other candidates; see docs/statistics.md.

Per-stratum results pool the within-stratum prompt variance across strata (the prompt part of a
stratum is lambda * its working expectation times its own vote-level variance relative to the
overall one, lambda estimated from every stratum's prompts, with the pooled df): with 3 prompts
per stratum a stratum's own 2 df make a t interval about twice as wide as the sampling spread.

No interval (and a `reason` saying why) with fewer than 2 participants, no stratum with 2
prompts, no decisive votes (win rate) or a zero variance (every cluster answered alike): an
interval of zero width would claim certainty the data do not have.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import special
from scipy import stats as sps

ESTIMATES = ("win_rate", "tie_half_rate", "mean_score")
ADJUSTMENTS = ("cr2", "cr1")
DF_RULES = ("min-working", "participant-satterthwaite", "min", "satterthwaite", "prompt-satterthwaite", "classic")
# each factor's df: its t statistic's under the working model ("t"), Bell-McCaffrey's ("bm", before), or the
# candidate halfway between their t quantiles ("half"; benchmarks/calibration.py --explore)
DF_SOURCES = ("t", "bm", "half")
ADJUST, DF_RULE, DF_SOURCE = "cr2", "min-working", "t"  # chosen by benchmarks/calibration.py (docs/statistics.md)
METHOD = ("two-way cluster-robust variance V_P + V_Q - V_PQ (participants, prompts within strata, participant x "
          "prompt cells), bias-reduced CR2 cluster weights under a random-effects working model, t interval on the "
          "arcsine-square-root scale with df = min(df of the participant part's t statistic under the working "
          "model, of the prompt part's, Satterthwaite df of their sum); per-stratum intervals pool the prompt "
          "variance across strata (app.statistics.robust)")


def ratio_parts(scores: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(a, b) per vote for each estimate, theta = sum(a) / sum(b) (see the module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    ones = np.ones_like(s)
    return {
        "win_rate": ((s > 0).astype(float), (s != 0).astype(float)),
        "tie_half_rate": ((s > 0) + 0.5 * (s == 0), ones),
        "mean_score": (s, ones),
    }


def _dense(codes: np.ndarray) -> tuple[np.ndarray, int]:
    used, inv = np.unique(codes, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), used.size


# ----------------------------------------------------------------------------- the core


@dataclass(frozen=True)
class Part:
    """One clustering factor's variance part per study: v = sum_g d_g r_g^2 (unscaled),
    e = tr(AW) and q = tr((AW)^2) under the working model (df = e^2 / q), g = clusters counted,
    e_block = e per block (stratum), rho = the working ratio used."""

    v: np.ndarray
    e: np.ndarray
    q: np.ndarray
    g: np.ndarray
    e_block: np.ndarray
    rho: np.ndarray
    # (n, w, d, block, study, n_studies) for the t statistic's df, computed on first use (`df_t`)
    t_inputs: tuple | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def df_t(self) -> np.ndarray | None:
        """The working-model df of the factor's t statistic (`working_t_df`), or None if not asked for."""
        return None if self.t_inputs is None else working_t_df(*self.t_inputs, start_df=self.df_bm)

    @property
    def df_bm(self) -> np.ndarray:
        """Bell-McCaffrey / Satterthwaite df tr(AW)^2 / tr((AW)^2) of the variance alone."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.q > 0, self.e**2 / np.where(self.q > 0, self.q, 1.0), np.nan)

    @property
    def df(self) -> np.ndarray:
        """The factor's df: the t statistic's (`df_t`) where computed, else Bell-McCaffrey's."""
        bm = self.df_bm
        if self.df_t is None:
            return bm
        return np.where(np.isfinite(bm), self.df_t, np.nan)

    def df_of(self, source: str) -> np.ndarray:
        if source not in DF_SOURCES:
            raise ValueError(f"df source must be one of {DF_SOURCES}")
        if source == "half":  # candidate: halfway between the two t quantiles
            with np.errstate(invalid="ignore"):
                c = (sps.t.ppf(0.975, self.df_bm) + sps.t.ppf(0.975, self.df)) / 2
                return np.where(np.isfinite(c), special.stdtridf(0.975, np.where(np.isfinite(c), c, 2.0)), np.nan)
        return self.df if source == "t" else self.df_bm


def working_rho(r: np.ndarray, n: np.ndarray, block: np.ndarray, study: np.ndarray, n_studies: int,
                sigma2: np.ndarray) -> np.ndarray:
    """Moment estimate of rho = between-cluster / within-vote variance, per study.

    Under w_g = sigma2 n_g + tau2 n_g^2 the raw sum of squared residual totals has expectation
    sigma2 K1 + tau2 K2 (K1 = sum_b N_b - sum n^2 / N_b, K2 = sum_b sum n^2 - 2 sum n^3 / N_b +
    (sum n^2)^2 / N_b^2 over blocks with >= 2 clusters); tau2 is solved from it, floored at 0.
    """
    nb = int(block.max()) + 1 if block.size else 1
    ok, k1_b, k2_b = _rho_moments(n, block, nb)
    study_of_block = np.zeros(nb, dtype=np.int64)
    study_of_block[block] = study
    k1 = np.bincount(study_of_block, k1_b, n_studies)
    k2 = np.bincount(study_of_block, k2_b, n_studies)
    raw = np.bincount(study, np.where(ok[block], r * r, 0.0), n_studies)
    return _rho_from(raw, k1, k2, sigma2)


def _rho_moments(n: np.ndarray, block: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block: whether it has >= 2 clusters, and its terms of K1 and K2 (`working_rho`)."""
    g_b = np.bincount(block, minlength=nb)
    n_b = np.bincount(block, n, nb)
    s2 = np.bincount(block, n * n, nb)
    s3 = np.bincount(block, n**3, nb)
    ok = g_b >= 2
    safe = np.where(ok, n_b, 1.0)
    return ok, np.where(ok, n_b - s2 / safe, 0.0), np.where(ok, s2 - 2 * s3 / safe + s2 * s2 / safe**2, 0.0)


def _rho_from(raw: np.ndarray, k1: np.ndarray, k2: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        tau2 = np.maximum((raw - sigma2 * k1) / np.where(k2 > 0, k2, np.inf), 0.0)
        rho = np.where(sigma2 > 0, tau2 / np.where(sigma2 > 0, sigma2, 1.0), 0.0)
    return np.nan_to_num(rho)


def cr2_sum_of_rows(r: np.ndarray, n: np.ndarray, block: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """sum_g d_g r_g^2 of many residual vectors over the same clusters (rows of r, e.g. bootstrap
    draws), each row with its own working ratio rho (`working_rho`, from that row's residuals and
    its sigma2) and CR2 weights (`cluster_weights`): `cluster_part(...).v` with one study per row,
    without repeating the clusters' sizes and blocks in every row."""
    n = np.asarray(n, dtype=float)
    block = np.asarray(block, dtype=np.int64)
    nb = int(block.max()) + 1 if block.size else 1
    ok, k1_b, k2_b = _rho_moments(n, block, nb)
    rho = _rho_from((r * r) @ ok[block].astype(float), k1_b.sum(), k2_b.sum(), np.asarray(sigma2, dtype=float))
    d = cluster_weights(n, block, rho[:, None])[0]
    return (d * r * r).sum(axis=1)


T_DRAWS, T_SEED = 2048, 20260423
_SQRT_HALF = math.sqrt(0.5)
_NORMALS: dict[str, np.ndarray] = {}


def _normals(rows: int) -> np.ndarray:
    """(rows, T_DRAWS) fixed normal draws, one row per cluster; the first k rows are the same whatever
    `rows` is. The first T_DRAWS - 1 rows are made exactly centred, of unit mean square and
    mutually orthogonal (Gram-Schmidt by QR, row by row, so the prefix property holds): the draws'
    second moments are then exact, which removes much of the noise of a df from 2,048 draws."""
    z = _NORMALS.get("z")
    if z is None or z.shape[0] < rows:
        size = max(rows, 512, 0 if z is None else 2 * z.shape[0])
        z = np.random.default_rng(T_SEED).standard_normal((size, T_DRAWS))
        k = min(size, T_DRAWS - 1)
        q, r = np.linalg.qr(np.column_stack([np.ones(T_DRAWS), z[:k].T]))
        q = q * np.sign(np.diag(r))
        z[:k] = q[:, 1:].T * math.sqrt(T_DRAWS)
        _NORMALS["z"] = z
    return z[:rows]


def _tail(c: np.ndarray, a: np.ndarray, lin: np.ndarray, quad: np.ndarray, sd: np.ndarray, rows: int = 32
          ) -> tuple[np.ndarray, np.ndarray]:
    """P(|t| > c) per study, averaged over the draws (`working_t_df`), and its derivative in log c.

    With x = sum(u) ~ N(0, sd^2), |t| > c is A x^2 - 2 c^2 lin x - c^2 quad > 0 (A = 1 - c^2 a), a
    quadratic inequality in x whose roots over sd are z = m -+ r (m = c^2 lin / (A sd),
    r^2 = m^2 + c^2 quad / (A sd^2)): |t| > c outside them when A > 0, between them when A < 0. A
    root x moves with log c at -+x^2 / sqrt(disc), so in both cases
    dP / dlog c = -(phi(z1) z1^2 + phi(z2) z2^2) / (r |A|). Works `rows` studies at a time, in place,
    so the arrays stay in cache (the solver calls it thousands of times in planning)."""
    c2 = c * c
    big_a = 1.0 - c2 * a
    safe_a = np.where(np.abs(big_a) > 1e-12, big_a, 1e-12)
    k_m = (c2 / (safe_a * sd[:, 0]))[:, None]
    k_r = (c2 / (safe_a * sd[:, 0] ** 2))[:, None]
    between = big_a <= 0
    p, dp = np.empty(c.size), np.empty(c.size)
    draws = lin.shape[1]
    for s in range(0, c.size, rows):
        e = slice(s, s + rows)
        m = lin[e] * k_m[e]
        r = quad[e] * k_r[e]
        r += m * m
        real = r > 0
        np.sqrt(np.maximum(r, 0.0, out=r), out=r)
        z1, z2 = m - r, m + r
        tails = special.erfc(z1 * -_SQRT_HALF)  # 2 Phi(z1) + 2 Phi(-z2)
        tails += special.erfc(z2 * _SQRT_HALF)
        total = tails.sum(axis=1) / 2
        if between[e].any():
            total = np.where(between[e], np.where(real, 1.0 - tails / 2, 0.0).sum(axis=1), total)
        p[e] = total / draws
        np.multiply(z1, z1, out=z1)
        np.multiply(z2, z2, out=z2)
        dens = np.exp(-0.5 * z1)
        dens *= z1
        dens += np.exp(-0.5 * z2, out=z1) * z2
        with np.errstate(divide="ignore", invalid="ignore"):
            dens /= r
        dens[~real | (r <= 0)] = 0.0
        dp[e] = -dens.sum(axis=1) / (draws * np.abs(safe_a[e]) * math.sqrt(2 * math.pi))
    return p, dp


LOG_C_RANGE = (math.log(0.5), math.log(200.0))


def _solve_log_c(tail, start: np.ndarray, log_alpha: float, steps: int = 12, tol: float = 1e-7,
                 step_tol: float = 1e-4) -> np.ndarray:
    """Root x = log c of f = log P(|t| > c) - log alpha per study, P and dP/dx from tail(x, idx)
    (idx: the studies evaluated; P decreases in c). Safeguarded Newton from `start` (the t quantile
    of a nearby df: usually 2 evaluations): a step leaving the bracket known so far (at first
    LOG_C_RANGE) bisects it instead. Stops at |f| <= tol (P within 1e-7 of alpha, relatively) or
    after a Newton step under step_tol, whose result is then within about 3e-5 of the root's c,
    relatively (tests: quantiles agree within 1e-4 whatever the start; the draws' own noise is
    about 1e-2); a root beyond LOG_C_RANGE is taken at its edge."""
    lo_lim, hi_lim = LOG_C_RANGE
    x = np.clip(start, lo_lim, hi_lim)
    lo, hi = np.full(x.size, lo_lim), np.full(x.size, hi_lim)
    idx = np.arange(x.size)
    for _ in range(steps):
        p, dp = tail(x[idx], idx)
        f = np.log(np.maximum(p, 1e-300)) - log_alpha
        up = f > 0  # the root is above x
        lo[idx], hi[idx] = np.where(up, x[idx], lo[idx]), np.where(up, hi[idx], x[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            new = x[idx] - f * p / dp
        inside = np.isfinite(new) & (new > lo[idx]) & (new < hi[idx])
        done = (np.abs(f) <= tol) | (inside & (np.abs(new - x[idx]) < step_tol)) | (hi[idx] - lo[idx] <= 1e-12)
        x[idx] = np.where(np.abs(f) <= tol, x[idx], np.where(inside, new, (lo[idx] + hi[idx]) / 2))
        idx = idx[~done]
        if not idx.size:
            break
    return x


def working_t_df(n: np.ndarray, w: np.ndarray, d: np.ndarray, block: np.ndarray, study: np.ndarray, n_studies: int,
                 confidence: float = 0.95, start_df: np.ndarray | None = None,
                 chunk_cells: int = 1 << 22) -> np.ndarray:
    """The df of one factor's t statistic under its working model, per study (closed form + fixed draws).

    Cluster totals u_g ~ N(0, w_g) independent (the working model); the statistic is
    t = sum(u) / sqrt(sum_g d_g r_g^2), r the totals centred within their block (the residual
    totals `cluster_part` sums). Bell-McCaffrey's df treats the variance as independent of the
    numerator; it is not when clusters are unequal: a participant who gives a third of the votes
    moves the estimate and the variance together, so |t| has lighter tails than t(df_BM) (12 Zipf
    raters: df_BM 2.4, coverage 0.98-0.99). Here u = (w / S) sum(u) + u_perp with u_perp independent
    of sum(u) ~ N(0, S), S = sum(w); given u_perp, |t| > c is a quadratic inequality in sum(u),
    whose probability is exact (normal CDF at its roots). Averaged over T_DRAWS fixed draws of
    u_perp (common random numbers; clusters take draws in the order study, block, n descending,
    so the result does not depend on the clusters' order), P(|t| > c) = 1 - confidence is solved
    for c (`_solve_log_c`, from the t quantile of `start_df`, default G - 1) and the df is the t
    distribution's with that quantile (inf when c is at or below the normal's). Equal clusters give
    df = G - 1 (t exactly), up to the draws' noise.

    Cost: the draw sums are dense matrix products (studies x sums, clusters) @ (clusters, draws), so
    thousands of simulated studies take a fraction of a second.
    """
    n, w, d = (np.asarray(x, dtype=float) for x in (n, w, d))
    block, study = np.asarray(block, dtype=np.int64), np.asarray(study, dtype=np.int64)
    out = np.full(n_studies, np.nan)
    if n.size == 0:
        return out
    order = np.lexsort((-n, block, study))
    n, w, d, block, study = n[order], w[order], d[order], block[order], study[order]
    new_study = np.r_[True, study[1:] != study[:-1]]
    new_block = new_study | np.r_[True, block[1:] != block[:-1]]
    s_start = np.flatnonzero(new_study)
    sid = np.cumsum(new_study) - 1  # dense study index per row
    rank = np.arange(n.size) - s_start[sid]  # row of the draws each cluster takes
    bid = np.cumsum(new_block) - 1
    b_local = bid - bid[s_start][sid]  # block index within its study
    # per-study and per-block sums of the working model's weights
    S = np.bincount(sid, w)
    n_b, w_b = np.bincount(bid, n), np.bincount(bid, w)
    h = n / n_b[bid]
    beta = w / S[sid] - h * w_b[bid] / S[sid]
    a = np.bincount(sid, d * beta * beta)
    blocks_of = np.bincount(sid, new_block)  # blocks per study
    g_of = np.diff(np.r_[s_start, n.size])
    ok = (np.bincount(sid, d) > 0) & np.isfinite(S) & (S > 0)
    studies = study[s_start]
    # lin and quad from sums linear in the draws (one matrix product): with U_b the block totals of u,
    # T = sum_b U_b, L = sum d beta r = sum d beta u - sum_b K_b U_b, R2 = sum d r^2 = sum d u^2 +
    # sum_b (H_b U_b^2 - 2 U_b V_b), V_b = sum_b d h u; then r_perp = r - beta T gives
    # lin = L - a T and quad = R2 - 2 T L + a T^2.
    H_b, K_b = np.bincount(bid, d * h * h), np.bincount(bid, d * beta * h)
    sw = np.sqrt(w)
    alpha = 1.0 - confidence
    log_alpha = math.log(alpha)
    normal = special.ndtri(1 - alpha / 2)
    if start_df is None:
        start = np.full(s_start.size, sps.t.ppf(1 - alpha / 2, np.maximum(g_of - 1, 1)))
    else:
        sd_ = np.asarray(start_df, dtype=float)[studies]
        start = np.where(np.isfinite(sd_) & (sd_ > 0), sps.t.ppf(1 - alpha / 2, np.where(sd_ > 0, sd_, 1.0)),
                         normal)
    c_out = np.empty(s_start.size)
    i = 0
    while i < s_start.size:  # chunks of studies with a bounded number of sums x draws
        nb_max, j = 0, i
        while j < s_start.size:
            nb_max_j = max(nb_max, int(blocks_of[j]))
            if j > i and (j + 1 - i) * (2 + 2 * nb_max_j) * T_DRAWS > chunk_cells:
                break
            nb_max, j = nb_max_j, j + 1
        rows = slice(s_start[i], s_start[j] if j < s_start.size else n.size)
        k_sid, k_rank, k_bl = sid[rows] - i, rank[rows], b_local[rows]
        g_max = int(k_rank.max()) + 1
        z = _normals(g_max)
        coef = np.zeros((j - i, 1 + 2 * nb_max, g_max))
        coef[k_sid, 0, k_rank] = (d * beta * sw)[rows]  # sum d beta u
        coef[k_sid, 1 + k_bl, k_rank] = sw[rows]  # U_b
        coef[k_sid, 1 + nb_max + k_bl, k_rank] = (d * h * sw)[rows]  # V_b
        sums = (coef.reshape(-1, g_max) @ z).reshape(j - i, 1 + 2 * nb_max, T_DRAWS)
        sq = np.zeros((j - i, g_max))
        sq[k_sid, k_rank] = (d * w)[rows]
        r2 = sq @ (z * z)  # sum d u^2
        hb, kb = np.zeros((j - i, nb_max)), np.zeros((j - i, nb_max))
        b_rows = bid[rows][new_block[rows]]
        b_sid = k_sid[new_block[rows]]
        hb[b_sid, k_bl[new_block[rows]]] = H_b[b_rows]
        kb[b_sid, k_bl[new_block[rows]]] = K_b[b_rows]
        du, ub, vb = sums[:, 0], sums[:, 1:1 + nb_max], sums[:, 1 + nb_max:]
        t_tot = ub.sum(axis=1)
        big_l = du - np.einsum("sb,sbk->sk", kb, ub)
        r2 += np.einsum("sb,sbk->sk", hb, ub * ub) - 2 * np.einsum("sbk,sbk->sk", ub, vb)
        ak = a[i:j, None]
        lin = big_l - ak * t_tot
        quad = np.maximum(r2 - 2 * t_tot * big_l + ak * t_tot * t_tot, 0.0)
        sd = np.sqrt(S[i:j])[:, None]

        def tail(x, idx, lin=lin, quad=quad, sd=sd, ak=ak[:, 0]):
            return _tail(np.exp(x), ak[idx], lin[idx], quad[idx], sd[idx])

        c_out[i:j] = np.exp(_solve_log_c(tail, np.log(start[i:j]), log_alpha))
        i = j
    with np.errstate(invalid="ignore", over="ignore"):
        df = np.where(c_out > normal * (1 + 1e-9), special.stdtridf(1 - alpha / 2, np.maximum(c_out, normal)), np.inf)
    out[studies] = np.where(ok, df, np.nan)
    return out


def cluster_weights(n: np.ndarray, block: np.ndarray, rho: np.ndarray | float = 0.0, adjust: str = ADJUST
                    ) -> tuple[np.ndarray, tuple]:
    """Each cluster's weight d_g in sum_g d_g r_g^2 (see `cluster_part`; rho per cluster, one for
    all, or a column of one per row), and the working-model pieces `cluster_part` reuses. They
    depend on the clusters' sizes and rho only, not on the residuals."""
    n = np.asarray(n, dtype=float)
    block = np.asarray(block, dtype=np.int64)
    nb = int(block.max()) + 1 if block.size else 1
    g_b = np.bincount(block, minlength=nb)
    ok = g_b[block] >= 2
    n_b = np.bincount(block, n, nb)
    h = n / np.where(n_b[block] > 0, n_b[block], 1.0)
    w = n + np.asarray(rho, dtype=float) * n * n  # (rows, clusters) when rho is a column: one row per draw
    s_b = np.bincount(block, w, nb) if w.ndim == 1 else w @ np.eye(nb)[block]
    s = s_b[..., block]
    base = w * (1 - 2 * h) + s * h * h  # E[r_g^2] / sigma2 under the working model
    if adjust == "cr2":
        d = np.where(ok, w / np.where(ok & (base > 0), base, 1.0), 0.0)
    elif adjust == "cr1":
        d = np.where(ok, g_b[block] / np.maximum(g_b[block] - 1, 1), 0.0)
    else:
        raise ValueError(f"adjust must be one of {ADJUSTMENTS}")
    return d, (n, w, h, s, base, s_b, g_b, ok, nb)


def cluster_part(r: np.ndarray, n: np.ndarray, block: np.ndarray, study: np.ndarray | None = None,
                 n_studies: int = 1, rho: np.ndarray | float = 0.0, adjust: str = ADJUST,
                 t_df: bool = False) -> Part:
    """Variance part of one clustering factor, for one or many studies at once.

    r: each cluster's residual total (sum of a_i - theta b_i, theta of its block); n: its weight
    (sum of b_i, > 0); block: int id of the block (stratum) the cluster is centred in, unique
    across studies; study: the study of each cluster (default all 0); rho: working ratio per
    study. Blocks with one cluster contribute nothing (their spread cannot be estimated).
    adjust "cr2": d_g = w_g / E_w[r_g^2] (bias-reduced); "cr1": d_g = G_b / (G_b - 1).
    t_df: also the working-model df of the factor's t statistic (`working_t_df`), which `Part.df`
    then gives (the report's, for participants and prompts).
    """
    r = np.asarray(r, dtype=float)
    study = np.zeros(r.size, dtype=np.int64) if study is None else np.asarray(study, dtype=np.int64)
    rho_s = np.broadcast_to(np.asarray(rho, dtype=float), (n_studies,))
    d, (n, w, h, s, base, s_b, g_b, ok, nb) = cluster_weights(n, block, rho_s[study], adjust)
    block = np.asarray(block, dtype=np.int64)
    v = np.bincount(study, d * r * r, n_studies)
    e_block = np.bincount(block, d * base, nb)
    # tr((AW)^2) with A = (I - 1h') D (I - h1') per block: diagonal part + the rank-3 part (closed form).
    m_hh, m_hw, m_ww = (np.bincount(block, d * x, nb) for x in (h * h, h * w, w * w))
    cross = 2 * m_hh * m_ww + 2 * m_hw**2 - 4 * s_b * m_hh * m_hw + s_b**2 * m_hh**2
    diag = np.bincount(block, d * d * (w * w + 2 * w * (s * h * h - 2 * h * w)), nb)
    study_of_block = np.zeros(nb, dtype=np.int64)
    study_of_block[block] = study
    q = np.bincount(study_of_block, np.where(g_b >= 2, diag + cross, 0.0), n_studies)
    e = np.bincount(study_of_block, e_block, n_studies)
    g = np.bincount(study, ok.astype(float), n_studies)
    t_inputs = (n, w, d, block, study, n_studies) if t_df else None
    return Part(v=v, e=e, q=q, g=g, e_block=e_block, rho=rho_s.copy(), t_inputs=t_inputs)


def working_df(e_p: np.ndarray, e_q: np.ndarray, e_pq: np.ndarray, df_p: np.ndarray, df_q: np.ndarray
               ) -> np.ndarray:
    """Satterthwaite df of V_P + V_Q - V_PQ from the parts' working-model expectations (not their
    noisy estimates): E^2 / (E_P^2 / df_P + E_Q^2 / df_Q), E = E_P + E_Q - E_PQ, at least
    max(E_P, E_Q) (E_Q - E_PQ is the prompt variance, >= 0 under the working model), so the df
    cannot collapse when the estimated parts nearly cancel; V_PQ (one cluster per cell, many
    cells) is treated as known. Between 1 / (1 / df_P + 1 / df_Q) and df_P + df_Q."""
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.maximum(e_p + e_q - e_pq, np.maximum(e_p, e_q))
        return e**2 / (e_p**2 / df_p + e_q**2 / df_q)


def combine(v_p: np.ndarray, v_q: np.ndarray, v_pq: np.ndarray, df_p: np.ndarray, df_q: np.ndarray,
            df_rule: str = DF_RULE, classic: tuple[np.ndarray, np.ndarray] | None = None,
            e: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(V, df) of the two-way variance from its parts (arrays of studies); see the module docstring.

    e: the parts' working expectations (E_P, E_Q, E_PQ), any common unit; needed by
    "min-working" (the report's) and "participant-satterthwaite".
    """
    v = v_p + v_q - v_pq
    v = np.where(v > 0, v, np.maximum(v_p, v_q))
    with np.errstate(invalid="ignore", divide="ignore"):
        if df_rule in ("min-working", "participant-satterthwaite") and e is None:
            raise ValueError(f"df_rule {df_rule!r} needs the working expectations e")
        if df_rule == "min-working":
            # min(df_P, df_Q), lowered to the Satterthwaite df of the sum from the working
            # expectations where that is smaller (the prompt part's noise adds variance to V).
            low = np.fmin(df_p, df_q)
            ws = working_df(*e, df_p, df_q)
            df = np.where(np.isfinite(ws), np.fmin(low, ws), low)
        elif df_rule == "participant-satterthwaite":
            # Where the participant part has the fewer df (few or unequal raters), the df of the sum
            # from the working expectations; where the prompt part limits, min(df_P, df_Q).
            low = np.fmin(df_p, df_q)
            df = np.where(df_p <= df_q, working_df(*e, df_p, df_q), low)
            df = np.where(np.isfinite(df), df, low)
        elif df_rule == "min":
            df = np.fmin(df_p, df_q)
        elif df_rule == "satterthwaite":
            df = v**2 / (v_p**2 / df_p + v_q**2 / df_q)
        elif df_rule == "prompt-satterthwaite":
            # Candidate (benchmarks/calibration.py --explore), not the report's: when the prompt part
            # limits the df, a Satterthwaite combination kept between min(df_P, df_Q) and df_P.
            satt = v**2 / (v_p**2 / df_p + v_q**2 / df_q)
            low = np.fmin(df_p, df_q)
            df = np.where(df_q < df_p, np.fmax(low, np.fmin(df_p, satt)), low)
        elif df_rule == "classic":
            df = np.maximum(np.minimum(*classic), 1.0)
        else:
            raise ValueError(f"df_rule must be one of {DF_RULES}")
    return v, df


@dataclass(frozen=True)
class PromptPool:
    """Within-stratum prompt variance pooled across strata: lambda = sum d r^2 / sum E, df, and
    each stratum's working expectation E_h (by stratum label)."""

    lam: float
    df: float
    e_stratum: Mapping[str, float]
    e_own: Mapping[str, float] = field(default_factory=dict)  # E_h in the stratum's own sigma2 units (df)

    def part(self, stratum: str) -> tuple[float, float]:
        """(unscaled V_Q of the stratum's own estimate, df)."""
        return self.lam * self.e_stratum.get(stratum, math.nan), self.df


def _parts(a: np.ndarray, b: np.ndarray, participant: np.ndarray, prompt: np.ndarray, stratum: np.ndarray,
           adjust: str) -> tuple[float, Part, Part, Part, np.ndarray, np.ndarray]:
    """theta, the three parts (P, Q, PQ), the stratum code of each prompt block and the labels."""
    bsum = b.sum()
    theta = a.sum() / bsum
    p, _ = _dense(participant)
    s_labels, s = np.unique(np.asarray(stratum), return_inverse=True)
    s = s.reshape(-1)
    q, n_q = _dense(prompt)
    n_s = s_labels.size
    theta_h = np.bincount(s, a, n_s) / np.where(np.bincount(s, b, n_s) > 0, np.bincount(s, b, n_s), 1.0)
    e_glob, e_strat = a - theta * b, a - theta_h[s] * b
    sigma2 = np.array([float((e_glob**2).sum() / bsum)])

    def factor(codes: np.ndarray, resid: np.ndarray, blocks_of_votes: np.ndarray, with_rho: bool) -> Part:
        g = int(codes.max()) + 1
        r = np.bincount(codes, resid, g)
        n = np.bincount(codes, b, g)
        blk = np.zeros(g, dtype=np.int64)
        blk[codes] = blocks_of_votes
        keep = n > 0
        r, n, blk = r[keep], n[keep], blk[keep]
        st = np.zeros(r.size, dtype=np.int64)
        rho = working_rho(r, n, blk, st, 1, sigma2) if with_rho else 0.0
        return cluster_part(r, n, blk, st, 1, rho, adjust, t_df=with_rho and adjust == "cr2")

    part_p = factor(p, e_glob, np.zeros_like(p), True)
    part_q = factor(q, e_strat, s, True)
    cell, _ = _dense(p * n_q + q)
    part_pq = factor(cell, e_strat, s, False)
    return float(theta), part_p, part_q, part_pq, s_labels, q


def variance_parts(a: np.ndarray, b: np.ndarray, participant: np.ndarray, prompt: np.ndarray,
                   stratum: np.ndarray, adjust: str = ADJUST) -> tuple[float, list[tuple[float, float]]]:
    """(theta, [(V_P, df), (V_Q, df), (V_PQ, df)]) of theta = sum(a) / sum(b). Assumes sum(b) > 0."""
    theta, pp, pq, ppq, _, _ = _parts(np.asarray(a, float), np.asarray(b, float), np.asarray(participant),
                                      np.asarray(prompt), np.asarray(stratum), adjust)
    b2 = float(np.sum(b)) ** 2
    return theta, [(float(x.v[0] / b2), float(x.df[0]) if np.isfinite(x.df[0]) else 0.0) for x in (pp, pq, ppq)]


def prompt_pool(a: np.ndarray, b: np.ndarray, participant: np.ndarray, prompt: np.ndarray, stratum: np.ndarray,
                adjust: str = ADJUST) -> PromptPool | None:
    """The pooled within-stratum prompt variance of a set of votes (None without any stratum of 2 prompts)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if b.sum() <= 0:
        return None
    stratum = np.asarray(stratum)
    theta, _, pq, _, labels, _ = _parts(a, b, np.asarray(participant), np.asarray(prompt), stratum, adjust)
    # Each stratum's own vote-level variance relative to the overall one (sigma2_h / sigma2): the
    # prompt part's working expectation scales with it (a stratum whose rate is nearer 0.5 has more
    # variance per vote and, on the rate scale, per prompt).
    _, s = np.unique(stratum, return_inverse=True)
    s = s.reshape(-1)
    n_s = labels.size
    b_h = np.bincount(s, b, n_s)
    theta_h = np.bincount(s, a, n_s) / np.where(b_h > 0, b_h, 1.0)
    sig2_h = np.bincount(s, (a - theta_h[s] * b) ** 2, n_s) / np.where(b_h > 0, b_h, 1.0)
    sig2 = float(((a - theta * b) ** 2).sum() / b.sum())
    scale = sig2_h / sig2 if sig2 > 0 else np.ones(n_s)
    e_own = np.zeros(n_s)
    e_own[:min(n_s, pq.e_block.size)] = pq.e_block[:n_s]
    e_h = e_own * scale
    if not pq.e[0] > 0 or not e_h.sum() > 0:
        return None
    keys = [str(lab) for lab in labels.tolist()]
    return PromptPool(lam=float(pq.v[0] / e_h.sum()), df=float(pq.df[0]),
                      e_stratum={k: float(e_h[i]) for i, k in enumerate(keys)},
                      e_own={k: float(e_own[i]) for i, k in enumerate(keys)})


@dataclass(frozen=True)
class Estimate:
    theta: float | None
    v: float | None
    df: float | None
    reason: str | None
    n_participants: int = 0
    n_prompts: int = 0


def two_way(a: np.ndarray, b: np.ndarray, participant: np.ndarray, prompt: np.ndarray, stratum: np.ndarray, *,
            adjust: str = ADJUST, df_rule: str = DF_RULE, pool: PromptPool | None = None,
            pool_stratum: str | None = None, df_source: str = DF_SOURCE) -> Estimate:
    """theta, V and df of theta = sum(a) / sum(b) over the votes with b != 0, or the reason there is no interval.

    pool / pool_stratum: for a per-stratum group, the prompt part comes from the pooled prompt
    variance of the containing votes (`prompt_pool`).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = b != 0
    a, b = a[keep], b[keep]
    participant, prompt, stratum = (np.asarray(x)[keep] for x in (participant, prompt, stratum))
    if b.sum() <= 0:
        return Estimate(None, None, None, "no votes that enter this estimate")
    n_p, n_q = int(np.unique(participant).size), int(np.unique(prompt).size)
    theta, pp, pq, ppq, _, _ = _parts(a, b, participant, prompt, stratum, adjust)
    if n_p < 2 or n_q < 2:
        who = "participant" if n_p < 2 else "prompt"
        return Estimate(theta, None, None, f"fewer than 2 {who}s with votes: the spread between {who}s cannot be "
                        "estimated, so no interval is given", n_p, n_q)
    b2 = float(b.sum()) ** 2
    v_p, df_p = pp.v / b2, pp.df_of(df_source)
    if pool is not None and pool_stratum is not None:
        vq, dfq = pool.part(pool_stratum)
        v_q, df_q = np.array([vq / b2]), np.array([dfq])
        e_q = np.array([pool.e_own.get(pool_stratum, math.nan)])
    else:
        v_q, df_q, e_q = pq.v / b2, pq.df_of(df_source), pq.e
    if not np.isfinite(df_q[0]) or df_q[0] <= 0:
        return Estimate(theta, None, None, "no stratum has 2 prompts with votes: the spread between prompts cannot be "
                        "estimated, so no interval is given", n_p, n_q)
    h_count = int(np.unique(stratum).size)
    v, df = combine(v_p, v_q, ppq.v / b2, df_p, df_q, df_rule,
                    classic=(np.array([n_p - 1.0]), np.array([max(n_q - h_count, 1.0)])), e=(pp.e, e_q, ppq.e))
    # Rounding leaves ~1e-17 where every cluster answered alike: treat a variance that small as zero.
    if not (np.isfinite(v[0]) and v[0] > 1e-10 * (abs(theta) + 1) ** 2 and np.isfinite(df[0]) and df[0] > 0):
        return Estimate(theta, None, None, "no variation between participants or prompts (every cluster answered "
                        "alike): the cluster-robust variance is zero, and a zero-width interval would claim a "
                        "certainty the data do not have", n_p, n_q)
    return Estimate(theta, float(v[0]), float(df[0]), None, n_p, n_q)


def robust_variance(a: np.ndarray, b: np.ndarray, participant: np.ndarray, prompt: np.ndarray,
                    stratum: np.ndarray) -> tuple[float, float, float]:
    """(theta, V, df) of theta = sum(a) / sum(b); see the module docstring. Assumes sum(b) > 0
    and that an interval exists (nan otherwise)."""
    est = two_way(a, b, participant, prompt, stratum)
    nan = math.nan
    return (nan if est.theta is None else est.theta, nan if est.v is None else est.v,
            nan if est.df is None else est.df)


RANGES = {"win_rate": (0.0, 1.0), "tie_half_rate": (0.0, 1.0), "mean_score": (-2.0, 2.0)}
SCALES = ("asin", "symmetric")
SCALE = {"win_rate": "asin", "tie_half_rate": "asin", "mean_score": "asin"}  # chosen by benchmarks/calibration.py


def _to_unit(theta, name: str):
    lo, hi = RANGES[name]
    return (np.asarray(theta, dtype=float) - lo) / (hi - lo), hi - lo


def bounds(theta, se, df, name: str, confidence: float = 0.95, scale: str | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the t interval on the arcsine-square-root scale of the estimate's range,
    mapped back (numpy, any shape; nan where se or df is not finite and positive).

    u = (theta - lo) / (hi - lo) in [0, 1] (rates: u = theta; mean score: (m + 2) / 4),
    g(u) = asin(sqrt(u)), se_g = se / (hi - lo) * g'(u) = se / (hi - lo) / (2 sqrt(u (1 - u))):
    interval lo + (hi - lo) sin^2(g -+ t(df) se_g), clipped to [0, pi / 2] on that scale. The
    variance-stabilising scale of a proportion: near 0.5 the same as theta +- t se; towards the
    ends of the range it extends further towards the middle than towards the end (like the
    Wilson interval), where a symmetric interval missed on the far side (issue 23).
    """
    scale = SCALE[name] if scale is None else scale
    u, span = _to_unit(theta, name)
    se, df = np.asarray(se, dtype=float), np.asarray(df, dtype=float)
    ok = np.isfinite(u) & np.isfinite(se) & (se > 0) & np.isfinite(df) & (df > 0)
    if scale == "symmetric":  # theta +- t(df) se, within the range
        with np.errstate(invalid="ignore"):
            half = sps.t.ppf(0.5 + confidence / 2, np.where(ok, df, 1.0)) * np.where(ok, se, 1.0)
            lo_, hi_ = RANGES[name]
            theta = np.asarray(theta, dtype=float)
            return (np.where(ok, np.maximum(theta - half, lo_), np.nan), np.where(ok, np.minimum(theta + half, hi_), np.nan))
    if scale != "asin":
        raise ValueError(f"scale must be one of {SCALES}")
    with np.errstate(invalid="ignore", divide="ignore"):
        uc = np.clip(np.where(ok, u, 0.5), 0.0, 1.0)
        g = np.arcsin(np.sqrt(uc))
        se_g = np.where(ok, se, 1.0) / span / (2 * np.sqrt(np.maximum(uc * (1 - uc), 1e-300)))
        half = sps.t.ppf(0.5 + confidence / 2, np.where(ok, df, 1.0)) * se_g
        lo_, _ = RANGES[name]
        low = lo_ + span * np.sin(np.clip(g - half, 0.0, np.pi / 2)) ** 2
        high = lo_ + span * np.sin(np.clip(g + half, 0.0, np.pi / 2)) ** 2
    return np.where(ok, low, np.nan), np.where(ok, high, np.nan)


def t_test(est: Estimate, null: float, name: str = "win_rate") -> dict[str, float | None]:
    """Two-sided t test of theta = null with the interval's own SE and df, on the interval's
    (arcsine-square-root) scale, so p < 1 - confidence exactly when the interval excludes null."""
    if est.v is None or est.df is None or est.theta is None:
        return {"statistic": None, "df": None, "p_value": None}
    if SCALE[name] == "symmetric":
        t = (est.theta - null) / math.sqrt(est.v)
        return {"statistic": float(t), "df": float(est.df), "p_value": float(min(1.0, 2 * sps.t.sf(abs(t), est.df)))}
    u, span = _to_unit(est.theta, name)
    u0, _ = _to_unit(null, name)
    u = float(min(max(u, 0.0), 1.0))
    se_g = math.sqrt(est.v) / span / (2 * math.sqrt(max(u * (1 - u), 1e-300)))
    t = (math.asin(math.sqrt(u)) - math.asin(math.sqrt(float(u0)))) / se_g
    return {"statistic": float(t), "df": float(est.df), "p_value": float(min(1.0, 2 * sps.t.sf(abs(t), est.df)))}


def interval(est: Estimate, name: str, confidence: float) -> dict[str, float | str | None]:
    """{estimate, ci_low, ci_high, se, df, reason} of one estimate (`bounds`: within the range)."""
    if est.v is None:
        return {"estimate": est.theta, "ci_low": None, "ci_high": None, "se": None, "df": None, "reason": est.reason}
    se = math.sqrt(est.v)
    lo, hi = bounds(est.theta, se, est.df, name, confidence)
    return {"estimate": est.theta, "ci_low": float(lo), "ci_high": float(hi), "se": se, "df": est.df, "reason": None}


def robust_intervals(scores: np.ndarray, participant: np.ndarray, prompt: np.ndarray, stratum: np.ndarray,
                     confidence: float = 0.95, *, pools: Mapping[str, PromptPool | None] | None = None,
                     pool_stratum: str | None = None, adjust: str = ADJUST, df_rule: str = DF_RULE,
                     ) -> dict[str, dict[str, float | str | None]]:
    """{estimate: {estimate, ci_low, ci_high, se, df, reason}} for the three estimates.

    pools / pool_stratum: per estimate, the pooled prompt variance for a per-stratum group.
    """
    out: dict[str, dict[str, float | str | None]] = {}
    for name, (a, b) in ratio_parts(scores).items():
        pool = (pools or {}).get(name)
        est = two_way(a, b, participant, prompt, stratum, adjust=adjust, df_rule=df_rule, pool=pool,
                      pool_stratum=pool_stratum if pool is not None else None)
        if est.theta is None and name == "win_rate":
            est = Estimate(None, None, None, "no decisive votes (all ties): the win rate is undefined")
        out[name] = interval(est, name, confidence)
    return out


def estimates_and_tests(scores: np.ndarray, participant: np.ndarray, prompt: np.ndarray, stratum: np.ndarray,
                        confidence: float = 0.95, *, pools: Mapping[str, PromptPool | None] | None = None,
                        pool_stratum: str | None = None) -> tuple[dict, dict]:
    """(robust_intervals, cluster-valid tests of win rate = 0.5 and mean score = 0) in one pass."""
    ests: dict[str, Estimate] = {}
    out: dict[str, dict] = {}
    for name, (a, b) in ratio_parts(scores).items():
        pool = (pools or {}).get(name)
        est = two_way(a, b, participant, prompt, stratum, pool=pool,
                      pool_stratum=pool_stratum if pool is not None else None)
        if est.theta is None and name == "win_rate":
            est = Estimate(None, None, None, "no decisive votes (all ties): the win rate is undefined")
        ests[name] = est
        out[name] = interval(est, name, confidence)
    return out, {"win_rate": (ests["win_rate"], 0.5), "mean_score": (ests["mean_score"], 0.0)}
