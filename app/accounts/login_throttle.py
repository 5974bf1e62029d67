"""Brute-force throttle for the admin login: per (user name, client address), per address, and a
slower global brake, so that nobody can lock the admin out by guessing.

Attempts are rows of `login_failures` (shared by every worker process). An attempt is counted
*before* its password is checked (`begin_attempt`), in the same serialised step as the check of
the counts, so parallel guesses cannot slip through one window: on SQLite every transaction holds
the write lock (BEGIN IMMEDIATE), on PostgreSQL the step takes a transaction-level advisory lock.
A right password then takes its own row back (`succeeded`); a wrong one leaves it as a failure.

Within `WINDOW`:
- one user name from one address: after `FREE_PER_PAIR` failures, each further attempt must wait
  1 s, 2 s, 4 s, ... (at most `MAX_DELAY_S`) after the last one;
- one address, any names: the same after `FREE_PER_ADDRESS` failures;
- everyone together (the global brake, against guesses spread over many addresses): after
  `GLOBAL_FREE` failures, at most one attempt per `GLOBAL_SPACING_S` seconds. It never grows, so
  the admin, from an address that is not guessing, gets in within seconds even then.
An attempt too early gets 429 with `Retry-After`, is not checked and not counted. Guessing from
one address therefore never slows a login from another address. Every failure and refusal is
logged. A successful login clears that user name's failures from that address only.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from app.store.models import LoginFailure

log = logging.getLogger("sfgeval.login")

WINDOW = timedelta(hours=1)
FREE_PER_PAIR = 5
FREE_PER_ADDRESS = 20
GLOBAL_FREE = 300
GLOBAL_SPACING_S = 1
MAX_DELAY_S = 900
_ADVISORY_KEY = 0x5F6E_4C4F  # PostgreSQL advisory lock id of the throttle step


def _key(username: str) -> str:
    return username.strip().lower()[:150]


def _wait(n: int, last: datetime | None, free: int, now: datetime, growing: bool = True) -> float:
    if n < free or last is None:
        return 0.0
    delay = min(MAX_DELAY_S, 2 ** min(n - free, 20)) if growing else GLOBAL_SPACING_S
    return (last + timedelta(seconds=delay) - now).total_seconds()


def retry_after(session: Session, username: str, address: str, now: datetime) -> int:
    """Seconds to wait before this user name may be tried from this address (0: go ahead)."""
    since = now - WINDOW
    name, addr = _key(username), address[:64]
    (n_all, last_all, n_addr, last_addr, n_pair, last_pair) = session.execute(
        select(
            func.count(LoginFailure.id), func.max(LoginFailure.at),
            func.count(LoginFailure.id).filter(LoginFailure.address == addr),
            func.max(LoginFailure.at).filter(LoginFailure.address == addr),
            func.count(LoginFailure.id).filter(LoginFailure.address == addr, LoginFailure.username == name),
            func.max(LoginFailure.at).filter(LoginFailure.address == addr, LoginFailure.username == name),
        ).where(LoginFailure.at > since)
    ).one()
    wait = max(_wait(n_pair, last_pair, FREE_PER_PAIR, now), _wait(n_addr, last_addr, FREE_PER_ADDRESS, now),
               _wait(n_all, last_all, GLOBAL_FREE, now, growing=False), 0.0)
    return int(wait + 0.999)


def begin_attempt(session: Session, username: str, address: str, now: datetime) -> tuple[int, int | None]:
    """Check and count one attempt in one serialised step. Returns (0, attempt id) when the
    attempt may go ahead (it is already counted as a failure), or (seconds to wait, None). Commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
    wait = retry_after(session, username, address, now)
    if wait:
        session.commit()
        log.warning("admin login for %r from %s throttled (%d s)", _key(username), address, wait)
        return wait, None
    attempt = LoginFailure(username=_key(username), address=address[:64], at=now)
    session.add(attempt)
    session.execute(delete(LoginFailure).where(LoginFailure.at < now - WINDOW))
    session.commit()
    return 0, attempt.id


def failed(username: str, address: str) -> None:
    """The attempt's password was wrong: its row stays counted; log it."""
    log.warning("failed admin login for %r from %s", _key(username), address)


def succeeded(session: Session, username: str, address: str, attempt_id: int | None) -> None:
    """The right password: the attempt and this name's failures from this address are forgotten."""
    session.execute(delete(LoginFailure).where(
        (LoginFailure.id == attempt_id)
        | ((LoginFailure.username == _key(username)) & (LoginFailure.address == address[:64]))))
    session.commit()
