"""Significance tests: sign test and Wilcoxon on votes, Wilcoxon and t-test on prompt means."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps

from app.statistics.estimates import INDEPENDENCE_NOTE
from app.statistics.jsonsafe import _num

def significance_tests(scores: np.ndarray, prompt: np.ndarray) -> dict[str, Any]:
    """Sign test, Wilcoxon signed-rank (Pratt zeros) on votes, and tests on prompt means.

    The vote-level tests treat every vote as independent. The prompt-level tests first
    average each prompt's scores (one value per prompt) and then run a Wilcoxon signed-rank
    (Pratt zeros) and a one-sample t-test of the prompt means against 0; they still ignore
    participant effects but not the sharing of votes within a prompt.
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


def wilcoxon_method(values: np.ndarray) -> str:
    """'exact' for up to 50 values without zeros or ties, else 'approx' (normal, tie-corrected).

    scipy's own 'auto' falls back to a permutation test for small samples with ties, which
    takes seconds; the live page cannot wait for that.
    """
    values = np.asarray(values)
    no_ties = np.unique(np.abs(values)).size == values.size
    return "exact" if values.size <= 50 and np.all(values != 0) and no_ties else "approx"


def _wilcoxon(values: np.ndarray, what: str) -> dict[str, Any]:
    method = wilcoxon_method(values)
    test = f"scipy.stats.wilcoxon({what}, zero_method='pratt', method='{method}'), two-sided"
    if np.count_nonzero(values) == 0:
        return {"p_value": None, "reason": "all values are zero", "test": test}
    try:
        res = sps.wilcoxon(values, zero_method="pratt", method=method)
    except ValueError as exc:  # e.g. too few non-zero values
        return {"p_value": None, "reason": str(exc), "test": test}
    return {"statistic": _num(res.statistic), "p_value": _num(res.pvalue), "n": int(values.size), "test": test}
