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
from app.statistics.rows import Ratings, StatisticsInputError, preference_mask, ratings_from_rows
from app.statistics.significance import significance_tests

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


def _group_summary(r: Ratings, mask: np.ndarray, boot: dict[str, np.ndarray], confidence: float) -> dict[str, Any]:
    scores = r.score[mask]
    out: dict[str, Any] = _design(r, mask)
    out["distribution"] = distribution(scores)
    est = point_estimates(scores)
    wins, losses = int((scores > 0).sum()), int((scores < 0).sum())
    indep = {
        "win_rate": wilson_interval(wins, wins + losses, confidence),
        "tie_half_rate": wilson_interval(int(round(2 * wins + (scores.size - wins - losses))), 2 * scores.size, confidence)
        if scores.size else (None, None),
        "mean_score": _t_interval(scores, confidence),
    }
    for name, value in est.items():
        lo, hi = percentile_interval(boot[name], confidence)
        out[name] = {"estimate": value, "ci_low": lo, "ci_high": hi,
                     "ci_independent_votes": {"low": indep[name][0], "high": indep[name][1],
                                              "note": INDEPENDENCE_NOTE}}
    out["tests"] = significance_tests(scores, r.prompt[mask])
    return out


def preference_results(r: Ratings, *, draws: int, seed: int, confidence: float = 0.95) -> dict[str, Any]:
    """Preference results overall, per comparison and per stratum (gold and repeats left out).

    One set of crossed-bootstrap draws (participants and prompts of the whole set) serves
    every group, so groups are resampled consistently; the sums are computed once per
    (comparison, stratum) cell and added up into the groups.
    """
    pref = preference_mask(r)
    if not pref.any():
        return {"overall": None, "per_comparison": {}, "per_stratum": {}}
    wp, wq = bootstrap_weights(r.participants.size, r.prompts.size, draws, seed)
    comparisons, comp = np.unique(r.comparison[pref], return_inverse=True)
    strata, strat = np.unique(r.stratum[pref], return_inverse=True)
    cells, sums = crossed_bootstrap_sums(r.participant[pref], r.prompt[pref], r.score[pref], wp, wq,
                                         comp * strata.size + strat)
    out = {"overall": _group_summary(r, pref, estimates_from_sums(sums.sum(axis=1)), confidence),
           "per_comparison": {}, "per_stratum": {}}
    for key, labels, cell_group in (("per_comparison", comparisons, cells // strata.size),
                                    ("per_stratum", strata, cells % strata.size)):
        column = r.comparison if key == "per_comparison" else r.stratum
        for i, label in enumerate(labels.tolist()):
            boot = estimates_from_sums(sums[:, cell_group == i].sum(axis=1))
            out[key][label] = _group_summary(r, pref & (column == label), boot, confidence)
    return out


def compute_statistics(
    rows: Iterable[Mapping[str, Any]],
    *,
    exclusion_rules: Mapping[str, Any] | None = None,
    min_response_ms: float | None = None,
    draws: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Everything the report shows, as one JSON-ready dict.

    rows: `app.export.rating_rows` output. exclusion_rules: the study's rules (see
    `normalise_rules`); min_response_ms: the study's minimum response time, used when the
    rules name none. draws / seed: crossed-bootstrap draws and the seed of its generator
    (recorded in the output). Results are given without exclusions ("all") and with them
    ("after_exclusions"; the same dict when no participant was excluded).
    """
    if draws < 1:
        raise StatisticsInputError("bootstrap draws must be at least 1")
    if not 0 < confidence < 1:
        raise StatisticsInputError("confidence must be between 0 and 1")
    r = ratings_from_rows(rows)
    rules = normalise_rules(exclusion_rules, min_response_ms)
    speed_threshold = rules.get("min_response_ms", min_response_ms)
    quality = quality_summary(r, speed_threshold)
    exclusions = apply_exclusions(quality["participants"], rules)
    result_all = preference_results(r, draws=draws, seed=seed, confidence=confidence)
    result_all["quality"] = {k: v for k, v in quality.items() if k != "participants"}
    if exclusions["excluded"]:
        kept = r.subset(np.isin(r.participants[r.participant], exclusions["kept"]))
        result_kept = preference_results(kept, draws=draws, seed=seed, confidence=confidence)
        q_kept = quality_summary(kept, speed_threshold)
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
            "excluded_from_preference": "gold trials (quality control) and repeat trials (consistency); practice trials",
        },
        "bootstrap": {
            "method": "crossed: participants and prompts resampled independently with replacement; a vote's weight "
            "is (copies of its participant) x (copies of its prompt); percentile interval",
            "draws": int(draws),
            "seed": int(seed),
            "confidence": float(confidence),
        },
        "design": _design(r, preference_mask(r)) | {
            "n_ratings_total": len(r),
            "n_gold": int(r.is_gold.sum()),
            "n_repeats": int((r.is_repeat & ~r.is_gold).sum()),
        },
        "exclusions": exclusions,
        "participants": quality["participants"],
        "results": {"all": result_all, "after_exclusions": result_kept},
    }
