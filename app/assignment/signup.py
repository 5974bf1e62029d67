"""Signing up: cleaning crowd ids and creating (or resuming, by crowd id) a participant."""

from __future__ import annotations

import hmac
import re
import secrets
import unicodedata
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.assignment.errors import FlowError
from app.assignment.plans import make_plan
from app.store.text import bad_text
from app.store.models import Participant, Study

MAX_EXTERNAL_IDS = 20
CROWD_ID_KEYS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "workerId", "assignmentId", "hitId")
# The ids that identify a person across devices, in order of preference.
PERSON_KEYS = ("PROLIFIC_PID", "workerId")
# Per-session ids the platform hands the person (not public like a PID): proof for a resume.
PROOF_KEYS = ("SESSION_ID", "assignmentId")
CROWD_ID_IN_USE = (
    "this crowd id has already started this study in another browser; continue there, or open the "
    "study from the platform again (its link carries your session id)"
)


# Per platform, what an id is once normalised (the identity everywhere: duplicate check, exports).
# Prolific ids are 24 hex digits (lower case); MTurk ids are upper-case letters and digits.
LOWER_KEYS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
UPPER_KEYS = ("workerId", "assignmentId", "hitId")
# Control characters (C0, DEL, C1), format characters (bidi marks and overrides, zero-width
# spaces and joiners, BOM) and line/paragraph separators: invisible, so one person could type
# "new" ids with them; refused with a 422 rather than silently stripped.
_INVISIBLE_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"))
_PLAIN = re.compile(r"^[\x20-\x7e]*$")
BAD_CROWD_ID = "external_ids must not contain control, format or bidirectional characters"


def _invisible(text: str) -> bool:
    if _PLAIN.match(text):  # the usual case (ASCII ids), without a per-character lookup
        return False
    return any(unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in text)


def normalise_crowd_id(key: str, value: str) -> str:
    """`value` of crowd id `key` as the identity: Unicode NFKC (full-width digits become digits),
    surrounding white space trimmed, then lower case for Prolific ids and upper case for MTurk
    ids. FlowError(422) when it holds a control, format or bidi character (before or after NFKC)."""
    if _invisible(value):
        raise FlowError(422, BAD_CROWD_ID, "bad_crowd_id")
    value = unicodedata.normalize("NFKC", value)
    if _invisible(value):
        raise FlowError(422, BAD_CROWD_ID, "bad_crowd_id")
    value = value.strip()
    if key in LOWER_KEYS:
        return value.lower()
    if key in UPPER_KEYS:
        return value.upper()
    return value


def clean_external_ids(raw: dict[str, Any] | None) -> dict[str, str]:
    """The crowd ids as stored: every value normalised (`normalise_crowd_id`), empty ones dropped."""
    if not raw:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_EXTERNAL_IDS:
        raise FlowError(422, f"external_ids must be an object with at most {MAX_EXTERNAL_IDS} entries")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if (not isinstance(k, str) or not isinstance(v, (str, int)) or len(k) > 64
                or len(str(v)) > 200):
            raise FlowError(422, "external_ids values must be strings of at most 200 characters")
        if bad_text(k) or bad_text(str(v)):
            raise FlowError(422, "external_ids must not contain NUL characters or unpaired surrogates")
        if _invisible(k):
            raise FlowError(422, BAD_CROWD_ID, "bad_crowd_id")
        value = normalise_crowd_id(k, str(v))
        if len(value) > 200:
            raise FlowError(422, "external_ids values must be strings of at most 200 characters")
        if value:
            out[k] = value
    return out


def _by_key(session: Session, study: Study, key: str) -> Participant | None:
    return session.scalar(
        select(Participant).where(Participant.study_id == study.id, Participant.external_key == key)
    )


def _resume(found: Participant, ids: dict[str, str], proof_token: str | None) -> Participant:
    """`found` (same crowd id) if the request proves it is the same person, else FlowError(409):
    a PID is public enough that knowing it must not hand over someone's participation."""
    if proof_token and hmac.compare_digest(found.token.encode(), proof_token.encode()):
        return found
    stored = found.external_ids or {}
    for k in PROOF_KEYS:
        if stored.get(k) and ids.get(k) and hmac.compare_digest(str(stored[k]).encode(), ids[k].encode()):
            return found
    raise FlowError(409, CROWD_ID_IN_USE, "crowd_id_in_use")


def create_participant(
    session: Session, study: Study, external_ids: dict[str, Any] | None, now: datetime,
    proof_token: str | None = None,
) -> tuple[Participant, bool]:
    """A new participant of an open study, or the existing one with the same crowd id when the
    request proves it is them: the same `SESSION_ID`/`assignmentId`, or `proof_token` (the
    participant's own token, from their cookie). Otherwise FlowError(409, reason 'crowd_id_in_use').

    Returns (participant, created). Commits.
    """
    if study.state != "open":
        raise FlowError(409, "this study is not open for participants", "not_open")
    ids = clean_external_ids(external_ids)
    key = next((f"{k}:{ids[k]}" for k in PERSON_KEYS if ids.get(k)), None)
    if key is not None:
        found = _by_key(session, study, key)
        if found is not None:
            return _resume(found, ids, proof_token), False
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
        return _resume(found, ids, proof_token), False
    return participant, True
