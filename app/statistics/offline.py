"""Offline analysis: the report's statistics from export files, with no database (`sfgeval analyze`).

    rows = read_exports(["ratings-a.csv", "ratings-b.json"])
    stats = analyze_exports(["ratings.csv"], rules="rules.yaml")

`read_exports` reads one or more researcher exports (CSV or JSON, the column names of api.md's
export section, as `sfgeval export` and the report's ratings.csv write them) into the same rows
`app.analysis.ratings.rating_rows` gives the report; `analyze_exports` runs `compute_statistics` on them
with the same exclusion rules, duplicate rule, estimator and tests. Several exports are pooled;
when they come from different studies (`study` column), participant and pair ids are prefixed
with the study (ids are per database), prompts are not (a prompt id names the same caption).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from app.statistics.results import compute_statistics
from app.statistics.rows import REQUIRED_COLUMNS, StatisticsInputError

INT_COLUMNS = ("study_version", "choice", "score", "seed", "position")
FLOAT_COLUMNS = ("response_ms", "client_response_ms", "min_response_ms")


def _value(column: str, v: Any) -> Any:
    if isinstance(v, str):
        v = v.strip()
        if v == "":
            return None
    if v is None:
        return None
    if column == "external_ids" and isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return {"raw": v}
    if column in INT_COLUMNS:
        try:
            return int(v)
        except (TypeError, ValueError):
            try:
                f = float(v)
            except (TypeError, ValueError):
                return v  # ratings_from_rows names the bad row
            return int(f) if f.is_integer() else v
    if column in FLOAT_COLUMNS:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return v
        return f if math.isfinite(f) else None
    return v


def _read_one(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise StatisticsInputError(f"{path}: not a UTF-8 text file (an export is CSV or JSON)") from None
    except OSError as e:
        raise StatisticsInputError(f"{path}: cannot read ({e.strerror or e})") from None
    if not text.strip():
        raise StatisticsInputError(f"{path}: empty file (no header row)")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise StatisticsInputError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
            raise StatisticsInputError(f"{path}: a JSON export is an array of rating objects")
        raw = [dict(r) for r in data]
    else:
        try:
            reader = csv.DictReader(text.splitlines())
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise StatisticsInputError(f"{path}: missing column(s) {', '.join(missing)}")
            raw = list(reader)
        except csv.Error as e:
            raise StatisticsInputError(f"{path}: not a valid CSV file ({e})") from None
        for i, r in enumerate(raw):
            if None in r:  # more cells than the header has columns
                raise StatisticsInputError(f"{path}: data row {i + 1} has more cells than the header")
            if any(v is None for v in r.values()):
                raise StatisticsInputError(f"{path}: data row {i + 1} has fewer cells than the header")
    if raw:
        missing = [c for c in REQUIRED_COLUMNS if c not in raw[0]]
        if missing:
            raise StatisticsInputError(f"{path}: missing column(s) {', '.join(missing)}")
    return [{k: _value(k, v) for k, v in r.items() if k is not None} for r in raw]


def read_exports(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Rows of one or more export files (CSV or JSON), pooled, as `app.analysis.ratings.rating_rows` gives them.

    Rows keep their file order (the export's answer order). With several studies among the rows,
    `participant` and `pair` become "STUDY:ID" (ids are only unique within one database).
    """
    rows: list[dict[str, Any]] = []
    files = [Path(p) for p in paths]
    if not files:
        raise StatisticsInputError("no export file given")
    for path in files:
        if not path.is_file():
            raise StatisticsInputError(f"{path}: no such file")
        rows.extend(_read_one(path))
    studies = {r.get("study") for r in rows}
    if len(studies) > 1:
        for r in rows:
            for key in ("participant", "pair"):
                r[key] = f"{r.get('study')}:{r[key]}"
    return rows


def load_rules(rules: str | Path | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Exclusion rules from a YAML or JSON file (a mapping, or a study config with `exclusion_rules`)."""
    if rules is None or isinstance(rules, Mapping):
        return None if rules is None else dict(rules)
    import yaml

    try:
        data = yaml.safe_load(Path(rules).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise StatisticsInputError(f"{rules}: cannot read the exclusion rules ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        raise StatisticsInputError(f"{rules}: not valid YAML or JSON ({e})") from None
    if not isinstance(data, Mapping):
        raise StatisticsInputError(f"{rules}: exclusion rules must be a mapping")
    return dict(data.get("exclusion_rules", data))


def _min_response_ms(rows: list[dict[str, Any]]) -> float | None:
    """The study's minimum response time from the export's `min_response_ms` column (one value)."""
    values = {r.get("min_response_ms") for r in rows} - {None}
    return float(values.pop()) if len(values) == 1 else None


def analyze_exports(paths: Iterable[str | Path], rules: str | Path | Mapping[str, Any] | None = None, *,
                    draws: int = 1000, seed: int = 0, primary_comparison: str | None = None,
                    min_response_ms: float | None = None) -> dict[str, Any]:
    """`compute_statistics` of the pooled export files (the same dict `sfgeval report` writes as
    statistics.json, without the database-only parts: monitoring, study description), plus `source`."""
    files = [str(p) for p in paths]
    rows = read_exports(files)
    stats = compute_statistics(rows, exclusion_rules=load_rules(rules),
                               min_response_ms=min_response_ms if min_response_ms is not None
                               else _min_response_ms(rows),
                               draws=draws, seed=seed, primary_comparison=primary_comparison)
    stats["source"] = {"files": files, "n_rows": len(rows),
                       "studies": sorted({str(r.get("study")) for r in rows}),
                       "note": "offline analysis of export files (no database)"}
    return stats
