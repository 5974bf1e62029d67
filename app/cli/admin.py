"""`sfgeval admin create|passwd|list|revoke`: admin accounts without environment variables.

Passwords are asked for on the terminal (twice, hidden) or read from stdin with
`--password-stdin`; the policy of `app.accounts.admins.check_password` applies.
"""

from __future__ import annotations

import sys

import click

from app.cli.options import database_url_option, migrated


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _user(session, username: str):
    from sqlalchemy import select

    from app.store.models import AdminUser

    user = session.scalar(select(AdminUser).where(AdminUser.username == username.strip()))
    if user is None:
        raise click.ClickException(f"no admin named {username!r}")
    return user


@click.group()
def admin() -> None:
    """Admin logins: create, change a password, list, end sessions."""


password_stdin = click.option("--password-stdin", is_flag=True, help="read the password from stdin (one line)")


def _with_password(database_url: str | None, from_stdin: bool, action) -> None:
    """Run `action(session, password)`; policy and name errors become a clean CLI error."""
    from app.store.db import session_scope

    url = migrated(database_url)
    password = _password(from_stdin)
    with session_scope(url) as session:
        try:
            action(session, password)
        except ValueError as e:  # PasswordPolicyError included
            raise click.ClickException(str(e)) from None


@admin.command("create")
@click.argument("username")
@password_stdin
@database_url_option
def admin_create(username: str, password_stdin: bool, database_url: str | None) -> None:
    """Create the admin USERNAME."""
    from app.accounts.admins import create_admin

    _with_password(database_url, password_stdin, lambda session, pw: create_admin(session, username, pw))
    click.echo(f"admin {username.strip()!r} created", err=True)


@admin.command("passwd")
@click.argument("username")
@password_stdin
@database_url_option
def admin_passwd(username: str, password_stdin: bool, database_url: str | None) -> None:
    """Change USERNAME's password (ends all their sessions)."""
    from app.accounts.admins import set_password

    _with_password(database_url, password_stdin,
                   lambda session, pw: set_password(session, _user(session, username), pw))
    click.echo(f"password of {username.strip()!r} changed; their sessions ended", err=True)


@admin.command("list")
@database_url_option
def admin_list(database_url: str | None) -> None:
    """Admins, one a line: name, created, live sessions."""
    from sqlalchemy import func, select

    from app.store.db import session_scope
    from app.store.models import AdminSession, AdminUser, utcnow

    url = migrated(database_url)
    with session_scope(url) as session:
        live = dict(session.execute(
            select(AdminSession.admin_id, func.count(AdminSession.id))
            .where(AdminSession.expires_at > utcnow()).group_by(AdminSession.admin_id)
        ).all())
        for user in session.scalars(select(AdminUser).order_by(AdminUser.username)):
            click.echo(f"{user.username}\t{user.created_at:%Y-%m-%d}\t{live.get(user.id, 0)} sessions")


@admin.command("revoke")
@click.argument("username", required=False)
@click.option("--all", "revoke_all", is_flag=True, help="end every admin's sessions")
@database_url_option
def admin_revoke(username: str | None, revoke_all: bool, database_url: str | None) -> None:
    """End USERNAME's sessions (or everyone's with --all): they must log in again."""
    from app.accounts.admins import revoke_sessions
    from app.store.db import session_scope

    if bool(username) == revoke_all:
        raise click.UsageError("give a USERNAME or --all (one of the two)")
    url = migrated(database_url)
    with session_scope(url) as session:
        n = revoke_sessions(session, None if revoke_all else _user(session, username))
    click.echo(f"{n} sessions ended", err=True)
