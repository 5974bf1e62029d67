"""Exclusion rules: their defaults and checks, and their sequential application to participants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.statistics.rows import StatisticsInputError, _as_bool

# Order in which exclusion rules are applied; each rule sees only the participants the
# previous rules kept, so the counts removed at each step add up.
RULE_ORDER = ("fail_gold", "too_fast", "straight_lining", "low_consistency", "side_bias")
RULE_DESCRIPTIONS = {
    "fail_gold": "gold-pair pass rate below {min_gold_pass_rate:g} (a gold pair is passed by "
    "choosing the intact image)",
    "too_fast": "more than {max_fast_share:.0%} of answers faster than {min_response_ms:g} ms",
    "straight_lining": "the same answer on every trial (at least {straight_lining_min_trials} "
    "trials)",
    "low_consistency": "agreement on repeated pairs below {min_consistency:g} (direction of "
    "preference, after un-flipping)",
    "side_bias": "more than {max_side_bias:.0%} of decisive answers on one side (at least "
    "{side_bias_min_votes} decisive answers)",
}
DEFAULT_RULE_PARAMS = {
    "min_gold_pass_rate": 1.0,
    "straight_lining_min_trials": 5,
    "side_bias_min_votes": 5,
}

def normalise_rules(rules: Mapping[str, Any] | None, min_response_ms: float | None = None) -> dict[str, Any]:
    """Fill defaults into a study's `exclusion_rules` and check their types.

    A rule is on when its switch is set (None or absent = off):
    - fail_gold (bool), with min_gold_pass_rate (0..1, default 1: any failed gold pair excludes);
    - max_fast_share (0..1): too fast = more than this share of answers under min_response_ms
      (the rule's own, else the study's `min_response_ms` argument);
    - straight_lining (bool), with straight_lining_min_trials (default 5);
    - min_consistency (0..1): share of repeats answered in the same direction;
    - max_side_bias (0.5..1), with side_bias_min_votes (default 5 decisive answers).
    Unknown keys raise StatisticsInputError (a typo must not silently switch a rule off).
    """
    rules = dict(rules or {})
    known = {"fail_gold", "min_gold_pass_rate", "min_response_ms", "max_fast_share", "straight_lining",
             "straight_lining_min_trials", "min_consistency", "max_side_bias", "side_bias_min_votes"}
    unknown = sorted(set(rules) - known)
    if unknown:
        raise StatisticsInputError(f"unknown exclusion rule(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    out = {**DEFAULT_RULE_PARAMS, **{k: v for k, v in rules.items() if v is not None}}
    if "min_response_ms" not in out and min_response_ms:
        out["min_response_ms"] = min_response_ms
    for key in ("min_gold_pass_rate", "max_fast_share", "min_consistency", "max_side_bias"):
        if key in out:
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise StatisticsInputError(f"exclusion rule {key} must be a number between 0 and 1, got {v!r}")
    for key in ("min_response_ms", "straight_lining_min_trials", "side_bias_min_votes"):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise StatisticsInputError(f"exclusion rule {key} must be a non-negative number, got {v!r}")
    return out


def _active_rules(rules: Mapping[str, Any]) -> list[str]:
    active = []
    if _as_bool(rules.get("fail_gold", False)):
        active.append("fail_gold")
    if rules.get("max_fast_share") is not None and rules.get("min_response_ms"):
        active.append("too_fast")
    if _as_bool(rules.get("straight_lining", False)):
        active.append("straight_lining")
    if rules.get("min_consistency") is not None:
        active.append("low_consistency")
    if rules.get("max_side_bias") is not None:
        active.append("side_bias")
    return active


def _flagged(rule: str, p: Mapping[str, Any], rules: Mapping[str, Any]) -> bool:
    if rule == "fail_gold":
        return p["gold_pass_rate"] is not None and p["gold_pass_rate"] < rules["min_gold_pass_rate"]
    if rule == "too_fast":
        return p["fast_share"] is not None and p["fast_share"] > rules["max_fast_share"]
    if rule == "straight_lining":
        return p["n_ratings"] >= rules["straight_lining_min_trials"] and p["distinct_choices"] == 1
    if rule == "low_consistency":
        return p["consistency"] is not None and p["consistency"] < rules["min_consistency"]
    if rule == "side_bias":
        if p["n_decisive"] < rules["side_bias_min_votes"] or p["left_share"] is None:
            return False
        return max(p["left_share"], 1 - p["left_share"]) > rules["max_side_bias"]
    raise AssertionError(rule)


def apply_exclusions(quality: Sequence[Mapping[str, Any]], rules: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the active rules one after another to per-participant quality records.

    Returns {"rules", "steps": [{rule, description, removed, participants, remaining}],
    "excluded": [...], "kept": [...]}; each step only sees participants kept so far.
    """
    remaining = [p["participant"] for p in quality]
    by_id = {p["participant"]: p for p in quality}
    steps = []
    for rule in _active_rules(rules):
        removed = [pid for pid in remaining if _flagged(rule, by_id[pid], rules)]
        remaining = [pid for pid in remaining if pid not in set(removed)]
        steps.append({"rule": rule, "description": RULE_DESCRIPTIONS[rule].format(**rules),
                      "removed": len(removed), "participants": removed, "remaining": len(remaining)})
    excluded = [p["participant"] for p in quality if p["participant"] not in set(remaining)]
    return {"rules": dict(rules), "steps": steps, "excluded": excluded, "kept": remaining,
            "n_before": len(quality), "n_after": len(remaining)}
