"""Significance tests: cluster-robust tests (shown), and the independent-votes tests (withdrawn).

The report shows only tests that hold their level when votes cluster by participant and prompt:
win rate = 0.5 and mean score = 0 with the headline interval's two-way cluster-robust t statistic
(`app.statistics.robust.t_test`). Its p-value is the larger of two references, each of which
misses where the other holds (docs/statistics.md, "Tests"):

- t(df), the interval's own: it rejected 0.0535 of null studies with heavy raters (5 of 40 give
  60% of the votes), where the few big raters agreeing makes V small exactly when the estimate is
  far out;
- the wild cluster bootstrap over participants (`app.statistics.wild`): 0.042-0.048 there, but
  0.051-0.068 at the true value with 3 prompts per stratum, where the prompts limit what is known
  and t(df) rejects 0.027-0.035.

So a result is significant only when the interval excludes the null and the bootstrap agrees; the
level is at most the smaller of the two references' in every design. With df >= 50 (many effective
clusters, where t(df) holds) the bootstrap is not run and the test is t(df). The sign test and the
Wilcoxon signed-rank test on votes, and the Wilcoxon and t tests on prompt means, assume
independent votes (or independent prompts): with heavy raters they rejected 41-43% (votes) and
16-18% (prompt means) of null studies at 0.05 (issue 23; `benchmarks/calibration.py`). Their keys
stay in `tests` for compatibility, with `p_value` None, `shown_as_evidence` false and the number
they would give under `p_value_assuming_independence`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from app.statistics.estimates import INDEPENDENCE_NOTE
from app.statistics.jsonsafe import _num
from app.statistics.robust import Estimate, ratio_parts, t_test
from app.statistics.wild import DRAWS as BOOTSTRAP_DRAWS
from app.statistics.wild import METHOD as BOOTSTRAP_METHOD
from app.statistics.wild import p_value as bootstrap_p_value

WITHDRAWN = ("withdrawn: assumes independent votes; with a few heavy raters it rejects far more than 5% of studies "
             "with no true preference (docs/statistics.md), so it is not evidence")
CLUSTER_TEST = ("two-sided test of the headline interval's t statistic (two-way cluster-robust SE, CR2, on the "
                "interval's arcsine-square-root scale, app.statistics.robust); p_value = the larger of t(df)'s "
                "and that of a " + BOOTSTRAP_METHOD + ": significant only when the interval excludes the null and "
                "the bootstrap agrees (each reference alone over-rejects in some designs; docs/statistics.md); "
                "with df >= 50 t(df) alone")


# The bootstrap guards against what t(df) misses when a few clusters carry most of the information
# (heavy raters: df about 7; Zipf raters: about 5). With df >= 50 there are many effective clusters
# on both sides and t(df) holds (balanced designs with 120-200 participants, df about 83, cover
# 0.941-0.957): the bootstrap is not run there (it would cost 999 variance computations per test).
BOOTSTRAP_BELOW_DF = 50.0
NOT_NEEDED = (f"the interval's df is at least {BOOTSTRAP_BELOW_DF:.0f} (many effective participants and prompts), "
              "where t(df) holds its level; the wild bootstrap guards the designs with few effective clusters and "
              "is not run here: the test is t(df)")


@dataclass(frozen=True)
class Clusters:
    """A group's votes, aligned with its scores: who gave each, on which prompt, in which stratum;
    for a per-stratum group, per estimate the prompt part pooled across strata
    (`robust.PromptPool.part`, unscaled), which the bootstrap holds at its estimate."""

    participant: np.ndarray
    prompt: np.ndarray
    stratum: np.ndarray
    pooled_vq: Mapping[str, float] = field(default_factory=dict)


def shown_test(est: Estimate, null: float, key: str, a: np.ndarray, b: np.ndarray, clusters: Clusters,
               alpha: float = 0.05, draws: int = BOOTSTRAP_DRAWS) -> dict[str, Any]:
    """The test the report shows of one estimate (`key`: its name, `est`: `robust.two_way` of the
    votes (a, b) of `clusters`) = `null`.

    p_value = max(t(df) p, wild bootstrap p) (see the module docstring), or t(df)'s alone when the
    interval's df is at least BOOTSTRAP_BELOW_DF; `p_value_parts` gives both, which alone are not
    the test. `interval_excludes_null`: the interval's (confidence 1 - alpha) verdict;
    `agrees_with_interval`: whether the test (p < alpha) reaches the same one (it can only differ
    one way: the interval excludes the null and the bootstrap does not agree).
    """
    t = t_test(est, null, key)
    many = t["df"] is not None and t["df"] >= BOOTSTRAP_BELOW_DF
    p_boot = None if many else bootstrap_p_value(a, b, clusters.participant, clusters.prompt, clusters.stratum,
                                                 est, null, key, draws=draws, pooled_vq=clusters.pooled_vq.get(key))
    p = t["p_value"] if many else (None if p_boot is None or t["p_value"] is None else max(p_boot, t["p_value"]))
    parts_note = NOT_NEEDED if many else "the test is their maximum; either alone over-rejects in some designs"
    out = {"null": null, "estimate": _num(est.theta) if est.theta is not None else None,
           "statistic": t["statistic"], "df": t["df"], "p_value": p,
           "p_value_parts": {"t_df": t["p_value"], "wild_bootstrap": p_boot, "note": parts_note},
           "bootstrap_draws": 0 if many else draws, "test": CLUSTER_TEST, "shown_as_evidence": True}
    if p is None:
        out["reason"] = est.reason
    else:
        excludes = bool(t["p_value"] < alpha)
        out["interval_excludes_null"] = excludes
        out["agrees_with_interval"] = bool((p < alpha) == excludes)
    return out


def cluster_tests(win: Estimate, mean: Estimate, scores: np.ndarray, clusters: Clusters,
                  alpha: float = 0.05) -> dict[str, Any]:
    """The cluster-valid tests the report shows (`shown_test`): win rate = 0.5 and mean score = 0."""
    parts = ratio_parts(scores)
    return {key: shown_test(est, null, key, *parts[key], clusters, alpha)
            for key, est, null in (("win_rate", win, 0.5), ("mean_score", mean, 0.0))}


def independent_vote_tests(scores: np.ndarray, prompt: np.ndarray) -> dict[str, float | None]:
    """p-values of the withdrawn tests (for benchmarks/calibration.py): sign, Wilcoxon on votes, prompt means."""
    full = _independence_tests(np.asarray(scores, dtype=float), np.asarray(prompt))
    return {"sign test": full["sign_test"].get("p_value"), "Wilcoxon on votes": full["wilcoxon"].get("p_value"),
            "Wilcoxon on prompt means": full["prompt_level"]["wilcoxon"].get("p_value"),
            "t test on prompt means": full["prompt_level"]["t_test"].get("p_value")}


def _withdraw(d: dict[str, Any]) -> dict[str, Any]:
    p = d.get("p_value")
    return {**d, "p_value": None, "p_value_assuming_independence": p, "shown_as_evidence": False,
            "withdrawn": WITHDRAWN}


def significance_tests(scores: np.ndarray, prompt: np.ndarray, win: Estimate | None = None,
                       mean: Estimate | None = None, clusters: Clusters | None = None,
                       alpha: float = 0.05) -> dict[str, Any]:
    """Tests of one group: `win_rate` and `mean_score` (cluster-robust, given the group's estimates
    `win` and `mean` from `app.statistics.robust.two_way` and its `clusters`), and the withdrawn
    independent-votes tests `sign_test`, `wilcoxon` and `prompt_level` (p_value None)."""
    scores = np.asarray(scores, dtype=float)
    out: dict[str, Any] = {}
    if win is not None and mean is not None:
        if clusters is None:
            raise ValueError("the cluster-robust tests need the votes' clusters")
        out.update(cluster_tests(win, mean, scores, clusters, alpha))
    old = _independence_tests(scores, prompt)
    out["sign_test"] = _withdraw(old["sign_test"])
    out["wilcoxon"] = _withdraw(old["wilcoxon"])
    pl = old["prompt_level"]
    out["prompt_level"] = {**pl, "wilcoxon": _withdraw(pl["wilcoxon"]), "t_test": _withdraw(pl["t_test"]),
                           "shown_as_evidence": False}
    return out


def _independence_tests(scores: np.ndarray, prompt: np.ndarray) -> dict[str, Any]:
    """Sign test, Wilcoxon signed-rank (Pratt zeros) on votes, and tests on prompt means.

    The vote-level tests treat every vote as independent. The prompt-level tests first
    average each prompt's scores (one value per prompt) and then run a Wilcoxon signed-rank
    (Pratt zeros) and a one-sample t-test of the prompt means against 0; they still ignore
    participant effects.
    """
    scores = np.asarray(scores, dtype=float)
    wins, losses = int(np.count_nonzero(scores > 0)), int(np.count_nonzero(scores < 0))
    out: dict[str, Any] = {}
    if wins + losses:
        bt = sps.binomtest(wins, wins + losses, 0.5)
        out["sign_test"] = {
            "wins": wins, "losses": losses, "p_value": _num(bt.pvalue),
            "test": "scipy.stats.binomtest(wins, wins + losses, 0.5), two-sided",
            "assumption": INDEPENDENCE_NOTE,
        }
    else:
        out["sign_test"] = {"p_value": None, "reason": "no decisive votes"}
    out["wilcoxon"] = _wilcoxon(scores, "votes")
    out["wilcoxon"]["assumption"] = INDEPENDENCE_NOTE

    codes = np.unique(prompt, return_inverse=True)[1]
    if codes.size:
        means = np.bincount(codes, weights=scores) / np.bincount(codes)
    else:
        means = np.zeros(0)
    prompt_level: dict[str, Any] = {"n_prompts": int(means.size), "mean_of_prompt_means": _num(means.mean()) if means.size else None}
    prompt_level["wilcoxon"] = _wilcoxon(means, "prompt means")
    if means.size >= 2 and np.ptp(means) > 0:
        tt = sps.ttest_1samp(means, 0.0)
        prompt_level["t_test"] = {"statistic": _num(tt.statistic), "p_value": _num(tt.pvalue), "df": int(means.size - 1),
                                  "test": "scipy.stats.ttest_1samp(prompt means, 0), two-sided"}
    else:
        prompt_level["t_test"] = {"p_value": None, "reason": "fewer than two prompts or no variation"}
    prompt_level["assumption"] = "one value per prompt (its mean score); prompts independent"
    out["prompt_level"] = prompt_level
    return out


EXACT_MAX_N = 20


def wilcoxon_method(values: np.ndarray) -> str:
    """'exact' for up to EXACT_MAX_N values (ties and zeros allowed), else 'approx' (normal, tie-corrected).

    scipy's 'exact' refuses ties and zeros, and its 'auto' then runs a permutation test that
    takes seconds; `pratt_exact_pvalue` counts all sign flips at once instead.
    """
    return "exact" if np.asarray(values).size <= EXACT_MAX_N else "approx"


def pratt_exact_pvalue(values: np.ndarray) -> tuple[float, float]:
    """(statistic, two-sided p) of the Wilcoxon signed-rank test with Pratt's zeros, exactly.

    Ranks of |x| are taken with the zeros (average ranks for ties), then the zeros' ranks are
    dropped. Under the null each non-zero rank is + or - with probability 1/2; the distribution
    of T+ (sum of the positive ranks) over all 2^m sign flips is counted by convolution on
    doubled ranks (integers, since tied ranks are multiples of 1/2). statistic = min(T+, T-)
    as scipy reports it; p = 2 P(T+ <= min), at most 1.
    """
    x = np.asarray(values, dtype=float)
    ranks = sps.rankdata(np.abs(x))
    nonzero = x != 0
    doubled = np.rint(2 * ranks[nonzero]).astype(np.int64)
    counts = np.zeros(int(doubled.sum()) + 1)
    counts[0] = 1.0
    for d in doubled:  # add rank d with sign + (shift) or - (stay)
        counts[d:] = counts[d:] + counts[:-d].copy() if d else 2 * counts
    dist = counts / counts.sum()
    t_plus = int(doubled[x[nonzero] > 0].sum())
    total = int(doubled.sum())
    low = min(t_plus, total - t_plus)
    # The null distribution is symmetric about total / 2: P(T+ <= low) = P(T+ >= total - low).
    return low / 2, float(min(1.0, 2 * dist[: low + 1].sum()))


def _wilcoxon(values: np.ndarray, what: str) -> dict[str, Any]:
    method = wilcoxon_method(values)
    if method == "exact":
        test = (f"Wilcoxon signed-rank on {what}, Pratt zeros, exact: all 2^m sign flips of the ranks "
                f"(n <= {EXACT_MAX_N}), two-sided")
    else:
        test = f"scipy.stats.wilcoxon({what}, zero_method='pratt', method='approx'), two-sided, normal approximation"
    if np.count_nonzero(values) == 0:
        return {"p_value": None, "reason": "all values are zero", "test": test, "method": method}
    if method == "exact":
        stat, p = pratt_exact_pvalue(values)
        return {"statistic": _num(stat), "p_value": _num(p), "n": int(values.size), "test": test, "method": method}
    try:
        res = sps.wilcoxon(values, zero_method="pratt", method=method)
    except ValueError as exc:  # e.g. too few non-zero values
        return {"p_value": None, "reason": str(exc), "test": test, "method": method}
    return {"statistic": _num(res.statistic), "p_value": _num(res.pvalue), "n": int(values.size), "test": test,
            "method": method}
