"""Admin accounts: argon2id password hashes, the password policy and server-side sessions.

- Passwords are stored only as argon2id hashes (argon2-cffi defaults); hashes made with older
  parameters are upgraded at the next successful login (`authenticate`).

- A login creates an `AdminSession` row; the signed session cookie carries only its random id
  (`sid`) and the CSRF token, nothing derived from the password. The row holds the id's SHA-256,
  so a database dump does not hand out live sessions.
- Sessions end at logout (the row is deleted), after `SESSION_HOURS`, when the password changes
  (`set_password` deletes all the admin's rows) and with `sfgeval admin revoke USER|--all`.
- Password policy (`check_password`): at least 12 characters and not guessable by zxcvbn
  (score >= 3: no common password, dictionary word with digits, keyboard walk or repeat).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.exc import IntegrityError

from app.store.models import AdminSession, AdminUser, utcnow

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
# Verified against when the user name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))

SESSION_HOURS = 8
MIN_PASSWORD_LENGTH = 12


class PasswordPolicyError(ValueError):
    pass


def check_password(password: str, username: str = "") -> None:
    """Raise PasswordPolicyError saying why `password` is too weak."""
    from zxcvbn import zxcvbn

    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    verdict = zxcvbn(password[:100], user_inputs=[username] if username else [])
    if verdict["score"] < 3:
        hint = verdict["feedback"].get("warning") or "it is too easy to guess"
        raise PasswordPolicyError(f"the password is too weak: {hint.rstrip('.')}; try a few unrelated words")


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def start_session(session: Session, user: AdminUser) -> str:
    """A new server-side session for `user`; returns the random id for the cookie. Commits."""
    sid = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(AdminSession(token_hash=_digest(sid), admin_id=user.id, created_at=now,
                             expires_at=now + timedelta(hours=SESSION_HOURS)))
    session.commit()
    return sid


def session_admin(session: Session, sid: str | None) -> AdminUser | None:
    """The admin of a live session `sid`, else None."""
    if not sid or not isinstance(sid, str):
        return None
    return session.scalar(
        select(AdminUser).join(AdminSession, AdminSession.admin_id == AdminUser.id)
        .where(AdminSession.token_hash == _digest(sid), AdminSession.expires_at > utcnow())
    )


def end_session(session: Session, sid: str | None) -> None:
    if sid and isinstance(sid, str):
        session.execute(delete(AdminSession).where(AdminSession.token_hash == _digest(sid)))
        session.commit()


def revoke_sessions(session: Session, user: AdminUser | None = None) -> int:
    """End every session of `user` (all admins' when None); returns how many ended. Commits."""
    stmt = delete(AdminSession)
    if user is not None:
        stmt = stmt.where(AdminSession.admin_id == user.id)
    n = session.execute(stmt).rowcount
    # Expired rows go too, whoever they belong to.
    session.execute(delete(AdminSession).where(AdminSession.expires_at <= utcnow()))
    session.commit()
    return n


def set_password(session: Session, user: AdminUser, password: str, *, check: bool = True) -> None:
    """Change `user`'s password (policy-checked unless `check=False`) and end all their sessions."""

    if check:
        check_password(password, user.username)
    user.password_hash = hash_password(password)
    revoke_sessions(session, user)


def create_admin(session: Session, username: str, password: str) -> AdminUser:
    """A new admin; ValueError when the name is taken or empty, PasswordPolicyError when weak."""

    username = username.strip()
    if not username or len(username) > 150:
        raise ValueError("the user name must have 1 to 150 characters")
    if session.scalar(select(AdminUser.id).where(AdminUser.username == username)) is not None:
        raise ValueError(f"an admin named {username!r} exists already (use `sfgeval admin passwd`)")
    check_password(password, username)
    user = AdminUser(username=username, password_hash=hash_password(password))
    session.add(user)
    session.commit()
    return user


# --- passwords -----------------------------------------------------------------------------

def hash_password(password: str) -> str:
    """An argon2id hash (PHC string) of `password`; raises ValueError on an empty password."""
    if not password:
        raise ValueError("the password must not be empty")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when `password` matches `password_hash`; False for a mismatch or a malformed hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def authenticate(session: Session, username: str, password: str) -> AdminUser | None:
    """The admin user whose name and password match, else None (same cost either way)."""
    user = session.scalar(select(AdminUser).where(AdminUser.username == username.strip()))
    if user is None:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.commit()
    return user


def ensure_admin(session: Session, username: str, password: str) -> AdminUser:
    """Create the admin `username` with `password`, or reset its password if it differs.

    Used by the settings/env bootstrap (`SFGEVAL_ADMIN_USER` / `SFGEVAL_ADMIN_PASSWORD`) and by
    `sfgeval demo`: the environment is authoritative for that one account.
    """
    username = username.strip()
    if not username:
        raise ValueError("the admin user name must not be empty")
    user = session.scalar(select(AdminUser).where(AdminUser.username == username))
    if user is None:
        user = AdminUser(username=username, password_hash=hash_password(password))
        session.add(user)
        session.commit()
    elif not verify_password(user.password_hash, password):
        set_password(session, user, password, check=False)  # ends the account's sessions
        session.commit()
    return user


def bootstrap_admin(session: Session, settings: Any) -> AdminUser | None:
    """Create/refresh the admin named in settings, if both user and password are set."""
    username = getattr(settings, "admin_user", None)
    password = getattr(settings, "admin_password", None)
    if hasattr(password, "get_secret_value"):
        password = password.get_secret_value()
    if not username or not password:
        return None
    try:
        check_password(password, username)
    except PasswordPolicyError as e:
        log.error("SFGEVAL_ADMIN_PASSWORD refused, no admin bootstrapped: %s", e)
        return None
    try:
        return ensure_admin(session, username, password)
    except IntegrityError:
        # Another worker process created the same user at the same moment: use theirs.
        session.rollback()
        return ensure_admin(session, username, password)
