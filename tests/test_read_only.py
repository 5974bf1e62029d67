"""Reads never write: every GET page of a study with ratings, and `sfgeval report`, leave the
database exactly as it was (SQLite and PostgreSQL).

The one GET that writes by contract is a participant's own `next` while they still have work (it
hands out their next trial, api.md); a finished participant's `next` only reads, and is visited.
The study is set up so that monitoring says "stop" with auto-close switched on after the answers:
before this rule, showing statistics closed it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.routing import APIRoute
from sqlalchemy import select

from app.cli import main
from app.store.models import Base, Image, Pair, Participant, Rating, Study, Trial
from app.studies.config import update_study
from tests.test_admin import admin_client  # noqa: F401  (fixture)
from tests.test_monitoring_study import seed_study
from tests.test_report import read


def get_paths(routes, prefix: str = "") -> list[str]:
    """Every GET path the app serves (through included routers too)."""
    out = []
    for r in routes:
        if isinstance(r, APIRoute):
            if "GET" in r.methods:
                out.append(prefix + r.path)
        elif hasattr(r, "original_router"):
            out += get_paths(r.original_router.routes, prefix + (r.include_context.prefix or ""))
        elif hasattr(r, "routes") and not hasattr(r, "app"):
            out += get_paths(r.routes, prefix + getattr(r, "path", ""))
    return out


def snapshot(app) -> dict[str, list]:
    """Every row of every table, in a stable order."""
    with app.state.sessionmaker() as s:
        return {t.name: sorted((tuple(repr(v) for v in row) for row in s.execute(select(t))))
                for t in Base.metadata.sorted_tables}


def _urls(path: str, values: dict[str, list[str]]) -> list[str]:
    urls = [path]
    for name in re.findall(r"{(\w+)}", path):
        urls = [u.replace("{" + name + "}", v) for u in urls for v in values[name]]
    return urls


@pytest.fixture
def stopped_study(admin_client, app, study_factory):  # noqa: F811
    study = seed_study(admin_client, app, study_factory)
    with app.state.sessionmaker() as s:
        update_study(s, s.get(Study, study.id), {"monitoring": {"look_every": 5, "auto_close": True}})
        s.commit()
    return study


def test_every_get_page_and_the_report_leave_the_database_unchanged(admin_client, app, stopped_study, db_url,  # noqa: F811
                                                                      tmp_path, client):
    study = stopped_study
    pair_id = read(app, lambda s: s.scalar(select(Pair.id).join(Trial, Trial.pair_id == Pair.id)
                                           .where(Trial.study_id == study.id)))
    image_token = read(app, lambda s: s.scalar(select(Image.token).where(Image.id == s.get(Pair, pair_id).baseline_image_id)))
    finished = read(app, lambda s: s.scalar(select(Participant.token).join(Trial, Trial.participant_id == Participant.id)
                                            .join(Rating, Rating.trial_id == Trial.id).where(Trial.study_id == study.id)))
    values = {
        "slug": [study.slug], "pair_id": [str(pair_id)], "which": ["baseline", "treatment", "map"],
        "token": [image_token, finished], "fmt": ["csv", "json", "yaml", "png", "pdf"],
    }
    paths = get_paths(app.routes)
    assert "/admin/studies/{slug}/statistics" in paths and "/s/{slug}" in paths  # the walk found the routers
    before = snapshot(app)
    assert read(app, lambda s: s.get(Study, study.id).state) == "open"
    statuses = {}
    for path in paths:
        for url in _urls(path, values):
            r = admin_client.get(url, follow_redirects=False)
            statuses[url] = r.status_code
            assert r.status_code < 500, (url, r.status_code)
    # The figure and plan pages with their query strings.
    for url in (f"/admin/studies/{study.slug}/figure?pair={pair_id}", f"/admin/studies/{study.slug}/figure.png?top=1",
                f"/admin/studies/{study.slug}/pairs?stratum=x", f"/admin/studies/{study.slug}/statistics.json"):
        assert admin_client.get(url).status_code < 500
    assert statuses[f"/admin/studies/{study.slug}/statistics"] == 200
    assert statuses[f"/admin/studies/{study.slug}/progress"] == 200
    res = CliRunner().invoke(main, ["report", study.slug, "--out", str(tmp_path), "--database-url", db_url,
                                    "--draws", "20"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["study", "monitor", study.slug, "--database-url", db_url])
    assert res.exit_code == 0, res.output
    after = snapshot(app)
    changed = [t for t in before if before[t] != after[t]]
    assert changed == []
    assert read(app, lambda s: s.get(Study, study.id).state) == "open"


def test_the_snapshot_sees_a_write(app, study_factory):
    """The comparison above can fail: a real change shows up in the snapshot."""
    study = study_factory(n_pairs=2)
    before = snapshot(app)
    with app.state.sessionmaker() as s:
        s.get(Study, study.id).title = "changed"
        s.commit()
    assert snapshot(app)["studies"] != before["studies"]
    assert np.all([before[t] == snapshot(app)[t] for t in before if t != "studies"])
