"""Ranking several arms from paired votes: one joint Bradley-Terry fit with two-way cluster-robust intervals.

Model. Every decisive vote (score != 0; ties left out, as the win rate leaves them out) between a
treatment arm t and a baseline arm b is a Bernoulli outcome y = 1{treatment preferred} with
logit P(y = 1) = beta_t - beta_b, the reference (baseline) arm's beta fixed at 0. It is fitted by
maximum likelihood as a binomial GLM without intercept (statsmodels `GLM`, family Binomial, logit
link; design row e_t - e_b). The fit is read as a population-averaged (marginal) model: its target
is the strength vector whose implied win rates match the population's decisive-vote win rates in
the least-squares-on-the-score sense, so with two arms beta_treatment = logit(win rate) exactly.

Intervals. The votes are not independent (one participant's and one prompt's votes go together), so
the model-based variance is replaced by the same two-way cluster-robust variance the win rate uses
(`app.statistics.robust`: V_P + V_Q - V_PQ, CR2 bias-reduced cluster weights under a random-effects
working model, df = min(df_P, df_Q, df_W) as `robust.DF_RULE`, prompts within strata). For a contrast
c'beta the estimator is linearised: vote i's influence is psi_i = c' B^-1 x_i (y_i - p_i)
(B = X'WX, the Fisher information) and its working variance u_i = (c' B^-1 x_i)^2 p_i (1 - p_i);
the cluster totals of psi and u enter `robust.cluster_part` in place of the ratio's residual totals
and vote counts. With two arms psi and u are the win rate's residuals and counts times constants,
so the strength interval is the win-rate interval's delta-method twin (same CR2 weights, same df).
Every contrast (each arm against the reference, each pair of arms) gets its own variance and df.

Tests and ranks. Each comparison (pair of arms) is tested with the contrast's t statistic; Holm
over the study's comparisons gives `p_holm`. Rank intervals: an arm's
rank_low is 1 + the number of arms significantly stronger than it and rank_high is K minus the
number significantly weaker, where "significantly" is a Holm-adjusted p below 1 - confidence over
all K(K-1)/2 pairs of arms. Calibration (coverage, family-wise error with unbalanced raters):
`benchmarks/ranking_calibration.py`, table in docs/statistics.md ("Ranking several arms").

Libraries: statsmodels fits the GLM; no library has a CR2 two-way
cluster-robust sandwich (statsmodels' two-way clustering is CR1 with G/(G-1) factors, which the
win-rate calibration found 6-12% small), so that part reuses this package's own core.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from app.statistics.robust import cluster_part, combine, working_rho

METHOD = ("Bradley-Terry (logit) model of the decisive votes over all comparisons, one joint maximum-likelihood fit "
          "(statsmodels GLM, binomial), reference arm = 0; two-way cluster-robust (participants x prompts within "
          "strata) CR2 variance of every contrast by linearisation, working-model t df, t intervals; Holm "
          "over the comparisons; rank intervals from Holm-adjusted pairwise tests "
          "(app.statistics.ranking)")


@dataclass(frozen=True)
class Contrast:
    """One linear contrast of the strengths: estimate, SE, df and the two-sided t test against 0."""

    estimate: float | None
    se: float | None
    df: float | None
    p_value: float | None

    def interval(self, confidence: float) -> tuple[float | None, float | None]:
        if self.estimate is None or self.se is None or self.df is None:
            return None, None
        half = float(sps.t.ppf(0.5 + confidence / 2, self.df)) * self.se
        return self.estimate - half, self.estimate + half


@dataclass(frozen=True)
class Ranking:
    """The joint fit: arms (reference first), strengths and every contrast; `reason` when there is none."""

    arms: list[str]
    reference: str | None
    strengths: dict[str, Contrast] = field(default_factory=dict)
    pairs: dict[tuple[str, str], Contrast] = field(default_factory=dict)  # (a, b): beta_a - beta_b, a after b
    reason: str | None = None


def _dense(codes: np.ndarray) -> tuple[np.ndarray, int]:
    used, inv = np.unique(np.asarray(codes), return_inverse=True)
    return inv.reshape(-1).astype(np.int64), used.size


def reference_arm(pairs: Sequence[tuple[str, str]]) -> str | None:
    """The reference arm of (treatment, baseline) comparisons: the arm that is never a treatment
    (the study's baseline), else the most frequent baseline (ties: first by name)."""
    if not pairs:
        return None
    treatments = {t for t, _ in pairs}
    baselines = [b for _, b in pairs]
    never = sorted({b for b in baselines if b not in treatments})
    if len(never) == 1:
        return never[0]
    return sorted(set(baselines), key=lambda a: (-baselines.count(a), a))[0]


def fit_strengths(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood logit fit without intercept (statsmodels GLM Binomial): (beta, fitted p)."""
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sm.GLM(y, x, family=sm.families.Binomial()).fit()
    beta = np.asarray(res.params, dtype=float)
    return beta, 1.0 / (1.0 + np.exp(-(x @ beta)))


def two_way_contrasts(psi: np.ndarray, u: np.ndarray, participant: np.ndarray, prompt: np.ndarray,
                      stratum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, df) of C linearised estimators at once: psi, u (C x N) the votes' influences and working variances.

    Mirrors `robust._parts`: participants are one block with globally centred influences; prompts
    and (participant, prompt) cells are blocked by stratum with influences re-centred within each
    stratum (in proportion to u, as a ratio's residuals are centred about the stratum's own ratio).
    """
    psi, u = np.atleast_2d(psi).astype(float), np.atleast_2d(u).astype(float)
    n_c, n = psi.shape
    p, n_p = _dense(participant)
    q, n_q = _dense(prompt)
    s, n_s = _dense(stratum)
    cell, _ = _dense(p * n_q + q)
    rows = np.repeat(np.arange(n_c), n)

    def by(codes: np.ndarray, g: int, values: np.ndarray) -> np.ndarray:
        return np.bincount((rows * g + np.tile(codes, n_c)), values.ravel(), n_c * g).reshape(n_c, g)

    u_s, psi_s = by(s, n_s, u), by(s, n_s, psi)
    ratio = np.divide(psi_s, u_s, out=np.zeros_like(psi_s), where=u_s > 0)
    psi_strat = psi - u * ratio[:, s]
    usum = u.sum(axis=1)
    sigma2 = np.divide((psi**2).sum(axis=1), usum, out=np.zeros(n_c), where=usum > 0)

    def factor(codes: np.ndarray, resid: np.ndarray, block_of_vote: np.ndarray, n_blocks: int, with_rho: bool):
        g = int(codes.max()) + 1
        r, m = by(codes, g, resid), by(codes, g, u)
        blk = np.zeros(g, dtype=np.int64)
        blk[codes] = block_of_vote
        keep = m > 0
        study = np.broadcast_to(np.arange(n_c)[:, None], (n_c, g))[keep]
        block = (np.arange(n_c)[:, None] * n_blocks + blk[None, :])[keep]
        rr, mm = r[keep], m[keep]
        rho = working_rho(rr, mm, block, study, n_c, sigma2) if with_rho else 0.0
        return cluster_part(rr, mm, block, study, n_c, rho, t_df=with_rho)

    part_p = factor(p, psi, np.zeros_like(p), 1, True)
    part_q = factor(q, psi_strat, s, n_s, True)
    part_pq = factor(cell, psi_strat, s, n_s, False)
    return combine(part_p.v, part_q.v, part_pq.v, part_p.df, part_q.df, e=(part_p.e, part_q.e, part_pq.e))


def rank_arms(treatment_arm: Sequence[str], baseline_arm: Sequence[str], score: np.ndarray, participant: np.ndarray,
              prompt: np.ndarray, stratum: np.ndarray | None = None, *, reference: str | None = None) -> Ranking:
    """The joint fit of the preference votes (one per entry; gold, repeats and duplicates already left out)."""
    t_arm = np.asarray(treatment_arm, dtype=object).astype(str)
    b_arm = np.asarray(baseline_arm, dtype=object).astype(str)
    score = np.asarray(score, dtype=float)
    participant, prompt = np.asarray(participant), np.asarray(prompt)
    stratum = np.zeros(score.size, dtype=np.int64) if stratum is None else np.asarray(stratum)
    pairs = sorted({(t, b) for t, b in zip(t_arm.tolist(), b_arm.tolist())})
    reference = reference or reference_arm(pairs)
    arms = sorted({a for pair in pairs for a in pair})
    if reference in arms:
        arms = [reference] + [a for a in arms if a != reference]
    if len(arms) < 2:
        return Ranking(arms, reference, reason="fewer than 2 arms compared")
    keep = score != 0
    if not keep.any():
        return Ranking(arms, reference, reason="no decisive votes (all ties): strengths are undefined")
    t_arm, b_arm, participant, prompt, stratum = (v[keep] for v in (t_arm, b_arm, participant, prompt, stratum))
    y = (score[keep] > 0).astype(float)
    index = {a: i for i, a in enumerate(arms)}
    k = len(arms)
    full = np.zeros((y.size, k))
    full[np.arange(y.size), [index[a] for a in t_arm]] += 1.0
    full[np.arange(y.size), [index[a] for a in b_arm]] -= 1.0
    # Connected comparison graph and no arm that always wins or always loses (the MLE would be infinite).
    wins = np.zeros(k)
    losses = np.zeros(k)
    np.add.at(wins, [index[a] for a in t_arm], y)
    np.add.at(wins, [index[a] for a in b_arm], 1 - y)
    np.add.at(losses, [index[a] for a in t_arm], 1 - y)
    np.add.at(losses, [index[a] for a in b_arm], y)
    if not _connected(k, [(index[t], index[b]) for t, b in zip(t_arm, b_arm)]):
        return Ranking(arms, reference, reason="the compared pairs of arms do not connect every arm: no joint ranking")
    if (wins == 0).any() or (losses == 0).any():
        return Ranking(arms, reference, reason="an arm won or lost every decisive vote: its strength is infinite")
    x = full[:, 1:]
    beta, fitted = fit_strengths(x, y)
    w = fitted * (1 - fitted)
    info = x.T @ (x * w[:, None])
    try:
        b_inv = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return Ranking(arms, reference, reason="the joint fit is singular")
    # Contrasts: each arm vs the reference, then every pair (a, b) with a after b in `arms`.
    cs: list[np.ndarray] = []
    names: list[tuple[str, str]] = []
    for i in range(1, k):
        c = np.zeros(k - 1)
        c[i - 1] = 1.0
        cs.append(c)
        names.append((arms[i], arms[0]))
    for i in range(1, k):
        for j in range(1, i):
            c = np.zeros(k - 1)
            c[i - 1], c[j - 1] = 1.0, -1.0
            cs.append(c)
            names.append((arms[i], arms[j]))
    cmat = np.array(cs)
    lin = cmat @ b_inv @ x.T  # (C, N): c' B^-1 x_i
    psi = lin * (y - fitted)[None, :]
    u = lin**2 * w[None, :]
    v, df = two_way_contrasts(psi, u, participant, prompt, stratum)
    est = cmat @ beta
    n_p, n_q = np.unique(participant).size, np.unique(prompt).size
    contrasts: dict[tuple[str, str], Contrast] = {}
    for i, name in enumerate(names):
        ok = n_p >= 2 and n_q >= 2 and np.isfinite(v[i]) and v[i] > 1e-12 and np.isfinite(df[i]) and df[i] > 0
        if not ok:
            contrasts[name] = Contrast(float(est[i]), None, None, None)
            continue
        se = math.sqrt(float(v[i]))
        tstat = float(est[i]) / se
        contrasts[name] = Contrast(float(est[i]), se, float(df[i]), float(min(1.0, 2 * sps.t.sf(abs(tstat), df[i]))))
    strengths = {arms[0]: Contrast(0.0, 0.0, None, None)}
    strengths.update({arms[i]: contrasts[(arms[i], arms[0])] for i in range(1, k)})
    return Ranking(arms, reference, strengths, contrasts)


def _connected(k: int, edges: list[tuple[int, int]]) -> bool:
    parent = list(range(k))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in set(edges):
        parent[find(a)] = find(b)
    return len({find(a) for a in range(k)}) == 1


def pair_contrast(rk: Ranking, a: str, b: str) -> Contrast:
    """beta_a - beta_b (either order of the stored pair)."""
    if (a, b) in rk.pairs:
        return rk.pairs[(a, b)]
    c = rk.pairs[(b, a)]
    return Contrast(None if c.estimate is None else -c.estimate, c.se, c.df, c.p_value)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values of the non-missing entries; None stays None.

    The step-down formula itself (max over the sorted prefix of (m - i) p_(i), capped at 1):
    statsmodels' `multipletests(method="holm")` gives the same numbers (tests/test_ranking.py) but
    runs a full garbage collection on every call, 0.2 s, too slow for the calibration's thousands.
    """
    idx = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if idx:
        p = np.array([p_values[i] for i in idx], dtype=float)
        order = np.argsort(p, kind="stable")
        m = p.size
        adj = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
        for rank, j in enumerate(order):
            out[idx[j]] = float(adj[rank])
    return out


def comparison_tests(rk: Ranking, comparisons: Sequence[tuple[str, str]]) -> list[dict[str, float | None]]:
    """Per (treatment, baseline) comparison: {estimate, se, df, p_value, p_holm} of beta_t - beta_b, Holm
    over the given comparisons."""
    tests = [pair_contrast(rk, t, b) if not rk.reason else Contrast(None, None, None, None) for t, b in comparisons]
    adjusted = holm([c.p_value for c in tests])
    return [{"estimate": c.estimate, "se": c.se, "df": c.df, "p_value": c.p_value, "p_holm": h}
            for c, h in zip(tests, adjusted)]


def ranking_entries(rk: Ranking, confidence: float = 0.95) -> list[dict[str, Any]]:
    """statistics.json `ranking`: [{arm, strength, ci_low, ci_high, rank, rank_low, rank_high}], best first."""
    if rk.reason:
        return []
    arms = rk.arms
    k = len(arms)
    all_pairs = [(arms[i], arms[j]) for i in range(k) for j in range(i)]
    adjusted = holm([rk.pairs[p].p_value for p in all_pairs])
    alpha = 1 - confidence
    better = {a: 0 for a in arms}  # arms significantly stronger than a
    worse = {a: 0 for a in arms}  # arms significantly weaker than a
    for (a, b), p in zip(all_pairs, adjusted):
        est = rk.pairs[(a, b)].estimate
        if p is None or p >= alpha or est is None:
            continue
        hi, lo = (a, b) if est > 0 else (b, a)
        better[lo] += 1
        worse[hi] += 1
    order = sorted(arms, key=lambda a: (-(rk.strengths[a].estimate or 0.0), a))
    out = []
    for rank, a in enumerate(order, start=1):
        c = rk.strengths[a]
        lo, hi = (0.0, 0.0) if a == rk.arms[0] else c.interval(confidence)
        out.append({"arm": a, "strength": c.estimate, "ci_low": lo, "ci_high": hi, "se": c.se, "df": c.df,
                    "reference": a == rk.arms[0], "rank": rank, "rank_low": 1 + better[a], "rank_high": k - worse[a]})
    return out


def win_matrix(treatment_arm: Sequence[str], baseline_arm: Sequence[str], score: np.ndarray
               ) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Observed row-beats-column rates among decisive votes: {row: {col: {wins, decisive, rate}}}."""
    out: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for t, b, sc in zip(treatment_arm, baseline_arm, np.asarray(score, dtype=float)):
        if sc == 0:
            continue
        for row, col, won in ((t, b, sc > 0), (b, t, sc < 0)):
            cell = out.setdefault(str(row), {}).setdefault(str(col), {"wins": 0, "decisive": 0, "rate": None})
            cell["wins"] += int(won)
            cell["decisive"] += 1
    for row in out.values():
        for cell in row.values():
            cell["rate"] = cell["wins"] / cell["decisive"] if cell["decisive"] else None
    return out
