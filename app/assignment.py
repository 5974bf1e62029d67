"""Who sees which pair next, and recording answers: the participant flow's rules in one module.

Rules (evaluation protocol, section 3):
- Each participant gets a plan at sign-up: optional practice trials first, then main trials with
  gold trials (at `gold_rate` per main trial) and `repeats` repeated pairs shuffled in. Sides are
  balanced per participant (equal left/right, shuffled). All of it comes from one RNG seeded by
  the study seed and the participant's recorded seed, so a plan can be reproduced.
- Main trials take the least-rated pairs first; a pair never gets more main ratings (answered or
  held) than `ratings_per_pair`, and a participant never sees the same pair twice except in a
  planned repeat, which shows an earlier pair again with the sides swapped.
- A trial is held for `hold_minutes`; an expired hold no longer counts and its slot is reissued.
- A participant holds at most two trials: the current one and the next (so the page can preload
  its images). Answers must come in order.
- Race-free: every allocation and every answer runs under the study's lock (row lock on
  PostgreSQL; on SQLite every transaction is BEGIN IMMEDIATE, see `app.db`).
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Comparison, Image, Pair, Participant, Rating, Study, Trial
from app.scoring import score_from_choice, swap_side

LOOKAHEAD = 2  # trials held at once: the current one and the preloaded next one
MAX_EXTERNAL_IDS = 20
CROWD_ID_KEYS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "workerId", "assignmentId", "hitId")
# The ids that identify a person across devices, in order of preference.
PERSON_KEYS = ("PROLIFIC_PID", "workerId")


class FlowError(Exception):
    """A request the participant flow refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def lock_study(session: Session, study_id: int) -> Study:
    """Take the study's lock for the rest of the transaction and return the fresh study row."""
    stmt = select(Study).where(Study.id == study_id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    study = session.scalar(stmt)
    if study is None:
        raise FlowError(404, "no such study")
    return study


def hold_for(study: Study, default_minutes: float) -> timedelta:
    return timedelta(minutes=study.hold_minutes or default_minutes)


# ------------------------------------------------------------------ plans
def make_plan(study: Study, participant_seed: int) -> dict[str, Any]:
    """The trial kinds and treatment sides for one participant, from the seeded RNG.

    Returns {"kinds": [...], "sides": [...], "skipped": []}; index = trial position.
    """
    rng = random.Random(f"plan:{study.seed}:{participant_seed}")
    n_main = study.pairs_per_participant
    n_gold = round(study.gold_rate * n_main)
    n_repeat = min(study.repeats, n_main)
    body = ["main"] * n_main + ["gold"] * n_gold
    rng.shuffle(body)
    if n_repeat:
        # Repeats go after the n_repeat-th main trial, so each has an earlier pair to repeat.
        mains = [i for i, k in enumerate(body) if k == "main"]
        after = mains[n_repeat - 1] + 1
        for _ in range(n_repeat):
            body.insert(rng.randint(after, len(body)), "repeat")
    kinds = ["practice"] * study.practice_trials + body
    sides = (["left", "right"] * (len(kinds) // 2 + 1))[: len(kinds)]
    rng.shuffle(sides)
    return {"kinds": kinds, "sides": sides, "skipped": []}


def _rng(study: Study, participant: Participant, position: int, what: str) -> random.Random:
    return random.Random(f"{what}:{study.seed}:{participant.seed}:{position}")


# ------------------------------------------------------------------ participants
def clean_external_ids(raw: dict[str, Any] | None) -> dict[str, str]:
    if not raw:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_EXTERNAL_IDS:
        raise FlowError(422, f"external_ids must be an object with at most {MAX_EXTERNAL_IDS} entries")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, (str, int)) or len(k) > 64 or len(str(v)) > 200:
            raise FlowError(422, "external_ids values must be strings of at most 200 characters")
        if str(v):
            out[k] = str(v)
    return out


def create_participant(
    session: Session, study: Study, external_ids: dict[str, Any] | None, now: datetime
) -> tuple[Participant, bool]:
    """A new participant of an open study, or the existing one with the same crowd id.

    Returns (participant, created). Commits.
    """
    if study.state != "open":
        raise FlowError(409, "this study is not open for participants")
    ids = clean_external_ids(external_ids)
    key = next((f"{k}:{ids[k]}" for k in PERSON_KEYS if ids.get(k)), None)
    if key is not None:
        found = session.scalar(
            select(Participant).where(Participant.study_id == study.id, Participant.external_key == key)
        )
        if found is not None:
            return found, False
    seed = secrets.randbelow(2**31)
    participant = Participant(
        study_id=study.id,
        token=secrets.token_hex(32),
        external_ids=ids,
        external_key=key,
        seed=seed,
        plan=make_plan(study, seed),
        consented_at=now,
    )
    session.add(participant)
    try:
        session.commit()
    except IntegrityError:
        # The same crowd id signed up twice at once: the other request won; resume it.
        session.rollback()
        found = session.scalar(
            select(Participant).where(Participant.study_id == study.id, Participant.external_key == key)
        )
        if found is None:
            raise
        return found, False
    return participant, True


# ------------------------------------------------------------------ allocation
def _live(now: datetime):
    return or_(Trial.state == "answered", and_(Trial.state == "assigned", Trial.expires_at > now))


def _study_pairs(session: Session, study: Study) -> list[tuple[int, int, bool]]:
    """(pair id, comparison id, has gold twin) for every pair of the study, in id order."""
    rows = session.execute(
        select(Pair.id, Comparison.id, Pair.gold_image_id.is_not(None))
        .join(Comparison, Comparison.pair_set_id == Pair.pair_set_id)
        .where(Comparison.study_id == study.id)
        .order_by(Pair.id, Comparison.id)
    ).all()
    return [(r[0], r[1], bool(r[2])) for r in rows]


def _seen_pairs(session: Session, participant: Participant, now: datetime) -> set[int]:
    """Pairs this participant has compared (main, repeat, practice). Gold checks do not count:
    they show one image against its degraded twin, not the two methods."""
    return set(
        session.scalars(
            select(Trial.pair_id).where(Trial.participant_id == participant.id, Trial.kind != "gold", _live(now))
        )
    )


def _main_counts(session: Session, study: Study, now: datetime) -> dict[int, int]:
    rows = session.execute(
        select(Trial.pair_id, func.count(Trial.id))
        .where(Trial.study_id == study.id, Trial.kind == "main", _live(now))
        .group_by(Trial.pair_id)
    ).all()
    return {pair_id: n for pair_id, n in rows}


def available_main_pairs(session: Session, study: Study, participant: Participant | None, now: datetime) -> list[tuple[int, int, int]]:
    """(main count, pair id, comparison id) of pairs under target and unseen by the participant."""
    counts = _main_counts(session, study, now)
    seen = _seen_pairs(session, participant, now) if participant is not None else set()
    out = []
    for pair_id, comparison_id, _gold in _study_pairs(session, study):
        n = counts.get(pair_id, 0)
        if n < study.ratings_per_pair and pair_id not in seen:
            out.append((n, pair_id, comparison_id))
    return out


def _new_trial(study: Study, participant: Participant, position: int, kind: str, pair_id: int,
               comparison_id: int, side: str, now: datetime, hold: timedelta,
               repeat_of: int | None = None) -> Trial:
    return Trial(
        public_id=secrets.token_hex(16),
        study_id=study.id,
        participant_id=participant.id,
        pair_id=pair_id,
        comparison_id=comparison_id,
        position=position,
        kind=kind,
        treatment_side=side,
        repeat_of_trial_id=repeat_of,
        state="assigned",
        issued_at=now,
        expires_at=now + hold,
    )


def _allocate(session: Session, study: Study, participant: Participant, position: int,
              now: datetime, hold: timedelta) -> Trial | None:
    """A trial for plan slot `position`, or None when the slot cannot be filled (skip it)."""
    kind = participant.plan["kinds"][position]
    side = participant.plan["sides"][position]
    rng = _rng(study, participant, position, kind)
    if kind == "main":
        avail = available_main_pairs(session, study, participant, now)
        if not avail:
            return None
        least = min(n for n, _, _ in avail)
        _, pair_id, comparison_id = rng.choice([a for a in avail if a[0] == least])
        return _new_trial(study, participant, position, kind, pair_id, comparison_id, side, now, hold)
    if kind in ("practice", "gold"):
        # Practice takes a pair this participant will not compare later. A gold check prefers a
        # pair already compared (no new image exposure, and it takes nothing from the main
        # trials' pool), and never repeats a gold pair.
        seen = _seen_pairs(session, participant, now)
        same_kind = set(session.scalars(select(Trial.pair_id).where(
            Trial.participant_id == participant.id, Trial.kind == kind, _live(now))))
        usable = [(p, c) for p, c, gold in _study_pairs(session, study)
                  if (gold or kind == "practice") and p not in same_kind]
        if kind == "practice":
            pool = [(p, c) for p, c in usable if p not in seen]
        else:
            pool = [(p, c) for p, c in usable if p in seen] or usable
        if not pool:
            return None
        pair_id, comparison_id = rng.choice(pool)
        return _new_trial(study, participant, position, kind, pair_id, comparison_id, side, now, hold)
    # repeat: an earlier main trial of this participant not repeated yet, sides swapped
    earlier = session.scalars(
        select(Trial).where(
            Trial.participant_id == participant.id, Trial.kind == "main", _live(now), Trial.position < position
        ).order_by(Trial.position)
    ).all()
    repeated = set(
        session.scalars(
            select(Trial.repeat_of_trial_id).where(
                Trial.participant_id == participant.id, Trial.kind == "repeat", _live(now)
            )
        )
    )
    pool = [t for t in earlier if t.id not in repeated]
    if not pool:
        return None
    orig = rng.choice(pool)
    return _new_trial(study, participant, position, "repeat", orig.pair_id, orig.comparison_id,
                      swap_side(orig.treatment_side), now, hold, repeat_of=orig.id)


@dataclass
class NextResult:
    """What `next_trial` hands the route: the current trial, the preloaded one, progress."""

    trial: Trial | None
    preload: Trial | None
    done: int
    total: int


def _expire_own(session: Session, participant: Participant, now: datetime) -> None:
    session.execute(
        update(Trial)
        .where(Trial.participant_id == participant.id, Trial.state == "assigned", Trial.expires_at <= now)
        .values(state="expired")
    )


def progress(session: Session, participant: Participant) -> tuple[int, int]:
    done = session.scalar(
        select(func.count(Trial.id)).where(Trial.participant_id == participant.id, Trial.state == "answered")
    ) or 0
    plan = participant.plan
    return done, len(plan["kinds"]) - len(plan.get("skipped", []))


def next_trial(session: Session, participant: Participant, now: datetime, default_hold_minutes: float) -> NextResult:
    """The participant's current trial (allocating as needed), or trial=None when finished.

    Raises FlowError(409) when the study is not open or has no work left for this participant.
    Commits.
    """
    study = lock_study(session, participant.study_id)
    session.refresh(participant)
    if participant.finished_at is not None:
        d, t = progress(session, participant)
        return NextResult(None, None, d, t)
    if study.state != "open":
        raise FlowError(409, "this study is not open at the moment")
    _expire_own(session, participant, now)
    hold = hold_for(study, default_hold_minutes)
    rows = session.execute(
        select(Trial.position, Trial.state).where(Trial.participant_id == participant.id, Trial.state != "expired")
    ).all()
    answered = {p for p, s in rows if s == "answered"}
    if not rows and not available_main_pairs(session, study, participant, now):
        raise FlowError(409, "no work left: every pair in this study has all the ratings it needs")
    plan = dict(participant.plan)
    skipped = list(plan.get("skipped", []))
    held = {p for p, s in rows if s == "assigned"}
    position = 0
    while len(held) < LOOKAHEAD and position < len(plan["kinds"]):
        if position in answered or position in held or position in skipped:
            position += 1
            continue
        trial = _allocate(session, study, participant, position, now, hold)
        if trial is None:
            skipped.append(position)
        else:
            session.add(trial)
            session.flush()
            held.add(position)
        position += 1
    if skipped != plan.get("skipped", []):
        participant.plan = {**plan, "skipped": sorted(skipped)}
    open_trials = session.scalars(
        select(Trial)
        .where(Trial.participant_id == participant.id, Trial.state == "assigned")
        .order_by(Trial.position)
    ).all()
    if not open_trials:
        kinds = participant.plan["kinds"]
        if not any(kinds[p] != "practice" for p in answered):
            session.rollback()
            raise FlowError(409, "no work left: every pair in this study has all the ratings it needs")
        participant.finished_at = now
        session.commit()
        d, t = progress(session, participant)
        return NextResult(None, None, d, t)
    current = open_trials[0]
    if current.presented_at is None:
        # The hold runs from when the participant first sees the trial, not from the preload.
        current.presented_at = now
        current.expires_at = max(current.expires_at, now + hold)
    session.commit()
    d, t = progress(session, participant)
    return NextResult(current, open_trials[1] if len(open_trials) > 1 else None, d, t)


def trial_images(session: Session, trial: Trial) -> tuple[Image, Image]:
    """(left, right) images of a trial. For gold trials the intact image plays 'treatment'."""
    pair = session.get(Pair, trial.pair_id)
    if trial.kind == "gold":
        treatment_id = pair.baseline_image_id if pair.gold_degraded_arm == "baseline" else pair.treatment_image_id
        baseline_id = pair.gold_image_id
    else:
        treatment_id, baseline_id = pair.treatment_image_id, pair.baseline_image_id
    treatment, baseline = session.get(Image, treatment_id), session.get(Image, baseline_id)
    return (treatment, baseline) if trial.treatment_side == "left" else (baseline, treatment)


# ------------------------------------------------------------------ answers
@dataclass
class AnswerResult:
    rating: Rating
    created: bool
    trial_public_id: str


def _replay(session: Session, participant: Participant, public_id: str, request_id: str) -> AnswerResult | None:
    """The stored result for `request_id`, if this participant already sent it for this trial."""
    found = session.execute(
        select(Rating, Trial).join(Trial, Trial.id == Rating.trial_id).where(Rating.request_id == request_id)
    ).first()
    if found is None:
        return None
    rating, trial = found
    if trial.public_id != public_id or trial.participant_id != participant.id:
        raise FlowError(409, "this request_id was already used for a different trial; send a new one")
    return AnswerResult(rating, False, trial.public_id)


def submit_answer(
    session: Session,
    participant: Participant,
    public_id: str,
    choice: int,
    request_id: str,
    now: datetime,
    client_response_ms: int | None = None,
) -> AnswerResult:
    """Store one rating, idempotently per `request_id`. Raises FlowError (4xx) for bad answers.

    Commits.
    """
    if type(choice) is not int or choice not in (1, 2, 3, 4, 5):
        raise FlowError(422, "choice must be an integer from 1 (left much better) to 5 (right much better)")
    if not request_id or len(request_id) > 100:
        raise FlowError(422, "request_id must be a non-empty string of at most 100 characters")
    replay = _replay(session, participant, public_id, request_id)
    if replay is not None:
        return replay
    trial = session.scalar(select(Trial).where(Trial.public_id == public_id))
    if trial is None:
        raise FlowError(404, "unknown trial")
    if trial.participant_id != participant.id:
        raise FlowError(403, "this trial belongs to another participant")
    study = lock_study(session, trial.study_id)
    session.refresh(trial)
    # Re-check under the lock: a concurrent retry may have stored it meanwhile.
    replay = _replay(session, participant, public_id, request_id)
    if replay is not None:
        session.rollback()
        return replay
    if trial.state == "answered":
        raise FlowError(409, "this trial was already answered (with a different request_id)")
    if trial.state == "expired" or trial.expires_at <= now:
        trial.state = "expired"
        session.commit()
        raise FlowError(409, "this trial's hold expired and it may have gone to someone else; load the next trial")
    earlier = session.scalar(
        select(func.count(Trial.id)).where(
            Trial.participant_id == participant.id, Trial.state == "assigned", Trial.position < trial.position
        )
    )
    if earlier or trial.presented_at is None:
        raise FlowError(409, "answer the current trial first (this one has not been shown yet)")
    response_ms = max(0, int((now - trial.presented_at).total_seconds() * 1000))
    rating = Rating(
        trial_id=trial.id,
        request_id=request_id,
        study_version=study.version,
        choice=choice,
        score=score_from_choice(choice, trial.treatment_side),
        treatment_side=trial.treatment_side,
        response_ms=response_ms,
        client_response_ms=client_response_ms,
        too_fast=response_ms < study.min_response_ms,
        answered_at=now,
    )
    trial.state = "answered"
    session.add(rating)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        replay = _replay(session, participant, public_id, request_id)
        if replay is not None:
            return replay
        raise FlowError(409, "this trial was already answered (with a different request_id)") from None
    return AnswerResult(rating, True, trial.public_id)
