"""Exclusion rules: their defaults and checks, and their sequential application to participants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from app.statistics.rows import StatisticsInputError

# Order in which exclusion rules are applied; each rule sees only the participants the
# previous rules kept, so the counts removed at each step add up.
RULE_ORDER = ("fail_gold", "too_fast", "straight_lining", "low_consistency", "side_bias")
RULE_DESCRIPTIONS = {
    "fail_gold": "gold-pair pass rate below {min_gold_pass_rate:g} (a gold pair is passed by "
    "choosing the intact image)",
    "too_fast": "more than {max_fast_share:.0%} of answers faster than {min_response_ms:g} ms",
    "straight_lining": "the same answer on every trial (at least {straight_lining_min_trials} "
    "trials)",
    "low_consistency": "agreement on repeated pairs below {min_consistency:g} (a repeat agrees when its "
    "un-flipped answer is within {consistency_tolerance} step(s) of the first; only participants with at "
    "least {consistency_min_repeats} repeats can be excluded)",
    "side_bias": "more than {max_side_bias:.0%} of decisive answers on one side (at least "
    "{side_bias_min_votes} decisive answers)",
}
def _in_range(low: float, high: float | None = None) -> AfterValidator:
    text = f"must be a number between {low:g} and {high:g}" if high is not None else "must be a non-negative number"

    def check(v: float) -> float:
        if v < low or (high is not None and v > high):
            raise ValueError(text)
        return v

    return AfterValidator(check)


Share = Annotated[float, _in_range(0, 1)]
Count = Annotated[int, _in_range(0)]


class ExclusionRules(BaseModel):
    """The one schema of a study's `exclusion_rules` (config file, admin form, CLI, statistics).

    A rule is on when its switch is set (None or absent = off):
    - fail_gold, with min_gold_pass_rate (default 1: a single failed gold pair excludes);
    - max_fast_share: too fast = more than this share of answers under min_response_ms (the
      rule's own, else the study's `min_response_ms`);
    - straight_lining, with straight_lining_min_trials;
    - min_consistency: share of repeats whose un-flipped answer is within consistency_tolerance
      steps of the first rating of the pair (default 1: a "slightly" <-> "much" change or a move
      to or from "no preference" still agrees; 0 = the exact answer); only participants with at
      least consistency_min_repeats repeats can be excluded (with one or two repeats a single
      disagreement would decide, which removes people near indifference and biases the result);
    - max_side_bias (0.5..1), with side_bias_min_votes decisive answers.
    Not an exclusion but the crowd-review check (`app.statistics.agreement`): approve_agreement_alpha
    (default 0.05; None = off): a finished, kept participant is suggested APPROVE only when their
    real-trial answers follow the other raters beyond chance (likelihood ratio against answering
    blind >= 1 / this; a blind answerer gets there at most this often) over at least
    approve_agreement_min_trials shared trials; otherwise the suggestion is REVIEW.
    Unknown keys are refused: a typo must not silently switch a rule off.
    """

    model_config = ConfigDict(extra="forbid")

    fail_gold: bool = False
    min_gold_pass_rate: Share = 1.0
    min_response_ms: Annotated[int, _in_range(0)] | None = None
    max_fast_share: Share | None = None
    straight_lining: bool = False
    straight_lining_min_trials: Count = 5
    min_consistency: Share | None = None
    consistency_tolerance: Annotated[int, _in_range(0, 4)] = 1
    consistency_min_repeats: Annotated[int, _in_range(1, 1000)] = 3
    max_side_bias: Annotated[float, _in_range(0.5, 1)] | None = None
    side_bias_min_votes: Count = 5
    approve_agreement_alpha: Share | None = 0.05
    approve_agreement_min_trials: Annotated[int, _in_range(1, 1000)] = 5

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_default(cls, v: Any, info: ValidationInfo) -> Any:
        # None switches a rule off, and for a parameter means "the default".
        if v is None and info.field_name in PARAMETERS:
            return cls.model_fields[info.field_name].default
        if isinstance(v, bool) and info.field_name not in SWITCHES:
            raise ValueError("must be a number, not true/false")
        return v


SWITCHES = ("fail_gold", "straight_lining")
# Parameters of a rule (always have a value) as opposed to rule settings (None = off).
PARAMETERS = ("min_gold_pass_rate", "straight_lining_min_trials", "consistency_tolerance", "consistency_min_repeats",
              "side_bias_min_votes", "approve_agreement_min_trials")
DEFAULT_RULE_PARAMS = {name: ExclusionRules.model_fields[name].default for name in PARAMETERS}


def rules_error(e: ValidationError) -> str:
    """One line naming each bad rule, e.g. "exclusion rule max_fast_share must be a number between 0 and 1"."""
    unknown = [str(err["loc"][0]) for err in e.errors() if err["type"] == "extra_forbidden"]
    if unknown:
        return f"unknown exclusion rule(s): {', '.join(unknown)}; known: {', '.join(ExclusionRules.model_fields)}"
    return "; ".join(f"exclusion rule {'.'.join(map(str, err['loc']))} {err['msg'].removeprefix('Value error, ')}"
                     for err in e.errors())


def normalise_rules(rules: Mapping[str, Any] | None, min_response_ms: float | None = None) -> dict[str, Any]:
    """A study's `exclusion_rules` checked against `ExclusionRules`, with defaults filled in.

    min_response_ms: the study's minimum response time, used by the speed rule when the rules
    name none. Raises StatisticsInputError naming the bad rule.
    """
    try:
        out = ExclusionRules.model_validate(dict(rules or {})).model_dump()
    except ValidationError as e:
        raise StatisticsInputError(rules_error(e)) from None
    if out["min_response_ms"] is None and min_response_ms:
        out["min_response_ms"] = min_response_ms
    return out


def _active_rules(rules: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(rule, None) for each rule switched on, or (rule, why it cannot apply) when it is set but inert."""
    active: list[tuple[str, str | None]] = []
    if rules.get("fail_gold"):
        active.append(("fail_gold", None))
    if rules.get("max_fast_share") is not None:
        why = None if rules.get("min_response_ms") else (
            "not applied: max_fast_share is set but there is no min_response_ms (neither the rule's nor the "
            "study's), so no answer counts as too fast")
        active.append(("too_fast", why))
    if rules.get("straight_lining"):
        active.append(("straight_lining", None))
    if rules.get("min_consistency") is not None:
        active.append(("low_consistency", None))
    if rules.get("max_side_bias") is not None:
        active.append(("side_bias", None))
    return active


def _flagged(rule: str, p: Mapping[str, Any], rules: Mapping[str, Any]) -> bool:
    if rule == "fail_gold":
        return p["gold_pass_rate"] is not None and p["gold_pass_rate"] < rules["min_gold_pass_rate"]
    if rule == "too_fast":
        return p["fast_share"] is not None and p["fast_share"] > rules["max_fast_share"]
    if rule == "straight_lining":
        return p["n_ratings"] >= rules["straight_lining_min_trials"] and p["distinct_choices"] == 1
    if rule == "low_consistency":
        return (p["consistency"] is not None and p["repeats_n"] >= rules["consistency_min_repeats"]
                and p["consistency"] < rules["min_consistency"])
    if rule == "side_bias":
        if p["n_decisive"] < rules["side_bias_min_votes"] or p["left_share"] is None:
            return False
        return max(p["left_share"], 1 - p["left_share"]) > rules["max_side_bias"]
    raise AssertionError(rule)


def apply_exclusions(quality: Sequence[Mapping[str, Any]], rules: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the active rules one after another to per-participant quality records.

    Returns {"rules", "steps": [{rule, applied, description, removed, participants, remaining}],
    "excluded": [...], "kept": [...]}; each step only sees participants kept so far. A rule that
    is set but cannot work (e.g. a share of too-fast answers without a time limit) is a step with
    applied = False whose description says why.
    """
    remaining = [p["participant"] for p in quality]
    by_id = {p["participant"]: p for p in quality}
    steps = []
    for rule, why_not in _active_rules(rules):
        removed = [] if why_not else [pid for pid in remaining if _flagged(rule, by_id[pid], rules)]
        remaining = [pid for pid in remaining if pid not in set(removed)]
        steps.append({"rule": rule, "applied": why_not is None,
                      "description": why_not or RULE_DESCRIPTIONS[rule].format(**rules),
                      "removed": len(removed), "participants": removed, "remaining": len(remaining)})
    excluded = [p["participant"] for p in quality if p["participant"] not in set(remaining)]
    return {"rules": dict(rules), "steps": steps, "excluded": excluded, "kept": remaining,
            "n_before": len(quality), "n_after": len(remaining)}
