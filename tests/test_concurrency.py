"""Many simulated participants in parallel against a live server on PostgreSQL.

No rating may be lost or stored twice, and no pair may get more main ratings than its target,
even with double clicks and retries racing each other.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from app.models import Rating, Trial

pytestmark = pytest.mark.postgres

N_PARTICIPANTS = 40
N_PAIRS = 12
TARGET = 3
PER_PARTICIPANT = 4


@pytest.fixture
def db_url(postgres_url):  # this module runs on PostgreSQL only
    return postgres_url


def _participant(base: str, slug: str, k: int, barrier: threading.Barrier) -> dict:
    rng = random.Random(k)
    stored, refused, replays = [], [], 0
    with httpx.Client(base_url=base, timeout=60) as http:
        token = http.post(f"/api/studies/{slug}/participants", json={"external_ids": {"PROLIFIC_PID": f"p{k}"}}).json()["participant"]
        barrier.wait()
        while True:
            r = http.get(f"/api/participants/{token}/next")
            if r.status_code == 409:
                return {"stored": stored, "refused": refused, "replays": replays, "no_work": True}
            body = r.json()
            if body.get("done"):
                return {"stored": stored, "refused": refused, "replays": replays, "no_work": False}
            rid = str(uuid.uuid4())
            payload = {"choice": rng.randint(1, 5), "request_id": rid}
            headers = {"X-Participant": token}
            # A double click: the same request twice, concurrently.
            url = f"/api/trials/{body['trial']}/answer"
            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(http.post, url, json=payload, headers=headers) for _ in range(2)]
                results = [f.result() for f in futures]
            if any(x.json().get("reason") == "pair_full" for x in results):
                # A new participant's provisional trial whose pair filled up meanwhile: refused,
                # for both clicks, and nothing is stored (checked below).
                assert all(x.status_code == 409 for x in results), [x.text for x in results]
                refused.append(rid)
                continue
            assert all(x.status_code == 200 for x in results), [x.text for x in results]
            assert results[0].json() == results[1].json()
            replays += sum(x.headers.get("X-Idempotent-Replay") == "true" for x in results)
            stored.append(rid)


def test_parallel_participants_lose_and_duplicate_nothing(live_server, session, study_factory):
    study = study_factory(n_pairs=N_PAIRS, pairs_per_participant=PER_PARTICIPANT, ratings_per_pair=TARGET,
                          gold_rate=0.25, repeats=1)
    barrier = threading.Barrier(N_PARTICIPANTS)
    with ThreadPoolExecutor(N_PARTICIPANTS) as pool:
        outcomes = list(pool.map(lambda k: _participant(live_server, study.slug, k, barrier), range(N_PARTICIPANTS)))
    session.expire_all()
    stored = [rid for o in outcomes for rid in o["stored"]]
    rows = session.execute(select(Rating.request_id, Trial.pair_id, Trial.kind).join(Trial)).all()
    # Nothing lost, nothing twice: exactly the acknowledged answers are in the database.
    assert sorted(r[0] for r in rows) == sorted(stored)
    assert sum(o["replays"] for o in outcomes) == len(stored)
    main = Counter(pair for _, pair, kind in rows if kind == "main")
    assert max(main.values()) <= TARGET
    # Capacity was the limit: every pair reached its target and some participants found no work.
    assert sum(main.values()) == N_PAIRS * TARGET
    assert any(o["no_work"] for o in outcomes)
    assert session.scalar(select(func.count()).select_from(Trial).where(Trial.state == "assigned")) == 0
