"""Study configuration: create, edit, export and change the state of studies.

A study's config is a plain dict (YAML/JSON file, admin form, `sfgeval study create`) validated by
`StudyConfig`. Every edit bumps `Study.version` and stores a `StudyVersion` snapshot; ratings record
the version they were made under. Functions here flush but never commit: the caller owns the
transaction.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.statistics.criteria import (
    CRITERION_KEY_RE,
    DEFAULT_CRITERION,
    MAX_QUESTIONS,
    criterion_keys,
    gold_targets,
    primary_criterion,
)
from app.statistics.monitoring import MonitoringSettings
from app.store.models import STUDY_STATES, Comparison, Pair, PairSet, Rating, Study, StudyVersion, Trial
from app.statistics import StatisticsInputError, normalise_rules

DEFAULT_QUESTION = "Which image has better quality and matches the prompt better?"
DEFAULT_SCALE_LABELS = [
    "Left much better",
    "Left slightly better",
    "No preference",
    "Right slightly better",
    "Right much better",
]
DEFAULT_INSTRUCTIONS = (
    "You will see a text prompt and two images generated from it. Compare them and answer the "
    "question with one of five buttons (or the keys 1 to 5). There are no right or wrong answers "
    "except on a few obvious check pairs; take the time you need."
)
DEFAULT_EXCLUSION_RULES: dict[str, Any] = {
    "fail_gold": True,
    "min_response_ms": 800,
    "max_fast_share": 0.5,
    "straight_lining": True,
    "min_consistency": 0.5,
    "max_side_bias": 0.9,
}
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


# State changes a study may make. Archived is final: an archived study is read-only.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "draft": ("open", "archived"),
    "open": ("closed",),
    "closed": ("open", "archived"),
    "archived": (),
}


# What the consent page shows when the study's `about.consent_text` is not set
# (templates/participant/consent.html renders this same constant).
DEFAULT_CONSENT_TEXT = (
    "Taking part is voluntary. We store your answers, their timings and the ids your platform passes "
    "in the link; nothing else about you. You can stop at any time by closing this page."
)


class StudyAbout(BaseModel):
    """What reviewers and datasheets (HEDS-style checklists) ask about a human study that the rest
    of the config does not say: all optional; the datasheet lists the ones left out as missing.
    Stored in the study's `about` JSON column."""

    model_config = ConfigDict(extra="forbid")

    platform: str | None = Field(default=None, max_length=300, description="e.g. Prolific, MTurk, lab")
    recruitment: str | None = Field(default=None, max_length=2000, description="how participants were found")
    eligibility: str | None = Field(default=None, max_length=2000, description="who could take part")
    pay: str | None = Field(default=None, max_length=300, description="e.g. 'GBP 2.50 (GBP 9/hour)'")
    estimated_minutes: float | None = Field(default=None, gt=0, description="time advertised to participants")
    purpose_statement: str | None = Field(default=None, max_length=5000,
                                          description="what participants were told about the purpose")
    consent_text: str | None = Field(default=None, max_length=10000,
                                     description="consent text shown (default: the built-in one)")
    ethics_approval: str | None = Field(default=None, max_length=1000, description="board and reference")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        return (v.strip() or None) if isinstance(v, str) else v


class Question(BaseModel):
    """One question a trial asks (issue 24), answered on the study's 5-point scale: `low` labels
    answer 1 (left much better), `high` answer 5 (right much better); the three middle answers
    keep the study's `scale_labels`. `key` names the criterion in the export and the statistics."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="criterion id: lowercase letters, digits, '_', e.g. quality")
    text: str = Field(min_length=1, max_length=1000)
    low: str = Field(default=DEFAULT_SCALE_LABELS[0], min_length=1, max_length=100)
    high: str = Field(default=DEFAULT_SCALE_LABELS[-1], min_length=1, max_length=100)
    gold: Literal["degraded", "other_prompt"] | None = Field(
        default=None, description="gold trials check this criterion: 'degraded' (the intact image against its "
                                  "degraded twin: quality) or 'other_prompt' (the pair's image against one made for "
                                  "another prompt: alignment); true means 'degraded'. Default: a degraded-twin check "
                                  "of the primary criterion")

    @field_validator("gold", mode="before")
    @classmethod
    def _gold(cls, v: Any) -> Any:
        return "degraded" if v is True else None if v is False else v

    def stored(self) -> dict[str, Any]:
        """The question as stored and exported (`gold` only when set)."""
        return {k: v for k, v in self.model_dump().items() if k != "gold" or v}

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not CRITERION_KEY_RE.match(v):
            raise ValueError("a question's key must start with a lowercase letter and hold only lowercase letters, "
                             "digits and '_' (at most 32 characters)")
        return v

    @field_validator("text", "low", "high")
    @classmethod
    def _strip(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()


# The new-study form's presets (free text is the fourth choice): the paper's one overall question,
# DrawBench's two separate criteria, and both together.
_QUALITY = {"key": "quality", "text": "Which image has better visual quality?",
            "low": "Left much better", "high": "Right much better", "gold": "degraded"}
_ALIGNMENT = {"key": "alignment", "text": "Which image matches the prompt better?",
              "low": "Left much better", "high": "Right much better", "gold": "other_prompt"}
QUESTION_PRESETS: dict[str, dict[str, Any]] = {
    "overall": {"label": "One overall question (as in the paper)", "questions": None, "primary": None},
    "drawbench": {"label": "Quality and prompt alignment, separately (as DrawBench)",
                  "questions": [_ALIGNMENT, _QUALITY], "primary": "alignment"},
    "overall-quality-alignment": {
        "label": "Overall, quality and prompt alignment",
        "questions": [{"key": DEFAULT_CRITERION, "text": DEFAULT_QUESTION, "low": DEFAULT_SCALE_LABELS[0],
                       "high": DEFAULT_SCALE_LABELS[-1]}, _QUALITY, _ALIGNMENT],
        "primary": DEFAULT_CRITERION},
}


def study_questions(study: Study) -> list[dict[str, Any]]:
    """The questions a trial of `study` asks, each `{key, text, low, high, labels}` (`labels`: the
    five answer labels); a study without `questions` asks its one `question` (criterion `overall`)."""
    scale = list(study.scale_labels or DEFAULT_SCALE_LABELS)
    questions = study.questions or [{"key": DEFAULT_CRITERION, "text": study.question, "low": scale[0],
                                     "high": scale[-1]}]
    return [{**q, "labels": [q["low"], *scale[1:4], q["high"]]} for q in questions]


def study_primary(study: Study) -> str:
    """The key of `study`'s primary criterion."""
    return primary_criterion(study.questions, study.primary_criterion)


def study_gold_targets(study: Study) -> list[tuple[str, str]]:
    """[(gold kind, criterion)] of `study`'s gold trials (`app.statistics.criteria.gold_targets`):
    each gold trial checks one criterion, and is judged (gold pass rate, the gold exclusion rule)
    on that criterion's answer."""
    return gold_targets(study.questions, study.primary_criterion)


class StudyError(ValueError):
    """A study config or state change that cannot be applied; the message says why."""


class StudyConfig(BaseModel):
    """The fields of a study config file (api.md); all but `title` and `pair_sets` optional."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=300)
    slug: str | None = None
    instructions: str = DEFAULT_INSTRUCTIONS
    question: str = DEFAULT_QUESTION
    questions: list[Question] | None = Field(
        default=None, min_length=1, max_length=MAX_QUESTIONS,
        description="1-3 questions per trial, one criterion each (default: `question` alone, criterion 'overall')")
    primary: str | None = Field(default=None, description="the criterion monitoring, planning and the verdict use "
                                                          "(default: the first question)")
    scale_labels: list[str] = Field(default_factory=lambda: list(DEFAULT_SCALE_LABELS), min_length=5, max_length=5)
    pair_sets: list[int] = Field(min_length=1, description="pair set ids from `sfgeval import`")
    comparisons: Literal["vs-baseline", "all-pairs"] | list[list[str]] = Field(
        default="vs-baseline",
        description="for pair sets of a K-arm image set (sfgeval.set/1): which pairs of arms participants see, as "
                    "[[TREATMENT, BASELINE], ...], all-pairs, or vs-baseline (each arm against the reference arm)")
    pairs_per_participant: int = Field(default=20, ge=1)
    ratings_per_pair: int = Field(default=5, ge=1)
    gold_rate: float = Field(default=0.1, ge=0, le=1, description="gold trials per main trial")
    repeats: int = Field(default=1, ge=0, description="repeated pairs (sides swapped) per participant")
    min_response_ms: int = Field(default=800, ge=0)
    practice_trials: int = Field(default=0, ge=0)
    hold_minutes: float | None = Field(default=None, gt=0)
    completion_code: str | None = Field(default=None, max_length=100)
    redirect_url: str | None = Field(default=None, max_length=2000)
    exclusion_rules: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_EXCLUSION_RULES))
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    auto_close: bool = Field(default=False, description="close once every main pair has ratings_per_pair ratings")
    code_when_full: bool = Field(default=False, description="give the completion code to a participant whose "
                                 "study filled up before they answered every trial they were promised")
    # The participant's view (see README, "The participant's view").
    compare_tools: bool = Field(default=True, description="compare view: zoom, pan, flicker")
    max_upscale: float = Field(default=4.0, ge=1, le=64, description="largest display size / natural size")
    fast_answers: Literal["block", "warn", "flag"] = "warn"
    fast_share_limit: float | None = Field(default=0.5, ge=0, le=1,
                                           description="too-fast share past which the code is withheld")
    returned_message: str | None = Field(default=None, max_length=5000)
    gold_instruction: str | None = Field(default=None, max_length=1000)
    about: StudyAbout = Field(default_factory=StudyAbout, description="study details for the datasheet")
    state: Literal["draft", "open", "closed", "archived"] = "draft"
    seed: int | None = Field(default=None, ge=0, lt=2**31)

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str | None) -> str | None:
        if v is not None and not SLUG_RE.match(v):
            raise ValueError("slug must be lowercase letters, digits and '-', at most 64 characters")
        return v

    @field_validator("pair_sets")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("a pair set is listed twice")
        return v

    @field_validator("comparisons")
    @classmethod
    def _comparisons(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("comparisons: list at least one [TREATMENT, BASELINE] pair")
            for pair in v:
                if len(pair) != 2 or pair[0] == pair[1]:
                    raise ValueError("comparisons: each entry is [TREATMENT, BASELINE], two different arms")
            if len({tuple(p) for p in v}) != len(v):
                raise ValueError("comparisons: a pair of arms is listed twice")
        return v

    @field_validator("exclusion_rules")
    @classmethod
    def _rules(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Checked against the one schema (`app.statistics.exclusions.ExclusionRules`) when the
        # study is saved: a typo in a rule name must not switch the rule off silently, nor break
        # the statistics pages later.
        try:
            normalise_rules(v)
        except StatisticsInputError as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _criteria(self) -> StudyConfig:
        keys = criterion_keys([q.model_dump() for q in self.questions] if self.questions else None)
        if len(set(keys)) != len(keys):
            raise ValueError("two questions have the same key")
        golds = [q.gold for q in self.questions or [] if q.gold]
        if len(set(golds)) != len(golds):
            raise ValueError("each kind of gold check (degraded, other_prompt) can check one question only")
        if self.primary is not None and self.primary not in keys:
            raise ValueError(f"primary must be one of the questions' keys ({', '.join(keys)})")
        return self

    @model_validator(mode="after")
    def _speed_rule_has_a_limit(self) -> StudyConfig:
        # A share of too-fast answers means nothing without a time limit: refuse it, rather than
        # saving a rule that silently does nothing.
        rules = self.exclusion_rules
        if rules.get("max_fast_share") is not None and not rules.get("min_response_ms") and not self.min_response_ms:
            raise ValueError("exclusion_rules.max_fast_share needs a minimum response time: set "
                             "exclusion_rules.min_response_ms or the study's min_response_ms above 0")
        return self

    @field_validator("redirect_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v and not re.match(r"^https?://", v):
            raise ValueError("redirect_url must start with http:// or https://")
        return v or None

    @field_validator("returned_message", "gold_instruction")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if isinstance(v, str) else v


def parse_config(data: dict[str, Any]) -> StudyConfig:
    """Validate a config dict; StudyError names the first bad field."""
    if not isinstance(data, dict):
        raise StudyError("a study config must be a mapping of field names to values")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise StudyError(f"study config field '{where}': {first['msg']}") from None


def slugify(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:48]
    return slug or "study"


def _free_slug(session: Session, base: str) -> str:
    slug, n = base, 2
    while session.scalar(select(Study.id).where(Study.slug == slug)) is not None:
        slug, n = f"{base}-{n}", n + 1
    return slug


def _pair_sets(session: Session, ids: list[int]) -> list[PairSet]:
    found = {ps.id: ps for ps in session.scalars(select(PairSet).where(PairSet.id.in_(ids)))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise StudyError(f"unknown pair set id(s) {missing}: import them first (sfgeval import DIR)")
    return [found[i] for i in ids]


def _compared(session: Session, ids: list[int], comparisons: Any) -> list[PairSet]:
    """The pair sets a study compares: `ids` with K-arm sets expanded by `comparisons` (app.studies.arm_sets)."""
    from app.studies.arm_sets import expand_pair_sets

    try:
        return expand_pair_sets(session, _pair_sets(session, ids), comparisons)
    except ValueError as e:
        raise StudyError(str(e)) from None


def comparison_label(ps: PairSet) -> str:
    return f"{ps.name}: {ps.treatment_arm} vs {ps.baseline_arm}"


def study_config(study: Study) -> dict[str, Any]:
    """The study as a config dict that `create_study` accepts (round-trips)."""
    return {
        "title": study.title,
        "slug": study.slug,
        "instructions": study.instructions,
        "question": study.question,
        # Only when set: a one-question study's config (and its export) stays as it was.
        **({"questions": [dict(q) for q in study.questions]} if study.questions else {}),
        **({"primary": study.primary_criterion} if study.primary_criterion else {}),
        "scale_labels": list(study.scale_labels),
        "pair_sets": [c.pair_set_id for c in study.comparisons],
        **_comparisons_field(study),
        "pairs_per_participant": study.pairs_per_participant,
        "ratings_per_pair": study.ratings_per_pair,
        "gold_rate": study.gold_rate,
        "repeats": study.repeats,
        "min_response_ms": study.min_response_ms,
        "practice_trials": study.practice_trials,
        "hold_minutes": study.hold_minutes,
        "completion_code": study.completion_code,
        "redirect_url": study.redirect_url,
        "exclusion_rules": dict(study.exclusion_rules or {}),
        "monitoring": MonitoringSettings.model_validate(study.monitoring or {}).model_dump(),
        "auto_close": bool(study.auto_close),
        "code_when_full": bool(study.code_when_full),
        "compare_tools": study.compare_tools,
        "max_upscale": study.max_upscale,
        "fast_answers": study.fast_answers,
        "fast_share_limit": study.fast_share_limit,
        "returned_message": study.returned_message,
        "gold_instruction": study.gold_instruction,
        "about": StudyAbout.model_validate(study.about or {}).model_dump(exclude_none=True),
        "state": study.state,
        "seed": study.seed,
    }


def _comparisons_field(study: Study) -> dict[str, Any]:
    """`comparisons` as an explicit list when the study compares arms of a K-arm set (round-trips), else nothing."""
    from app.studies.arm_sets import explicit_comparisons

    pairs = explicit_comparisons([c.pair_set for c in study.comparisons])
    return {"comparisons": pairs} if pairs else {}


def _snapshot(session: Session, study: Study, note: dict[str, Any] | None = None) -> None:
    session.flush()
    session.add(StudyVersion(study_id=study.id, version=study.version, config=study_config(study), note=note))
    session.flush()


_PLAIN_FIELDS = (
    "title", "instructions", "question", "scale_labels", "pairs_per_participant", "ratings_per_pair",
    "gold_rate", "repeats", "min_response_ms", "practice_trials", "hold_minutes", "redirect_url",
    "exclusion_rules", "auto_close", "code_when_full", "state", "compare_tools", "max_upscale", "fast_answers", "fast_share_limit",
    "returned_message", "gold_instruction",
)


def _criteria_fields(cfg: StudyConfig) -> dict[str, Any]:
    """The Study columns of `cfg.questions` and `cfg.primary` (None when not set)."""
    return {"questions": [q.stored() for q in cfg.questions] if cfg.questions else None,
            "primary_criterion": cfg.primary}


def create_study(session: Session, config: StudyConfig | dict[str, Any]) -> Study:
    """Create a study (version 1) with one comparison per pair set."""
    cfg = config if isinstance(config, StudyConfig) else parse_config(config)
    pair_sets = _compared(session, cfg.pair_sets, cfg.comparisons)
    if cfg.slug and session.scalar(select(Study.id).where(Study.slug == cfg.slug)) is not None:
        raise StudyError(f"a study with slug {cfg.slug!r} already exists")
    study = Study(
        slug=cfg.slug or _free_slug(session, slugify(cfg.title)),
        completion_code=cfg.completion_code or secrets.token_hex(4).upper(),
        seed=cfg.seed if cfg.seed is not None else secrets.randbelow(2**31),
        version=1,
        monitoring=cfg.monitoring.model_dump(),
        about=cfg.about.model_dump(exclude_none=True) or None,
        **_criteria_fields(cfg),
        **{f: getattr(cfg, f) for f in _PLAIN_FIELDS},
    )
    study.comparisons = [Comparison(pair_set_id=ps.id, label=comparison_label(ps)) for ps in pair_sets]
    session.add(study)
    _snapshot(session, study)
    return study


def update_study(session: Session, study: Study, changes: dict[str, Any], note: dict[str, Any] | None = None) -> Study:
    """Apply config `changes` (any StudyConfig fields), bump the version, store a snapshot.

    Changes that equal the current config are no edit: the version stays. The same rules hold
    for every caller (pages, command line): archived studies are read-only, and the exclusion
    rules and the seed are fixed once data has come in.
    """
    if study.state == "archived":
        raise StudyError("this study is archived and can no longer be edited")
    current = study_config(study)
    cfg = parse_config({**current, **changes})
    if cfg.model_dump() == parse_config(current).model_dump():
        return study
    if cfg.state != study.state and cfg.state not in TRANSITIONS[study.state]:
        raise StudyError(f"a study that is {study.state} cannot be moved to {cfg.state}")
    if cfg.exclusion_rules != (study.exclusion_rules or {}) and has_ratings(session, study):
        raise StudyError("the exclusion rules cannot change once the study has ratings (set them before data comes in)")
    criteria = _criteria_fields(cfg)
    if criteria != {"questions": study.questions, "primary_criterion": study.primary_criterion} and (
            has_ratings(session, study)):
        raise StudyError("the questions and the primary criterion cannot change once the study has ratings")
    if cfg.slug != study.slug:
        raise StudyError("a study's slug cannot change (participant links use it)")
    if cfg.monitoring.look_every != current["monitoring"]["look_every"] and has_ratings(session, study):
        raise StudyError("monitoring.look_every cannot change once the study has ratings (the looks are planned)")
    if cfg.seed != study.seed and _has_trials(session, study):
        raise StudyError("the randomisation seed cannot change once participants have started")
    current = [c.pair_set_id for c in study.comparisons]
    wanted = [ps.id for ps in _compared(session, cfg.pair_sets, cfg.comparisons)]
    if wanted != current:
        removed = set(current) - set(wanted)
        if removed and _has_trials(session, study):
            raise StudyError("pair sets cannot be removed once participants have started")
        keep = [c for c in study.comparisons if c.pair_set_id in wanted]
        have = {c.pair_set_id for c in keep}
        for ps in _pair_sets(session, [i for i in wanted if i not in have]):
            keep.append(Comparison(pair_set_id=ps.id, label=comparison_label(ps)))
        study.comparisons = keep
    if cfg.ratings_per_pair != study.ratings_per_pair and has_ratings(session, study):
        note = {**(note or {}), "planned_total": _planned_change(session, study, cfg.ratings_per_pair)}
    for f in _PLAIN_FIELDS:
        setattr(study, f, getattr(cfg, f))
    study.monitoring = cfg.monitoring.model_dump()
    study.about = cfg.about.model_dump(exclude_none=True) or None
    study.questions, study.primary_criterion = criteria["questions"], criteria["primary_criterion"]
    study.completion_code = cfg.completion_code or study.completion_code
    study.seed = cfg.seed if cfg.seed is not None else study.seed
    study.version += 1
    _snapshot(session, study, note)
    return study


def _planned_change(session: Session, study: Study, ratings_per_pair: int) -> dict[str, Any]:
    """The version note of an edit of the ratings per pair once ratings exist (issue 23): the
    planned total per comparison before and after. Monitoring keeps the total locked at each
    comparison's first rating (`app.analysis.monitoring_study.planned_totals`); this records that
    the configured total changed and was not used by monitoring."""
    counts = dict(session.execute(
        select(Pair.pair_set_id, func.count(Pair.id))
        .where(Pair.pair_set_id.in_([c.pair_set_id for c in study.comparisons])).group_by(Pair.pair_set_id)
    ).all())
    return {"ratings_per_pair": {"before": study.ratings_per_pair, "after": ratings_per_pair},
            "per_comparison": {c.label: {"before": int(counts.get(c.pair_set_id, 0)) * study.ratings_per_pair,
                                         "after": int(counts.get(c.pair_set_id, 0)) * ratings_per_pair}
                               for c in study.comparisons},
            "monitoring": "the planned total stays locked at each comparison's first rating; this change sets "
                          "how many ratings are collected and is not used by monitoring"}


def set_state(session: Session, study: Study, state: str, note: dict[str, Any] | None = None) -> Study:
    """Open, close or archive a study (an edit like any other: the version goes up).

    `note` is stored with the new version (e.g. the monitoring stop that closed the study)."""
    if state not in STUDY_STATES:
        raise StudyError(f"unknown study state {state!r}; use one of {', '.join(STUDY_STATES)}")
    if state == study.state:
        raise StudyError(f"the study is already {state}")
    if state not in TRANSITIONS[study.state]:
        raise StudyError(f"a study that is {study.state} cannot be moved to {state}")
    if state == "open" and not study.comparisons:
        raise StudyError("a study needs at least one pair set before it can open")
    return update_study(session, study, {"state": state}, note)


def _has_trials(session: Session, study: Study) -> bool:
    return bool(session.scalar(select(func.count(Trial.id)).where(Trial.study_id == study.id)))


def has_ratings(session: Session, study: Study) -> bool:
    return bool(
        session.scalar(
            select(func.count(Rating.id)).join(Trial, Rating.trial_id == Trial.id).where(Trial.study_id == study.id)
        )
    )


def get_study(session: Session, slug: str) -> Study:
    study = session.scalar(select(Study).where(Study.slug == slug))
    if study is None:
        raise StudyError(f"no study with slug {slug!r}")
    return study
