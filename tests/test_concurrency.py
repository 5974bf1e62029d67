"""Many simulated participants in parallel against a live server on PostgreSQL.

No rating may be lost or stored twice, and no pair may get more main ratings than its target,
even with double clicks and retries racing each other.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.store.models import PairTally, Rating, Trial
from tests.conftest import _free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.postgres

N_PARTICIPANTS = 40
N_PAIRS = 12
TARGET = 3
PER_PARTICIPANT = 4


@pytest.fixture
def db_url(postgres_url):  # this module runs on PostgreSQL only
    return postgres_url


def _participant(bases: list[str], slug: str, k: int, barrier: threading.Barrier) -> dict:
    """One participant's whole flow. With several servers (`bases`), every request goes to a random
    one and the two halves of a double click go to different ones."""
    rng = random.Random(k)
    stored, refused, replays = [], [], 0
    clients = [httpx.Client(base_url=b, timeout=60) for b in bases]
    with contextlib.ExitStack() as stack:
        for c in clients:
            stack.enter_context(c)
        http = clients[k % len(clients)]
        token = http.post(f"/api/studies/{slug}/participants", json={"external_ids": {"PROLIFIC_PID": f"p{k}"}}).json()["participant"]
        barrier.wait()
        while True:
            r = rng.choice(clients).get(f"/api/participants/{token}/next")
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
            first = rng.randrange(len(clients))
            pair = [clients[first], clients[(first + 1) % len(clients)]]
            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(c.post, url, json=payload, headers=headers) for c in pair]
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


def _run_and_check(bases: list[str], session, study_factory) -> None:
    study = study_factory(n_pairs=N_PAIRS, pairs_per_participant=PER_PARTICIPANT, ratings_per_pair=TARGET,
                          gold_rate=0.25, repeats=1)
    barrier = threading.Barrier(N_PARTICIPANTS)
    with ThreadPoolExecutor(N_PARTICIPANTS) as pool:
        outcomes = list(pool.map(lambda k: _participant(bases, study.slug, k, barrier), range(N_PARTICIPANTS)))
    session.expire_all()
    stored = [rid for o in outcomes for rid in o["stored"]]
    rows = session.execute(select(Rating.request_id, Trial.pair_id, Trial.kind).join(Trial)).all()
    # Nothing lost, nothing twice: exactly the acknowledged answers are in the database.
    assert sorted(r[0] for r in rows) == sorted(stored)
    assert sum(o["replays"] for o in outcomes) == len(stored)
    main = Counter(pair for _, pair, kind in rows if kind == "main")
    assert max(main.values()) <= TARGET
    # The tallies allocation ranks by moved exactly with the answers, under racing double clicks.
    tallies = dict(session.execute(select(PairTally.pair_id, PairTally.answered)
                                   .where(PairTally.study_id == study.id)).all())
    assert tallies == dict(main)
    # Capacity was the limit: every pair reached its target and some participants found no work.
    assert sum(main.values()) == N_PAIRS * TARGET
    assert any(o["no_work"] for o in outcomes)
    assert session.scalar(select(func.count()).select_from(Trial).where(Trial.state == "assigned")) == 0


def test_parallel_participants_lose_and_duplicate_nothing(live_server, session, study_factory):
    _run_and_check([live_server], session, study_factory)


@pytest.fixture
def two_servers(postgres_url, tmp_path):
    """Two `uvicorn` server processes (as on two hosts: no shared memory) on one PostgreSQL."""
    env = {**os.environ, "DATABASE_URL": postgres_url, "SFGEVAL_SECRET_KEY": "shared-test-secret",
           "PYTHONPATH": str(ROOT)}
    procs, bases = [], []
    try:
        for i in range(2):
            port = _free_port()
            log = open(tmp_path / f"server{i}.log", "wb")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(port), "--no-access-log", "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            bases.append(f"http://127.0.0.1:{port}")
        for (proc, _), base in zip(procs, bases):
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, "a server exited early"
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "a server did not start"
                time.sleep(0.1)
        yield bases
    finally:
        for proc, log in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


@pytest.mark.slow
def test_two_servers_on_one_database_lose_and_duplicate_nothing(two_servers, session, study_factory):
    # Every request of a participant goes to either server and each double click hits both at once:
    # the same guarantees hold because all shared state is in PostgreSQL.
    _run_and_check(two_servers, session, study_factory)
