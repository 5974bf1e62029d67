"""Brute-force throttle for the admin login: per user name and per client address.

Failures are rows of `login_failures` (shared by every worker process). Within `WINDOW`, after
`FREE_PER_USER` failures for one user name (or `FREE_PER_ADDRESS` from one address) each further
attempt must wait 1 s, 2 s, 4 s, ... (at most `MAX_DELAY_S`) after the last failure; an attempt
too early gets 429 with `Retry-After` and is not even checked. Every failure and refusal is logged.
A successful login clears that user name's failures.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.store.models import LoginFailure

log = logging.getLogger("sfgeval.login")

WINDOW = timedelta(hours=1)
FREE_PER_USER = 5
FREE_PER_ADDRESS = 20
MAX_DELAY_S = 900


def _key(username: str) -> str:
    return username.strip().lower()[:150]


def retry_after(session: Session, username: str, address: str, now: datetime) -> int:
    """Seconds to wait before this user name may be tried from this address (0: go ahead)."""
    wait = 0.0
    for column, value, free in ((LoginFailure.username, _key(username), FREE_PER_USER),
                                (LoginFailure.address, address[:64], FREE_PER_ADDRESS)):
        n, last = session.execute(
            select(func.count(LoginFailure.id), func.max(LoginFailure.at))
            .where(column == value, LoginFailure.at > now - WINDOW)
        ).one()
        if n >= free and last is not None:
            delay = min(MAX_DELAY_S, 2 ** min(n - free, 20))
            wait = max(wait, (last + timedelta(seconds=delay) - now).total_seconds())
    return max(0, int(wait + 0.999))


def record_failure(session: Session, username: str, address: str, now: datetime) -> None:
    session.add(LoginFailure(username=_key(username), address=address[:64], at=now))
    session.execute(delete(LoginFailure).where(LoginFailure.at < now - WINDOW))
    session.commit()
    log.warning("failed admin login for %r from %s", _key(username), address)


def record_success(session: Session, username: str) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.username == _key(username)))
    session.commit()
