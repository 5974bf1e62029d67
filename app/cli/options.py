"""What the app commands of `sfgeval` share: the `--database-url` and `--base-url` options, and
bringing the database schema up to date before a command uses it.

`app.cli`, `app.cli.admin` and `app.cli.plan` import these from here, so no command module
imports another one for them (no cycle, one definition of each option).
"""

from __future__ import annotations

import click

database_url_option = click.option(
    "--database-url", default=None, metavar="URL", help="SQLAlchemy URL [default: DATABASE_URL, else ./sfgeval.sqlite3]"
)
base_url_option = click.option(
    "--base-url", default=None, metavar="URL", help="public URL for printed links [default: SFGEVAL_BASE_URL]"
)


def migrated(url: str | None) -> str:
    """The database URL (`--database-url`, else the settings' DATABASE_URL), its schema upgraded."""
    from app.store.db import upgrade_database
    from app.settings import get_settings

    url = url or get_settings().database_url
    upgrade_database(url)
    return url


def public_base_url(url: str | None) -> str:
    """--base-url, else SFGEVAL_BASE_URL; when neither is set, say so (on stderr) and use the default."""
    from app.settings import get_settings

    if url:
        return url.rstrip("/")
    settings = get_settings()
    if "base_url" not in settings.model_fields_set:
        click.echo(
            f"note: SFGEVAL_BASE_URL is not set; the link assumes `sfgeval serve` on its default {settings.base_url}. "
            "Set SFGEVAL_BASE_URL (or --base-url) to the address participants will open.",
            err=True,
        )
    return settings.base_url.rstrip("/")
