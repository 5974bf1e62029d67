"""Monitoring of a study in the database: statistics.json, the live page and the report, the
monitoring settings form, auto-close with the stop recorded in the version history, the plan page
(SQLite and PostgreSQL via `db_url`)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app.web.routes import statistics as statistics_routes
from app.cli import main
from app.store.models import Rating, Study, StudyVersion, Trial
from app.statistics.monitoring import TREATMENT, monitor
from app.analysis.monitoring_study import monitoring_rows
from app.studies.config import StudyError, create_study, study_config
from tests.test_admin import admin_client, csrf_of  # noqa: F401  (fixture)
from tests.test_report import rate, read

N_PARTICIPANTS = 6


def seed_study(client, app, study_factory, **monitoring):
    """An open study (10 pairs x 3 ratings planned) rated by 6 participants; scores then set so
    that the treatment wins 6 of every 7 votes."""
    study = study_factory(n_pairs=10, pairs_per_participant=5, ratings_per_pair=3, exclusion_rules={},
                          monitoring={"look_every": 5, **monitoring})
    rng = np.random.default_rng(0)
    for _ in range(N_PARTICIPANTS):
        rate(client, study.slug, lambda: rng.integers(1, 6))
    with app.state.sessionmaker() as s:
        ratings = s.scalars(select(Rating).join(Trial).where(Trial.study_id == study.id).order_by(Rating.id)).all()
        for i, r in enumerate(ratings):
            r.score = -2 if i % 7 == 3 else 2
        s.commit()
    statistics_routes.cache._entries.clear()
    return study


def _answer_for_treatment(client, app, slug: str, k: int) -> bool:
    """Participant k joins and answers every trial, preferring the treatment except every 7th
    answer; stops when the study closes under them. Returns whether the study closed."""
    r = client.post(f"/api/studies/{slug}/participants", json=None)
    if r.status_code != 201:
        assert read(app, lambda s: s.scalar(select(Study.state).where(Study.slug == slug))) == "closed"
        return True
    token = r.json()["participant"]
    i = 0
    while True:
        r = client.get(f"/api/participants/{token}/next")
        if r.status_code == 409:
            return True
        body = r.json()
        if body.get("done"):
            return False
        side = read(app, lambda s: s.scalar(select(Trial.treatment_side).where(Trial.public_id == body["trial"])))
        i += 1
        wins = (k * 5 + i) % 7 != 3
        choice = (1 if side == "left" else 5) if wins else (5 if side == "left" else 1)
        r = client.post(f"/api/trials/{body['trial']}/answer", headers={"X-Participant": token},
                        json={"choice": choice, "request_id": str(uuid.uuid4())})
        assert r.status_code == 200, r.text


def test_auto_close_happens_after_an_answer_and_records_the_stop_once(admin_client, app, study_factory, db_url,
                                                                      tmp_path):
    """With auto-close on, the answer that brings the stop closes the study (checked after the
    response is sent); statistics, the pages and the report show the recorded stop and change nothing."""
    study = study_factory(n_pairs=10, pairs_per_participant=5, ratings_per_pair=3, exclusion_rules={},
                          monitoring={"look_every": 5, "auto_close": True})
    closed = [_answer_for_treatment(admin_client, app, study.slug, k) for k in range(N_PARTICIPANTS)]
    assert any(closed)
    statistics_routes.cache._entries.clear()  # ids repeat across tests on a fresh database
    state, version = read(app, lambda s: (s.get(Study, study.id).state, s.get(Study, study.id).version))
    assert state == "closed" and version == study.version + 1
    stats = admin_client.get(f"/admin/studies/{study.slug}/statistics.json").json()
    (label, mon), = stats["monitoring"]["comparisons"].items()
    assert mon["recommendation"] == TREATMENT and stats["monitoring"]["overall"] == "stop"
    # The same decision as monitoring the rows directly, in arrival order.
    rows = read(app, lambda s: monitoring_rows(s, s.get(Study, study.id)))
    direct = monitor(np.array([r["participant"] for r in rows]), np.array([r["prompt_id"] for r in rows]),
                     np.array([r["score"] for r in rows]), planned=30, look_every=5,
                     stratum=np.array([r["stratum"] for r in rows]), pair=np.array([r["pair"] for r in rows]))
    # The stop shown is the one recorded when the study closed (immutable); monitoring the rows now,
    # post hoc, reaches the same verdict at the same look.
    assert direct["stop"]["recommendation"] == mon["stop"]["recommendation"] == TREATMENT
    assert direct["stop"]["look"] == mon["stop"]["look"]
    stop = mon["stop"]
    assert stop["statistic"]["z"] >= stop["statistic"]["boundary"] and "boundary" in stop["rule"]
    note = read(app, lambda s: s.scalar(select(StudyVersion.note).where(StudyVersion.study_id == study.id,
                                                                        StudyVersion.version == version)))
    assert note["action"] == "closed automatically"
    assert note["comparisons"][label]["look"] == stop["look"]
    assert note["comparisons"][label]["rule"] == stop["rule"]
    assert stats["monitoring"]["recorded_stops"] == [{"version": version, **note}]
    page = admin_client.get(f"/admin/studies/{study.slug}/statistics").text
    assert "stop: treatment preferred" in page and "Stops recorded in the version history" in page
    study_page = admin_client.get(f"/admin/studies/{study.slug}").text
    assert "closed automatically" in study_page and f"at look {stop['look']}" in study_page
    res = CliRunner().invoke(main, ["report", study.slug, "--out", str(tmp_path), "--database-url", db_url,
                                    "--draws", "50"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    assert 'id="monitoring"' in html and f"look {stop['look']}" in html
    assert "repeated 95% interval (valid at every look)" in html  # the plot of the interval over looks
    assert json.loads((tmp_path / "statistics.json").read_text())["monitoring"]["recorded_stops"][0]["version"] == version
    assert read(app, lambda s: s.get(Study, study.id).version) == version


def test_reads_never_close_and_the_admin_applies_the_stop_explicitly(admin_client, app, study_factory, db_url,
                                                                     tmp_path):
    """Monitoring says stop but auto-close was off while the answers came: the statistics page,
    statistics.json, `sfgeval report` and `sfgeval study monitor` leave the study open; the admin's
    POST (or `study monitor --apply`) closes it once, with the stop recorded."""
    study = seed_study(admin_client, app, study_factory)
    admin_client.get(f"/admin/studies/{study.slug}/statistics.json")
    admin_client.get(f"/admin/studies/{study.slug}/statistics")
    args = ["report", study.slug, "--out", str(tmp_path), "--database-url", db_url, "--draws", "50"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "auto-close" not in res.stderr
    res = CliRunner().invoke(main, ["study", "monitor", study.slug, "--database-url", db_url])
    assert res.exit_code == 0 and res.stdout.strip().endswith(TREATMENT)
    assert read(app, lambda s: (s.get(Study, study.id).state, s.get(Study, study.id).version)) == ("open", study.version)
    token = csrf_of(admin_client.get(f"/admin/studies/{study.slug}").text)
    assert admin_client.post(f"/admin/studies/{study.slug}/monitoring/stop", data={}).status_code == 403  # CSRF
    r = admin_client.post(f"/admin/studies/{study.slug}/monitoring/stop", data={"csrf_token": token})
    assert r.status_code == 200 and "Closed at the monitoring stop" in r.text
    state, version = read(app, lambda s: (s.get(Study, study.id).state, s.get(Study, study.id).version))
    assert state == "closed" and version == study.version + 1
    note = read(app, lambda s: s.scalar(select(StudyVersion.note).where(StudyVersion.study_id == study.id,
                                                                        StudyVersion.version == version)))
    assert note["action"] == "closed by an admin at the monitoring stop"
    # Recorded once: again, nothing changes.
    r = admin_client.post(f"/admin/studies/{study.slug}/monitoring/stop", data={"csrf_token": token})
    assert r.status_code == 200 and "Not closed" in r.text
    res = CliRunner().invoke(main, ["study", "monitor", study.slug, "--apply", "--database-url", db_url])
    assert res.exit_code == 0 and "auto-close" not in res.stderr
    assert read(app, lambda s: s.get(Study, study.id).version) == version


def test_cli_monitor_apply_closes_and_says_why(admin_client, app, study_factory, db_url):
    study = seed_study(admin_client, app, study_factory)
    res = CliRunner().invoke(main, ["study", "monitor", study.slug, "--apply", "--database-url", db_url])
    assert res.exit_code == 0, res.output
    state, version = read(app, lambda s: (s.get(Study, study.id).state, s.get(Study, study.id).version))
    assert state == "closed" and version == study.version + 1
    line, = [x for x in res.stderr.splitlines() if x.startswith("auto-close")]
    assert line.startswith(f"auto-close: study {study.slug} closed by its monitoring rule (version {version}): ")
    assert TREATMENT in line and "boundary" in line


def test_auto_close_is_off_by_default(admin_client, app, study_factory, db_url):
    study = seed_study(admin_client, app, study_factory)
    stats = admin_client.get(f"/admin/studies/{study.slug}/statistics.json").json()
    assert stats["monitoring"]["settings"]["auto_close"] is False
    assert stats["monitoring"]["overall"] == "stop" and stats["monitoring"]["recorded_stops"] == []
    assert read(app, lambda s: s.get(Study, study.id).state) == "open"
    res = CliRunner().invoke(main, ["study", "monitor", study.slug, "--database-url", db_url])
    assert res.exit_code == 0 and res.stdout.strip().endswith(TREATMENT)
    assert read(app, lambda s: s.get(Study, study.id).state) == "open"


def test_monitoring_settings_form(admin_client, app, study_factory):
    study = study_factory(n_pairs=4)
    token = csrf_of(admin_client.get(f"/admin/studies/{study.slug}").text)
    r = admin_client.post(f"/admin/studies/{study.slug}/monitoring", follow_redirects=False,
                          data={"csrf_token": token, "auto_close": "on", "margin": "0.1", "look_every": "40"})
    assert r.status_code == 303
    saved = read(app, lambda s: (s.get(Study, study.id).monitoring, s.get(Study, study.id).version))
    assert saved == ({"auto_close": True, "margin": 0.1, "look_every": 40}, study.version + 1)
    page = admin_client.get(f"/admin/studies/{study.slug}").text
    assert 'name="auto_close" checked' in page
    for bad in ({"margin": "2"}, {"margin": "abc"}, {"look_every": "1"}):
        r = admin_client.post(f"/admin/studies/{study.slug}/monitoring", data={"csrf_token": token, **bad})
        assert r.status_code == 200 and "Monitoring" in r.text  # flashed on the study page
    assert read(app, lambda s: s.get(Study, study.id).version) == study.version + 1
    r = admin_client.post(f"/admin/studies/{study.slug}/monitoring", data={"auto_close": "on"})
    assert r.status_code == 403  # CSRF
    assert admin_client.post("/admin/studies/nope/monitoring", data={"csrf_token": token}).status_code == 404


def test_monitoring_config_round_trips_and_rejects_typos(session, study_factory):
    study = study_factory(n_pairs=4, monitoring={"auto_close": True})
    cfg = study_config(study)
    assert cfg["monitoring"] == {"auto_close": True, "look_every": 20, "margin": 0.05}
    with pytest.raises(StudyError, match="monitoring"):
        create_study(session, {**cfg, "slug": "other", "monitoring": {"autoclose": True}})


def test_plan_page(admin_client, app, study_factory):
    study = seed_study(admin_client, app, study_factory)
    page = admin_client.get(f"/admin/studies/{study.slug}/plan")
    assert page.status_code == 200 and 'name="ratings_per_participant" min="1" value="5"' in page.text
    token = csrf_of(page.text)
    form = {"csrf_token": token, "win_rate": "0.65", "sims": "50", "strata": "1", "prompts_per_stratum": "10",
            "ratings_per_participant": "5", "price_per_rating": "0.2"}
    r = admin_client.post(f"/admin/studies/{study.slug}/plan", data=form)
    assert r.status_code == 200 and "participants</strong>" in r.text and "<svg" in r.text and "cost" in r.text
    r = admin_client.post(f"/admin/studies/{study.slug}/plan", data={**form, "win_rate": "", "pilot": study.slug})
    assert r.status_code == 200 and f"Pilot {study.slug}: 30 ratings" in r.text
    assert 'id="pilot-exclusions"' in r.text and "participants used" in r.text  # which exclusions it applied
    for bad, message in (({"win_rate": "abc"}, "win rate"), ({"pilot": "nope"}, "no study"),
                         ({"sims": "100000"}, "between 20"), ({"ratings_per_participant": "50"}, "exceed"),
                         ({"win_rate": "0.5001"}, "lies beyond"), ({"strata": "0"}, "at least 1")):
        r = admin_client.post(f"/admin/studies/{study.slug}/plan", data={**form, **bad})
        assert r.status_code == 422 and message in r.text


def test_cli_plan_from_a_pilot_study(admin_client, app, study_factory, db_url, tmp_path):
    study = seed_study(admin_client, app, study_factory)
    res = CliRunner().invoke(main, ["plan", "--pilot", study.slug, "--database-url", db_url, "--strata", "1",
                                    "--prompts-per-stratum", "10", "--ratings-per-participant", "5", "--sims", "50",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert f"pilot {study.slug}: 30 ratings, {N_PARTICIPANTS} participants, 10 prompts" in res.stderr
    assert "pilot: " in res.stderr and "participants used" in res.stderr  # the exclusions it applied
    saved = json.loads((tmp_path / "plan.json").read_text())
    # The pilot's treatment won 6 of every 7 decisive votes: its win rate drives the plan.
    assert saved["request"]["effects"]["win_rate"] == pytest.approx(26 / 30, abs=0.01)
    assert saved["pilot"]["slug"] == study.slug and int(res.stdout.split()[0]) == saved["participants"]
