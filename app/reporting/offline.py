"""`sfgeval analyze`: the report bundle from export files, with no database.

`write_offline_report(paths, out_dir, rules=None, *, draws, seed, primary_comparison)` reads one
or more export files (`app.statistics.offline.read_exports`: CSV or JSON, pooled), computes the
same statistics `sfgeval report` computes (`app.statistics.offline.analyze_exports`: the same
exclusion rules, duplicate rule, estimator and tests) and writes the same bundle with
`app.reporting.report.write_report` (report.html, statistics.json, ratings.csv, the paper files).
What only the database knows is left out and said so: no `study` description (the report says the
statistics come from a ratings file), no `monitoring` (no recorded looks or stops), no
participant flow, no datasheet, no gallery. It never opens a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from app.reporting.report import write_report
from app.statistics.offline import analyze_exports, read_exports


class OfflineReport(NamedTuple):
    """What `write_offline_report` did: the files written, the statistics and the number of rows."""

    paths: dict[str, Path]
    stats: dict[str, Any]
    n_ratings: int


def write_offline_report(paths: Iterable[str | Path], out_dir: Path,
                         rules: str | Path | Mapping[str, Any] | None = None, *, draws: int = 1000,
                         seed: int = 0, primary_comparison: str | None = None) -> OfflineReport:
    """`sfgeval analyze`'s bundle in out_dir from the pooled export files.

    Raises `app.statistics.StatisticsInputError` for a missing or malformed file (with the file's
    name), and OSError when out_dir cannot be written.
    """
    files = [Path(p) for p in paths]
    rows = read_exports(files)
    stats = analyze_exports(files, rules, draws=draws, seed=seed, primary_comparison=primary_comparison)
    versions = {r.get("study_version") for r in rows} - {None}
    stats["study_versions_in_ratings"] = sorted(v for v in versions if isinstance(v, int))
    stats["generated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return OfflineReport(write_report(Path(out_dir), stats, rows), stats, len(rows))
