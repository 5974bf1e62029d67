"""Recording answers: one rating row per criterion of a trial (one for a one-question study), all
written by one request in one transaction, idempotent per `request_id`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, bindparam, cast, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from app.assignment.allocation import committed
from app.assignment.errors import FlowError
from app.store.db import end_reads
from app.store.models import COMPARE_COLUMNS, Pair, PairTally, Participant, Rating, Study, Trial, with_values
from app.statistics.criteria import criterion_keys, ordered_criteria, primary_criterion
from app.statistics.scoring import CHOICES, score_from_choice


@dataclass
class AnswerResult:
    rating: Rating  # the primary criterion's
    created: bool
    trial_public_id: str
    auto_close: bool = False  # the study closes itself at target (checked after a new rating)
    study_id: int | None = None
    monitoring_close: bool = False  # the study closes itself at a monitoring stop (checked after a new rating)
    answers: dict[str, int] | None = None  # criterion -> choice, every criterion the request answered


# A primary row (every answer has exactly one), written so that the partial unique index on
# request_id (`uq_ratings_primary_request`, WHERE is_primary) serves the lookup on both backends.
_IS_PRIMARY = literal_column("ratings.is_primary")


# submit_answer's statements, built once and bound per call. They read and write plain columns
# through the session's connection (SQLAlchemy Core): this path creates no ORM objects and runs no
# unit of work, which cost more CPU than PostgreSQL spends on the statements.
_earlier_trial = aliased(Trial)


def _answer_lookup(requester_id):
    """The trial with its study's fields; `requester_id`: the id of the participant answering."""
    return (
        select(
            Trial.id, Trial.participant_id, Trial.study_id, Trial.pair_id, Trial.kind, Trial.state, Trial.reserved,
            Trial.expires_at, Trial.presented_at, Trial.treatment_side, Trial.public_id,
            Study.version.label("study_version"),
            Study.min_response_ms.label("min_response_ms"),
            Study.ratings_per_pair.label("ratings_per_pair"),
            select(func.count(_earlier_trial.id))
            .where(_earlier_trial.participant_id == Trial.participant_id, _earlier_trial.state == "assigned",
                   _earlier_trial.position < Trial.position)
            .scalar_subquery()
            .label("unanswered_before"),
            select(Rating.id).where(Rating.request_id == bindparam("request_id"), _IS_PRIMARY).scalar_subquery()
            .label("request_rating_id"),
            Study.questions.label("questions"),
            Study.primary_criterion.label("primary_criterion"),
            Study.auto_close.label("auto_close"),
            Study.monitoring["auto_close"].as_boolean().label("monitoring_close"),
            Study.fast_answers.label("fast_answers"),
            requester_id.label("requester_id"),
        )
        .join(Study, Study.id == Trial.study_id)
        .where(Trial.public_id == bindparam("public_id"))
    )


_PARTICIPANT_ID = select(Participant.id).where(Participant.token == bindparam("token"))
# By participant id (library callers), or by token: then the participant is found in the same
# round trip as the trial (NULL when the token is unknown).
_ANSWER_LOOKUP = {False: _answer_lookup(bindparam("participant_id", type_=Integer)),
                  True: _answer_lookup(_PARTICIPANT_ID.scalar_subquery())}
UNKNOWN_TOKEN = "unknown participant token"


def participant_id_of(session: Session, participant: Participant | str) -> int:
    """The id of `participant`, or of the participant with that token (FlowError 403 if none)."""
    if not isinstance(participant, str):
        return participant.id
    found = session.connection().scalar(_PARTICIPANT_ID, {"token": participant})
    if found is None:
        raise FlowError(403, UNKNOWN_TOKEN)
    return found


ALREADY_ANSWERED = "this trial was already answered (with a different request_id)"
EXPIRED = "this trial's hold expired and it may have gone to someone else; load the next trial"
PAIR_FULL = "this pair got all the ratings it needs meanwhile; load the next trial"

_LOCK_PAIR = select(Pair.id).where(Pair.id == bindparam("pair_id")).with_for_update(key_share=True)
_COMMITTED_OF_PAIR = select(func.count(Trial.id)).where(
    Trial.pair_id == bindparam("pair_id"), Trial.study_id == bindparam("study_id"), Trial.kind == "main",
    committed(bindparam("now")),
)
_trials = Trial.__table__
_TRIAL_STATE = select(_trials.c.state).where(_trials.c.id == bindparam("trial_id"))
_REFUSE = (update(_trials).where(_trials.c.id == bindparam("trial_id"), _trials.c.state == "assigned")
           .values(state="expired"))
_ANSWER = (update(_trials)
           .where(_trials.c.id == bindparam("trial_id"), _trials.c.state == "assigned",
                  _trials.c.expires_at > bindparam("now"))
           .values(state="answered"))
_INSERT_RATING = insert(Rating.__table__)
_tallies = PairTally.__table__


def _count_answer(dialect_insert):
    """+1 on the (study, pair) tally, creating it at 1 (an upsert: concurrent first answers are safe)."""
    return (dialect_insert(_tallies)
            .values(study_id=bindparam("study_id"), pair_id=bindparam("pair_id"), answered=1)
            .on_conflict_do_update(index_elements=[_tallies.c.study_id, _tallies.c.pair_id],
                                   set_={"answered": _tallies.c.answered + 1}))


_COUNT_ANSWER = {"postgresql": _count_answer(postgresql_insert), "sqlite": _count_answer(sqlite_insert)}

_ratings = Rating.__table__
# Every column of a rating row but its id and trial (the compare columns NULL when not sent, as
# when they are left out of the INSERT: they have no default).
_RATING_VALUES = ("request_id", "criterion", "is_primary", "study_version", "choice", "score", "treatment_side",
                  "response_ms", "client_response_ms", "too_fast", "answered_at", *COMPARE_COLUMNS)


def _answer_in_one(count: bool):
    """PostgreSQL: `_ANSWER`, `_COUNT_ANSWER` (`count`: a main trial) and `_INSERT_RATING` of a
    one-row answer as one statement, one round trip instead of three. The conditional UPDATE is a
    CTE whose RETURNING row (none when the trial is no longer assigned or its hold ran out) feeds
    the tally upsert and the rating INSERT, so they happen exactly when the trial moves, in the
    same transaction, as before: the INSERT's row count says whether the answer won."""
    won = (update(_trials)
           .where(_trials.c.id == bindparam("trial_id"), _trials.c.state == "assigned",
                  _trials.c.expires_at > bindparam("now"))
           .values(state="answered")
           .returning(_trials.c.id, _trials.c.study_id, _trials.c.pair_id)
           .cte("won"))
    stmt = insert(_ratings).from_select(
        ["trial_id", *_RATING_VALUES],
        # Typed casts: a NULL parameter in a SELECT list would otherwise be taken for text. No
        # length on text (a cast to VARCHAR(n) would cut a longer value instead of refusing it).
        # The parameters are named "rating_<column>": a parameter named like a column of trials
        # would also be SET by the UPDATE (SQLAlchemy adds SET clauses for such names).
        select(won.c.id, *(cast(bindparam(f"rating_{c}", type_=_ratings.c[c].type),
                                String() if isinstance(_ratings.c[c].type, String) else _ratings.c[c].type)
                           for c in _RATING_VALUES)),
    )
    if count:
        tally = (postgresql_insert(_tallies)
                 .from_select(["study_id", "pair_id", "answered"],
                              select(won.c.study_id, won.c.pair_id, literal_column("1", Integer)))
                 .on_conflict_do_update(index_elements=[_tallies.c.study_id, _tallies.c.pair_id],
                                        set_={"answered": _tallies.c.answered + 1}))
        stmt = stmt.add_cte(tally.cte("counted"))
    # The INSERT's row count is the answer's outcome: SQLAlchemy keeps it only for UPDATE and
    # DELETE unless asked (else -1, which would read as a win).
    return stmt.execution_options(preserve_rowcount=True)


_ANSWER_IN_ONE = {True: _answer_in_one(True), False: _answer_in_one(False)}


def _forget(session: Session, trial_id: int) -> None:
    """The Core UPDATEs bypass the identity map: a caller that keeps its session across calls (a
    script, a test) must not see the trial's old state afterwards."""
    trial = session.identity_map.get(session.identity_key(Trial, trial_id))
    if trial is not None:
        session.expire(trial)


def _room_for_provisional(session: Session, trial, now: datetime, target: int) -> bool:
    """Whether a provisional main trial's answer keeps its pair within target (see
    `allocation.committed`). Takes the pair's row lock (waiting: allocation only ever skips
    locked pairs, so this cannot deadlock), so two such answers cannot both take the last slot."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_PAIR, {"pair_id": trial.pair_id})
    n = conn.scalar(_COMMITTED_OF_PAIR, {"pair_id": trial.pair_id, "study_id": trial.study_id, "now": now})
    return n < target


class _TryReplay(Exception):
    """Raised inside `_store` where the request may be a replay: `submit_answer` then looks the
    request id up (its one replay path) and, if it is not a replay, raises `otherwise()`.
    `participant_id`: the answering participant's, when known by then."""

    def __init__(self, otherwise: Callable[[], FlowError], participant_id: int | None = None):
        super().__init__()
        self.otherwise, self.participant_id = otherwise, participant_id


def _replay(session: Session, participant_id: int, public_id: str, request_id: str) -> AnswerResult | None:
    """The stored result for `request_id`, if this participant already sent it for this trial."""
    found = session.execute(
        select(Rating, Trial).join(Trial, Trial.id == Rating.trial_id)
        .where(Rating.request_id == request_id, _IS_PRIMARY)
    ).first()
    if found is None:
        return None
    rating, trial = found
    if trial.public_id != public_id or trial.participant_id != participant_id:
        raise FlowError(409, "this request_id was already used for a different trial; send a new one")
    answers = dict(session.execute(select(Rating.criterion, Rating.choice).where(
        Rating.trial_id == trial.id, Rating.request_id == request_id).order_by(Rating.id)).all())
    return AnswerResult(rating, False, trial.public_id, study_id=trial.study_id, answers=answers)


def _criteria_answers(found, choice: int | None, answers: dict[str, int] | None) -> tuple[list[tuple[str, int]], str]:
    """[(criterion, choice)], the primary first, and the primary's key, for the study's questions;
    FlowError 422 when the request does not answer exactly the study's questions."""
    keys = criterion_keys(found.questions)
    primary = primary_criterion(found.questions, found.primary_criterion)
    if answers is None:
        if len(keys) > 1:
            raise FlowError(422, f"this study asks {len(keys)} questions: send \"answers\": {{KEY: 1..5}} for each of "
                                 f"{', '.join(keys)}")
        answers = {keys[0]: choice}
    missing, unknown = [k for k in keys if k not in answers], [k for k in answers if k not in keys]
    if unknown:
        named = ", ".join(repr(k[:40]) for k in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise FlowError(422, f"unknown question key(s) {named}; this study asks "
                             f"{', '.join(keys)}")
    if missing:
        raise FlowError(422, f"answer every question: missing {', '.join(missing)}")
    return [(k, answers[k]) for k in ordered_criteria(keys, primary)], primary


_CHOICE_PROBLEM = "choice must be an integer from 1 (left much better) to 5 (right much better)"


def _answers_problem(choice: Any, answers: Any) -> str | None:
    """What is wrong with the request's answer fields (the study's keys are checked later), or None."""
    if answers is None:
        return None if type(choice) is int and choice in CHOICES else _CHOICE_PROBLEM
    if choice is not None:
        return "send either choice (one-question studies) or answers, not both"
    if not isinstance(answers, dict) or not answers:
        return "answers must be an object {question key: 1..5}"
    for key, value in answers.items():
        if not isinstance(key, str) or type(value) is not int or value not in CHOICES:
            return "answers: each value must be an integer from 1 (left much better) to 5 (right much better)"
    return None


def submit_answer(
    session: Session,
    participant: Participant | str,
    public_id: str,
    choice: int | None,
    request_id: str,
    now: datetime,
    client_response_ms: int | None = None,
    compared: dict[str, Any] | None = None,
    answers: dict[str, int] | None = None,
) -> AnswerResult:
    """Store one answer, idempotently per `request_id`. Raises FlowError (4xx) for bad answers.

    `choice`: the answer of a one-question study; `answers`: {criterion key: 1..5} answering every
    question of the study (then `choice` is None). One rating row per criterion, all or none.

    `participant`: the Participant answering, or their token (looked up in the trial's round trip;
    FlowError 403 when unknown). Commits. The trial moves from 'assigned' to 'answered' with a
    conditional UPDATE, so a double click, a retry and a hold expiring at the same moment resolve
    to exactly one outcome.
    """
    try:
        problem = _answers_problem(choice, answers)
        if problem is None and (not request_id or len(request_id) > 100):
            problem = "request_id must be a non-empty string of at most 100 characters"
        if problem is not None:
            participant_id_of(session, participant)  # an unknown participant hears that first
            raise FlowError(422, problem)
        try:
            return _store(session, participant, public_id, choice, request_id, now, client_response_ms, compared,
                          answers)
        except _TryReplay as maybe:
            # Nothing was written on these paths (a failed INSERT has rolled back already): end the
            # reads, so that the replay lookup sees what committed meanwhile.
            end_reads(session)
            pid = maybe.participant_id
            if pid is None:
                pid = participant_id_of(session, participant)
            replay = _replay(session, pid, public_id, request_id)
            if replay is not None:
                return replay
            raise maybe.otherwise() from None
    except FlowError:
        end_reads(session)  # refused before writing anything, or after committing
        raise


def _store(session: Session, participant: Participant | str, public_id: str, choice: int | None, request_id: str,
           now: datetime, client_response_ms: int | None, compared: dict[str, Any] | None,
           answers: dict[str, int] | None) -> AnswerResult:
    # One round trip for the trial, the study fields the rating needs, the unanswered trials
    # before it (answers must come in order), whether `request_id` was seen before, and (given a
    # token) who is answering.
    conn = session.connection()
    by_token = isinstance(participant, str)
    params = {"public_id": public_id, "request_id": request_id}
    params.update({"token": participant} if by_token else {"participant_id": participant.id})
    found = conn.execute(_ANSWER_LOOKUP[by_token], params).first()
    if found is None:
        raise _TryReplay(lambda: FlowError(404, "unknown trial"))
    participant_id = found.requester_id
    if participant_id is None:
        raise FlowError(403, UNKNOWN_TOKEN)
    if found.request_rating_id is not None:
        raise _TryReplay(lambda: FlowError(409, "this request_id or trial was already used"), participant_id)
    trial = found  # the trial's columns, by name
    if trial.participant_id != participant_id:
        raise FlowError(403, "this trial belongs to another participant")
    criteria, primary = _criteria_answers(found, choice, answers)
    if trial.state == "answered":
        # Maybe by this very request, committed since the lookup above.
        raise _TryReplay(lambda: FlowError(409, ALREADY_ANSWERED), participant_id)
    if trial.state == "expired" or trial.expires_at <= now:
        raise FlowError(409, EXPIRED)
    if found.unanswered_before or trial.presented_at is None:
        raise FlowError(409, "answer the current trial first (this one has not been shown yet)")
    trial_id = trial.id
    response_ms = max(0, int((now - trial.presented_at).total_seconds() * 1000))
    if found.fast_answers == "block" and response_ms < found.min_response_ms:
        raise FlowError(425, f"answered too soon: take at least {found.min_response_ms} ms to look at both images",
                        "too_fast")

    def answered_or_expired() -> FlowError:
        state = session.connection().scalar(_TRIAL_STATE, {"trial_id": trial_id})  # after a rollback
        return FlowError(409, ALREADY_ANSWERED if state == "answered" else EXPIRED)

    if trial.kind == "main" and not trial.reserved and not _room_for_provisional(
        session, trial, now, found.ratings_per_pair
    ):
        refused = conn.execute(_REFUSE, {"trial_id": trial_id}).rowcount
        if not refused:  # a concurrent request answered it (maybe this very request_id)
            raise _TryReplay(answered_or_expired, participant_id)
        session.commit()
        _forget(session, trial_id)
        raise FlowError(409, PAIR_FULL, "pair_full")
    shared = dict(
        trial_id=trial.id,
        request_id=request_id,
        study_version=found.study_version,
        treatment_side=trial.treatment_side,
        response_ms=response_ms,
        client_response_ms=client_response_ms,
        too_fast=response_ms < found.min_response_ms,
        answered_at=now,
        **(compared or {}),
    )
    # One row per criterion, the primary first; several rows go as one executemany (one statement
    # for the driver to pipeline), in the transaction that answers the trial: all or nothing.
    rows = [dict(shared, criterion=key, is_primary=key == primary, choice=c,
                 score=score_from_choice(c, trial.treatment_side)) for key, c in criteria]
    values = rows[0]
    in_one = conn.dialect.name == "postgresql" and len(rows) == 1
    try:
        if in_one:
            won = conn.execute(_ANSWER_IN_ONE[trial.kind == "main"],
                               {"trial_id": trial_id, "now": now,
                                **{f"rating_{c}": values.get(c) for c in _RATING_VALUES}}).rowcount
        else:
            won = conn.execute(_ANSWER, {"trial_id": trial_id, "now": now}).rowcount
        if not won:
            # A concurrent request answered it (maybe this very request_id) or it just expired.
            raise _TryReplay(answered_or_expired, participant_id)
        if not in_one:
            if trial.kind == "main":  # in this transaction, so the tally moves exactly when the trial does
                conn.execute(_COUNT_ANSWER[conn.dialect.name], {"study_id": trial.study_id, "pair_id": trial.pair_id})
            conn.execute(_INSERT_RATING, rows if len(rows) > 1 else values)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _TryReplay(lambda: FlowError(409, "this request_id or trial was already used"),
                         participant_id) from None
    _forget(session, trial_id)
    # What the route reports back (not attached to the session: the row is already stored).
    return AnswerResult(with_values(Rating, values), True, trial.public_id, bool(found.auto_close), trial.study_id,
                        bool(found.monitoring_close), dict(criteria))
