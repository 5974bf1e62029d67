"""Issue 23 on the database side (SQLite and PostgreSQL via `db_url`): the planned total of a
comparison is locked at its first rating (a later edit of the ratings per pair is recorded, not
used by monitoring), and a recorded monitoring stop is immutable (later exclusions show beside it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app.analysis.monitoring_study import locked_planned, planned_totals
from app.cli import main
from app.statistics.monitoring import TREATMENT
from app.store.models import Participant, Rating, Study, StudyVersion, Trial
from app.studies.config import StudyError, update_study
from app.web.routes import statistics as statistics_routes
from tests.test_admin import admin_client, csrf_of  # noqa: F401  (fixture)
from tests.test_monitoring_study import seed_study
from tests.test_report import rate, read


def _edit(app, study_id: int, changes: dict) -> None:
    with app.state.sessionmaker() as s:
        update_study(s, s.get(Study, study_id), changes)
        s.commit()
    statistics_routes.cache._entries.clear()


def test_the_planned_total_is_free_before_ratings_and_locked_at_the_first(admin_client, app, study_factory,  # noqa: F811
                                                                          db_url, tmp_path):
    study = study_factory(n_pairs=10, pairs_per_participant=5, ratings_per_pair=3, exclusion_rules={},
                          monitoring={"look_every": 5})
    study_id = study.id
    # No rating yet: the configured total is used and may change freely (10 pairs x 4).
    _edit(app, study_id, {"ratings_per_pair": 4})
    totals = read(app, lambda s: planned_totals(s, s.get(Study, study_id)))
    (label, t), = totals.items()
    assert t == {"planned": 40, "locked": False, "lock_now": False, "refused_change": None}
    rng = np.random.default_rng(1)
    for _ in range(3):
        rate(admin_client, study.slug, lambda: rng.integers(1, 6))
    statistics_routes.cache._entries.clear()
    assert read(app, lambda s: locked_planned(s, s.get(Study, study_id))) == {label: 40}
    # After ratings: an edit of the ratings per pair (a top-up) is allowed for collection, recorded
    # in the new version's note, and monitoring keeps the locked total.
    _edit(app, study_id, {"ratings_per_pair": 6})
    note = read(app, lambda s: s.scalar(select(StudyVersion.note).where(StudyVersion.study_id == study_id)
                                        .order_by(StudyVersion.version.desc()).limit(1)))
    assert note["planned_total"]["ratings_per_pair"] == {"before": 4, "after": 6}
    assert note["planned_total"]["per_comparison"][label] == {"before": 40, "after": 60}
    stats = admin_client.get(f"/admin/studies/{study.slug}/statistics.json").json()
    mon = stats["monitoring"]["comparisons"][label]
    assert mon["planned_ratings"] == 40 and mon["planned_locked"] is True
    assert mon["planned_change_refused"]["configured"] == 60 and mon["planned_change_refused"]["locked"] == 40
    res = CliRunner().invoke(main, ["report", study.slug, "--out", str(tmp_path), "--database-url", db_url,
                                    "--draws", "20"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    assert "the planned total is locked at 40 ratings" in html and "implies 60" in html
    assert json.loads((tmp_path / "statistics.json").read_text())["monitoring"]["comparisons"][label][
        "planned_ratings"] == 40
    # A second edit back to the locked value: nothing is refused any more.
    _edit(app, study_id, {"ratings_per_pair": 4})
    t = read(app, lambda s: planned_totals(s, s.get(Study, study_id)))[label]
    assert t["planned"] == 40 and t["refused_change"] is None
    # The admin's study page lists the edit in the version history.
    page = admin_client.get(f"/admin/studies/{study.slug}")
    assert page.status_code == 200 and "monitoring keeps the planned total locked" in page.text


def test_a_recorded_stop_stays_after_a_later_exclusion_and_the_report_shows_both(admin_client, app,  # noqa: F811
                                                                                study_factory, db_url, tmp_path):
    study = seed_study(admin_client, app, study_factory)
    token = csrf_of(admin_client.get(f"/admin/studies/{study.slug}").text)
    r = admin_client.post(f"/admin/studies/{study.slug}/monitoring/stop", data={"csrf_token": token})
    assert r.status_code == 200 and "Closed at the monitoring stop" in r.text
    before = admin_client.get(f"/admin/studies/{study.slug}/statistics.json").json()["monitoring"]
    (label, m), = before["comparisons"].items()
    recorded = m["stop"]
    assert m["recommendation"] == TREATMENT and m["recorded"] is True
    # Exclusion rules are fixed once ratings exist (update_study refuses) ...
    rules = {"min_response_ms": 500, "max_fast_share": 0.5}
    with app.state.sessionmaker() as s, pytest.raises(StudyError, match="exclusion rules cannot change"):
        update_study(s, s.get(Study, study.id), {"exclusion_rules": rules})
    # ... but suppose one arrives anyway (edited in the database): it removes one participant.
    with app.state.sessionmaker() as s:
        first = s.scalar(select(Participant.id).where(Participant.study_id == study.id).order_by(Participant.id))
        for rating, pid in s.execute(select(Rating, Trial.participant_id).join(Trial)
                                     .where(Trial.study_id == study.id)).all():
            rating.response_ms = 100 if pid == first else 3000
        s.get(Study, study.id).exclusion_rules = rules
        s.commit()
    statistics_routes.cache._entries.clear()
    stats = admin_client.get(f"/admin/studies/{study.slug}/statistics.json").json()
    assert [str(p) for p in stats["exclusions"]["excluded"]] == [str(first)]
    after = stats["monitoring"]["comparisons"][label]
    assert after["stop"] == recorded and after["recorded"] is True and after["recommendation"] == TREATMENT
    assert after["post_hoc"]["current"]["n_ratings"] < m["post_hoc"]["current"]["n_ratings"]  # fewer kept
    assert len(stats["monitoring"]["recorded_stops"]) == 1
    res = CliRunner().invoke(main, ["report", study.slug, "--out", str(tmp_path), "--database-url", db_url,
                                    "--draws", "20"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    assert f"look {recorded['look']} ({recorded['n_ratings']} ratings)" in html
    assert f"(as recorded; the data now say:\n      {after['post_hoc']['recommendation']})" in html


def test_the_studys_first_comparison_is_primary(client, app, session, study_factory, make_pair_set, tmp_path):
    """`study_statistics` names the study's first comparison primary (not the first by label), and
    the report marks it; Holm's family is every comparison."""
    from app.analysis.study_statistics import study_statistics
    from app.reporting.report import render_report
    from app.studies.importer import import_pair_set

    ids = [import_pair_set(session, make_pair_set(tmp_path / name, 4, seed=i), name=name).id
           for i, name in enumerate(("zeta", "alpha"))]
    session.commit()
    study = study_factory(pair_set_ids=ids, pairs_per_participant=4, ratings_per_pair=2, exclusion_rules={})
    rng = np.random.default_rng(2)
    for _ in range(4):
        rate(client, study.slug, lambda: rng.integers(1, 6))
    labels = [c.label for c in study.comparisons]
    assert labels[0].startswith("zeta") and sorted(labels)[0].startswith("alpha")
    stats = read(app, lambda s: study_statistics(s, s.get(Study, study.id), draws=10))
    assert stats["results"]["after_exclusions"]["multiplicity"]["primary"] == labels[0]
    assert sorted(stats["results"]["after_exclusions"]["multiplicity"]["family"]) == sorted(labels)
    groups = stats["results"]["after_exclusions"]["per_comparison"]
    assert groups[labels[0]]["primary"] is True and groups[labels[1]]["primary"] is False
    assert f"{labels[0]} (primary)" in render_report(stats)
