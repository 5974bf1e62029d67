"""Quality control: side bias, consistency on repeats, gold checks, agreement (Krippendorff), timing."""

from __future__ import annotations

from typing import Any

import krippendorff
import numpy as np
from scipy import stats as sps

from app.statistics.jsonsafe import _num, _share
from app.statistics.scoring import SCORES
from app.statistics.rows import Ratings, preference_mask

def side_bias(choice: np.ndarray) -> dict[str, Any]:
    """Share of "left" answers among decisive answers (as shown) and a binomial test against 1/2."""
    left = int(np.count_nonzero(choice <= 2))
    right = int(np.count_nonzero(choice >= 4))
    out: dict[str, Any] = {"left": left, "right": right, "left_share": _share(left, left + right)}
    if left + right:
        out["p_value"] = _num(sps.binomtest(left, left + right, 0.5).pvalue)
        out["test"] = "scipy.stats.binomtest(left, left + right, 0.5), two-sided"
    else:
        out["p_value"] = None
    return out


def repeat_agreement(r: Ratings, tolerance: int = 1) -> dict[str, np.ndarray]:
    """Each repeat rating next to the participant's first rating of the same pair.

    Returns arrays over the matched repeats: participant (codes), first and repeat score,
    same_direction (the un-flipped scores have the same sign -, 0, +), exact (equal) and
    within (|first - repeat| <= tolerance steps of the -2..+2 scale).
    Repeats whose first rating is missing (e.g. excluded) are skipped.
    """
    key = r.participant * max(r.pairs.size, 1) + r.pair
    firsts = np.flatnonzero(preference_mask(r))
    # The first rating of each (participant, pair) in row order.
    first_keys, first_pos = np.unique(key[firsts], return_index=True)
    first_idx = firsts[first_pos]
    reps = np.flatnonzero(r.is_repeat & ~r.is_gold)
    where = np.searchsorted(first_keys, key[reps])
    found = (where < first_keys.size) & (first_keys[np.minimum(where, max(first_keys.size - 1, 0))] == key[reps]) \
        if first_keys.size else np.zeros(reps.size, dtype=bool)
    reps = reps[found]
    a = r.score[first_idx[where[found]]]
    b = r.score[reps]
    return {"participant": r.participant[reps], "first": a, "repeat": b,
            "same_direction": np.sign(a) == np.sign(b), "exact": a == b, "within": np.abs(a - b) <= tolerance}


def participant_quality(r: Ratings, min_response_ms: float | None, tolerance: int = 1) -> list[dict[str, Any]]:
    """One dict per participant (all of their non-practice ratings, gold and repeats included).

    Keys: participant, n_ratings, gold_n, gold_pass_rate, fast_share (share of answers under
    min_response_ms; None without a threshold), distinct_choices, left_share / n_decisive
    (as shown), repeats_n, consistency (share of repeats within `tolerance` steps of the first rating),
    median_response_ms.
    """
    n_p = r.participants.size
    n_ratings = np.bincount(r.participant, minlength=n_p)
    gold = r.is_gold & np.isfinite(r.gold_passed)
    gold_n = np.bincount(r.participant[gold], minlength=n_p)
    gold_pass = np.bincount(r.participant[gold], weights=r.gold_passed[gold], minlength=n_p)
    decisive = r.choice != 3
    n_dec = np.bincount(r.participant[decisive], minlength=n_p)
    n_left = np.bincount(r.participant[r.choice <= 2], minlength=n_p)
    timed = np.isfinite(r.response_ms)
    n_timed = np.bincount(r.participant[timed], minlength=n_p)
    if min_response_ms is not None:
        fast = timed & (r.response_ms < float(min_response_ms))
        n_fast = np.bincount(r.participant[fast], minlength=n_p)
    distinct = np.zeros(n_p, dtype=np.int64)
    pc = np.unique(r.participant * 8 + r.choice)
    np.add.at(distinct, pc // 8, 1)
    agreement = repeat_agreement(r, tolerance)
    rep_n = np.bincount(agreement["participant"], minlength=n_p)
    rep_same = np.bincount(agreement["participant"], weights=agreement["within"], minlength=n_p)
    order = np.argsort(r.participant, kind="stable")
    bounds = np.searchsorted(r.participant[order], np.arange(n_p + 1))
    out = []
    for j in range(n_p):
        ms = r.response_ms[order[bounds[j]:bounds[j + 1]]]
        ms = ms[np.isfinite(ms)]
        out.append({
            "participant": str(r.participants[j]),
            "n_ratings": int(n_ratings[j]),
            "gold_n": int(gold_n[j]),
            "gold_pass_rate": _share(gold_pass[j], gold_n[j]),
            "fast_share": _share(n_fast[j], n_timed[j]) if min_response_ms is not None else None,
            "distinct_choices": int(distinct[j]),
            "n_decisive": int(n_dec[j]),
            "left_share": _share(n_left[j], n_dec[j]),
            "repeats_n": int(rep_n[j]),
            "consistency": _share(rep_same[j], rep_n[j]),
            "median_response_ms": _num(np.median(ms)) if ms.size else None,
        })
    return out


def krippendorff_alpha(r: Ratings) -> dict[str, Any]:
    """Krippendorff's alpha (ordinal, values -2..+2) over pairs with two or more ratings.

    Units are pairs, values the un-flipped scores of their preference ratings (no gold, no
    repeats). Alpha only depends on the values within each unit, so the value-count form
    (pairs x 5 counts) is used.
    """
    mask = preference_mask(r)
    pair, score = r.pair[mask], r.score[mask]
    n_pairs = r.pairs.size
    counts = np.zeros((n_pairs, len(SCORES)), dtype=np.int64)
    np.add.at(counts, (pair, score + 2), 1)
    multi = counts.sum(axis=1) >= 2
    out: dict[str, Any] = {"level": "ordinal", "n_pairs": int(multi.sum()), "n_ratings": int(counts[multi].sum())}
    if multi.sum() < 1 or len(np.unique(score[np.isin(pair, np.flatnonzero(multi))])) < 2:
        out["alpha"] = None
        out["reason"] = "needs pairs rated at least twice and more than one distinct answer"
        return out
    out["alpha"] = _num(krippendorff.alpha(value_counts=counts[multi], value_domain=list(SCORES),
                                           level_of_measurement="ordinal"))
    return out


def response_times(ms: np.ndarray, min_response_ms: float | None = None) -> dict[str, Any]:
    """Time per trial in milliseconds: n, mean, median, quartiles, 10th/90th percentiles."""
    ms = np.asarray(ms, dtype=float)
    ms = ms[np.isfinite(ms)]
    if ms.size == 0:
        return {"n": 0}
    q = np.percentile(ms, [10, 25, 50, 75, 90])
    out = {"n": int(ms.size), "mean_ms": _num(ms.mean()), "p10_ms": _num(q[0]), "q1_ms": _num(q[1]),
           "median_ms": _num(q[2]), "q3_ms": _num(q[3]), "p90_ms": _num(q[4])}
    if min_response_ms is not None:
        out["share_under_min"] = _share(np.count_nonzero(ms < float(min_response_ms)), ms.size)
        out["min_response_ms"] = float(min_response_ms)
    return out


def quality_summary(r: Ratings, min_response_ms: float | None = None, tolerance: int = 1) -> dict[str, Any]:
    """Study-level quality control: side bias, consistency, gold pass rate, alpha, timing."""
    pref = preference_mask(r)
    agreement = repeat_agreement(r, tolerance)
    gold = r.is_gold & np.isfinite(r.gold_passed)
    participants = participant_quality(r, min_response_ms, tolerance)
    per_participant_consistency = [p["consistency"] for p in participants if p["consistency"] is not None]
    return {
        "side_bias": side_bias(r.choice[pref]),
        "consistency": {
            "n_repeats": int(agreement["exact"].size),
            "same_direction": _share(agreement["same_direction"].sum(), agreement["exact"].size),
            "tolerance": int(tolerance),
            "within_tolerance": _share(agreement["within"].sum(), agreement["exact"].size),
            "exact": _share(agreement["exact"].sum(), agreement["exact"].size),
            "n_participants": len(per_participant_consistency),
            "mean_per_participant": _num(np.mean(per_participant_consistency)) if per_participant_consistency else None,
            # How many participants reached each consistency value (e.g. {"0.5": 3, "1.0": 40}).
            "per_participant_counts": {f"{v:g}": int(c) for v, c in zip(*np.unique(
                np.round(per_participant_consistency, 3), return_counts=True))} if per_participant_consistency else {},
        },
        "gold": {
            "n": int(gold.sum()),
            "pass_rate": _share(r.gold_passed[gold].sum(), gold.sum()),
        },
        "krippendorff_alpha": krippendorff_alpha(r),
        "response_time": response_times(r.response_ms, min_response_ms),
        "participants": participants,
    }
