"""Preference results per group and the whole statistics dict (`compute_statistics`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from app.statistics.bootstrap import bootstrap_weights, crossed_bootstrap_sums, estimates_from_sums, percentile_interval
from app.statistics.estimates import INDEPENDENCE_NOTE, _t_interval, distribution, point_estimates, wilson_interval
from app.statistics.exclusions import apply_exclusions, normalise_rules
from app.statistics.jsonsafe import _num
from app.statistics.quality import quality_summary
from app.statistics.ranking import METHOD as RANKING_METHOD
from app.statistics.ranking import comparison_tests, rank_arms, ranking_entries, win_matrix
from app.statistics.ranking import holm as holm_list
from app.statistics.rows import Ratings, StatisticsInputError, preference_mask, ratings_from_rows
from app.statistics.robust import ESTIMATES, PromptPool, estimates_and_tests, prompt_pool, ratio_parts
from app.statistics.robust import METHOD as ROBUST_METHOD
from app.statistics.significance import Clusters, significance_tests

HOLM = ("Holm (step-down; the same numbers as statsmodels' multipletests, method='holm') over the comparisons' "
        "win-rate tests (the cluster-robust t statistic of win rate = 0.5 against its wild cluster bootstrap)")

BOOTSTRAP_NOTE = ("crossed bootstrap percentile interval: conservative (counts the vote-level noise about three "
                  "times), shown as a cross-check")



def _design(r: Ratings, mask: np.ndarray) -> dict[str, Any]:
    per_pair = np.bincount(r.pair[mask], minlength=r.pairs.size)
    per_pair = per_pair[per_pair > 0]
    return {
        "n_ratings": int(mask.sum()),
        "n_participants": int(np.unique(r.participant[mask]).size),
        "n_prompts": int(np.unique(r.prompt[mask]).size),
        "n_pairs": int(per_pair.size),
        "ratings_per_pair": {
            "mean": _num(per_pair.mean()) if per_pair.size else None,
            "min": int(per_pair.min()) if per_pair.size else None,
            "max": int(per_pair.max()) if per_pair.size else None,
        },
    }


def _group_summary(r: Ratings, mask: np.ndarray, boot: dict[str, np.ndarray], confidence: float,
                   pools: Mapping[str, PromptPool | None] | None = None, pool_stratum: str | None = None
                   ) -> dict[str, Any]:
    """One group's results; `r` holds preference ratings only (see `preference_results`).

    pools / pool_stratum: for a per-stratum group, the prompt variance pooled across strata.
    """
    scores = r.score[mask]
    out: dict[str, Any] = _design(r, mask)
    out["distribution"] = distribution(scores)
    est = point_estimates(scores)
    robust, tested = estimates_and_tests(scores, r.participant[mask], r.prompt[mask], r.stratum[mask], confidence,
                                         pools=pools, pool_stratum=pool_stratum)
    wins, losses = int((scores > 0).sum()), int((scores < 0).sum())
    indep = {
        "win_rate": wilson_interval(wins, wins + losses, confidence),
        # Each vote is worth 1, 1/2 or 0: the t interval of those values (not 2n half-trials).
        "tie_half_rate": _t_interval((scores > 0) + 0.5 * (scores == 0), confidence),
        "mean_score": _t_interval(scores, confidence),
    }
    for name, value in est.items():
        lo, hi = percentile_interval(boot[name], confidence)
        rb = robust[name]
        out[name] = {"estimate": value, "ci_low": _num(rb["ci_low"]), "ci_high": _num(rb["ci_high"]),
                     "se": _num(rb["se"]), "df": _num(rb["df"]), "reason": rb["reason"],
                     "ci_bootstrap": {"low": lo, "high": hi, "note": BOOTSTRAP_NOTE},
                     "ci_independent_votes": {"low": indep[name][0], "high": indep[name][1],
                                              "note": INDEPENDENCE_NOTE}}
    pooled = {name: pool.part(pool_stratum)[0] for name, pool in (pools or {}).items()
              if pool is not None and pool_stratum is not None}
    clusters = Clusters(r.participant[mask], r.prompt[mask], r.stratum[mask], pooled)
    out["tests"] = significance_tests(scores, r.prompt[mask], tested["win_rate"][0], tested["mean_score"][0],
                                      clusters, alpha=1 - confidence)
    return out


def _pools(r: Ratings) -> dict[str, PromptPool | None]:
    """Per estimate, the within-stratum prompt variance pooled across the strata of all of `r`."""
    out = {}
    for name, (a, b) in ratio_parts(r.score).items():
        keep = b != 0
        out[name] = prompt_pool(a[keep], b[keep], r.participant[keep], r.prompt[keep], r.stratum[keep])
    return out


def holm(p_values: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm-adjusted p-values of the non-missing entries by name; None stays None (`ranking.holm`, the
    same numbers as statsmodels' multipletests without its full garbage collection on every call,
    which took seconds per statistics computation in a process with a large heap)."""
    return dict(zip(p_values, holm_list(list(p_values.values()))))


def _multiplicity(out: dict[str, Any], primary: str | None) -> dict[str, Any]:
    """Add `p_holm` to every comparison's (and the overall) win-rate test; name the primary comparison."""
    comps = out["per_comparison"]
    labels = list(comps)
    if primary is None or primary not in comps:
        primary = labels[0] if labels else None
    adjusted = holm({k: g["tests"].get("win_rate", {}).get("p_value") for k, g in comps.items()})
    for k, g in comps.items():
        g["primary"] = k == primary
        if "win_rate" in g["tests"]:
            g["tests"]["win_rate"]["p_holm"] = adjusted[k]
    overall = out["overall"]
    if overall is not None and "win_rate" in overall["tests"]:
        # One comparison: the overall result is that comparison; several: the pooled result is descriptive.
        overall["tests"]["win_rate"]["p_holm"] = adjusted[labels[0]] if len(labels) == 1 else None
    for g in out["per_stratum"].values():
        g["role"] = "secondary"
    return {"method": HOLM, "family": labels, "primary": primary,
            "primary_rule": "the comparison named by the caller (the study's first comparison), else the first by label",
            "strata": "secondary: per-stratum results are descriptive; their p-values are not adjusted and are not "
                      "part of the family",
            "overall": "with one comparison the overall result is that comparison; with several the pooled "
                       "overall result is descriptive (p_holm None)"}


def comparison_arms(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """{comparison label: (treatment arm, baseline arm)} from rating rows that name the arms (else empty)."""
    out: dict[str, tuple[str, str]] = {}
    for row in rows:
        t, b = row.get("treatment_arm"), row.get("baseline_arm")
        if t in (None, "") or b in (None, "") or row.get("is_gold") in (True, "true", "True", "1", 1):
            continue
        label = row.get("comparison", row.get("pair_set"))
        out.setdefault("(none)" if label in (None, "") else str(label), (str(t), str(b)))
    return out


def add_ranking(out: dict[str, Any], r: Ratings, arms: Mapping[str, tuple[str, str]] | None,
                confidence: float = 0.95) -> None:
    """Add the joint ranking of the arms (`app.statistics.ranking`) to one results dict.

    Only adds keys (`ranking`, `ranking_detail`, `win_matrix`), except that with 2 or more
    comparisons over distinct pairs of arms each comparison's `tests.win_rate.p_holm` becomes Holm
    over the joint fit's contrasts (chosen by benchmarks/ranking_calibration.py: family-wise error
    below 0.05 with unbalanced raters, where Holm over the separate win-rate tests exceeded it).
    With one comparison nothing that was there changes.
    """
    pref = preference_mask(r)
    labels = sorted(set(r.comparison[pref].tolist()))
    if not arms or not pref.any() or any(lab not in arms for lab in labels):
        out["ranking"], out["ranking_detail"], out["win_matrix"] = [], None, {}
        return
    sub = r.subset(pref)
    t_arm = [arms[c][0] for c in sub.comparison.tolist()]
    b_arm = [arms[c][1] for c in sub.comparison.tolist()]
    rk = rank_arms(t_arm, b_arm, sub.score, sub.participant, sub.prompt, sub.stratum)
    pairs = [arms[lab] for lab in labels]
    tests = comparison_tests(rk, pairs)
    out["ranking"] = ranking_entries(rk, confidence)
    out["win_matrix"] = win_matrix(t_arm, b_arm, sub.score)
    joint_holm = len(labels) >= 2 and len({frozenset(p) for p in pairs}) == len(pairs) and not rk.reason
    out["ranking_detail"] = {
        "method": RANKING_METHOD, "reference": rk.reference, "arms": rk.arms, "reason": rk.reason,
        "confidence": float(confidence),
        "comparisons": {lab: {"treatment_arm": p[0], "baseline_arm": p[1], **t} for lab, p, t in zip(labels, pairs, tests)},
        "p_holm": ("Holm over the joint fit's contrasts of the study's comparisons" if joint_holm else
                   "Holm over the comparisons' win-rate tests (one comparison, or comparisons sharing a pair of arms)"),
    }
    if joint_holm:
        for lab, t in zip(labels, tests):
            wr = out["per_comparison"].get(lab, {}).get("tests", {}).get("win_rate")
            if wr is not None:
                wr["p_holm_win_rate_tests"] = wr.get("p_holm")
                wr["p_holm"] = t["p_holm"]
        if out.get("multiplicity"):
            out["multiplicity"]["method"] = ("Holm over the study's comparisons, each tested by its contrast in one "
                                             "joint Bradley-Terry fit with two-way cluster-robust variance "
                                             "(app.statistics.ranking); p_holm_win_rate_tests: Holm over the separate "
                                             "win-rate tests, kept for reference")


def preference_results(r: Ratings, *, draws: int, seed: int, confidence: float = 0.95,
                       primary_comparison: str | None = None) -> dict[str, Any]:
    """Preference results overall, per comparison and per stratum (gold, repeats, duplicates left out).

    Only participants and prompts with preference votes take part. Intervals: see
    `app.statistics.robust`; the bootstrap cross-check uses one set of draws (participants,
    and prompts within their stratum) for every group, so groups are resampled consistently;
    its sums are computed once per (comparison, stratum) cell and added up into the groups.
    """
    pref = preference_mask(r)
    if not pref.any():
        return {"overall": None, "per_comparison": {}, "per_stratum": {}, "multiplicity": None}
    r = r.subset(pref)
    strata, strat = np.unique(r.stratum, return_inverse=True)
    prompt_stratum = np.zeros(r.prompts.size, dtype=np.int64)
    prompt_stratum[r.prompt] = strat
    wp, wq = bootstrap_weights(r.participants.size, r.prompts.size, draws, seed, prompt_stratum)
    comparisons, comp = np.unique(r.comparison, return_inverse=True)
    cells, sums = crossed_bootstrap_sums(r.participant, r.prompt, r.score, wp, wq, comp * strata.size + strat)
    every = np.ones(len(r), dtype=bool)
    out = {"overall": _group_summary(r, every, estimates_from_sums(sums.sum(axis=1)), confidence),
           "per_comparison": {}, "per_stratum": {}}
    for key, labels, cell_group in (("per_comparison", comparisons, cells // strata.size),
                                    ("per_stratum", strata, cells % strata.size)):
        column = r.comparison if key == "per_comparison" else r.stratum
        pools = _pools(r) if key == "per_stratum" else None
        for i, label in enumerate(labels.tolist()):
            boot = estimates_from_sums(sums[:, cell_group == i].sum(axis=1))
            out[key][label] = _group_summary(r, column == label, boot, confidence, pools,
                                             label if key == "per_stratum" else None)
    out["multiplicity"] = _multiplicity(out, primary_comparison)
    return out


def exclusion_effect(all_: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Whether excluding participants moved an overall estimate by more than its interval half-width.

    Exclusion rules can bias the result (e.g. a strict consistency rule removes raters near
    indifference), so a move larger than the after-exclusions half-width is flagged.
    """
    out: dict[str, Any] = {"flagged": False, "estimates": {}}
    if not all_ or not after or all_ is after:
        return out
    for name in ESTIMATES:
        a, b = all_[name], after[name]
        if a["estimate"] is None or b["estimate"] is None:
            continue
        # Without an after-exclusions interval (e.g. everyone left answered alike: zero variance),
        # the interval of all participants gives the yardstick.
        ref = b if b["ci_low"] is not None else a
        if ref["ci_low"] is None:
            continue
        half = (ref["ci_high"] - ref["ci_low"]) / 2
        diff = b["estimate"] - a["estimate"]
        out["estimates"][name] = {"all": a["estimate"], "after_exclusions": b["estimate"], "difference": diff,
                                  "half_width": half, "exceeds": abs(diff) > half,
                                  "half_width_of": "after_exclusions" if ref is b else "all"}
        out["flagged"] = out["flagged"] or abs(diff) > half
    return out


def compute_statistics(
    rows: Iterable[Mapping[str, Any]],
    *,
    exclusion_rules: Mapping[str, Any] | None = None,
    min_response_ms: float | None = None,
    draws: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    primary_comparison: str | None = None,
) -> dict[str, Any]:
    """Everything the report shows, as one JSON-ready dict.

    rows: `app.analysis.ratings.rating_rows` output. exclusion_rules: the study's rules (see
    `normalise_rules`); min_response_ms: the study's minimum response time, used when the
    rules name none. draws / seed: draws of the crossed-bootstrap cross-check (`ci_bootstrap`; the
    headline intervals are analytic, `app.statistics.robust`) and the seed of its generator
    (recorded in the output). Results are given without exclusions ("all") and with them
    ("after_exclusions"; the same dict when no participant was excluded).
    primary_comparison: the comparison label that is primary for the Holm family (default: the
    first by label).
    """
    if draws < 1:
        raise StatisticsInputError("bootstrap draws must be at least 1")
    if not 0 < confidence < 1:
        raise StatisticsInputError("confidence must be between 0 and 1")
    rows = rows if isinstance(rows, list) else list(rows)
    r = ratings_from_rows(rows)
    arms = comparison_arms(rows)
    rules = normalise_rules(exclusion_rules, min_response_ms)
    speed_threshold = rules.get("min_response_ms", min_response_ms)
    tolerance = rules["consistency_tolerance"]
    quality = quality_summary(r, speed_threshold, tolerance)
    exclusions = apply_exclusions(quality["participants"], rules)
    result_all = preference_results(r, draws=draws, seed=seed, confidence=confidence,
                                    primary_comparison=primary_comparison)
    result_all["quality"] = {k: v for k, v in quality.items() if k != "participants"}
    add_ranking(result_all, r, arms, confidence)
    if exclusions["excluded"]:
        kept = r.subset(np.isin(r.participants[r.participant], exclusions["kept"]))
        result_kept = preference_results(kept, draws=draws, seed=seed, confidence=confidence,
                                         primary_comparison=primary_comparison)
        add_ranking(result_kept, kept, arms, confidence)
        q_kept = quality_summary(kept, speed_threshold, tolerance)
        result_kept["quality"] = {k: v for k, v in q_kept.items() if k != "participants"}
    else:
        result_kept = result_all
    return {
        "schema": "sfgeval.statistics/1",
        "conventions": {
            "score": "-2..+2, positive = treatment preferred (un-flipped on the server)",
            "choice": "1 left much better, 2 left slightly better, 3 no preference, 4 right slightly better, 5 right much better",
            "win_rate": "treatment wins / decisive votes",
            "tie_half_rate": "(treatment wins + ties / 2) / all votes",
            "mean_score": "mean of score",
            "excluded_from_preference": "gold trials (quality control) and repeat trials (consistency); practice "
            "trials; later duplicates of a participant's main rating of a pair (the earliest answer is kept)",
        },
        "interval": {"method": ROBUST_METHOD, "confidence": float(confidence), "documentation": "docs/statistics.md",
                     "no_interval": "an estimate without an interval says why in its `reason` (fewer than 2 "
                                    "participants or prompts, no decisive votes, zero variance)"},
        "tests": {"shown": "cluster-robust t tests (tests.win_rate against 0.5, tests.mean_score against 0) with the "
                           "interval's SE and df; p_holm: Holm over the comparisons (see results.*.multiplicity)",
                  "withdrawn": "sign test, Wilcoxon on votes and the prompt-mean tests assume independent votes: "
                               "their p_value is None (the number is kept as p_value_assuming_independence)"},
        "bootstrap": {
            "method": "crossed (pigeonhole): participants, and prompts within their stratum, resampled independently "
            "with replacement; a vote's weight is (copies of its participant) x (copies of its prompt); percentile "
            "interval; a conservative cross-check (ci_bootstrap), not the headline interval",
            "draws": int(draws),
            "seed": int(seed),
            "confidence": float(confidence),
        },
        "design": _design(r, preference_mask(r)) | {
            "n_ratings_total": len(r),
            "n_gold": int(r.is_gold.sum()),
            "n_repeats": int((r.is_repeat & ~r.is_gold).sum()),
            # Main ratings of a (participant, pair) after the earliest (by answer time): dropped.
            "n_duplicates_dropped": int(r.duplicate.sum()),
        },
        "exclusions": exclusions | {"effect": exclusion_effect(result_all["overall"], result_kept["overall"])},
        "participants": quality["participants"],
        "results": {"all": result_all, "after_exclusions": result_kept},
        # The joint ranking of the arms after exclusions (app.statistics.ranking; per results group too).
        "ranking": result_kept.get("ranking", []),
    }
