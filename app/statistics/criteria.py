"""Several criteria per trial (issue 24): which criterion a rating row answers, and rows split by it.

A study asks 1-3 questions per trial (e.g. image quality and prompt alignment), each answered on
the same 5-point scale and stored as one rating row per criterion (`criterion` column). The
`primary` criterion is the one monitoring, planning and the verdict use; a study without
`questions` has one criterion, `DEFAULT_CRITERION`, exactly as before. Pure: no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DEFAULT_CRITERION = "overall"
MAX_QUESTIONS = 3
CRITERION_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def criterion_keys(questions: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The criterion keys of a study's `questions` (None or empty: the one default criterion)."""
    return [str(q["key"]) for q in questions] if questions else [DEFAULT_CRITERION]


def primary_criterion(questions: Sequence[Mapping[str, Any]] | None, primary: str | None) -> str:
    """The primary criterion: `primary` when set, else the first question's key."""
    return primary or criterion_keys(questions)[0]


def ordered_criteria(keys: Iterable[str], primary: str) -> list[str]:
    """`keys` with the primary first, the others in their given order (duplicates dropped)."""
    seen = [primary]
    for k in keys:
        if k not in seen:
            seen.append(k)
    return seen


def rows_by_criterion(rows: Sequence[Mapping[str, Any]], primary: str | None = None) -> dict[str, list[Any]]:
    """Rating rows grouped by their `criterion` (a row without one answers the primary criterion),
    the primary criterion first. `primary` None: the first criterion met (or the default)."""
    groups: dict[str, list[Any]] = {}
    for row in rows:
        key = row.get("criterion") or primary or DEFAULT_CRITERION
        groups.setdefault(str(key), []).append(row)
    if primary is None:
        primary = next(iter(groups), DEFAULT_CRITERION)
    return {k: groups.get(k, []) for k in ordered_criteria(groups, primary)}
