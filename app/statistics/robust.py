"""Two-way cluster-robust intervals for the headline estimates (participants x prompts crossed).

The three estimates are ratios of vote sums, theta = sum(a) / sum(b):
win rate a = 1{s > 0}, b = 1{s != 0}; tie-as-half rate a = 1{s > 0} + 0.5 * 1{s = 0}, b = 1;
mean score a = s, b = 1. Their linearised residuals e_i = (a_i - theta * b_i) / sum(b) are summed
per cluster, and the variance is the two-way cluster-robust one (Cameron, Gelbach & Miller 2011):

    V = V_P + V_Q - V_PQ

V_P: participants as clusters; V_Q: prompts as clusters, centred within each stratum (strata
are fixed by design, so only the within-stratum spread of prompts is random); V_PQ: (participant,
prompt) cells as clusters, centred within strata: the votes counted by both V_P and V_Q. Each
part has the small-sample factor G / (G - 1) of its G clusters (per stratum for V_Q and V_PQ).
Only participants and prompts that have votes in the group count (for the win rate: decisive
votes, since ties do not enter it). Should V come out <= 0 (possible in tiny samples) the
larger of V_P and V_Q is used. The interval is
theta +- t(df) * sqrt(V) with df = min(P - 1, Q - strata): the factor with fewer independent
clusters limits how well V is known (Cameron, Gelbach & Miller's G_min - 1); rates are clipped
to [0, 1]. See docs/statistics.md for the simulation that chose it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

METHOD = ("two-way cluster-robust variance V_P + V_Q - V_PQ (participants, prompts within strata, "
          "participant x prompt cells; each with G/(G-1)), t interval with df = min(participants - 1, prompts - strata) "
          "(app.statistics.robust)")
ESTIMATES = ("win_rate", "tie_half_rate", "mean_score")


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
    return inv.reshape(-1), used.size


def _stratified_part(e: np.ndarray, cluster: np.ndarray, stratum: np.ndarray) -> tuple[float, float]:
    """(variance part, df) of cluster totals of e, centred within strata, each stratum x G_h/(G_h-1).

    cluster: dense codes; stratum: dense codes, constant within a cluster. Strata with a single
    cluster add nothing (their spread cannot be estimated) and no degrees of freedom.
    """
    n_c = int(cluster.max()) + 1
    totals = np.bincount(cluster, weights=e, minlength=n_c)
    first = np.zeros(n_c, dtype=np.int64)
    first[cluster] = stratum
    n_h = int(first.max()) + 1
    g = np.bincount(first, minlength=n_h).astype(float)
    mean = np.bincount(first, weights=totals, minlength=n_h) / np.maximum(g, 1)
    ss = np.bincount(first, weights=(totals - mean[first]) ** 2, minlength=n_h)
    ok = g > 1
    return float((ss[ok] * g[ok] / (g[ok] - 1)).sum()), float((g[ok] - 1).sum())


def variance_parts(a: np.ndarray, b: np.ndarray, participant: np.ndarray, prompt: np.ndarray,
                   stratum: np.ndarray) -> tuple[float, list[tuple[float, float]]]:
    """(theta, [(V_P, df), (V_Q, df), (V_PQ, df)]) of theta = sum(a) / sum(b). Assumes sum(b) > 0."""
    theta = a.sum() / b.sum()
    e = (a - theta * b) / b.sum()
    p, _ = _dense(participant)
    s, _ = _dense(stratum)
    q, n_q = _dense(prompt)
    cell, _ = _dense(p.astype(np.int64) * n_q + q)
    return float(theta), [_stratified_part(e, p, np.zeros_like(p)), _stratified_part(e, q, s),
                          _stratified_part(e, cell, s)]


def robust_variance(a: np.ndarray, b: np.ndarray, participant: np.ndarray, prompt: np.ndarray,
                    stratum: np.ndarray) -> tuple[float, float, float]:
    """(theta, V, df) of theta = sum(a) / sum(b); see the module docstring. Assumes sum(b) > 0."""
    theta, parts = variance_parts(a, b, participant, prompt, stratum)
    (v_p, df_p), (v_q, df_q), (v_pq, _) = parts
    v = v_p + v_q - v_pq
    if v <= 0:
        v = max(v_p, v_q)
    return theta, float(v), float(max(min(df_p, df_q), 1.0))


def robust_intervals(scores: np.ndarray, participant: np.ndarray, prompt: np.ndarray, stratum: np.ndarray,
                     confidence: float = 0.95) -> dict[str, dict[str, float | None]]:
    """{estimate: {estimate, ci_low, ci_high, se, df}} for the three estimates (None when undefined)."""
    out: dict[str, dict[str, float | None]] = {}
    for name, (a, b) in ratio_parts(scores).items():
        if b.sum() == 0:
            out[name] = {"estimate": None, "ci_low": None, "ci_high": None, "se": None, "df": None}
            continue
        keep = b != 0 if name == "win_rate" else slice(None)
        theta, v, df = robust_variance(a[keep], b[keep], participant[keep], prompt[keep], stratum[keep])
        if np.unique(participant[keep]).size < 2 and np.unique(prompt[keep]).size < 2:
            # One participant on one prompt: no spread to estimate, so no interval (not a zero-width one).
            out[name] = {"estimate": float(theta), "ci_low": None, "ci_high": None, "se": None, "df": None}
            continue
        half = float(sps.t.ppf(0.5 + confidence / 2, df)) * np.sqrt(v)
        lo, hi = theta - half, theta + half
        if name != "mean_score":
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        out[name] = {"estimate": theta, "ci_low": float(lo), "ci_high": float(hi), "se": float(np.sqrt(v)),
                     "df": float(df)}
    return out
