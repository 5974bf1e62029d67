"""Statistics of a study for researchers and admins: an HTML page and its JSON twin, served by
`app.web.pages.twin` from one data function (`statistics_data`, the cached statistics).

- `GET /admin/studies/{slug}/statistics`: the report (`templates/report.html`), reloading itself
  while the study runs.
- `GET /admin/studies/{slug}/statistics.json`: the same numbers as `sfgeval report` writes to
  statistics.json.

Both need a logged-in admin. Statistics are cached per study keyed by
`app.analysis.study_statistics.rating_fingerprint` (study version, rating count, last rating id): recomputed only
when a rating arrives, and while ratings stream in at most once every `MIN_RECOMPUTE_SECONDS`
(the page says how many ratings it covers). Both only read: the monitoring stop is applied after
an answer is stored or by the admin's explicit POST (`app.web.routes.admin.studies`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from app.web.deps import SessionDep
from app.web.pages import Serialised, twin
from app.web.schemas import StatisticsReport
from app.web.auth import CurrentAdmin
from app.store.models import AdminUser
from app.analysis.study_statistics import DEFAULT_DRAWS, rating_fingerprint, study_statistics
from app.reporting.datasheet import study_datasheet
from app.reporting.report import render_report, statistics_json
from app.statistics import StatisticsInputError
from app.studies.config import StudyError, get_study

router = APIRouter(prefix="/admin/studies", include_in_schema=False)

MIN_RECOMPUTE_SECONDS = 10.0
REFRESH_SECONDS = 30


@dataclass
class _Entry(Serialised):
    fingerprint: tuple[int, ...]
    computed_at: float
    stats: dict[str, Any]
    json_text: str
    html: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def page(self) -> str:
        """The live report page, rendered once per entry."""
        with self.lock:
            if self.html is None:
                json_url = f"/admin/studies/{self.stats['study']['slug']}/statistics.json"
                self.html = render_report(self.stats, live=True, refresh_seconds=REFRESH_SECONDS, json_url=json_url)
            return self.html


class StatisticsCache:
    """Per-study statistics, recomputed when the study's rating fingerprint changes.

    Thread-safe: one computation per study at a time; other requests wait for it.
    """

    def __init__(self, min_recompute_seconds: float = MIN_RECOMPUTE_SECONDS, max_studies: int = 32) -> None:
        self.min_recompute_seconds = min_recompute_seconds
        self.max_studies = max_studies
        self._entries: dict[int, _Entry] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self.computations = 0  # for tests and monitoring

    def _lock(self, study_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(study_id, threading.Lock())

    def get(self, session, study) -> _Entry:
        with self._lock(study.id):
            fp = rating_fingerprint(session, study)
            entry = self._entries.get(study.id)
            if entry is not None and (
                entry.fingerprint == fp
                # A study edit changes what is shown (config, rules): never serve the old version.
                or (entry.fingerprint[1] == fp[1] and time.monotonic() - entry.computed_at < self.min_recompute_seconds)
            ):
                return entry
            stats = study_statistics(session, study, draws=DEFAULT_DRAWS)
            stats["datasheet"] = study_datasheet(session, study, stats)
            stats["cache"] = {"ratings_counted": fp[2], "last_rating_id": fp[3]}
            entry = _Entry(fp, time.monotonic(), stats, statistics_json(stats))
            with self._guard:
                self._entries[study.id] = entry
                while len(self._entries) > self.max_studies:
                    self._entries.pop(next(iter(self._entries)))
            self.computations += 1
            return entry


cache = StatisticsCache()


def _report_page(request: Request, admin: AdminUser, entry: _Entry) -> HTMLResponse:
    return HTMLResponse(entry.page())


@twin(router, "/{slug}/statistics", _report_page, StatisticsReport)
def statistics_data(slug: str, admin: CurrentAdmin, session: SessionDep) -> _Entry:
    """The study's statistics from the cache (computed when a rating arrived since)."""
    try:
        study = get_study(session, slug)
    except StudyError as e:
        raise HTTPException(status_code=404, detail=str(e)) from None
    try:
        return cache.get(session, study)
    except StatisticsInputError as e:
        raise HTTPException(status_code=422, detail=f"cannot compute statistics: {e}") from None
