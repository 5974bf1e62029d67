"""Signing up: cleaning crowd ids and creating (or resuming, by crowd id) a participant."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.assignment.errors import FlowError
from app.assignment.plans import make_plan
from app.models import Participant, Study

MAX_EXTERNAL_IDS = 20
CROWD_ID_KEYS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "workerId", "assignmentId", "hitId")
# The ids that identify a person across devices, in order of preference.
PERSON_KEYS = ("PROLIFIC_PID", "workerId")


def clean_external_ids(raw: dict[str, Any] | None) -> dict[str, str]:
    if not raw:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_EXTERNAL_IDS:
        raise FlowError(422, f"external_ids must be an object with at most {MAX_EXTERNAL_IDS} entries")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, (str, int)) or len(k) > 64 or len(str(v)) > 200:
            raise FlowError(422, "external_ids values must be strings of at most 200 characters")
        if str(v):
            out[k] = str(v)
    return out


def _by_key(session: Session, study: Study, key: str) -> Participant | None:
    return session.scalar(
        select(Participant).where(Participant.study_id == study.id, Participant.external_key == key)
    )


def create_participant(
    session: Session, study: Study, external_ids: dict[str, Any] | None, now: datetime
) -> tuple[Participant, bool]:
    """A new participant of an open study, or the existing one with the same crowd id.

    Returns (participant, created). Commits.
    """
    if study.state != "open":
        raise FlowError(409, "this study is not open for participants", "not_open")
    ids = clean_external_ids(external_ids)
    key = next((f"{k}:{ids[k]}" for k in PERSON_KEYS if ids.get(k)), None)
    if key is not None:
        found = _by_key(session, study, key)
        if found is not None:
            return found, False
    seed = secrets.randbelow(2**31)
    participant = Participant(
        study_id=study.id,
        token=secrets.token_hex(32),
        external_ids=ids,
        external_key=key,
        seed=seed,
        plan=make_plan(study, seed),
        consented_at=now,
    )
    session.add(participant)
    try:
        session.commit()
    except IntegrityError:
        # The same crowd id signed up twice at once: the other request won; resume it.
        session.rollback()
        found = _by_key(session, study, key) if key is not None else None
        if found is None:
            raise
        return found, False
    return participant, True
