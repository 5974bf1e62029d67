"""What text the database can store: no NUL, no lone surrogate.

PostgreSQL refuses NUL in text and UTF-8 has no lone surrogates, so such strings from a visitor
become a 4xx where they are validated, never a 500 at the INSERT.
"""

from __future__ import annotations

import re

_BAD = re.compile("[\x00\ud800-\udfff]")


def bad_text(value: str) -> bool:
    """True when `value` holds a NUL or a lone surrogate (no database text column takes them)."""
    return _BAD.search(value) is not None


def clean_text(value: str) -> str:
    """`value` unchanged, or ValueError (for pydantic validators: a 422 with this message)."""
    if bad_text(value):
        raise ValueError("text must not contain NUL characters or unpaired surrogates")
    return value
