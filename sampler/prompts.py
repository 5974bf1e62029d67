"""Prompt files: plain text (one prompt per line), CSV, or JSON Lines.

CSV and JSON Lines records hold a `prompt` field and optionally a prompt id (`prompt_id`, else
`image_id`), a `stratum` (written by `sfgeval strata`), and a seed (`seed`, else
`evaluation_seed`, as in coco_30k.csv). Without an id column the id is the 1-based record number
(the line number for .txt and .jsonl, the data-row number for .csv). Prompt text is stripped of
surrounding whitespace; inner newlines (a few COCO captions hold one) are kept.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ID_FIELDS = ("prompt_id", "image_id")
SEED_FIELDS = ("seed", "evaluation_seed")


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and the place."""


@dataclass(frozen=True)
class PromptRecord:
    prompt_id: str
    prompt: str
    stratum: str | None = None
    seed: int | None = None


def _record(path: Path, where: str, number: int, fields: dict[str, Any]) -> PromptRecord:
    text = fields.get("prompt")
    if text is None:
        raise PromptFileError(f"{path}: {where}: no 'prompt' field")
    if not isinstance(text, str):
        raise PromptFileError(f"{path}: {where}: 'prompt' must be text")
    text = text.strip()
    if not text:
        raise PromptFileError(f"{path}: {where}: the prompt is empty")
    pid = next((fields[k] for k in ID_FIELDS if fields.get(k) not in (None, "")), None)
    pid = str(number) if pid is None else str(pid).strip()
    stratum = fields.get("stratum")
    stratum = None if stratum in (None, "") else str(stratum).strip()
    raw_seed = next((fields[k] for k in SEED_FIELDS if fields.get(k) not in (None, "")), None)
    seed = None
    if raw_seed is not None:
        try:
            seed = int(str(raw_seed).strip())
        except ValueError:
            raise PromptFileError(f"{path}: {where}: seed {raw_seed!r} is not an integer") from None
        if seed < 0:
            raise PromptFileError(f"{path}: {where}: seed {seed} is negative")
    return PromptRecord(prompt_id=pid, prompt=text, stratum=stratum, seed=seed)


def _read_txt(path: Path, text: str) -> list[PromptRecord]:
    return [
        PromptRecord(prompt_id=str(n), prompt=line.strip())
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def _read_csv(path: Path, text: str) -> list[PromptRecord]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    if not reader.fieldnames:
        return []
    fields = [f.strip() for f in reader.fieldnames]
    if "prompt" not in fields:
        raise PromptFileError(f"{path}: no 'prompt' column (columns: {', '.join(fields)})")
    reader.fieldnames = fields
    out = []
    try:
        for n, row in enumerate(reader, start=1):
            if None in row:
                raise PromptFileError(f"{path}: data row {n} (line {reader.line_num}): more cells than columns")
            if not any((v or "").strip() for v in row.values()):
                continue  # a blank line
            out.append(_record(path, f"data row {n} (line {reader.line_num})", n, row))
    except csv.Error as e:
        raise PromptFileError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    return out


def _read_jsonl(path: Path, text: str) -> list[PromptRecord]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{path}: line {n}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise PromptFileError(f"{path}: line {n}: expected a JSON object with a 'prompt' field")
        out.append(_record(path, f"line {n}", n, obj))
    return out


READERS = {".txt": _read_txt, ".csv": _read_csv, ".jsonl": _read_jsonl}


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """All prompts of a .txt, .csv or .jsonl file, in file order.

    Raises PromptFileError for a missing, empty or malformed file, an unknown extension, an
    empty prompt in a CSV/JSONL record, or a repeated prompt id.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise PromptFileError(f"{path}: unknown prompt file type {path.suffix!r} (use .txt, .csv or .jsonl)")
    if not path.is_file():
        raise PromptFileError(f"{path}: no such prompt file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    records = reader(path, text)
    if not records:
        raise PromptFileError(f"{path}: the file holds no prompts")
    seen: dict[str, int] = {}
    for n, rec in enumerate(records, start=1):
        if rec.prompt_id in seen:
            raise PromptFileError(
                f"{path}: prompt id {rec.prompt_id!r} appears twice (records {seen[rec.prompt_id]} and {n})"
            )
        seen[rec.prompt_id] = n
    return records
