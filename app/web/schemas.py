"""Response models of the admin JSON twins (`app.web.pages.twin`): what `.json` URLs return."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StudyRow(BaseModel):
    slug: str
    title: str
    state: str
    version: int
    ratings: int
    main_ratings: int
    target_ratings: int


class StudiesList(BaseModel):
    studies: list[StudyRow]


class PairSetRow(BaseModel):
    id: int
    name: str
    source: str | None
    manifest_sha256: str
    baseline_arm: str
    treatment_arm: str
    n_pairs: int
    imported_at: datetime | None


class PairSetsList(BaseModel):
    pair_sets: list[PairSetRow]


class ResponseTimes(BaseModel):
    median: int | None
    p10: int | None
    p90: int | None
    mean: int | None
    too_fast: int


class ComparisonProgress(BaseModel):
    pairs: int
    ratings: int
    pairs_complete: int


class PairProgress(BaseModel):
    pair_id: int
    pair: str
    pair_set: int
    comparison: str
    prompt_id: str | None
    prompt: str
    stratum: str | None
    ratings: int
    target: int
    analysable: int = 0


class Progress(BaseModel):
    study: str
    title: str
    state: str
    version: int
    participants_started: int
    participants_finished: int
    ratings: int
    ratings_by_kind: dict[str, int]
    pairs: int
    pairs_complete: int
    target_ratings: int
    ratings_per_pair: int
    open_holds: int
    response_ms: ResponseTimes
    per_comparison: dict[str, ComparisonProgress]
    per_pair: list[PairProgress]
    generated_at: str
    # Issue 25: the participant flow (app.analysis.participant_flow) and what exclusions leave.
    flow: dict[str, Any] | None = None
    analysable_ratings: int | None = None
    pairs_complete_analysable: int | None = None
    shortfall: int | None = None
    top_up: dict[str, int] | None = None


class PairSummary(BaseModel):
    pair_id: int
    pair_key: str
    pair_set: int
    comparison: str
    prompt_id: str
    prompt: str
    stratum: str | None
    seed: int
    baseline_arm: str
    treatment_arm: str
    params: dict
    has_token_map: bool
    n_ratings: int
    distribution: dict[str, int]
    mean_score: float | None
    agreement: float | None
    disagreement: float | None


class PairList(BaseModel):
    study: str
    title: str
    sort: str
    stratum: str | None
    comparison: str | None
    strata: list[str]
    comparisons: list[str]
    pairs: list[PairSummary]


class LegendEntry(BaseModel):
    index: int
    word: str
    colour: str
    label: str = ""  # the word, with its token position when it occurs twice
    swatch: str = ""  # the colour at the overlay's opacity


class PairDetail(BaseModel):
    study: str
    title: str
    pair: PairSummary
    legend: list[LegendEntry]


class ParticipantRow(BaseModel):
    participant: int
    PROLIFIC_PID: str | None
    STUDY_ID: str | None
    SESSION_ID: str | None
    workerId: str | None
    assignmentId: str | None
    hitId: str | None
    started_at: str
    finished_at: str | None
    seconds: int | None
    n_ratings: int
    fast_share: float | None
    gold_n: int
    gold_pass_rate: float | None
    repeats_n: int
    consistency: float | None
    agreement_n: int = Field(default=0, description="real trials on pairs other (kept) raters judged one way")
    agreement: float | None = Field(default=None, description="share of those answered the others' way (tie: half)")
    agreement_evidence: float | None = Field(
        default=None, description="log10 likelihood ratio, following the others vs answering blind "
                                  "(app.statistics.agreement)")
    excluded: bool
    exclusion_reasons: list[str]
    suggested: str = Field(description="APPROVE, REVIEW, REJECT or '' (not finished)")
    decision: str
    reason: str
    overridden: bool
    ending: str | None = Field(default=None, description="'code', 'returned' or 'full' once finished")
    study_full: bool = Field(default=False, description="the study filled up before they answered every trial")
    completion_code: str | None = Field(default=None, description="the code they were shown (None: none shown)")


class ParticipantsPage(BaseModel):
    study: str
    title: str
    participants: list[ParticipantRow]


class StatisticsReport(BaseModel):
    """statistics.json (`app.reporting.report.study_statistics`, `sfgeval report`): its top-level sections.

    The sections' contents are documented in docs/statistics.md; the twin sends the cached JSON
    text as it is (`app.web.pages.Serialised`), so this model declares the shape, it does not
    re-validate the numbers."""

    model_config = ConfigDict(extra="allow")

    schema_: str = Field(alias="schema")
    conventions: dict[str, Any]
    interval: dict[str, Any]
    bootstrap: dict[str, Any]
    design: dict[str, Any]
    exclusions: dict[str, Any]
    participants: list[dict[str, Any]]
    results: dict[str, Any]
    monitoring: dict[str, Any]
    comparing: Any
    study: dict[str, Any]
    study_versions_in_ratings: list[int]
    generated_at: str
    cache: dict[str, int]
