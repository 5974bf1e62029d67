"""The monitoring stop, applied after an answer has been sent (a background task of the answer).

`check_after_answer(sessionmaker, study_id)` runs once the participant already has the response,
so nothing about the answer's timing depends on the data. Per process, one check per study runs
at a time; answers that arrive meanwhile mark it to run once more, so the last answer's look is
never skipped. A concurrent check in another worker that closed the study first wins (the study
is then no longer open; a clash on the new version's number rolls back here).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from sqlalchemy.exc import IntegrityError

from app.analysis.study_statistics import apply_monitoring_stop
from app.statistics import StatisticsInputError
from app.store.models import Study

log = logging.getLogger(__name__)

_guard = threading.Lock()
# (database, study id) -> another answer arrived while its check ran. Keyed by the app's
# sessionmaker too: several apps (databases) in one process have studies with the same ids.
_pending: dict[tuple[int, int], bool] = {}


def check_after_answer(sessionmaker: Callable[[], Any], study_id: int) -> None:
    key = (id(sessionmaker), study_id)
    with _guard:
        if key in _pending:
            _pending[key] = True
            return
        _pending[key] = False
    try:
        while True:
            _check(sessionmaker, study_id)
            with _guard:
                if not _pending[key]:
                    break
                _pending[key] = False
    finally:
        with _guard:
            _pending.pop(key, None)


def _check(sessionmaker: Callable[[], Any], study_id: int) -> None:
    with sessionmaker() as session:
        study = session.get(Study, study_id)
        if study is None:
            return
        try:
            if apply_monitoring_stop(session, study):
                session.commit()
                log.info("study %s closed at its monitoring stop (version %d)", study.slug, study.version)
        except IntegrityError:
            session.rollback()  # another worker recorded the stop at the same moment
        except StatisticsInputError as e:
            session.rollback()
            log.warning("monitoring of study %s not computed: %s", study.slug, e)
