"""Admin accounts and their server-side sessions.

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
import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import AdminSession, AdminUser, utcnow

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
    from app.auth import hash_password

    if check:
        check_password(password, user.username)
    user.password_hash = hash_password(password)
    revoke_sessions(session, user)


def create_admin(session: Session, username: str, password: str) -> AdminUser:
    """A new admin; ValueError when the name is taken or empty, PasswordPolicyError when weak."""
    from app.auth import hash_password

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
