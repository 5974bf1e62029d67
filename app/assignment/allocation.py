"""Allocation: filling a participant's plan slots with trials (`next_trial`), and progress.

Concurrency: see `_Allocation`. The rules are summarised in the package docstring.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (BigInteger, Integer, String, and_, bindparam, cast, false, func, insert, literal_column, null,
                        or_, select, union_all, update)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.session import make_transient_to_detached
from sqlalchemy.sql.elements import BindParameter

from app.assignment.errors import FlowError
from app.assignment.pair_cache import study_pairs
from app.store.db import end_reads
from app.store.models import Comparison, Pair, PairTally, Participant, Study, Trial, with_values
from app.statistics.scoring import swap_side

LOOKAHEAD = 2  # trials held at once: the current one and the preloaded next one


def hold_for(study: Study, default_minutes: float) -> timedelta:
    return timedelta(minutes=study.hold_minutes or default_minutes)


def committed(now: datetime | BindParameter):
    """Trials that count toward a pair's target: answered ones and live *reserved* holds.

    A hold is reserved when its participant had answered a trial before it was issued
    (`Trial.reserved`). Holds of a participant who has not answered anything yet are provisional:
    they count for nobody, so sign-ups that never answer cannot lock anyone out, and their answer is
    accepted only while the pair is still under target (`answers.submit_answer`). Invariant, for
    every pair at every moment: answered + live reserved main trials <= ratings_per_pair.
    """
    return or_(Trial.state == "answered",
               and_(Trial.state == "assigned", Trial.reserved.is_(True), Trial.expires_at > now))


# The allocation's hot statements, built once and bound per call: on this path building a select()
# costs the server more CPU than Postgres spends running it.
# The main-trial candidates, best first: (pair id, comparison id) of the study's pairs that this
# participant has not seen and that are under target, least committed then least live main trials
# first (see `committed`), ties in an order seeded per participant and slot ((id * K + salt) mod a
# prime: a permutation of the ids, the same on PostgreSQL and SQLite). Answered trials come from
# the pairs' tallies (`PairTally`) and live holds from the holds index, so the cost does not grow
# with the number of ratings; the database ranks and only the first few rows come back. The pairs
# seen are a subquery on the participant's own trials (the same set as `_Allocation.seen`), not a
# list of values, so the statement text never changes and is prepared once per connection.
# One pass, no join per pair: the study's unseen pairs, their tallies and the live holds are
# stacked (UNION ALL) and summed per pair. A pair that only has a tally or holds (seen, or of
# another study's pair set) has no comparison id and drops out. Joining the holds per pair instead
# probes the holds index once per pair, several times the cost under load.
_seen = aliased(Trial)
_SEEN = select(_seen.pair_id).where(_seen.participant_id == bindparam("participant_id"), _seen.state != "expired",
                                    _seen.kind != "gold")
_0, _1 = literal_column("0", Integer), literal_column("1", Integer)
_stacked = union_all(
    select(Pair.id.label("pair_id"), Comparison.id.label("comparison_id"), _0.label("answered"), _0.label("held"),
           _0.label("reserved"))
    .join(Comparison, Comparison.pair_set_id == Pair.pair_set_id)
    .where(Comparison.study_id == bindparam("study_id"), Pair.id.not_in(_SEEN)),
    select(PairTally.pair_id, null(), PairTally.answered, _0, _0)
    .where(PairTally.study_id == bindparam("study_id")),
    # The literal 'assigned' (not a bound value) lets the planner use the partial index ix_trials_holds.
    select(Trial.pair_id, null(), _0, _1, cast(Trial.reserved, Integer))
    .where(Trial.study_id == bindparam("study_id"), Trial.state == literal_column("'assigned'"),
           Trial.kind == "main", Trial.expires_at > bindparam("now")),
).subquery("stacked")
_pair_id, _comparison_id, _answered, _held, _reserved = _stacked.c
_n_committed = func.sum(_answered) + func.sum(_reserved)
_n_live = func.sum(_answered) + func.sum(_held)
_TIE = ((cast(_pair_id, BigInteger) * literal_column("2654435761") + bindparam("salt", type_=BigInteger))
        % literal_column("4294967291"))
_RANKED = (
    select(_pair_id, func.max(_comparison_id))
    .group_by(_pair_id)
    .having(func.max(_comparison_id).is_not(None), _n_committed < bindparam("target"))
    .order_by(_n_committed, _n_live, _TIE, func.max(_comparison_id))
)
_RANKED_FIRST = _RANKED.limit(bindparam("limit"))
RANKED_BATCH = 8  # candidates fetched at once; all of them are tried before the full list is read
# A participant's trials that have not expired, in position order, as plain rows (the columns by
# name, as on a Trial): loading them as ORM objects cost more CPU than the rest of the allocation.
_trials = Trial.__table__
_OWN_TRIALS = (
    select(*_trials.c).where(_trials.c.participant_id == bindparam("participant_id")).order_by(_trials.c.position)
)
_LOCK_PAIR = select(Pair.id).where(Pair.id == bindparam("pair_id")).with_for_update(key_share=True, skip_locked=True)
_STALE_OF_PAIR = select(Trial.id).where(
    Trial.study_id == bindparam("study_id"), Trial.pair_id == bindparam("pair_id"), Trial.state == "assigned",
    Trial.expires_at <= bindparam("now"),
)
_STALE_OF_PAIR_SKIP_LOCKED = _STALE_OF_PAIR.with_for_update(key_share=True, skip_locked=True)
# Answered or reserved, expired or not: the claim counts these after expiring the pair's stale holds.
_ANSWERED_OR_RESERVED = or_(Trial.state == "answered", and_(Trial.state == "assigned", Trial.reserved.is_(True)))
_COMMITTED_OF_PAIR = select(func.count(Trial.id)).where(
    Trial.study_id == bindparam("study_id"), Trial.pair_id == bindparam("pair_id"), Trial.kind == "main",
    _ANSWERED_OR_RESERVED,
)
# Both in one statement: the count above, and how many of the pair's holds are stale. Usually
# none are, and then that count is the answer (no stale holds to expire, nothing to recount).
_CLAIM_COUNTS = select(
    func.count(Trial.id).filter(Trial.kind == "main", _ANSWERED_OR_RESERVED),
    func.count(Trial.id).filter(Trial.state == "assigned", Trial.expires_at <= bindparam("now")),
).where(Trial.study_id == bindparam("study_id"), Trial.pair_id == bindparam("pair_id"))


# `promote` of a trial not shown yet, its pair locked: `_CLAIM_COUNTS` and `_PRESENT` in one
# UPDATE, done only when the pair has no stale holds and is under target (else no row comes back and
# `promote` counts as before). It reserves the trial unless the pair is at its last open slot (see
# `_Allocation._reservable`). Its own statement after the lock, so it counts what committed before
# the lock was taken, as `_CLAIM_COUNTS` does. The parameters of the count are named "claim_*":
# a parameter named like a column of trials would also be SET by the UPDATE.
_counted = aliased(Trial)
_COUNTS_NOW = select(
    _counted.pair_id,
    func.count(_counted.id).filter(
        _counted.kind == "main",
        or_(_counted.state == "answered", and_(_counted.state == "assigned", _counted.reserved.is_(True))),
    ).label("n"),
    func.count(_counted.id).filter(_counted.state == "assigned",
                                   _counted.expires_at <= bindparam("claim_now")).label("n_stale"),
).where(_counted.study_id == bindparam("claim_study_id"), _counted.pair_id == bindparam("claim_pair_id")
        ).group_by(_counted.pair_id).subquery("claim")  # one row: the trial itself is one of the pair's
_PRESENT_COUNTED = (
    update(_trials)
    .where(_trials.c.id == bindparam("trial_id"), _trials.c.pair_id == _COUNTS_NOW.c.pair_id, _COUNTS_NOW.c.n_stale == 0,
           _COUNTS_NOW.c.n < bindparam("claim_target"))
    .values(presented_at=bindparam("presented_at"), expires_at=bindparam("expires_at"),
            reserved=_COUNTS_NOW.c.n < bindparam("claim_last_slot"))
    .returning(_trials.c.reserved)
)


# New trials are written with Core statements on the session's connection, not through the unit
# of work (which costs more CPU than the INSERT itself), then attached to the session as persistent.
_INSERT_TRIAL = insert(_trials).returning(_trials.c.id)
_RESERVE = update(_trials).where(_trials.c.id == bindparam("trial_id")).values(reserved=True)
_EXPIRE = (update(_trials).where(_trials.c.id == bindparam("trial_id"), _trials.c.state == "assigned")
           .values(state="expired"))
_PRESENT = (update(_trials).where(_trials.c.id == bindparam("trial_id"))
            .values(presented_at=bindparam("presented_at"), expires_at=bindparam("expires_at")))
_PRESENT_RESERVED = _PRESENT.values(reserved=True)


# A provisional main hold needs no claim (see `_Allocation`): it takes the best candidate as ranked,
# so the ranking and the INSERT are one statement (one round trip; no row when no pair is left).
# The study and participant parameters of the ranking are the trial's own; its `now` is the
# trial's issue time. Typed parameters, no CAST: PostgreSQL's driver dialect types each parameter
# itself (`%(x)s::INTEGER`), and SQLite would turn a CAST to a date-time type into a number.
_best = _RANKED.limit(1).subquery("best")
_INSERT_BEST = insert(_trials).from_select(
    ["public_id", "study_id", "participant_id", "pair_id", "comparison_id", "position", "kind", "treatment_side",
     "repeat_of_trial_id", "state", "issued_at", "presented_at", "expires_at", "reserved"],
    select(bindparam("new_public_id", type_=String()),
           bindparam("study_id", type_=Integer()),
           bindparam("participant_id", type_=Integer()),
           _best.c[0], _best.c[1],
           bindparam("new_position", type_=Integer()),
           literal_column("'main'", String()),
           bindparam("new_treatment_side", type_=String()),
           null(), literal_column("'assigned'", String()),
           bindparam("now", type_=_trials.c.issued_at.type),
           null(),
           bindparam("new_expires_at", type_=_trials.c.expires_at.type),
           false()),
).returning(_trials.c.id, _trials.c.pair_id, _trials.c.comparison_id)


def _insert_trial(session: Session, values: dict) -> Trial:
    """INSERT a trial (all columns but the id given) and return it as a persistent, loaded object."""
    return attach(session, Trial, {"id": session.connection().execute(_INSERT_TRIAL, values).scalar_one(), **values})


def attach(session: Session, cls: type, values: dict):
    """The `cls` row with these column values (its primary key `id` among them) as a persistent
    object of `session`, loaded as if by a query (the session's own object for it, brought up to
    date, if it has one): what a Core statement read or wrote, without the ORM's per-query cost."""
    obj = session.identity_map.get(session.identity_key(cls, values["id"]))
    if obj is not None:
        for key, value in values.items():
            set_committed_value(obj, key, value)
        return obj
    obj = with_values(cls, values)
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


def _as_object(session: Session, trial) -> Trial:
    """`trial` (a Trial, or one of `_OWN_TRIALS`' rows) as a Trial of `session`."""
    return trial if isinstance(trial, Trial) else attach(session, Trial, dict(trial._mapping))


def _present(session: Session, trial: Trial, now: datetime, hold: timedelta, reserve: bool = False) -> None:
    """Mark `trial` as shown now; its hold runs from now (UPDATE, and the object kept in step).
    `reserve`: it reserves its pair from now on too (see `_Allocation.promote`)."""
    expires_at = max(trial.expires_at, now + hold)
    values = {"trial_id": trial.id, "presented_at": now, "expires_at": expires_at}
    session.connection().execute(_PRESENT_RESERVED if reserve else _PRESENT, values)
    set_committed_value(trial, "presented_at", now)
    set_committed_value(trial, "expires_at", expires_at)


def _new_trial(study: Study, participant: Participant, position: int, kind: str, pair_id: int,
               comparison_id: int, side: str, now: datetime, hold: timedelta,
               repeat_of: int | None = None) -> dict:
    """The column values of a new trial (`reserved` is set by the caller)."""
    return dict(
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
        presented_at=None,
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

    Only a participant who has answered something gets reserved holds (see `committed`); a new
    participant's holds are provisional, need no lock and take the least-loaded pair under target.
    """

    def __init__(self, session: Session, study: Study, participant: Participant, now: datetime, hold: timedelta):
        self.session, self.study, self.participant, self.now, self.hold = session, study, participant, now, hold
        self.postgres = session.get_bind().dialect.name == "postgresql"
        session.flush()  # a caller's pending changes first, as a query through the session would
        own = list(session.connection().execute(_OWN_TRIALS, {"participant_id": participant.id}))
        self.trials = [t for t in own if t.state != "expired"]
        # Progressing: the participant's latest event is an answer, not a hold they let expire
        # while looking at it. Only then do their holds count against others (`committed`): a
        # sign-up that answered once and went idle reserves nothing once its hold has run out.
        last_answer = max((t.position for t in self.trials if t.state == "answered"), default=-1)
        last_idle = max((t.position for t in own if t.state == "expired" and t.presented_at is not None), default=-1)
        self.proven = last_answer >= 0 and last_answer >= last_idle
        self.closed = False  # a closed study: no new main trials (see `_may_end_in_closed`)
        self.reserve_on_present = False

    def seen(self) -> set[int]:
        """Pairs this participant has compared (main, repeat, practice). Gold checks do not
        count: they show one image against its degraded twin, not the two methods."""
        return {t.pair_id for t in self.trials if t.kind != "gold"}

    def main_candidates(self, salt: int = 0, limit: int | None = None) -> list[tuple[int, int]]:
        """(pair id, comparison id) under target and unseen, best first (see `_RANKED`): the
        first `limit` of them, or all. Counts are those of this transaction, own new trials included."""
        params = {"study_id": self.study.id, "now": self.now, "target": self.study.ratings_per_pair,
                  "participant_id": self.participant.id, "salt": salt}
        if limit is None:
            return [tuple(r) for r in self.session.execute(_RANKED, params)]
        return [tuple(r) for r in self.session.execute(_RANKED_FIRST, {**params, "limit": limit})]

    def _ranked(self, salt: int):
        """The candidates in order: the first batch, then (only if all of those were locked or
        full) the rest."""
        first = self.main_candidates(salt, RANKED_BATCH)
        yield from first
        if len(first) == RANKED_BATCH:
            tried = {p for p, _ in first}
            yield from (pc for pc in self.main_candidates(salt) if pc[0] not in tried)

    def _lock(self, pair_id: int) -> bool:
        """Take `pair_id`'s row lock (PostgreSQL; SQLite's transactions hold the database lock
        anyway): False when another request holds it right now (skipped, never waited for)."""
        return not self.postgres or self.session.connection().scalar(_LOCK_PAIR, {"pair_id": pair_id}) is not None

    def _claim(self, pair_id: int) -> int | None:
        """Lock `pair_id` and count, against committed data, its answered and reserved main trials.
        None when another request holds the pair's lock right now (skipped, never waited for).

        A provisional hold changes no count that the target checks, so it needs no claim."""
        return self._count_locked(pair_id) if self._lock(pair_id) else None

    def _count_locked(self, pair_id: int) -> int:
        """`_claim`'s count, the pair's lock taken."""
        conn = self.session.connection()
        params = {"study_id": self.study.id, "pair_id": pair_id, "now": self.now}
        n, n_stale = conn.execute(_CLAIM_COUNTS, params).one()
        if n_stale:
            # Expire this pair's stale holds. Rows another transaction holds right now (a late
            # answer, a participant expiring their own hold) are skipped and so still count below:
            # that errs on the safe side and means this transaction never waits on a row lock.
            stale = _STALE_OF_PAIR_SKIP_LOCKED if self.postgres else _STALE_OF_PAIR
            stale_ids = conn.scalars(stale, params).all()
            if stale_ids:
                self.session.execute(
                    update(Trial).where(Trial.id.in_(stale_ids), Trial.state == "assigned").values(state="expired")
                )
            n = conn.scalar(_COMMITTED_OF_PAIR, params)
        return n

    def _reservable(self, n: int) -> bool:
        """Whether a pair with `n` answered and reserved main trials may take one more reservation:
        its last open slot is never reserved (it goes to whoever answers first), so idle sign-ups
        can never hold a whole study."""
        return n < self.study.ratings_per_pair - 1

    def promote(self, trial: Trial) -> bool:
        """Reserve `trial`, a provisional main hold about to be shown to a progressing participant,
        if its pair still has room. False when the pair is full (the caller fills the slot again).
        It stays provisional (True) when the pair is at its last open slot (`_reservable`) or another
        request is allocating the pair right now: its answer is then checked against the target
        (`answers.submit_answer`)."""
        if not self._lock(trial.pair_id):
            return True
        if trial.presented_at is None and self._present_counted(trial):
            return True
        n = self._count_locked(trial.pair_id)
        if self._reservable(n):
            if trial.presented_at is None:
                self.reserve_on_present = True  # in `_present`'s UPDATE: one statement less
            else:
                self.session.connection().execute(_RESERVE, {"trial_id": trial.id})
            set_committed_value(trial, "reserved", True)
        return n < self.study.ratings_per_pair

    def _present_counted(self, trial: Trial) -> bool:
        """The usual case of `promote` for a trial not shown yet, in one statement after the lock
        (`_PRESENT_COUNTED`): when its pair has no stale holds and is under target, show the trial
        now (as `_present` would) and reserve it unless the pair is at its last open slot. False
        when nothing was done (stale holds to expire, or the pair is full): `promote` goes on."""
        expires_at = max(trial.expires_at, self.now + self.hold)
        reserved = self.session.connection().scalar(_PRESENT_COUNTED, {
            "trial_id": trial.id, "presented_at": self.now, "expires_at": expires_at, "claim_now": self.now,
            "claim_study_id": self.study.id, "claim_pair_id": trial.pair_id,
            "claim_target": self.study.ratings_per_pair, "claim_last_slot": self.study.ratings_per_pair - 1})
        if reserved is None:
            return False
        set_committed_value(trial, "presented_at", self.now)
        set_committed_value(trial, "expires_at", expires_at)
        set_committed_value(trial, "reserved", bool(reserved))
        return True

    def _insert_best(self, position: int, side: str, salt: int) -> Trial | None:
        """A provisional main trial on the best candidate pair (`_INSERT_BEST`), or None."""
        values = _new_trial(self.study, self.participant, position, "main", None, None, side, self.now, self.hold)
        params = {"study_id": self.study.id, "participant_id": self.participant.id, "now": self.now,
                  "target": self.study.ratings_per_pair, "salt": salt, "new_public_id": values["public_id"],
                  "new_position": position, "new_treatment_side": side, "new_expires_at": values["expires_at"]}
        row = self.session.connection().execute(_INSERT_BEST, params).first()
        if row is None:
            return None
        trial = attach(self.session, Trial, {**values, "id": row[0], "pair_id": row[1], "comparison_id": row[2],
                                       "reserved": False})
        self.trials.append(trial)
        return trial

    def _spare(self, usable: list[tuple[int, int]], plan: dict) -> list[tuple[int, int]]:
        """The pairs of `usable` a practice trial may take without costing this participant a main
        trial: a pair used for practice is never compared again, so near the end of a study it
        must not be one of the last pairs still under target, or the study could never fill (the
        last open slot would only go to a newcomer whose practice happened to be elsewhere). With
        more open pairs than main trials to come, any pair will do (one query, a few rows)."""
        wanted = plan["kinds"].count("main")
        open_pairs = {p for p, _c in self.main_candidates(limit=wanted + 1)}
        if len(open_pairs) > wanted:
            return usable
        return [pc for pc in usable if pc[0] not in open_pairs] or usable

    def allocate(self, position: int, reserve: bool = True) -> Trial | None:
        """A trial for plan slot `position`, or None when the slot cannot be filled (skip it).
        `reserve`: the trial is the one to be shown now, so it reserves its pair when the
        participant is progressing; otherwise (the preloaded one) it is provisional."""
        reserve = reserve and self.proven
        plan = self.participant.plan
        kind, side = plan["kinds"][position], plan["sides"][position]
        rng = random.Random(f"{kind}:{self.study.seed}:{self.participant.seed}:{position}")
        trial = None
        if kind == "main" and self.closed:
            pass  # the study closed under this participant: the slot is skipped
        elif kind == "main" and not reserve:
            return self._insert_best(position, side, rng.randrange(2**31))
        elif kind == "main":
            for pair_id, comparison_id in self._ranked(rng.randrange(2**31)):
                n = self._claim(pair_id) if reserve else 0
                if n is None or n >= self.study.ratings_per_pair:
                    continue  # being allocated right now, or full
                # Candidates come least committed first: when this one is at its last open slot,
                # the rest are too; it is taken provisionally.
                reserve = reserve and self._reservable(n)
                trial = _new_trial(self.study, self.participant, position, kind, pair_id, comparison_id,
                                   side, self.now, self.hold)
                break
        elif kind in ("practice", "gold"):
            # Practice takes a pair this participant will not compare later. A gold check takes a
            # pair whose images this participant has never been shown (issue 22): an image seen
            # before would tell the intact one from its degraded twin by familiarity (its URL,
            # its bytes). Both are padded to the pair set's one byte length and served the same
            # way, so nothing but the pixels tells them apart. No such pair left: the slot is skipped.
            shown = {t.pair_id for t in self.trials}
            usable = [(p, c) for p, c, gold in study_pairs(self.session, self.study)
                      if (gold or kind == "practice") and p not in shown]
            pool = self._spare(usable, plan) if kind == "practice" else usable
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
            trial = _insert_trial(self.session, {**trial, "reserved": reserve})
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


_PAIRS_UNDER_TARGET = (
    select(func.count(Pair.id))
    .join(Comparison, Comparison.pair_set_id == Pair.pair_set_id)
    .outerjoin(PairTally, and_(PairTally.study_id == Comparison.study_id, PairTally.pair_id == Pair.id))
    .where(Comparison.study_id == bindparam("study_id"),
           func.coalesce(PairTally.answered, 0) < bindparam("target"))
)


def _may_end_in_closed(session: Session, study: Study, participant: Participant, alloc: _Allocation) -> bool:
    """Whether a participant who already answered something may go on to their end in a closed
    study: when nothing of their plan is left to answer, or when the study closed itself because
    every pair reached its target (auto-close). Then the answer that completed the study ends
    like every other (done, with the code), and whoever is mid-way finishes their non-main trials
    and ends as "study full" (`ended_full`). A study an admin closed early stays closed (409)."""
    if study.state != "closed" or not any(t.state == "answered" for t in alloc.trials):
        return False
    plan = participant.plan
    answered = {t.position for t in alloc.trials if t.state == "answered"}
    if all(i in answered or i in plan.get("skipped", []) for i in range(len(plan["kinds"]))):
        return True
    return bool(study.auto_close) and not session.connection().scalar(
        _PAIRS_UNDER_TARGET, {"study_id": study.id, "target": study.ratings_per_pair})


def _ending(session: Session, study: Study, participant: Participant, trials) -> str:
    """'complete' when the participant answered every main trial the study promised them (their
    plan's main trials, or as many pairs as they could still compare when the study has fewer),
    else 'full': the study filled up (or closed at its target) under them."""
    practice = {t.pair_id for t in trials if t.kind == "practice"}
    comparable = sum(1 for p, _c, _g in study_pairs(session, study) if p not in practice)
    promised = min(participant.plan["kinds"].count("main"), comparable)
    answered = sum(1 for t in trials if t.kind == "main" and t.state == "answered")
    return "complete" if answered >= promised else "full"


NO_WORK = "no work left: every pair in this study has all the ratings it needs"


def next_trial(session: Session, participant: Participant, now: datetime, default_hold_minutes: float,
               study: Study | None = None) -> NextResult:
    """The participant's current trial (allocating as needed), or trial=None when finished.

    `study`: the participant's study as of the current transaction, if the caller has it (saves a
    query): loaded in it, or the snapshot of the version read in it (`study_at_version`; only its
    columns are read); otherwise it is read here. Raises FlowError(409) when the study is not open
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
        end_reads(session)
        d, t = progress(session, participant)
        return NextResult(None, None, d, t)
    if study is None:
        study = session.scalar(
            select(Study).where(Study.id == participant.study_id).execution_options(populate_existing=True)
        )
    hold = hold_for(study, default_hold_minutes)
    alloc = _Allocation(session, study, participant, now, hold)
    if study.state != "open":
        if not _may_end_in_closed(session, study, participant, alloc):
            raise FlowError(409, "this study is not open at the moment", "not_open")
        alloc.closed = True
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
    plan = dict(participant.plan)
    # No work left for a newcomer: say so before handing out practice. When a main slot is among
    # the first LOOKAHEAD, the loop below finds out anyway (and rolls back), without this query.
    if first_call and "main" not in plan["kinds"][:LOOKAHEAD] and not alloc.main_candidates(limit=1):
        raise FlowError(409, NO_WORK, "no_work")
    skipped = list(plan.get("skipped", []))
    taken = {t.position for t in alloc.trials}
    held = [t for t in alloc.trials if t.state == "assigned"]

    def fill() -> None:
        position = 0
        while len(held) < LOOKAHEAD and position < len(plan["kinds"]):
            if position not in taken and position not in skipped:
                # Only the trial shown now reserves a pair; the preloaded one is provisional until
                # it is shown (`promote`): an idle sign-up keeps at most one slot from others.
                trial = alloc.allocate(position, reserve=all(t.position > position for t in held))
                if (trial is None and first_call and plan["kinds"][position] == "main"
                        and not any(t.kind == "main" for t in held)):
                    session.rollback()  # others took the last pairs meanwhile
                    raise FlowError(409, NO_WORK, "no_work")
                if trial is None:
                    skipped.append(position)
                else:
                    held.append(trial)
                    taken.add(position)
            position += 1
        held.sort(key=lambda t: t.position)

    fill()
    # The trial about to be shown, if it was preloaded provisionally: reserve it now, or (its pair
    # filled up meanwhile) give it up and fill its slot with another pair.
    for _attempt in range(LOOKAHEAD + 2):
        if not held or held[0].kind != "main" or held[0].reserved or not alloc.proven or alloc.closed:
            break
        current = held[0] = _as_object(session, held[0])
        if alloc.promote(current):
            break
        session.connection().execute(_EXPIRE, {"trial_id": current.id})
        set_committed_value(current, "state", "expired")
        held.pop(0)
        alloc.trials = [t for t in alloc.trials if t.id != current.id]
        taken.discard(current.position)
        fill()
    if skipped != plan.get("skipped", []):
        participant.plan = {**plan, "skipped": sorted(skipped)}
    if not held:
        answered = [t for t in alloc.trials if t.state == "answered"]
        if not any(t.kind == "main" for t in answered):
            session.rollback()
            raise FlowError(409, NO_WORK, "no_work")
        participant.finished_at = now
        participant.plan = {**participant.plan, "ended": _ending(session, study, participant, alloc.trials)}
        session.commit()
        return NextResult(None, None, len(answered), _total(participant))
    current = _as_object(session, held[0])
    if current.presented_at is None:
        # The hold runs from when the participant first sees the trial, not from the preload.
        _present(session, current, now, hold, reserve=alloc.reserve_on_present)
    done = sum(t.state == "answered" for t in alloc.trials)
    session.commit()
    return NextResult(current, _as_object(session, held[1]) if len(held) > 1 else None, done, _total(participant))
