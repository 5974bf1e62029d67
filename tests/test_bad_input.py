"""No input from a visitor gives a 5xx: property tests over every participant route (issue 8)."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.assignment import FlowError, create_participant
from app.store.models import utcnow
from tests.test_api import answer, join, next_

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
# Text that databases choke on, mixed with anything else.
nasty_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["a\x00b", "\ud800", "x" * 300, "ab\udfffcd", "%00", "../..", ""]),
)
nasty_int = st.one_of(st.integers(), st.sampled_from([2**31, 2**31 - 1, -(2**31) - 1, 2**63, 10**30]))
anything = st.one_of(nasty_text, nasty_int, st.none(), st.booleans(), st.floats(allow_nan=False),
                     st.lists(st.integers(), max_size=3))


def q(text: str) -> str:
    """`text` percent-encoded as its UTF-8 bytes, lone surrogates included (as invalid UTF-8)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


FORM = {"content-type": "application/x-www-form-urlencoded"}


def _json(value) -> bytes:
    # json.dumps keeps lone surrogates as \\udxxx escapes: exactly what a hostile client can send.
    return json.dumps(value).encode()


@pytest.fixture
def open_study(study_factory):
    return study_factory(n_pairs=4, pairs_per_participant=2)


def test_known_bad_inputs_get_4xx(client, open_study):
    slug = open_study.slug
    token = join(client, slug)
    trial = next_(client, token).json()["trial"]
    cases = [
        client.get("/api/trials/ab%00cd/answer"),
        client.post("/api/trials/ab%00cd/answer", json={"choice": 1, "request_id": "x"}, headers={"X-Participant": token}),
        client.get("/api/participants/ab%00cd/next"),
        client.get("/i/ab%00"),
        client.get("/s/pro%00be"),
        client.get(f"/s/{slug}?workerId=a%00b"),
        client.post(f"/s/{slug}/start", data={"workerId": "a\x00b", "consent": "yes"}),
        client.post(f"/s/{slug}/start", data={"PROLIFIC_PID": "p" * 201, "consent": "yes"}),
        client.post(f"/api/studies/{slug}/participants", content=_json({"external_ids": {"PROLIFIC_PID": "a\x00"}}),
                    headers={"content-type": "application/json"}),
        client.post(f"/api/studies/{slug}/participants", content=_json({"external_ids": {"workerId": "\ud800"}}),
                    headers={"content-type": "application/json"}),
        client.post(f"/api/trials/{trial}/answer", content=_json({"choice": 3, "request_id": "a\x00b"}),
                    headers={"X-Participant": token, "content-type": "application/json"}),
        client.post(f"/api/trials/{trial}/answer", content=_json({"choice": 3, "request_id": "\udc80"}),
                    headers={"X-Participant": token, "content-type": "application/json"}),
        client.post(f"/api/trials/{trial}/answer", json={"choice": 3, "request_id": "r1", "response_ms": 2**31},
                    headers={"X-Participant": token}),
        client.post(f"/api/trials/{trial}/answer", json={"choice": 2**40, "request_id": "r2"},
                    headers={"X-Participant": token}),
        client.post(f"/api/studies/{slug}/participants", content=b"x" * 100_000,
                    headers={"content-type": "application/json"}),
    ]
    statuses = [r.status_code for r in cases]
    assert all(400 <= s < 500 for s in statuses), statuses
    assert statuses[-1] == 413
    # An over-long crowd id on the start form gets the consent page with a message, not "not open".
    assert cases[7].status_code == 422 and "at most 200 characters" in cases[7].text
    assert "not open" not in cases[7].text


@FAST
@given(data=st.data())
def test_participant_routes_never_answer_5xx(client, open_study, data):
    slug = open_study.slug
    token = join(client, slug)
    trial = next_(client, token).json()["trial"]
    text_ = data.draw(nasty_text)
    key = data.draw(st.sampled_from(["PROLIFIC_PID", "workerId", "SESSION_ID", "other"]))
    ids = data.draw(st.one_of(st.dictionaries(nasty_text, anything, max_size=3), anything))
    body = {"choice": data.draw(anything), "request_id": data.draw(anything), "response_ms": data.draw(anything)}
    responses = [
        client.post(f"/api/studies/{slug}/participants", content=_json({"external_ids": ids}),
                    headers={"content-type": "application/json"}),
        client.post(f"/api/studies/{slug}/participants", content=_json({"external_ids": {key: text_}}),
                    headers={"content-type": "application/json"}),
        client.post(f"/api/studies/{q(text_)}/participants"),
        client.get(f"/api/participants/{q(text_)}/next"),
        client.get("/api/next", headers={"X-Participant": q(text_)}),
        client.post(f"/api/trials/{trial}/answer", json={"choice": 3, "request_id": "y"},
                    headers={"X-Participant": q(text_)}),
        client.get(f"/s/{q(text_)}/done"),
        client.get(f"/s/{q(text_)}/full"),
        client.post(f"/api/trials/{trial}/answer", content=_json(body),
                    headers={"X-Participant": token, "content-type": "application/json"}),
        client.post(f"/api/trials/{q(text_)}/answer", json={"choice": 3, "request_id": "x"},
                    headers={"X-Participant": token}),
        client.get(f"/i/{q(text_)}"),
        client.get(f"/s/{q(text_)}"),
        client.get(f"/s/{slug}?{key}={q(text_)}"),
        client.post(f"/s/{slug}/start", content=f"{key}={q(text_)}&consent={q(data.draw(st.sampled_from(['yes', text_])))}",
                    headers=FORM),
    ]
    client.cookies.set("participant", q(text_), path=f"/s/{slug}")
    responses.append(client.get(f"/s/{slug}/run"))
    client.cookies.clear()
    assert [r.status_code for r in responses if r.status_code >= 500] == []


def test_taking_over_by_crowd_id_needs_proof(client, session, open_study):
    slug = open_study.slug
    ids = {"PROLIFIC_PID": "victim", "SESSION_ID": "s-secret"}
    r = client.post(f"/api/studies/{slug}/participants", json={"external_ids": ids})
    assert r.status_code == 201
    token = r.json()["participant"]
    # A stranger who knows only the PID (or guesses a wrong session id) gets a clear 409.
    for guess in ({"PROLIFIC_PID": "victim"}, {"PROLIFIC_PID": "victim", "SESSION_ID": "guess"}):
        r = client.post(f"/api/studies/{slug}/participants", json={"external_ids": guess})
        assert r.status_code == 409 and r.json()["reason"] == "crowd_id_in_use" and token not in r.text
    page = client.post(f"/s/{slug}/start", data={"PROLIFIC_PID": "victim", "consent": "yes"}, follow_redirects=False)
    assert page.status_code == 409 and "participant" not in page.headers.get("set-cookie", "")
    # The same session id (the platform's link again) or the participant's own cookie resumes.
    assert client.post(f"/api/studies/{slug}/participants", json={"external_ids": ids}).json()["participant"] == token
    client.cookies.set("participant", token, path=f"/s/{slug}")
    page = client.post(f"/s/{slug}/start", data={"PROLIFIC_PID": "victim", "consent": "yes"}, follow_redirects=False)
    assert page.status_code == 303
    with pytest.raises(FlowError):
        create_participant(session, open_study, {"PROLIFIC_PID": "victim"}, utcnow())


def test_headers_origin_and_the_header_form_of_next(client, open_study):
    slug = open_study.slug
    for path in (f"/s/{slug}", "/admin/login", "/healthz"):
        r = client.get(path)
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "server" not in r.headers
    cross = client.post(f"/s/{slug}/start", data={"consent": "yes"}, headers={"Origin": "https://evil.example"},
                        follow_redirects=False)
    assert cross.status_code == 403
    fetch_meta = client.post(f"/s/{slug}/start", data={"consent": "yes"}, headers={"Sec-Fetch-Site": "cross-site"},
                             follow_redirects=False)
    assert fetch_meta.status_code == 403
    own = client.post(f"/s/{slug}/start", data={"consent": "yes"}, headers={"Origin": "http://testserver"},
                      follow_redirects=False)
    assert own.status_code == 303
    token = join(client, slug)
    by_header = client.get("/api/next", headers={"X-Participant": token})
    assert by_header.status_code == 200 and by_header.json() == next_(client, token).json()
    assert client.get("/api/next").status_code == 401
    assert client.get("/api/next", headers={"X-Participant": "0" * 64}).status_code == 403
    assert answer(client, token, by_header.json()["trial"], 3).status_code == 200


def test_serve_sends_no_server_header(monkeypatch):
    import uvicorn

    from app import cli

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    cli._run_server("127.0.0.1", 8000, 2)
    assert seen["server_header"] is False and seen["workers"] == 2


def test_participant_tokens_are_redacted_from_access_logs():
    import logging

    from app.web.guard import redact_access_log

    token = "ab" * 32
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "GET", f"/api/participants/{token}/next", "1.1", 200), None)
    assert redact_access_log(record)
    assert token not in record.getMessage() and "/api/participants/***/next" in record.getMessage()


def test_manifest_text_and_numbers_the_database_cannot_take_are_refused(session, make_pair_set, tmp_path):
    from app.studies.importer import import_pair_set
    from sampler.manifest import ManifestError

    for field, value, says in (("prompt", "a cat\u0000", ":2: field 'prompt': text contains a NUL"),
                               ("stratum", "\ud800", ":2: field 'stratum': text contains a NUL"),
                               ("seed", 2**31, "record 2 ('p1:1001'): field 'seed': must fit in 32 bits")):
        folder = make_pair_set(tmp_path / field, 3)
        lines = (folder / "manifest.jsonl").read_text().splitlines()
        rec = json.loads(lines[1])
        rec[field] = value
        lines[1] = json.dumps(rec)
        (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
        with pytest.raises(ManifestError, match=re.escape(says)):
            import_pair_set(session, folder)
        session.rollback()
