"""The participant flow's page-level rules that sit around `app.assignment`.

- `has_capacity`: whether a newcomer could get any work (checked before consent, so a full study
  says so up front instead of after the participant agreed).
- `split_progress`: progress with practice trials counted apart from the main trials.
- `trial_instruction`: the text a trial shows above the question (gold checks may carry one).
- `trial_questions`: the questions every trial asks (one, or several criteria: issue 24).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.store.models import Comparison, Pair, Study, Trial
from app.studies.config import study_questions


def has_capacity(session: Session, study: Study, now: datetime) -> bool:
    """True when some pair of `study` has fewer committed main ratings (answered, or reserved by
    a progressing participant and not expired at `now`; see `app.assignment.allocation.committed`)
    than its target: a new participant would get at least one main trial. Provisional holds
    (sign-ups that have not answered, preloads) do not count, so idle sign-ups cannot make the
    consent page say "full"."""
    full = (
        select(Trial.pair_id)
        .where(Trial.study_id == study.id, Trial.kind == "main",
               or_(Trial.state == "answered",
                   and_(Trial.state == "assigned", Trial.reserved.is_(True), Trial.expires_at > now)))
        .group_by(Trial.pair_id)
        .having(func.count(Trial.id) >= study.ratings_per_pair)
        .subquery()
    )
    open_pairs = session.scalar(
        select(func.count(Pair.id))
        .join(Comparison, Comparison.pair_set_id == Pair.pair_set_id)
        .where(Comparison.study_id == study.id, Pair.id.not_in(select(full.c.pair_id)))
    )
    return bool(open_pairs)


def split_progress(plan: dict[str, Any], current_position: int | None, done: int, total: int) -> dict[str, int]:
    """{"done", "total"} of the main part (practice left out) and {"practice_done", "practice_total"}.

    plan: the participant's plan; current_position: the trial on screen (None when finished);
    done/total: answered and planned trials, practice included (as `next_trial` counts them).
    Practice trials come first, so those before the current one have been answered.
    """
    skipped = set(plan.get("skipped", []))
    practice = [i for i, k in enumerate(plan.get("kinds", [])) if k == "practice" and i not in skipped]
    if current_position is not None and current_position in practice:
        practice_done = practice.index(current_position)
    else:
        practice_done = len(practice)
    return {
        "done": max(0, done - practice_done),
        "total": max(0, total - len(practice)),
        "practice_done": practice_done,
        "practice_total": len(practice),
    }


def trial_instruction(study: Study, kind: str) -> str | None:
    """The study's instruction for gold checks, shown on every trial but practice: shown on gold
    trials only, it would tell a script which trials are checks (issue 22)."""
    return study.gold_instruction if kind != "practice" else None


def trial_questions(study: Study) -> list[dict[str, Any]]:
    """What `/next` says about the questions: `[{key, text, low, high, labels}]` (issue 24; one entry
    for a one-question study). The same on every trial of a study: nothing here names an arm."""
    # Only what the page shows: which question a gold check targets is the researcher's business.
    return [{k: q[k] for k in ("key", "text", "low", "high", "labels")} for q in study_questions(study)]
