"""Where the app's non-Python files are: `templates/`, `static/`, `migrations/`.

In the repository (and an editable install) they are the top-level folders. A wheel ships copies
inside the package, in `app/_bundled/` (see `setup.py`, which copies them at build time), so a
regular `pip install .` serves pages and migrates databases from anywhere.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = PACKAGE_DIR / "_bundled"
BUNDLED = ("templates", "static", "migrations")


def resource_dir(name: str) -> Path:
    """The folder `name` (one of BUNDLED): the packaged copy if this is an installed wheel, else
    the repository's top-level folder."""
    if name not in BUNDLED:
        raise ValueError(f"unknown resource folder {name!r}")
    bundled = BUNDLED_DIR / name
    return bundled if bundled.is_dir() else PACKAGE_DIR.parent / name
