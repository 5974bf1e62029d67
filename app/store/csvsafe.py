"""Every CSV the product writes goes through here, so that no cell can run in a spreadsheet.

Participants control text that reaches CSV files (crowd ids, and through a manifest or a review
also prompts and reasons). A spreadsheet runs a cell that starts with = + - @ (and TAB or CR,
which some strip first) as a formula, and a bare CR or LF inside a cell starts a new row in
readers that split lines. So:

- a string cell whose first character (after any spaces) is one of = + - @ TAB CR, or their
  full-width forms, gets a leading apostrophe (`'=HYPERLINK(...)` shows as text; OWASP's advice);
- numbers, booleans and None are written as they are (a score of -2 stays the number -2);
- a cell holding CR or LF is always quoted (the csv module quotes LF but not CR when rows end
  in "\\n"), so an embedded line break never forges a row.

`csv_text(header, rows)` writes a header and rows (sequences); `dict_csv(columns, rows)` writes
dict rows by column name. Both end lines in "\\n".
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")


def safe_cell(value: Any) -> Any:
    """`value` as a cell no spreadsheet runs: numbers, booleans and None unchanged, text neutralised."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else str(value)
    head = text.lstrip(" ")[:1]
    if head and head in FORMULA_START:
        return "'" + text
    return text


def _writer(buf: io.StringIO):
    # "\r\n" as the writer's line end makes it quote any cell holding CR or LF; each row's own
    # "\r\n" is then turned back into the product's "\n".
    return csv.writer(buf, lineterminator="\r\n")


def csv_text(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    """CSV text: `header` (if given) and `rows`, every cell through `safe_cell`."""
    out = io.StringIO()
    buf = io.StringIO()
    writer = _writer(buf)

    def write(row: Sequence[Any]) -> None:
        buf.seek(0)
        buf.truncate()
        writer.writerow([safe_cell(v) for v in row])
        out.write(buf.getvalue()[:-2] + "\n")

    if header is not None:
        write(header)
    for row in rows:
        write(row)
    return out.getvalue()


def dict_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV text with a header of `columns` and one line per dict row (missing keys empty)."""
    return csv_text(list(columns), ([row.get(c) for c in columns] for row in rows))
