"""Several criteria per trial (issue 24): which criterion a rating row answers, and rows split by it.

A study asks 1-3 questions per trial (e.g. image quality and prompt alignment), each answered on
the same 5-point scale and stored as one rating row per criterion (`criterion` column). The
`primary` criterion is the one monitoring, planning and the verdict use; a study without
`questions` has one criterion, `DEFAULT_CRITERION`, exactly as before. Pure: no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_CRITERION = "overall"
MAX_QUESTIONS = 3
CRITERION_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


# What a gold trial shows (issue 24): "degraded": the pair's intact image against its degraded twin
# (a quality check, as before); "other_prompt": the pair's image against an image made for another
# prompt (an alignment check). In both the image that passes plays "treatment": score > 0 = passed.
GOLD_KINDS = ("degraded", "other_prompt")


def gold_targets(questions: Sequence[Mapping[str, Any]] | None, primary: str | None) -> list[tuple[str, str]]:
    """[(gold kind, criterion it checks)] of a study: the questions marked `gold`, in order, else
    one degraded-twin check of the primary criterion."""
    marked = [(str(q["gold"]), str(q["key"])) for q in questions or [] if q.get("gold")]
    return marked or [("degraded", primary_criterion(questions, primary))]


def gold_target(targets: Sequence[tuple[str, str]], position: int) -> tuple[str, str]:
    """The (gold kind, criterion) of the gold trial at plan `position`: the kinds take turns by
    position (positions of gold trials are shuffled per participant, so the kinds are mixed)."""
    return targets[int(position) % len(targets)]


def criterion_keys(questions: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The criterion keys of a study's `questions` (None or empty: the one default criterion)."""
    return [str(q["key"]) for q in questions] if questions else [DEFAULT_CRITERION]


def primary_criterion(questions: Sequence[Mapping[str, Any]] | None, primary: str | None) -> str:
    """The primary criterion: `primary` when set, else the first question's key."""
    return primary or criterion_keys(questions)[0]


def ordered_criteria(keys: Iterable[str], primary: str) -> list[str]:
    """`keys` with the primary first, the others in their given order (duplicates dropped)."""
    seen = [primary]
    for k in keys:
        if k not in seen:
            seen.append(k)
    return seen


def rows_by_criterion(rows: Sequence[Mapping[str, Any]], primary: str | None = None) -> dict[str, list[Any]]:
    """Rating rows grouped by their `criterion` (a row without one answers the primary criterion),
    the primary criterion first. `primary` None: the first criterion met (or the default)."""
    groups: dict[str, list[Any]] = {}
    for row in rows:
        key = row.get("criterion") or primary or DEFAULT_CRITERION
        groups.setdefault(str(key), []).append(row)
    if primary is None:
        primary = next(iter(groups), DEFAULT_CRITERION)
    return {k: groups.get(k, []) for k in ordered_criteria(groups, primary)}


# --------------------------------------------------------------------------------------------
# Statistics per criterion
# --------------------------------------------------------------------------------------------

SECONDARY_NOTE = ("secondary: every criterion but the primary, and each of their comparisons, form one Holm family "
                  "(`p_holm_secondary` on the win-rate test); the primary criterion's results are the study's "
                  "headline and keep their own `p_holm` over its comparisons")
EXCLUSIONS_NOTE = ("exclusion rules (gold, speed, repeats, side bias) are applied to the participants once, from the "
                   "rows of the criterion named here; every criterion's results after exclusions use the same kept "
                   "participants")


def _secondary_holm(criteria: dict[str, dict[str, Any]], result_set: str) -> list[str]:
    """Add `p_holm_secondary` to each secondary criterion's comparisons (and its overall result when
    it has one comparison), Holm over all of them together; returns the family's labels."""
    from app.statistics.results import holm

    tests: dict[str, dict[str, Any]] = {}
    for key, c in criteria.items():
        if c["role"] != "secondary":
            continue
        res = c["results"][result_set]
        comps = res.get("per_comparison") or {}
        for label, g in comps.items():
            g["role"] = "secondary"
            if "win_rate" in g["tests"]:
                tests[f"{key}: {label}"] = g["tests"]["win_rate"]
        overall = res.get("overall")
        if overall is not None:
            overall["role"] = "secondary"
    adjusted = holm({k: t.get("p_value") for k, t in tests.items()})
    for k, t in tests.items():
        t["p_holm_secondary"] = adjusted[k]
    for key, c in criteria.items():
        res = c["results"][result_set]
        comps = res.get("per_comparison") or {}
        overall = res.get("overall")
        if c["role"] == "secondary" and overall is not None and len(comps) == 1 and "win_rate" in overall["tests"]:
            overall["tests"]["win_rate"]["p_holm_secondary"] = next(iter(comps.values()))["tests"]["win_rate"].get(
                "p_holm_secondary")
    return list(tests)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def criteria_correlation(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per pair of criteria: how the same participant's scores on one trial go together.

    Main (non-gold, non-repeat) trials answered on both criteria; `pooled`: Pearson r over all those
    trials; `per_participant`: Pearson r within each participant with at least 3 such trials and
    some spread on both (summarised by mean, median and quartiles, and listed per participant).
    """
    scores: dict[str, dict[tuple[Any, Any], float]] = {}
    for key, rows in groups.items():
        scores[key] = {(r["participant"], r["trial"]): float(r["score"]) for r in rows
                       if not r.get("is_gold") and not r.get("is_repeat") and r.get("trial") is not None}
    keys = list(groups)
    out = []
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            both = sorted(set(scores[a]) & set(scores[b]), key=str)
            x = np.array([scores[a][k] for k in both])
            y = np.array([scores[b][k] for k in both])
            people = np.array([str(k[0]) for k in both])
            per: dict[str, float] = {}
            for p in sorted(set(people.tolist())):
                m = people == p
                r = _pearson(x[m], y[m])
                if r is not None:
                    per[p] = r
            v = np.array(list(per.values()))
            out.append({
                "criteria": [a, b],
                "n_trials": int(x.size),
                "pooled": _pearson(x, y),
                "per_participant": {
                    "n": int(v.size),
                    "mean": float(v.mean()) if v.size else None,
                    "median": float(np.median(v)) if v.size else None,
                    "q1": float(np.quantile(v, 0.25)) if v.size else None,
                    "q3": float(np.quantile(v, 0.75)) if v.size else None,
                    "values": per,
                },
                "same_direction": float(np.mean(np.sign(x) == np.sign(y))) if x.size else None,
            })
    return out


def criteria_statistics(groups: Mapping[str, Sequence[Mapping[str, Any]]], primary: str,
                        primary_stats: Mapping[str, Any], *, exclusion_rules: Mapping[str, Any] | None,
                        min_response_ms: float | None, draws: int, seed: int, confidence: float = 0.95
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`criteria`, `criteria_analysis`) of a study with several criteria.

    groups: rating rows per criterion (`rows_by_criterion`), the primary first; primary_stats:
    `compute_statistics` of the primary criterion's rows (its exclusions decide who is kept for
    every criterion). `criteria`: per criterion {role, results: {all, after_exclusions}, design,
    exclusions}, everything the report has for the primary; `criteria_analysis`: the order, the
    secondary Holm family and the correlation between criteria per participant.
    """
    from app.statistics.exclusions import normalise_rules
    from app.statistics.quality import quality_summary
    from app.statistics.results import _design, preference_results
    from app.statistics.rows import preference_mask, ratings_from_rows

    rules = normalise_rules(exclusion_rules, min_response_ms)
    speed, tolerance = rules.get("min_response_ms", min_response_ms), rules["consistency_tolerance"]
    kept = [str(p) for p in primary_stats["exclusions"]["kept"]]
    excluded = primary_stats["exclusions"].get("excluded") or []
    named = {"criterion": primary, "kept": primary_stats["exclusions"]["kept"], "excluded": excluded,
             "note": EXCLUSIONS_NOTE}
    criteria: dict[str, dict[str, Any]] = {}
    for key, rows in groups.items():
        if key == primary:
            criteria[key] = {"role": "primary", "results": primary_stats["results"], "design": primary_stats["design"],
                             "exclusions": named, "n_rows": len(rows)}
            continue
        r = ratings_from_rows(rows)
        every = preference_results(r, draws=draws, seed=seed, confidence=confidence)
        every["quality"] = {k: v for k, v in quality_summary(r, speed, tolerance).items() if k != "participants"}
        keep = np.isin(r.participants[r.participant], kept) if len(r) else np.zeros(0, dtype=bool)
        if excluded and len(r):
            sub = r.subset(keep)
            after = preference_results(sub, draws=draws, seed=seed, confidence=confidence)
            after["quality"] = {k: v for k, v in quality_summary(sub, speed, tolerance).items() if k != "participants"}
        else:
            after = every
        criteria[key] = {"role": "secondary", "results": {"all": every, "after_exclusions": after},
                         "design": _design(r, preference_mask(r)) if len(r) else {}, "exclusions": named,
                         "n_rows": len(rows)}
    family = {name: _secondary_holm(criteria, name) for name in ("all", "after_exclusions")}
    analysis = {
        "primary": primary,
        "order": list(groups),
        "secondary": [k for k in groups if k != primary],
        "holm_secondary": {"method": "holm", "family": family["all"], "note": SECONDARY_NOTE},
        "exclusions_criterion": primary,
        "correlation": criteria_correlation(groups),
    }
    return criteria, analysis
