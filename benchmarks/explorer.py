"""Researchers never block participants (issue 22.8): participants' /next and answer latencies on
SQLite while a researcher browses the pair explorer (its page, then every image on it, six at a
time as a browser fetches them, over and over).

Serves the app with uvicorn (one worker, SQLite in a temp folder) over a study of `--pairs` pairs
of `--size` px images, runs `--participants` participant threads for `--seconds`, first alone, then
with the researcher. Prints p50/p95/max per phase and the failed requests; exit status 1 when the
p95 with the researcher is 1 s or more, or any request failed.

    python3 benchmarks/explorer.py                 # 300 pairs of 256 px, 8 participants, 20 s per phase
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadsetup import ROOT, free_port, write_synthetic_pair_set  # noqa: E402

ADMIN = ("explorer-admin", "correct horse battery staple 8")


def seed(url: str, pairs: int, size: int) -> str:
    from app.store.db import session_scope, upgrade_database
    from app.studies.config import create_study
    from app.studies.importer import import_pair_set

    upgrade_database(url)
    with tempfile.TemporaryDirectory(prefix="sfgeval-explorer-pairs-") as tmp:
        folder = write_synthetic_pair_set(Path(tmp) / "pairs", pairs, size=size)
        with session_scope(url) as session:
            ps = import_pair_set(session, folder, name="explorer")
            slug = f"explorer-{uuid.uuid4().hex[:6]}"
            create_study(session, {"title": "Explorer load", "slug": slug, "pair_sets": [ps.id], "state": "open",
                                   "pairs_per_participant": 10, "ratings_per_pair": 1000, "gold_rate": 0.0,
                                   "repeats": 0, "min_response_ms": 0})
    return slug


class Participants:
    def __init__(self, base: str, slug: str):
        self.base, self.slug = base, slug
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.record = threading.Event()
        self.stop = threading.Event()

    def _timed(self, http: httpx.Client, method: str, url: str, **kw) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            r = http.request(method, url, **kw)
        except httpx.HTTPError as e:
            with self.lock:
                self.failures.append(f"{method} {url.split('?')[0]}: {type(e).__name__}")
            return None
        dt = time.perf_counter() - t0
        with self.lock:
            if self.record.is_set():
                self.latencies.append(dt)
            if r.status_code >= 500:
                self.failures.append(f"{method} {url.split('?')[0]}: {r.status_code}")
        return r

    def run(self, k: int) -> None:
        with httpx.Client(base_url=self.base, timeout=120) as http:
            while not self.stop.is_set():
                r = http.post(f"/api/studies/{self.slug}/participants")
                token = r.json()["participant"]
                while not self.stop.is_set():
                    r = self._timed(http, "GET", "/api/next", headers={"X-Participant": token})
                    if r is None or r.status_code != 200 or r.json().get("done"):
                        break
                    time.sleep(0.2)  # a (fast) person looking at the pair
                    self._timed(http, "POST", f"/api/trials/{r.json()['trial']}/answer",
                                headers={"X-Participant": token},
                                json={"choice": 1 + k % 5, "request_id": str(uuid.uuid4())})


def researcher(base: str, slug: str, stop: threading.Event, counts: dict) -> None:
    with httpx.Client(base_url=base, timeout=300, limits=httpx.Limits(max_connections=6)) as http:
        page = http.get("/admin/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        http.post("/admin/login", data={"username": ADMIN[0], "password": ADMIN[1], "csrf_token": csrf})
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            while not stop.is_set():
                for sort in ("score", "disagreement"):
                    html = http.get(f"/admin/studies/{slug}/pairs", params={"sort": sort}).text
                    images = re.findall(r'src="(/admin/pairs/\d+/\w+\.png)"', html)
                    for r in pool.map(http.get, images):
                        counts["images"] += 1
                        counts["errors"] += r.status_code >= 500
                    counts["pages"] += 1
                    if stop.is_set():
                        break


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--participants", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sfgeval-explorer-"))
    url = f"sqlite:///{tmp / 'db.sqlite3'}"
    slug = seed(url, args.pairs, args.size)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "SFGEVAL_SECRET_KEY": "explorer", "PYTHONPATH": str(ROOT),
           "SFGEVAL_ADMIN_USER": ADMIN[0], "SFGEVAL_ADMIN_PASSWORD": ADMIN[1], "SFGEVAL_SIGNUP_RATE_PER_MINUTE": "0"}
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port),
                             "--no-access-log", "--log-level", "warning"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        people = Participants(base, slug)
        threads = [threading.Thread(target=people.run, args=(k,)) for k in range(args.participants)]
        for t in threads:
            t.start()
        time.sleep(2)  # warm up
        results = {}
        for phase in ("participants alone", "with a researcher browsing the explorer"):
            stop_researcher = threading.Event()
            counts = {"pages": 0, "images": 0, "errors": 0}
            r_thread = None
            if phase.startswith("with"):
                r_thread = threading.Thread(target=researcher, args=(base, slug, stop_researcher, counts))
                r_thread.start()
            with people.lock:
                people.latencies.clear()
            people.record.set()
            time.sleep(args.seconds)
            people.record.clear()
            with people.lock:
                lat = np.array(people.latencies)
            stop_researcher.set()
            if r_thread is not None:
                r_thread.join()
            results[phase] = (lat, dict(counts))
        people.stop.set()
        for t in threads:
            t.join()
        print(f"SQLite, 1 worker, {args.pairs} pairs of {args.size} px, {args.participants} participants, "
              f"{args.seconds:g} s per phase")
        for phase, (lat, counts) in results.items():
            extra = (f"; researcher: {counts['pages']} explorer pages, {counts['images']} images, "
                     f"{counts['errors']} 5xx") if phase.startswith("with") else ""
            print(f"  {phase}: {len(lat)} requests, p50 {np.percentile(lat, 50) * 1000:.0f} ms, "
                  f"p95 {np.percentile(lat, 95) * 1000:.0f} ms, max {lat.max() * 1000:.0f} ms{extra}")
        print(f"  failed participant requests: {len(people.failures)} {people.failures[:5]}")
        lat, counts = results["with a researcher browsing the explorer"]
        bad = np.percentile(lat, 95) >= 1.0 or people.failures or counts["errors"] or counts["images"] == 0
        return 1 if bad else 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
