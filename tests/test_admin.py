"""Admin pages: login, CSRF, study lifecycle and versions, config round trip, pair-set import,
progress JSON and export downloads. Runs on SQLite and PostgreSQL (the `db_url` fixture)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import uuid
import zipfile
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from sqlalchemy import func, select

from app.accounts.admins import ensure_admin, hash_password, verify_password
from app.store.models import PairSet, Participant, Rating, Study, StudyVersion, Trial

USER, PASSWORD = "alice", "correct horse battery staple"


def read(app, fn):
    """Run `fn(session)` in a short session of its own (on SQLite every transaction holds the
    write lock, so the test must not keep one open while the app handles a request)."""
    with app.state.sessionmaker() as s:
        return fn(s)


def count(app, model) -> int:
    return read(app, lambda s: s.scalar(select(func.count(model.id))))


def study_by_slug(app, slug: str) -> Study:
    def load(s):
        study = s.scalar(select(Study).where(Study.slug == slug))
        _ = study.comparisons
        return study

    return read(app, load)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def login(client, user: str = USER, password: str = PASSWORD, next_url: str = ""):
    token = csrf_of(client.get("/admin/login").text)
    return client.post(
        "/admin/login",
        data={"username": user, "password": password, "csrf_token": token, "next": next_url},
        follow_redirects=False,
    )


@pytest.fixture
def admin_client(client, session):
    ensure_admin(session, USER, PASSWORD)
    r = login(client)
    assert r.status_code == 303, r.text
    return client


def token(client, path: str = "/admin/studies") -> str:
    return csrf_of(client.get(path).text)


def study_form(pair_set_ids, **over):
    data = {
        "title": "Guidance study", "slug": "", "instructions": "Look carefully.",
        "question": "Which image is better?",
        **{f"scale_label_{i}": lab for i, lab in enumerate(["L++", "L+", "=", "R+", "R++"], start=1)},
        "pair_set": [str(i) for i in pair_set_ids],
        "pairs_per_participant": "6", "ratings_per_pair": "3", "practice_trials": "1",
        "gold_rate": "0.2", "repeats": "1", "min_response_ms": "700", "hold_minutes": "15",
        "completion_code": "DONE123", "redirect_url": "https://example.org/done",
        "ex_fail_gold": "on", "ex_max_fast_share": "0.4", "ex_min_consistency": "0.5",
        "ex_max_side_bias": "0.85", "seed": "42",
    }
    data.update(over)
    return data


@pytest.fixture
def pair_set_id(session, make_pair_set, tmp_path):
    from app.studies.importer import import_pair_set

    ps = import_pair_set(session, make_pair_set(tmp_path / "ps", 4))
    session.commit()
    return ps.id


def create_via_form(client, pair_set_id, **over):
    data = study_form([pair_set_id], **over)
    data["csrf_token"] = token(client, "/admin/new-study")
    return client.post("/admin/new-study", data=data, follow_redirects=False)


# --------------------------------------------------------------------------- auth

def test_password_hashing():
    h = hash_password("s3cret")
    assert h.startswith("$argon2id$") and "s3cret" not in h
    assert verify_password(h, "s3cret")
    assert not verify_password(h, "s3cret ")
    assert not verify_password("not a hash", "s3cret")
    with pytest.raises(ValueError):
        hash_password("")


def test_login_wrong_password_and_logout(client, session):
    ensure_admin(session, USER, PASSWORD)
    r = client.get("/admin/studies", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/login?next=")
    assert client.get("/admin/studies.json").status_code == 401

    r = login(client, password="wrong")
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    assert login(client, user="mallory").status_code == 401
    assert client.get("/admin/studies.json").status_code == 401

    r = login(client, next_url="/admin/pair-sets")
    assert r.status_code == 303 and r.headers["location"] == "/admin/pair-sets"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert PASSWORD not in r.headers["set-cookie"]
    assert client.get("/admin/studies.json").json() == {"studies": []}

    r = client.post("/admin/logout", data={"csrf_token": token(client)}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/admin/studies.json").status_code == 401


def test_login_rejects_open_redirect(client, session):
    ensure_admin(session, USER, PASSWORD)
    r = login(client, next_url="//evil.example/admin")
    assert r.headers["location"] == "/admin/studies"


def test_bootstrap_admin_from_settings(client, app):
    app.state.settings.admin_user = "boot"
    app.state.settings.admin_password = "from-env-password"  # the policy wants 12+ characters
    assert login(client, "boot", "from-env-password").status_code == 303
    assert client.get("/admin/studies.json").status_code == 200


def test_password_change_ends_other_sessions(admin_client, session):
    assert admin_client.get("/admin/studies.json").status_code == 200
    ensure_admin(session, USER, "a new password")
    assert admin_client.get("/admin/studies.json").status_code == 401


def test_csrf_rejects_forged_posts(admin_client, session, pair_set_id):
    data = study_form([pair_set_id])
    r = admin_client.post("/admin/new-study", data=data)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = admin_client.post("/admin/new-study", data={**data, "csrf_token": "forged" + "x" * 40})
    assert r.status_code == 403
    assert count(admin_client.app, Study) == 0
    # A login POST without the token is refused too (login CSRF).
    from fastapi.testclient import TestClient

    with TestClient(admin_client.app) as other:
        r = other.post("/admin/login", data={"username": USER, "password": PASSWORD})
        assert r.status_code == 403
        # Another session's token does not work in this one.
        foreign = csrf_of(other.get("/admin/login").text)
    r = admin_client.post("/admin/new-study", data={**data, "csrf_token": foreign})
    assert r.status_code == 403
    assert count(admin_client.app, Study) == 0
    # The header form (for scripts) works with the right token.
    r = admin_client.post("/admin/new-study", data=data, headers={"X-CSRF-Token": token(admin_client)},
                          follow_redirects=False)
    assert r.status_code == 303


def test_every_admin_post_needs_the_csrf_token(admin_client, study_factory):
    """Each POST route under /admin (also ones added later) refuses a form without the token."""
    study = study_factory()
    def walk(routes):
        for r in routes:
            inner = getattr(r, "original_router", None)  # FastAPI's included-router wrapper
            if inner is not None:
                yield from walk(inner.routes)
            elif hasattr(r, "methods"):
                yield r

    posts = sorted({r.path for r in walk(admin_client.app.routes)
                    if r.path.startswith("/admin") and "POST" in r.methods})
    assert {"/admin/login", "/admin/logout", "/admin/new-study", "/admin/studies/{slug}/state"} <= set(posts)
    for path in posts:
        url = path.replace("{slug}", study.slug)
        r = admin_client.post(url, data={"state": "closed", "title": "x", "folder": "/tmp"})
        assert r.status_code == 403, (path, r.status_code)
    page = admin_client.get(f"/admin/studies/{study.slug}")
    assert page.headers["x-frame-options"] == "DENY"
    assert study_by_slug(admin_client.app, study.slug).state == "open"


# --------------------------------------------------------------------------- studies

def test_create_edit_open_close_archive(admin_client, session, pair_set_id):
    r = create_via_form(admin_client, pair_set_id)
    assert r.status_code == 303
    slug = r.headers["location"].rsplit("/", 1)[1]
    assert slug == "guidance-study"
    app = admin_client.app
    study = study_by_slug(app, slug)
    assert (study.state, study.version, study.ratings_per_pair, study.gold_rate) == ("draft", 1, 3, 0.2)
    assert study.scale_labels == ["L++", "L+", "=", "R+", "R++"]
    assert study.exclusion_rules["max_side_bias"] == 0.85 and study.exclusion_rules["straight_lining"] is False
    assert [c.pair_set_id for c in study.comparisons] == [pair_set_id]
    page = admin_client.get(f"/admin/studies/{slug}").text
    assert "Guidance study" in page and f"/admin/studies/{slug}/statistics" in page

    # Edit: a new version with a snapshot of the new config.
    edit = admin_client.get(f"/admin/studies/{slug}/edit").text
    data = study_form([pair_set_id], title="Guidance study B", ratings_per_pair="5", csrf_token=csrf_of(edit))
    r = admin_client.post(f"/admin/studies/{slug}/edit", data=data, follow_redirects=False)
    assert r.status_code == 303
    study = study_by_slug(app, slug)
    assert (study.title, study.ratings_per_pair, study.version) == ("Guidance study B", 5, 2)
    snaps = read(app, lambda s: s.scalars(select(StudyVersion).where(StudyVersion.study_id == study.id)
                                          .order_by(StudyVersion.version)).all())
    assert [s.version for s in snaps] == [1, 2]
    assert snaps[0].config["ratings_per_pair"] == 3 and snaps[1].config["ratings_per_pair"] == 5

    # Saving the same values again is not a new version.
    admin_client.post(f"/admin/studies/{slug}/edit", data={**data, "csrf_token": token(admin_client)})
    assert study_by_slug(app, slug).version == 2

    # Bad input: a clear message, the form comes back filled in, nothing stored.
    bad = {**data, "ratings_per_pair": "0", "csrf_token": token(admin_client)}
    r = admin_client.post(f"/admin/studies/{slug}/edit", data=bad)
    assert r.status_code == 422 and "ratings_per_pair" in r.text and "Guidance study B" in r.text
    assert study_by_slug(app, slug).ratings_per_pair == 5

    def move(state):
        return admin_client.post(f"/admin/studies/{slug}/state", data={"state": state, "csrf_token": token(admin_client)})

    for state in ("open", "closed", "open", "closed", "archived"):
        assert move(state).status_code == 200
        assert study_by_slug(app, slug).state == state
    assert study_by_slug(app, slug).version > 2  # every change is a new version
    # Archived is final and read-only.
    assert "cannot be moved" in move("open").text
    r = admin_client.post(f"/admin/studies/{slug}/edit", data={**data, "csrf_token": token(admin_client)})
    assert r.status_code == 422 and "archived" in r.text
    assert study_by_slug(app, slug).state == "archived"


def test_create_rejects_bad_input(admin_client, session, pair_set_id):
    r = create_via_form(admin_client, pair_set_id, redirect_url="javascript:alert(1)")
    assert r.status_code == 422 and "redirect_url" in r.text
    r = create_via_form(admin_client, pair_set_id, pair_set=[])
    assert r.status_code == 422 and "at least one pair set" in r.text
    r = create_via_form(admin_client, pair_set_id, ex_max_fast_share="3")
    assert r.status_code == 422 and "exclusion_rules.max_fast_share" in r.text
    assert count(admin_client.app, Study) == 0
    assert create_via_form(admin_client, pair_set_id, slug="dup").status_code == 303
    r = create_via_form(admin_client, pair_set_id, slug="dup")
    assert r.status_code == 422 and "already exists" in r.text


def test_config_round_trip(admin_client, session, pair_set_id):
    slug = create_via_form(admin_client, pair_set_id).headers["location"].rsplit("/", 1)[1]
    r = admin_client.get(f"/admin/studies/{slug}/config.yaml")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    config = yaml.safe_load(r.text)
    assert config["pair_sets"] == [pair_set_id] and config["seed"] == 42
    as_json = admin_client.get(f"/admin/studies/{slug}/config.json").json()
    assert as_json == config

    text = r.text.replace(f"slug: {slug}", "slug: copy-of-study")
    page = admin_client.get("/admin/new-study/from-config").text
    r = admin_client.post("/admin/new-study/from-config", data={"config_text": text, "csrf_token": csrf_of(page)},
                          follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/studies/copy-of-study"
    again = admin_client.get("/admin/studies/copy-of-study/config.json").json()
    assert {**again, "slug": slug} == config

    # Upload as a JSON file works the same; a broken file says what is wrong and creates nothing.
    n = count(admin_client.app, Study)
    files = {"config_file": ("s.json", json.dumps({**config, "slug": "third"}), "application/json")}
    # An upload carries its CSRF token in the query string: checked before the body is read.
    r = admin_client.post("/admin/new-study/from-config", params={"csrf_token": token(admin_client)}, files=files,
                          follow_redirects=False)
    assert r.status_code == 303
    r = admin_client.post("/admin/new-study/from-config",
                          data={"config_text": "title: [unclosed", "csrf_token": token(admin_client)})
    assert r.status_code == 422 and "line 1" in r.text
    r = admin_client.post("/admin/new-study/from-config",
                          data={"config_text": "title: X\npair_sets: [99999]", "csrf_token": token(admin_client)})
    assert r.status_code == 422 and "99999" in r.text
    assert count(admin_client.app, Study) == n + 1


# --------------------------------------------------------------------------- pair sets

def test_import_pair_set_via_page(admin_client, session, make_pair_set, tmp_path):
    folder = make_pair_set(tmp_path / "run-a", 3)
    r = admin_client.post("/admin/pair-sets/import", data={"folder": str(folder), "csrf_token": token(admin_client)})
    assert r.status_code == 200 and "3 pairs" in r.text and "sfg vs cfg" in r.text
    assert count(admin_client.app, PairSet) == 1

    # Zip upload of another set (files inside one folder); re-importing the same data is idempotent.
    other = make_pair_set(tmp_path / "run-b", 2, seed=7)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(other.iterdir()):
            zf.write(p, f"run-b/{p.name}")
    for _ in range(2):
        files = {"archive": ("run-b.zip", buf.getvalue(), "application/zip")}
        r = admin_client.post("/admin/pair-sets/import", params={"csrf_token": token(admin_client)}, files=files)
        assert r.status_code == 200 and "2 pairs" in r.text
    assert count(admin_client.app, PairSet) == 2
    names = admin_client.get("/admin/pair-sets.json").json()["pair_sets"]
    assert [(p["name"], p["n_pairs"]) for p in names] == [("run-a", 3), ("run-b", 2)]

    # Tampered image: rejected with the line and file named, nothing added.
    bad = tmp_path / "bad"
    shutil.copytree(make_pair_set(tmp_path / "run-c", 2, seed=9), bad)
    victim = next(p for p in bad.iterdir() if p.suffix == ".png")
    victim.write_bytes(victim.read_bytes()[:-10])
    r = admin_client.post("/admin/pair-sets/import", data={"folder": str(bad), "csrf_token": token(admin_client)})
    assert r.status_code == 422 and victim.name in r.text
    # A zip escaping its folder is refused.
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.txt", "x")
    r = admin_client.post("/admin/pair-sets/import", params={"csrf_token": token(admin_client)},
                          files={"archive": ("evil.zip", evil.getvalue(), "application/zip")})
    assert r.status_code == 422 and "outside the archive" in r.text
    r = admin_client.post("/admin/pair-sets/import", data={"folder": str(tmp_path / "nope"),
                                                           "csrf_token": token(admin_client)})
    assert r.status_code == 422 and "no such folder" in r.text
    assert count(admin_client.app, PairSet) == 2


# --------------------------------------------------------------------------- progress and export

def add_answers(session, study, answers):
    """Store ratings the way the participant API would: [(participant no, pair index, kind, choice, ms)]."""
    pairs = sorted((p for c in study.comparisons for p in c.pair_set.pairs), key=lambda p: p.id)
    people: dict[int, Participant] = {}
    now = datetime.now(timezone.utc)
    for pos, (who, idx, kind, choice, ms) in enumerate(answers):
        if who not in people:
            people[who] = Participant(study_id=study.id, token=uuid.uuid4().hex, seed=who, external_ids={})
            session.add(people[who])
            session.flush()
        side = "left" if pos % 2 else "right"
        trial = Trial(public_id=uuid.uuid4().hex, study_id=study.id, participant_id=people[who].id,
                      pair_id=pairs[idx].id, comparison_id=study.comparisons[0].id, position=pos, kind=kind,
                      treatment_side=side, state="answered", presented_at=now, expires_at=now + timedelta(hours=1))
        session.add(trial)
        session.flush()
        score = (choice - 3) * (1 if side == "right" else -1)
        session.add(Rating(trial_id=trial.id, request_id=uuid.uuid4().hex, study_version=study.version,
                           choice=choice, score=score, treatment_side=side, response_ms=ms,
                           too_fast=ms < study.min_response_ms))
    people[0].finished_at = now
    session.commit()
    return pairs


def test_progress_json_and_page(admin_client, session, study_factory):
    study = study_factory(n_pairs=3, ratings_per_pair=2, min_response_ms=500)
    pairs = add_answers(session, study, [
        (0, 0, "main", 5, 1000), (0, 1, "main", 1, 2000), (0, 2, "gold", 4, 300),
        (1, 0, "main", 3, 3000), (1, 2, "main", 2, 400),
    ])
    p = admin_client.get(f"/admin/studies/{study.slug}/progress.json").json()
    assert p["participants_started"] == 2 and p["participants_finished"] == 1
    assert p["ratings"] == 5 and p["ratings_by_kind"] == {"gold": 1, "main": 4}
    assert p["pairs"] == 3 and p["target_ratings"] == 6 and p["pairs_complete"] == 1
    per = {r["pair_id"]: r["ratings"] for r in p["per_pair"]}
    assert per == {pairs[0].id: 2, pairs[1].id: 1, pairs[2].id: 1}
    assert p["response_ms"]["median"] == 1000 and p["response_ms"]["too_fast"] == 2
    html = admin_client.get(f"/admin/studies/{study.slug}/progress").text
    assert 'data-url="/admin/studies/%s/progress.json"' % study.slug in html
    assert pairs[0].prompt in html
    # Exclusion rules are fixed once ratings exist; other fields still change (new version).
    edit = admin_client.get(f"/admin/studies/{study.slug}/edit").text
    assert 'name="ex_fail_gold"' in edit and "disabled" in edit
    data = study_form([c.pair_set_id for c in study.comparisons], ex_max_side_bias="0.6",
                      ratings_per_pair="4", csrf_token=csrf_of(edit))
    before = dict(study.exclusion_rules)
    assert admin_client.post(f"/admin/studies/{study.slug}/edit", data=data).status_code == 200
    study = study_by_slug(admin_client.app, study.slug)
    assert study.exclusion_rules == before and study.ratings_per_pair == 4
    assert admin_client.get("/admin/studies/nope/progress.json").status_code == 404


def test_export_downloads(admin_client, session, study_factory):
    study = study_factory(n_pairs=2)
    add_answers(session, study, [(0, 0, "main", 5, 1000), (0, 1, "main", 2, 900)])
    r = admin_client.get(f"/admin/studies/{study.slug}/export.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 2
    head = ["study", "study_version", "participant", "external_ids", "pair", "pair_set", "prompt_id", "prompt",
            "stratum", "seed", "treatment_side", "choice", "score", "is_gold", "is_repeat", "presented_at",
            "answered_at", "response_ms"]
    assert list(rows[0])[: len(head)] == head
    assert sorted(r_["choice"] for r_ in rows) == ["2", "5"]
    data = admin_client.get(f"/admin/studies/{study.slug}/export.json").json()
    rows_json = data if isinstance(data, list) else data["ratings"]
    assert sorted(x["score"] for x in rows_json) == sorted(int(x["score"]) for x in rows)
    # Researchers' data is not public.
    admin_client.post("/admin/logout", data={"csrf_token": token(admin_client)})
    assert admin_client.get(f"/admin/studies/{study.slug}/export.json").status_code == 401
    assert admin_client.get(f"/admin/studies/{study.slug}/export.csv", follow_redirects=False).status_code == 303


def test_progress_per_comparison(admin_client, session, make_pair_set, tmp_path, study_factory):
    from app.studies.importer import import_pair_set

    ids = [import_pair_set(session, make_pair_set(tmp_path / f"set{k}", 2 + k, seed=k)).id for k in range(2)]
    session.commit()
    study = study_factory(pair_set_ids=ids)
    p = admin_client.get(f"/admin/studies/{study.slug}/progress.json").json()
    labels = [c.label for c in study.comparisons]
    assert sorted(p["per_comparison"]) == sorted(labels)
    assert [p["per_comparison"][lab]["pairs"] for lab in labels] == [2, 3]
    assert p["pairs"] == 5 and p["ratings"] == 0 and p["response_ms"]["median"] is None
    html = admin_client.get(f"/admin/studies/{study.slug}/progress").text
    assert "Per comparison" in html and labels[1] in html


def test_form_explains_strict_rules_and_refuses_an_inert_speed_rule(admin_client, session, pair_set_id):
    """Issue 9.5 and 9.7: the form says a gold pass rate of 1.0 excludes on one failure; a share of
    too-fast answers without any time limit is refused when the study is saved."""
    page = admin_client.get("/admin/new-study").text
    assert "min_gold_pass_rate = 1.0</code> a single failed gold pair excludes" in page
    assert "consistency_min_repeats" in page
    r = create_via_form(admin_client, pair_set_id, min_response_ms="0", ex_min_response_ms="", ex_max_fast_share="0.5")
    assert r.status_code == 422 and "max_fast_share needs a minimum response time" in r.text
    assert count(admin_client.app, Study) == 0
    assert create_via_form(admin_client, pair_set_id, min_response_ms="0", ex_min_response_ms="600",
                           ex_max_fast_share="0.5").status_code == 303
