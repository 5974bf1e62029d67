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
- Race-free without a study-wide lock: see `_Allocation` (per-pair row locks that skip, never
  wait) and `submit_answer` (conditional state change). On SQLite every transaction is BEGIN
  IMMEDIATE (see `app.db`), which serialises writers.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import BindParameter

from app.models import Comparison, Image, Pair, Participant, Rating, Study, Trial
from app.repeats import repeat_gap, repeat_places
from app.scoring import score_from_choice, swap_side

LOOKAHEAD = 2  # trials held at once: the current one and the preloaded next one
MAX_EXTERNAL_IDS = 20
CROWD_ID_KEYS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "workerId", "assignmentId", "hitId")
# The ids that identify a person across devices, in order of preference.
PERSON_KEYS = ("PROLIFIC_PID", "workerId")


class FlowError(Exception):
    """A request the participant flow refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # machine-readable for the pages: 'no_work' | 'not_open' | None


def hold_for(study: Study, default_minutes: float) -> timedelta:
    return timedelta(minutes=study.hold_minutes or default_minutes)


# ------------------------------------------------------------------ plans
def make_plan(study: Study, participant_seed: int) -> dict[str, Any]:
    """The trial kinds and treatment sides for one participant, from the seeded RNG.

    Returns {"kinds": [...], "sides": [...], "skipped": [], "repeat_gap": G}; index = trial
    position. A repeat comes at least G = `repeat_gap(n)` trials after its original.
    """
    rng = random.Random(f"plan:{study.seed}:{participant_seed}")
    n_main = study.pairs_per_participant
    n_gold = round(study.gold_rate * n_main)
    n_repeat = min(study.repeats, n_main)
    body = ["main"] * n_main + ["gold"] * n_gold
    rng.shuffle(body)
    # The first trial after practice is a main one: it reserves a pair, so a participant never
    # does checks first only to find that the study has no work left.
    first_main = body.index("main")
    body[0], body[first_main] = body[first_main], body[0]
    gap = repeat_gap(n_main + n_gold + n_repeat)
    for _ in range(n_repeat):
        places = repeat_places(body, gap)
        if places:
            body.insert(rng.choice(places), "repeat")
    kinds = ["practice"] * study.practice_trials + body
    sides = (["left", "right"] * (len(kinds) // 2 + 1))[: len(kinds)]
    rng.shuffle(sides)
    return {"kinds": kinds, "sides": sides, "skipped": [], "repeat_gap": gap}


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
        raise FlowError(409, "this study is not open for participants", "not_open")
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
def _live(now: datetime | BindParameter):
    """Trials that count: answered ones and holds that have not expired (at `now`, a value or a bind)."""
    return or_(Trial.state == "answered", and_(Trial.state == "assigned", Trial.expires_at > now))


# Pairs never change after import and a study's comparisons change only with a new version, so
# each process keeps the list per (database, study, version).
_PAIRS_CACHE: dict[tuple[str, int, int], list[tuple[int, int, bool]]] = {}


def _study_pairs(session: Session, study: Study) -> list[tuple[int, int, bool]]:
    """(pair id, comparison id, has gold twin) for every pair of the study, in id order."""
    key = (str(session.get_bind().url), study.id, study.version)
    cached = _PAIRS_CACHE.get(key)
    if cached is None:
        rows = session.execute(
            select(Pair.id, Comparison.id, Pair.gold_image_id.is_not(None))
            .join(Comparison, Comparison.pair_set_id == Pair.pair_set_id)
            .where(Comparison.study_id == study.id)
            .order_by(Pair.id, Comparison.id)
        ).all()
        cached = [(r[0], r[1], bool(r[2])) for r in rows]
        if len(_PAIRS_CACHE) > 256:
            _PAIRS_CACHE.clear()
        _PAIRS_CACHE[key] = cached
    return cached


# The allocation's hot statements, built once and bound per call: on this path building a select()
# costs the server more CPU than Postgres spends running it.
_MAIN_COUNTS = (
    select(Trial.pair_id, func.count(Trial.id))
    .where(Trial.study_id == bindparam("study_id"), Trial.kind == "main", _live(bindparam("now")))
    .group_by(Trial.pair_id)
)
_OWN_TRIALS = (
    select(Trial).where(Trial.participant_id == bindparam("participant_id"), Trial.state != "expired")
    .order_by(Trial.position)
)
_LOCK_PAIR = select(Pair.id).where(Pair.id == bindparam("pair_id")).with_for_update(key_share=True, skip_locked=True)
_STALE_OF_PAIR = select(Trial.id).where(
    Trial.study_id == bindparam("study_id"), Trial.pair_id == bindparam("pair_id"), Trial.state == "assigned",
    Trial.expires_at <= bindparam("now"),
)
_STALE_OF_PAIR_SKIP_LOCKED = _STALE_OF_PAIR.with_for_update(key_share=True, skip_locked=True)
_LIVE_OF_PAIR = select(func.count(Trial.id)).where(
    Trial.study_id == bindparam("study_id"), Trial.pair_id == bindparam("pair_id"), Trial.kind == "main",
    Trial.state.in_(("assigned", "answered")),
)


def _main_counts(session: Session, study: Study, now: datetime) -> dict[int, int]:
    rows = session.execute(_MAIN_COUNTS, {"study_id": study.id, "now": now}).all()
    return {pair_id: n for pair_id, n in rows}


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


class _Allocation:
    """One `next_trial` call's view of the participant: fills plan slots with new trials.

    Concurrency (PostgreSQL): a main trial takes its pair's row lock (FOR NO KEY UPDATE SKIP
    LOCKED: a pair another request is allocating right now is skipped, never waited for, so no
    deadlock), expires that pair's stale holds with a conditional UPDATE (which serialises with a
    late answer's conditional UPDATE on the same trial row: exactly one of them wins), recounts
    and only then inserts. So a pair can never exceed its target, while different pairs are
    allocated in parallel. On SQLite every transaction holds the database lock anyway.
    """

    def __init__(self, session: Session, study: Study, participant: Participant, now: datetime, hold: timedelta):
        self.session, self.study, self.participant, self.now, self.hold = session, study, participant, now, hold
        self.postgres = session.get_bind().dialect.name == "postgresql"
        self.trials = session.scalars(_OWN_TRIALS, {"participant_id": participant.id}).all()
        self._counts: dict[int, int] | None = None

    @property
    def counts(self) -> dict[int, int]:
        if self._counts is None:
            self._counts = _main_counts(self.session, self.study, self.now)
        return self._counts

    def seen(self) -> set[int]:
        """Pairs this participant has compared (main, repeat, practice). Gold checks do not
        count: they show one image against its degraded twin, not the two methods."""
        return {t.pair_id for t in self.trials if t.kind != "gold"}

    def main_candidates(self) -> list[tuple[int, int]]:
        """(pair id, comparison id) under target and unseen, least-rated first (snapshot counts)."""
        seen, counts, target = self.seen(), self.counts, self.study.ratings_per_pair
        return [(p, c) for p, c, _ in _study_pairs(self.session, self.study)
                if p not in seen and counts.get(p, 0) < target]

    def _claim(self, pair_id: int) -> bool:
        """Lock `pair_id` and check, against committed data, that it is still under target."""
        if self.postgres and self.session.scalar(_LOCK_PAIR, {"pair_id": pair_id}) is None:
            return False
        # Expire this pair's stale holds. Rows another transaction holds right now (a late answer,
        # a participant expiring their own hold) are skipped and so still count below: that errs
        # on the safe side and means this transaction never waits on a row lock.
        params = {"study_id": self.study.id, "pair_id": pair_id, "now": self.now}
        stale = _STALE_OF_PAIR_SKIP_LOCKED if self.postgres else _STALE_OF_PAIR
        stale_ids = self.session.scalars(stale, params).all()
        if stale_ids:
            self.session.execute(
                update(Trial).where(Trial.id.in_(stale_ids), Trial.state == "assigned").values(state="expired")
            )
        live = self.session.scalar(_LIVE_OF_PAIR, {"study_id": self.study.id, "pair_id": pair_id})
        return live < self.study.ratings_per_pair

    def allocate(self, position: int) -> Trial | None:
        """A trial for plan slot `position`, or None when the slot cannot be filled (skip it)."""
        plan = self.participant.plan
        kind, side = plan["kinds"][position], plan["sides"][position]
        rng = random.Random(f"{kind}:{self.study.seed}:{self.participant.seed}:{position}")
        trial = None
        if kind == "main":
            counts = self.counts
            ranked = sorted(self.main_candidates(), key=lambda pc: (counts.get(pc[0], 0), rng.random()))
            for pair_id, comparison_id in ranked:
                if self._claim(pair_id):
                    counts[pair_id] = counts.get(pair_id, 0) + 1
                    trial = _new_trial(self.study, self.participant, position, kind, pair_id, comparison_id,
                                       side, self.now, self.hold)
                    break
        elif kind in ("practice", "gold"):
            # Practice takes a pair this participant will not compare later. A gold check prefers
            # a pair already compared (no new image exposure, and it takes nothing from the main
            # trials' pool), and never repeats a gold pair.
            seen = self.seen()
            same_kind = {t.pair_id for t in self.trials if t.kind == kind}
            usable = [(p, c) for p, c, gold in _study_pairs(self.session, self.study)
                      if (gold or kind == "practice") and p not in same_kind]
            if kind == "practice":
                pool = [(p, c) for p, c in usable if p not in seen]
            else:
                pool = [(p, c) for p, c in usable if p in seen] or usable
            if pool:
                pair_id, comparison_id = rng.choice(pool)
                trial = _new_trial(self.study, self.participant, position, kind, pair_id, comparison_id,
                                   side, self.now, self.hold)
        else:  # repeat: an earlier main trial not repeated yet, sides swapped
            repeated = {t.repeat_of_trial_id for t in self.trials if t.kind == "repeat"}
            gap = plan.get("repeat_gap", 1)
            pool = [t for t in self.trials
                    if t.kind == "main" and t.position <= position - gap and t.id not in repeated]
            if pool:
                orig = rng.choice(pool)
                trial = _new_trial(self.study, self.participant, position, "repeat", orig.pair_id,
                                   orig.comparison_id, swap_side(orig.treatment_side), self.now, self.hold,
                                   repeat_of=orig.id)
        if trial is not None:
            self.session.add(trial)
            self.session.flush()
            self.trials.append(trial)
        return trial


@dataclass
class NextResult:
    """What `next_trial` hands the route: the current trial, the preloaded one, progress."""

    trial: Trial | None
    preload: Trial | None
    done: int
    total: int


def _total(participant: Participant) -> int:
    plan = participant.plan
    return len(plan["kinds"]) - len(plan.get("skipped", []))


def progress(session: Session, participant: Participant) -> tuple[int, int]:
    """(answered trials, planned trials that will be shown) for the progress bar."""
    done = session.scalar(
        select(func.count(Trial.id)).where(Trial.participant_id == participant.id, Trial.state == "answered")
    ) or 0
    return done, _total(participant)


NO_WORK = "no work left: every pair in this study has all the ratings it needs"


def next_trial(session: Session, participant: Participant, now: datetime, default_hold_minutes: float,
               study: Study | None = None) -> NextResult:
    """The participant's current trial (allocating as needed), or trial=None when finished.

    `study`: the participant's study, if the caller loaded it fresh in the current transaction
    (saves a query); otherwise it is read here. Raises FlowError(409) when the study is not open
    or has no work left for this participant. Commits. Two simultaneous calls for one participant
    cannot fill a slot twice (unique live slot index); the loser retries.
    """
    for _attempt in range(3):
        try:
            return _next_trial(session, participant, now, default_hold_minutes, study)
        except IntegrityError:
            session.rollback()
            study = None  # read again in the retry's transaction
    raise FlowError(409, "too many simultaneous requests for this participant; try again")


def _next_trial(session: Session, participant: Participant, now: datetime, default_hold_minutes: float,
                study: Study | None) -> NextResult:
    if participant.finished_at is not None:
        session.rollback()
        d, t = progress(session, participant)
        return NextResult(None, None, d, t)
    if study is None:
        study = session.scalar(
            select(Study).where(Study.id == participant.study_id).execution_options(populate_existing=True)
        )
    if study.state != "open":
        raise FlowError(409, "this study is not open at the moment", "not_open")
    hold = hold_for(study, default_hold_minutes)
    alloc = _Allocation(session, study, participant, now, hold)
    # This participant's own stale holds: their slots are filled again below. Conditional, so a
    # late answer racing this either wins (answered) or loses (expired), never both.
    stale = [t for t in alloc.trials if t.state == "assigned" and t.expires_at <= now]
    if stale:
        session.execute(
            update(Trial).where(Trial.id.in_([t.id for t in stale]), Trial.state == "assigned").values(state="expired")
        )
        session.expire_all()
        alloc = _Allocation(session, study, participant, now, hold)
    first_call = not alloc.trials
    if first_call and not alloc.main_candidates():
        raise FlowError(409, NO_WORK, "no_work")
    plan = dict(participant.plan)
    skipped = list(plan.get("skipped", []))
    taken = {t.position for t in alloc.trials}
    held = [t for t in alloc.trials if t.state == "assigned"]
    position = 0
    while len(held) < LOOKAHEAD and position < len(plan["kinds"]):
        if position not in taken and position not in skipped:
            trial = alloc.allocate(position)
            if trial is None and first_call and plan["kinds"][position] == "main":
                session.rollback()  # others took the last pairs meanwhile
                raise FlowError(409, NO_WORK, "no_work")
            if trial is None:
                skipped.append(position)
            else:
                held.append(trial)
        position += 1
    if skipped != plan.get("skipped", []):
        participant.plan = {**plan, "skipped": sorted(skipped)}
    held.sort(key=lambda t: t.position)
    if not held:
        answered = [t for t in alloc.trials if t.state == "answered"]
        if not any(t.kind == "main" for t in answered):
            session.rollback()
            raise FlowError(409, NO_WORK, "no_work")
        participant.finished_at = now
        session.commit()
        return NextResult(None, None, len(answered), _total(participant))
    current = held[0]
    if current.presented_at is None:
        # The hold runs from when the participant first sees the trial, not from the preload.
        current.presented_at = now
        current.expires_at = max(current.expires_at, now + hold)
    done = sum(t.state == "answered" for t in alloc.trials)
    session.commit()
    return NextResult(current, held[1] if len(held) > 1 else None, done, _total(participant))


def _image_ids(pair: Pair | PairView, trial: Trial) -> tuple[int, int]:
    """(left, right) image ids of a trial. For gold trials the intact image plays 'treatment'."""
    if trial.kind == "gold":
        treatment = pair.baseline_image_id if pair.gold_degraded_arm == "baseline" else pair.treatment_image_id
        baseline = pair.gold_image_id
    else:
        treatment, baseline = pair.treatment_image_id, pair.baseline_image_id
    return (treatment, baseline) if trial.treatment_side == "left" else (baseline, treatment)


def trial_images(session: Session, trial: Trial) -> tuple[Image, Image]:
    """(left, right) images of a trial (image bytes not loaded)."""
    left, right = _image_ids(session.get(Pair, trial.pair_id), trial)
    return session.get(Image, left), session.get(Image, right)


@dataclass(frozen=True)
class PairView:
    """What a trial shows of a pair: its prompt and images (ids and opaque tokens)."""

    prompt: str
    baseline_image_id: int
    treatment_image_id: int
    gold_image_id: int | None
    gold_degraded_arm: str | None
    tokens: dict[int, str]  # image id -> token, for this pair's images


# Pairs and images never change after import (nothing updates or deletes them), so each process
# keeps what trials show of them per (database, pair): a /next costs no query for it once warm.
_PAIR_VIEWS: dict[tuple[str, int], PairView] = {}
_PAIR_VIEWS_MAX = 200_000


def pair_views(session: Session, pair_ids: set[int]) -> dict[int, PairView]:
    """PairView by pair id for `pair_ids`, in at most one query (none when all are cached)."""
    db = str(session.get_bind().url)
    out = {p: v for p in pair_ids if (v := _PAIR_VIEWS.get((db, p))) is not None}
    missing = pair_ids - out.keys()
    if missing:
        base, treat, gold = aliased(Image), aliased(Image), aliased(Image)
        rows = session.execute(
            select(Pair.id, Pair.prompt, Pair.baseline_image_id, Pair.treatment_image_id, Pair.gold_image_id,
                   Pair.gold_degraded_arm, base.token, treat.token, gold.token)
            .join(base, base.id == Pair.baseline_image_id)
            .join(treat, treat.id == Pair.treatment_image_id)
            .outerjoin(gold, gold.id == Pair.gold_image_id)
            .where(Pair.id.in_(missing))
        ).all()
        if len(_PAIR_VIEWS) + len(rows) > _PAIR_VIEWS_MAX:
            _PAIR_VIEWS.clear()
        for pid, prompt, b, t, g, arm, b_tok, t_tok, g_tok in rows:
            tokens = {b: b_tok, t: t_tok}
            if g is not None:
                tokens[g] = g_tok
            out[pid] = _PAIR_VIEWS[(db, pid)] = PairView(prompt, b, t, g, arm, tokens)
    return out


def trial_image_tokens(session: Session, trials: list[Trial]) -> list[tuple[str, str]]:
    """(left token, right token) for each trial, in at most one query whatever the number of trials."""
    views = pair_views(session, {t.pair_id for t in trials})
    out = []
    for t in trials:
        view = views[t.pair_id]
        left, right = _image_ids(view, t)
        out.append((view.tokens[left], view.tokens[right]))
    return out


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


# submit_answer's single lookup (see there), built once like the allocation's statements.
_earlier_trial = aliased(Trial)
_ANSWER_LOOKUP = (
    select(
        Trial,
        Study.version,
        Study.min_response_ms,
        Study.fast_answers,
        select(func.count(_earlier_trial.id))
        .where(_earlier_trial.participant_id == bindparam("participant_id"), _earlier_trial.state == "assigned",
               _earlier_trial.position < Trial.position)
        .scalar_subquery(),
        select(Rating.id).where(Rating.request_id == bindparam("request_id")).scalar_subquery(),
    )
    .join(Study, Study.id == Trial.study_id)
    .where(Trial.public_id == bindparam("public_id"))
)


def submit_answer(
    session: Session,
    participant: Participant,
    public_id: str,
    choice: int,
    request_id: str,
    now: datetime,
    client_response_ms: int | None = None,
    compared: dict[str, Any] | None = None,
) -> AnswerResult:
    """Store one rating, idempotently per `request_id`. Raises FlowError (4xx) for bad answers.

    Commits. The trial moves from 'assigned' to 'answered' with a conditional UPDATE, so a
    double click, a retry and a hold expiring at the same moment resolve to exactly one outcome.
    """
    if type(choice) is not int or choice not in (1, 2, 3, 4, 5):
        raise FlowError(422, "choice must be an integer from 1 (left much better) to 5 (right much better)")
    if not request_id or len(request_id) > 100:
        raise FlowError(422, "request_id must be a non-empty string of at most 100 characters")
    # One round trip for the trial, the study fields the rating needs, the unanswered trials
    # before it (answers must come in order) and whether `request_id` was seen before (a replay,
    # handled first, exactly as `_replay` would).
    found = session.execute(
        _ANSWER_LOOKUP, {"public_id": public_id, "participant_id": participant.id, "request_id": request_id}
    ).first()
    if found is None or found[5] is not None:
        replay = _replay(session, participant, public_id, request_id)
        if replay is not None:
            return replay
    if found is None:
        raise FlowError(404, "unknown trial")
    trial, study_version, min_response_ms, fast_answers, earlier, _ = found
    if trial.participant_id != participant.id:
        raise FlowError(403, "this trial belongs to another participant")
    if trial.state == "answered":
        # Maybe by this very request, committed since the replay check above.
        replay = _replay(session, participant, public_id, request_id)
        if replay is not None:
            return replay
        raise FlowError(409, "this trial was already answered (with a different request_id)")
    if trial.state == "expired" or trial.expires_at <= now:
        raise FlowError(409, "this trial's hold expired and it may have gone to someone else; load the next trial")
    if earlier or trial.presented_at is None:
        raise FlowError(409, "answer the current trial first (this one has not been shown yet)")
    response_ms = max(0, int((now - trial.presented_at).total_seconds() * 1000))
    if fast_answers == "block" and response_ms < min_response_ms:
        raise FlowError(425, f"answered too soon: take at least {min_response_ms} ms to look at both images",
                        "too_fast")
    won = session.execute(
        update(Trial)
        .where(Trial.id == trial.id, Trial.state == "assigned", Trial.expires_at > now)
        .values(state="answered")
    ).rowcount
    if not won:
        # A concurrent request answered it (maybe this very request_id) or it just expired.
        session.rollback()
        replay = _replay(session, participant, public_id, request_id)
        if replay is not None:
            return replay
        session.refresh(trial)
        if trial.state == "answered":
            raise FlowError(409, "this trial was already answered (with a different request_id)")
        raise FlowError(409, "this trial's hold expired and it may have gone to someone else; load the next trial")
    rating = Rating(
        trial_id=trial.id,
        request_id=request_id,
        study_version=study_version,
        choice=choice,
        score=score_from_choice(choice, trial.treatment_side),
        treatment_side=trial.treatment_side,
        response_ms=response_ms,
        client_response_ms=client_response_ms,
        too_fast=response_ms < min_response_ms,
        answered_at=now,
        **(compared or {}),
    )
    session.add(rating)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        replay = _replay(session, participant, public_id, request_id)
        if replay is not None:
            return replay
        raise FlowError(409, "this request_id or trial was already used") from None
    return AnswerResult(rating, True, trial.public_id)
