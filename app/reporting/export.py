"""Raw ratings export: one row per rating (per answered question of a trial), the columns of api.md, as CSV or JSON.

The rows come from `app.analysis.ratings.rating_rows` (what the statistics and both exports consume). Columns, in order:
`EXPORT_COLUMNS` exactly as api.md lists them, then `EXTRA_COLUMNS`. Score convention:
`score` -2..+2, positive = treatment better (for gold trials: positive = the intact image was
preferred, i.e. the check was passed). Practice ratings are left out unless asked for.
"""

from __future__ import annotations

import json
from typing import Any

from app.analysis import ratings
from app.analysis.ratings import COLUMNS, EXPORT_COLUMNS, EXTRA_COLUMNS  # noqa: F401  (the export's rows)
from app.store.csvsafe import csv_text

def rating_rows(session: Any, study: Any, *, include_practice: bool = False) -> list[dict[str, Any]]:
    """The export's rows: long format, one row per answered question per trial (`criterion`;
    issue 24), in answer order. A one-question study has one row per trial, as before."""
    return ratings.rating_rows(session, study, include_practice=include_practice, criteria=True)


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text with a header row of `COLUMNS`; `external_ids` as a JSON object string. Every cell
    goes through `app.store.csvsafe` (no formulas, no forged rows)."""
    return csv_text(list(COLUMNS), ([_csv_value(row.get(k)) for k in COLUMNS] for row in rows))


def rows_to_json(rows: list[dict[str, Any]]) -> str:
    """A JSON array of row objects with the same names as the CSV columns."""
    return json.dumps([{k: row.get(k) for k in COLUMNS} for row in rows], ensure_ascii=False, indent=1)
