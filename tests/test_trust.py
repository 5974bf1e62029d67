"""Trust, round 2 (issue 22): each cheap crowd attack and admin lock-out, performed against a
served app, with the outcome it must have. Every DB test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from app.store.models import Participant, Study
from tests.test_api import answer, join, next_


def _answer_all(client, token, limit=60) -> dict:
    """Answer every trial `token` is given; returns the final /next body (done or an error)."""
    for _ in range(limit):
        r = next_(client, token)
        if r.status_code != 200 or r.json().get("done"):
            return {"status": r.status_code, **r.json()}
        a = answer(client, token, r.json()["trial"], 3)
        assert a.status_code in (200, 409), a.text
    raise AssertionError("participant never finished")


# ------------------------------------------------------------------ 6: the last answer of an auto-closing study
def test_last_answer_of_auto_closing_study_ends_done_with_code(client, session, study_factory):
    study = study_factory(n_pairs=2, pairs_per_participant=2, ratings_per_pair=1, auto_close=True,
                          completion_code="LAST42")
    slug, study_id = study.slug, study.id
    session.rollback()
    token = join(client, slug)
    end = _answer_all(client, token)
    assert end["status"] == 200 and end["done"] is True, end
    assert end["completion_code"] == "LAST42"
    session.expire_all()
    assert session.scalar(select(Study.state).where(Study.id == study_id)) == "closed"
    session.rollback()
    # The done page shows the code too.
    client.cookies.set("participant", token)
    page = client.get(f"/s/{slug}/done")
    assert page.status_code == 200 and "LAST42" in page.text
