"""The admin study form <-> study config dict (what `app.studies.config` validates and stores).

The form posts flat fields (`title`, `scale_label_1..5`, `pair_set` repeated, `ex_<rule>` for
exclusion rules); `form_to_config` turns them into a config dict and `form_values` turns a
config dict back into the values the template shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from app.store.models import Study
from app.statistics.exclusions import ExclusionRules
from app.studies.config import QUESTION_PRESETS, StudyError, parse_config

# Form labels of the rules (a field without one shows its name).
RULE_LABELS = {
    "fail_gold": "Exclude participants who fail a gold pair",
    "straight_lining": "Exclude straight-lining (always the same answer)",
    "min_response_ms": "Too fast below (ms; blank: the minimum response time)",
    "max_fast_share": "Max share of too-fast answers (0 to 1; blank: off)",
    "min_consistency": "Min consistency on repeats (0 to 1; blank: off)",
    "max_side_bias": "Max share of one side (0.5 to 1; blank: off)",
    "min_gold_pass_rate": "Min gold pass rate (0 to 1)",
    "straight_lining_min_trials": "Straight-lining: at least this many trials",
    "side_bias_min_votes": "Side bias: at least this many decisive answers",
    "approve_agreement_alpha": "Suggest APPROVE only if answers follow other raters beyond chance: "
                               "error rate for blind answering at most (blank: off)",
    "approve_agreement_min_trials": "Agreement check: at least this many real trials shared with others",
}


# The datasheet's details (`app.studies.config.StudyAbout`) as the form labels them.
ABOUT_LABELS = {
    "platform": "Platform (e.g. Prolific)",
    "recruitment": "Recruitment (how participants were found)",
    "eligibility": "Eligibility (who could take part)",
    "pay": "Pay (e.g. GBP 2.50, GBP 9/hour)",
    "estimated_minutes": "Time advertised (minutes)",
    "purpose_statement": "What participants are told about the purpose (shown on the start page)",
    "consent_text": "Consent text (blank: the standard text)",
    "ethics_approval": "Ethics approval (board and reference)",
}


def rule_fields(rules: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per field of the one rules schema (`ExclusionRules`) for the form and the study
    page: input name, label, kind ('check' or 'number'), bounds, step and the current value."""
    fields = []
    for name, info in ExclusionRules.model_fields.items():
        bounds = {k: getattr(m, k) for m in info.metadata for k in ("ge", "le") if getattr(m, k, None) is not None}
        is_bool = info.annotation is bool
        is_int = "int" in str(info.annotation)
        fields.append({
            "name": name, "input": f"ex_{name}", "label": RULE_LABELS.get(name) or info.description or name,
            "kind": "check" if is_bool else "number", "min": bounds.get("ge"), "max": bounds.get("le"),
            "step": None if is_bool or is_int else "0.01", "value": rules.get(name, info.default),
        })
    return fields


def rules_from_form(form: Mapping[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The exclusion rules the form submitted (unknown rules already in `current` are kept).
    Raises StudyError naming a malformed rule."""
    submitted = {
        f["name"]: (f["input"] in form) if f["kind"] == "check" else _opt(form.get(f["input"]))
        for f in rule_fields({})
    }
    try:
        return ExclusionRules.model_validate({**current, **submitted}).model_dump(exclude_unset=True)
    except ValidationError as e:
        raise StudyError(config_error(e, "exclusion_rules.")) from None


def config_error(e: ValidationError, prefix: str) -> str:
    return "; ".join(f"{prefix}{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())


CUSTOM_QUESTIONS = "custom"


def questions_text(questions: list[dict[str, Any]] | None) -> str:
    """The free-text form of `questions`: one line per question, `key | text | low label | high label`."""
    return "\n".join(" | ".join(str(q.get(k) or "") for k in ("key", "text", "low", "high")) for q in questions or [])


def questions_from_form(form: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(questions, primary) from the form's preset choice, or its free text (one question per line,
    `key | text | low label | high label`, the labels optional). Raises StudyError for a bad line."""
    preset = str(form.get("questions_preset") or "overall")
    primary = _opt(form.get("primary"))
    if preset != CUSTOM_QUESTIONS:
        chosen = QUESTION_PRESETS.get(preset) or QUESTION_PRESETS["overall"]
        return chosen["questions"], primary or chosen["primary"]
    questions = []
    for n, line in enumerate(str(form.get("questions_text") or "").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 2 or len(parts) > 4 or not parts[0] or not parts[1]:
            raise StudyError(f"questions, line {n}: write 'key | question text | low label | high label' "
                             "(the two labels optional)")
        q = dict(zip(("key", "text", "low", "high"), parts))
        questions.append({k: v for k, v in q.items() if v})
    if not questions:
        raise StudyError("questions: write at least one question, or choose a preset")
    return questions, primary


def _preset_of(config: Mapping[str, Any]) -> str:
    questions = config.get("questions")
    for name, preset in QUESTION_PRESETS.items():
        if (questions or None) == preset["questions"]:
            return name
    return CUSTOM_QUESTIONS


def form_values(config: dict[str, Any]) -> dict[str, Any]:
    """Template values for the study form from a config dict (as exported or as submitted)."""
    rules = config.get("exclusion_rules")
    return {
        **config,
        "questions_preset": _preset_of(config),
        "questions_text": questions_text(config.get("questions")),
        "question_presets": {k: v["label"] for k, v in QUESTION_PRESETS.items()},
        "selected": {int(i) for i in config.get("pair_sets") or []},
        "exclusion_rules": rules if isinstance(rules, dict) else {},
    }


def blank_form() -> dict[str, Any]:
    config = parse_config({"title": "x", "pair_sets": [1]}).model_dump()
    config.update(title="", pair_sets=[], seed=None)
    return form_values(config)


def _opt(value: Any) -> Any:
    """Blank form field -> None ("not set"); anything else goes to validation as is."""
    value = value.strip() if isinstance(value, str) else value
    return None if value in (None, "") else value


def view_fields(form: Mapping[str, Any]) -> dict[str, Any]:
    """The "participant's view" fields of the study form (blank: the config default)."""
    fields = {
        "compare_tools": "compare_tools" in form,
        "fast_share_limit": _opt(form.get("fast_share_limit")),
        "returned_message": _opt(form.get("returned_message")),
        "gold_instruction": _opt(form.get("gold_instruction")),
    }
    for name in ("max_upscale", "fast_answers"):
        if _opt(form.get(name)) is not None:
            fields[name] = _opt(form.get(name))
    return fields


def form_to_config(form: Mapping[str, Any], study: Study | None, locked: bool = False) -> dict[str, Any]:
    """The submitted study form (a Starlette `FormData`) as a config dict for `app.studies.config`.

    `locked`: the study has ratings, so its exclusion rules stay as they were set before data
    came in (the form shows them disabled; disabled inputs are not submitted) and the seed stays.
    Raises StudyError for a malformed exclusion rule.
    """
    pair_sets = []
    for raw in form.getlist("pair_set"):  # type: ignore[attr-defined]
        try:
            pair_sets.append(int(raw))
        except (TypeError, ValueError):
            continue
    if study is not None:
        # Keep the study's own order of comparisons, so re-saving the form is not a change.
        order = {c.pair_set_id: i for i, c in enumerate(study.comparisons)}
        pair_sets.sort(key=lambda i: (order.get(i, len(order)), i))
    if study is not None and locked:
        exclusion = dict(study.exclusion_rules or {})
    else:
        exclusion = rules_from_form(form, study.exclusion_rules if study is not None else {})
    config = _fields(form, pair_sets, exclusion)
    if study is not None and locked:  # the questions are fixed once there are ratings (inputs disabled)
        config["questions"], config["primary"] = study.questions, study.primary_criterion
    if study is None:
        config["slug"] = _opt(form.get("slug"))
        config["seed"] = _opt(form.get("seed"))
    elif not locked and _opt(form.get("seed")) is not None:
        config["seed"] = _opt(form.get("seed"))
    if not config["pair_sets"]:
        raise StudyError("choose at least one pair set (comparison)")
    return config


def submitted_values(form: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the admin typed into the new-study form, unvalidated, as template values: the
    form shown again after an error keeps every field (a bad rule or a missing pair set included)."""
    pair_sets = [int(v) for v in form.getlist("pair_set") if str(v).isdigit()]  # type: ignore[attr-defined]
    rules = {f["name"]: (f["input"] in form) if f["kind"] == "check" else _opt(form.get(f["input"]))
             for f in rule_fields({})}
    try:
        config = _fields(form, pair_sets, rules)
        preset = None
    except StudyError:  # the free-text questions were malformed: show them again as typed
        config = _fields({**{k: form.get(k) for k in form.keys()}, "questions_preset": "overall"},  # type: ignore[attr-defined]
                         pair_sets, rules)
        preset = {"questions_preset": CUSTOM_QUESTIONS, "questions_text": str(form.get("questions_text") or "")}
    config.update(slug=_opt(form.get("slug")), seed=_opt(form.get("seed")))
    # A blank number falls back to its default, except where blank itself means something.
    blank_ok = {"hold_minutes", "seed", "fast_share_limit", "slug", "completion_code", "redirect_url",
                "returned_message", "gold_instruction"}
    values = form_values({**blank_form(), **{k: v for k, v in config.items() if v is not None or k in blank_ok}})
    return {**values, **(preset or {})}


def _fields(form: Mapping[str, Any], pair_sets: list[int], exclusion: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": str(form.get("title") or "").strip(),
        "instructions": str(form.get("instructions") or "").strip(),
        "question": str(form.get("question") or "").strip(),
        "scale_labels": [str(form.get(f"scale_label_{i}") or "").strip() for i in range(1, 6)],
        **dict(zip(("questions", "primary"), questions_from_form(form))),
        "pair_sets": pair_sets,
        "pairs_per_participant": _opt(form.get("pairs_per_participant")),
        "ratings_per_pair": _opt(form.get("ratings_per_pair")),
        "practice_trials": _opt(form.get("practice_trials")) or 0,
        "gold_rate": _opt(form.get("gold_rate")) or 0,
        "repeats": _opt(form.get("repeats")) or 0,
        "min_response_ms": _opt(form.get("min_response_ms")) or 0,
        "hold_minutes": _opt(form.get("hold_minutes")),
        "completion_code": _opt(form.get("completion_code")),
        "redirect_url": _opt(form.get("redirect_url")),
        "exclusion_rules": exclusion,
        **view_fields(form),
        "auto_close": "auto_close" in form,
        "about": {k: _opt(form.get(f"about_{k}")) for k in ABOUT_LABELS if _opt(form.get(f"about_{k}")) is not None},
        "code_when_full": "code_when_full" in form,
    }
