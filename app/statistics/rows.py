"""Rows -> arrays: validate exported rating rows and turn them into parallel numpy arrays."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import numpy as np

from app.statistics.scoring import CHOICES, SCORES

REQUIRED_COLUMNS = (
    "participant",
    "pair",
    "prompt_id",
    "treatment_side",
    "choice",
    "score",
    "is_gold",
    "is_repeat",
    "response_ms",
)
# Order in which exclusion rules are applied; each rule sees only the participants the
# previous rules kept, so the counts removed at each step add up.


class StatisticsInputError(ValueError):
    """Rating rows that cannot be analysed (missing column, answer out of range)."""



def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "t", "yes", "y"}
    return bool(value)


def _as_label(value: Any, missing: str = "(none)") -> str:
    return missing if value is None or value == "" else str(value)


@dataclass(frozen=True)
class Ratings:
    """Rating rows as parallel arrays (length N, one entry per rating).

    Identifiers are kept as strings; `participant`, `prompt` and `pair` also as integer codes
    into the sorted unique labels (`participants`, `prompts`, `pairs`).
    """

    participant: np.ndarray  # int codes
    participants: np.ndarray  # labels (str)
    prompt: np.ndarray
    prompts: np.ndarray
    pair: np.ndarray
    pairs: np.ndarray
    comparison: np.ndarray  # str labels
    stratum: np.ndarray  # str labels
    choice: np.ndarray  # int 1..5 as shown
    score: np.ndarray  # int -2..+2, positive = treatment preferred
    treatment_left: np.ndarray  # bool
    is_gold: np.ndarray
    is_repeat: np.ndarray
    gold_passed: np.ndarray  # float: 1 passed, 0 failed, nan for non-gold ratings
    response_ms: np.ndarray  # float, nan when missing
    answered: np.ndarray  # float: answer time in seconds (POSIX), inf when unknown
    duplicate: np.ndarray  # bool: a main rating of a (participant, pair) that already has an earlier one

    def __len__(self) -> int:
        return len(self.score)

    def subset(self, mask: np.ndarray) -> Ratings:
        """The ratings where `mask` is true (or at the indices `mask`), with codes re-numbered."""
        coded = {}
        for name, labels_name in (("participant", "participants"), ("prompt", "prompts"), ("pair", "pairs")):
            used, codes = np.unique(getattr(self, name)[mask], return_inverse=True)
            coded[name] = codes.astype(np.int64)
            coded[labels_name] = getattr(self, labels_name)[used]
        plain = ("comparison", "stratum", "choice", "score", "treatment_left", "is_gold", "is_repeat",
                 "gold_passed", "response_ms", "answered", "duplicate")
        return Ratings(**coded, **{name: getattr(self, name)[mask] for name in plain})


def _codes(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes into the sorted distinct labels (str) of `values`; None becomes "(none)".

    Codes follow the sorted labels, not row order, so the bootstrap draws (which index
    participants and prompts by code) do not depend on the order the rows came in.
    """
    distinct = set(values)
    label_of = {v: _as_label(v) for v in distinct}
    labels = sorted(set(label_of.values()))
    index = {label: i for i, label in enumerate(labels)}
    code_of = {v: index[label_of[v]] for v in distinct}
    codes = np.fromiter(map(code_of.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, np.asarray(labels, dtype=str)


def _gold_passed(row: Mapping[str, Any], score: int) -> float:
    """1.0 when a gold trial was answered for the intact image, else 0.0.

    On gold trials the intact image plays "treatment" and its degraded twin "baseline" (see
    `app.store.models`), so a positive score passes; a `gold_passed` column, when present, wins.
    """
    if row.get("gold_passed") is not None:
        return float(_as_bool(row["gold_passed"]))
    return float(score > 0)


def _bools(values: list) -> np.ndarray:
    if set(map(type, values)) <= {bool}:
        return np.array(values, dtype=bool)
    return np.fromiter(map(_as_bool, values), dtype=bool, count=len(values))


def _column(rows: Sequence[Mapping[str, Any]], column: str, default: Any = None) -> list[Any]:
    return [row.get(column, default) for row in rows]


def _ints(rows: Sequence[Mapping[str, Any]], column: str) -> np.ndarray:
    try:
        return np.fromiter(map(int, map(itemgetter(column), rows)), dtype=np.int64, count=len(rows))
    except (TypeError, ValueError):
        for i, row in enumerate(rows):
            try:
                int(row[column])
            except (TypeError, ValueError):
                raise StatisticsInputError(f"rating row {i}: {column} must be an integer, got {row[column]!r}") from None
        raise


MISSING = {"", "none", "null", "nan", "nat"}


def _times(values: list[Any]) -> np.ndarray:
    """ISO 8601 answer times (or datetimes) as POSIX seconds; missing ones as +inf (sorted last)."""
    out = np.full(len(values), math.inf)
    for i, v in enumerate(values):
        if v is None or str(v).strip().lower() in MISSING:
            continue
        try:
            out[i] = (v if isinstance(v, datetime) else datetime.fromisoformat(str(v))).timestamp()
        except ValueError:
            raise StatisticsInputError(f"rating row {i}: answered_at must be an ISO 8601 time, got {v!r}") from None
    return out


def ratings_from_rows(rows: Iterable[Mapping[str, Any]]) -> Ratings:
    """Validate export rows and turn them into arrays; practice rows are dropped.

    Raises StatisticsInputError naming the first bad row and column.
    """
    rows = list(rows)
    required = set(REQUIRED_COLUMNS)
    for i, row in enumerate(rows):
        if not required <= row.keys():
            missing = [c for c in REQUIRED_COLUMNS if c not in row]
            raise StatisticsInputError(f"rating row {i}: missing column(s) {', '.join(missing)}")
    practice = _bools(_column(rows, "is_practice", False))
    if practice.any():
        rows = [row for row, skip in zip(rows, practice.tolist()) if not skip]
    choice, score = _ints(rows, "choice"), _ints(rows, "score")
    for values, name, allowed in ((choice, "choice", CHOICES), (score, "score", SCORES)):
        bad = np.flatnonzero(~np.isin(values, allowed))
        if bad.size:
            raise StatisticsInputError(
                f"rating row {bad[0]}: {name} {values[bad[0]]} is not in {allowed[0]}..{allowed[-1]}"
            )
    side_code, side_labels = _codes(list(map(itemgetter("treatment_side"), rows)))
    bad = sorted(set(side_labels.tolist()) - {"left", "right"})
    if bad:
        first = int(np.flatnonzero(np.isin(side_labels[side_code], bad))[0])
        raise StatisticsInputError(
            f"rating row {first}: treatment_side must be 'left' or 'right', got {rows[first]['treatment_side']!r}"
        )
    treatment_left = side_labels[side_code] == "left"
    is_gold = _bools(list(map(itemgetter("is_gold"), rows)))
    gold_passed = np.full(len(rows), math.nan)
    for i in np.flatnonzero(is_gold):
        gold_passed[i] = _gold_passed(rows[i], int(score[i]))
    rms = list(map(itemgetter("response_ms"), rows))
    participant, participants = _codes(list(map(itemgetter("participant"), rows)))
    prompt, prompts = _codes(list(map(itemgetter("prompt_id"), rows)))
    pair, pairs = _codes(list(map(itemgetter("pair"), rows)))
    comparison, comparisons = _codes([row.get("comparison", row.get("pair_set")) for row in rows])
    stratum, strata = _codes(_column(rows, "stratum"))
    r = Ratings(
        participant=participant, participants=participants, prompt=prompt, prompts=prompts, pair=pair, pairs=pairs,
        comparison=comparisons[comparison],
        stratum=strata[stratum],
        choice=choice,
        score=score,
        treatment_left=treatment_left,
        is_gold=is_gold,
        is_repeat=_bools(list(map(itemgetter("is_repeat"), rows))),
        gold_passed=gold_passed,
        response_ms=np.array(rms, dtype=float) if None not in rms and "" not in rms
        else np.array([math.nan if v is None or v == "" else v for v in rms], dtype=float),
        answered=_times(_column(rows, "answered_at")),
        duplicate=np.zeros(len(rows), dtype=bool),
    )
    # A canonical order, so that results (down to the last floating-point bit) do not depend
    # on the order the rows came in (the export sorts by answer time, other callers may not);
    # within a (participant, pair) and kind of trial, the earliest answer comes first.
    order = np.lexsort((r.response_ms, r.choice, r.treatment_left, r.answered, r.is_gold, r.is_repeat, r.pair,
                        r.prompt, r.participant))
    r = r.subset(order)
    main = np.flatnonzero(~r.is_gold & ~r.is_repeat)
    key = r.participant[main] * max(r.pairs.size, 1) + r.pair[main]
    r.duplicate[main[1:]] = key[1:] == key[:-1]
    return r


def preference_mask(r: Ratings) -> np.ndarray:
    """Ratings that count towards the preference results: not gold, not a repeat, not a duplicate."""
    return ~r.is_gold & ~r.is_repeat & ~r.duplicate
