"""Deliberate answers: what a study does with answers faster than its `min_response_ms`.

`Study.fast_answers`:
- 'block': the answer buttons unlock only after `min_response_ms` (a countdown shows), and the
  server refuses an earlier answer (425, reason 'too_fast'; nothing is stored).
- 'warn' (default): the buttons unlock after the countdown; an earlier answer (a script, the
  API) is stored, flagged `too_fast`, and the page warns; a participant whose too-fast share
  passes `Study.fast_share_limit` gets the "returned" page instead of the completion code.
- 'flag': the buttons work at once; fast answers are only flagged (`Rating.too_fast`).
The server measures the time from when the trial was handed out (`Trial.presented_at`), which
is never shorter than what the page waits, so a participant using the page is never caught out.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.models import Participant, Rating, Study, Trial

FAST_ANSWER_POLICIES = ("block", "warn", "flag")
DEFAULT_RETURNED_MESSAGE = (
    "Many of your answers came faster than anyone can compare two images, so we cannot accept this "
    "submission and have not shown a completion code. Please return the study on your platform."
)


def locks_answers(study: Study) -> bool:
    """Whether the page keeps the answer buttons locked for `min_response_ms`."""
    return study.fast_answers != "flag" and study.min_response_ms > 0


def fast_share(session: Session, participant: Participant) -> tuple[int, int]:
    """(too-fast answers, answers) of `participant`, practice trials left out."""
    fast, total = session.execute(
        select(func.count(Rating.id).filter(Rating.too_fast), func.count(Rating.id))
        .join(Trial, Trial.id == Rating.trial_id)
        .where(Trial.participant_id == participant.id, Trial.kind != "practice", Rating.is_primary)
    ).one()
    return int(fast or 0), int(total or 0)


def withholds_code(session: Session, study: Study, participant: Participant) -> bool:
    """True when the study returns `participant` (too-fast share past the limit) instead of paying."""
    if study.fast_answers == "flag" or study.fast_share_limit is None or not study.min_response_ms:
        return False
    fast, total = fast_share(session, participant)
    return total > 0 and fast / total > study.fast_share_limit


FULL_MESSAGE = (
    "The study filled up before you could answer every trial: every image pair now has all the "
    "ratings it needs. Thank you for your time."
)


def ended_full(participant: Participant) -> bool:
    """Whether the study filled up under `participant` before they answered every main trial
    they were promised (recorded when they finished, `app.assignment.allocation`)."""
    return participant.finished_at is not None and (participant.plan or {}).get("ended") == "full"


def ending(session: Session, study: Study, participant: Participant,
           fast: tuple[int, int] | None = None) -> str:
    """How a finished participant's study ends: 'code' (they get the completion code),
    'returned' (too many too-fast answers: `withholds_code`) or 'full' (the study filled up
    under them and the study gives no code then: `Study.code_when_full`). `fast`: their
    (too fast, answers) when the caller counted them already."""
    if _withholds(study, fast if fast is not None else None, session, participant):
        return "returned"
    if ended_full(participant) and not study.code_when_full:
        return "full"
    return "code"


def _withholds(study: Study, fast: tuple[int, int] | None, session: Session, participant: Participant) -> bool:
    if fast is None:
        return withholds_code(session, study, participant)
    if study.fast_answers == "flag" or study.fast_share_limit is None or not study.min_response_ms:
        return False
    n_fast, total = fast
    return total > 0 and n_fast / total > study.fast_share_limit


def fast_shares(session: Session, study: Study) -> dict[int, tuple[int, int]]:
    """(too-fast answers, answers) of every participant of `study`, practice left out (one query)."""
    rows = session.execute(
        select(Trial.participant_id, func.count(Rating.id).filter(Rating.too_fast), func.count(Rating.id))
        .join(Trial, Trial.id == Rating.trial_id)
        .where(Trial.study_id == study.id, Trial.kind != "practice")
        .group_by(Trial.participant_id)
    ).all()
    return {pid: (int(f or 0), int(n or 0)) for pid, f, n in rows}


def returned_message(study: Study) -> str:
    return study.returned_message or DEFAULT_RETURNED_MESSAGE
