"""Fault script: participants keep answering while a worker, the server and PostgreSQL crash.

Starts a throwaway PostgreSQL cluster (synchronous_commit on: an acknowledged commit must survive
a crash), seeds an open study with short holds, serves the app with `uvicorn --workers 2` and runs
N participants (threads, httpx). A participant retries a request that got no answer (connection
refused or reset) with the same `request_id`, as the participant page does. Phases:

    steady -> kill -9 of one worker -> kill -9 of the server (all its processes), restart it
           -> pg_ctl restart -m immediate -> steady -> the cheap attacks of issue 22
              (benchmarks/attacks.py: each with its outcome and the 5xx it drew)

Then it waits until every hold has expired and compares what the server acknowledged (HTTP 200)
with the database. It prints: acknowledged, stored, lost (acknowledged but not stored as sent),
duplicate (a trial or request_id stored twice), 5xx responses per phase and stuck holds (holds
still live after the hold time has passed since the last request). All must be 0 but
acknowledged/stored; the exit status is 1 otherwise.

    python3 benchmarks/faults.py                     # 20 participants, about a minute
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attacks import ADMIN, run_attacks  # noqa: E402
from loadsetup import ROOT, ThrowawayPostgres, free_port, seed_study

HOLD_MINUTES = 0.1  # 6 s: "after expiry" comes quickly


class CrashablePostgres(ThrowawayPostgres):
    def start(self) -> str:
        self._run("initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", self.user)
        self.opts = (f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                     "-c synchronous_commit=on")
        self._run("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-o", self.opts, "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "sfgeval_faults")
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/sfgeval_faults"

    def restart_immediate(self) -> None:
        self._run("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-m", "immediate",
                  "-o", self.opts, "restart")


class Server:
    def __init__(self, url: str, workers: int, log: Path):
        self.url, self.workers, self.log = url, workers, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "DATABASE_URL": self.url, "SFGEVAL_SECRET_KEY": "faults", "PYTHONPATH": str(ROOT),
               # The attacks (benchmarks/attacks.py) speak from many addresses through X-Forwarded-For.
               "SFGEVAL_TRUSTED_PROXIES": "127.0.0.1", "SFGEVAL_ADMIN_USER": ADMIN[0],
               "SFGEVAL_ADMIN_PASSWORD": ADMIN[1]}
        cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(self.workers), "--no-access-log", "--log-level", "warning",
               "--no-server-header"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit(f"server did not start:\n{self.log.read_text()[-2000:]}")

    def workers_pids(self) -> list[int]:
        return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)
                if "resource_tracker" not in " ".join(c.cmdline())]

    def kill_worker(self) -> int:
        pid = self.workers_pids()[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_all(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class Run:
    def __init__(self, base: str, slug: str):
        self.base, self.slug = base, slug
        self.phase = "steady"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[str, tuple[str, int]] = {}  # request_id -> (trial, choice)
        self.server_errors: Counter = Counter()
        self.unanswered: Counter = Counter()  # requests retried after no response, per phase
        self.last_request = time.monotonic()

    def call(self, http: httpx.Client, method: str, url: str, **kw) -> httpx.Response | None:
        """The response, retrying while the server cannot be reached; None once stopped."""
        while not self.stop.is_set() or method == "POST":
            try:
                r = http.request(method, url, **kw)
            except httpx.TransportError:
                with self.lock:
                    self.unanswered[self.phase] += 1
                time.sleep(0.2)
                continue
            with self.lock:
                self.last_request = time.monotonic()
                if r.status_code >= 500:
                    self.server_errors[self.phase] += 1
            if r.status_code >= 500:
                time.sleep(0.2)
                continue
            return r
        return None

    def participant(self, k: int) -> None:
        # Each simulated participant from an address of its own (the server trusts 127.0.0.1 as a proxy).
        with httpx.Client(base_url=self.base, timeout=30, headers={"X-Forwarded-For": f"10.99.0.{k + 1}"}) as http:
            while not self.stop.is_set():
                r = self.call(http, "POST", f"/api/studies/{self.slug}/participants")
                if r is None:
                    break
                if r.status_code == 429:  # the per-address sign-up limit: wait as told
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                token = r.json()["participant"]
                while not self.stop.is_set():
                    r = self.call(http, "GET", "/api/next", headers={"X-Participant": token})
                    if r is None or r.status_code != 200 or r.json().get("done"):
                        break
                    trial, choice, rid = r.json()["trial"], 1 + k % 5, str(uuid.uuid4())
                    time.sleep(0.05)
                    r = self.call(http, "POST", f"/api/trials/{trial}/answer", headers={"X-Participant": token},
                                  json={"choice": choice, "request_id": rid})
                    if r is not None and r.status_code == 200:
                        with self.lock:
                            self.acked[rid] = (trial, choice)


def check(url: str, run: Run) -> dict[str, int]:
    from sqlalchemy import create_engine, func, select

    from app.store.models import Rating, Study, Trial, utcnow

    engine = create_engine(url)
    with engine.connect() as conn:  # the faults' study only (the attacks make studies of their own)
        study_id = conn.scalar(select(Study.id).where(Study.slug == run.slug))
        rows = conn.execute(select(Rating.request_id, Trial.public_id, Rating.choice).join(Trial)
                            .where(Trial.study_id == study_id)).all()
        stuck = conn.scalar(select(func.count(Trial.id)).where(Trial.study_id == study_id, Trial.state == "assigned",
                                                               Trial.expires_at > utcnow()))
    engine.dispose()
    stored = {rid: (trial, choice) for rid, trial, choice in rows}
    return {
        "acknowledged": len(run.acked),
        "stored": len(rows),
        "lost": sum(stored.get(rid) != v for rid, v in run.acked.items()),
        "duplicate": (len(rows) - len({r[0] for r in rows})) + (len(rows) - len({r[1] for r in rows})),
        "stuck_holds": stuck,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--phase-seconds", type=float, default=5.0)
    args = ap.parse_args()
    pg = CrashablePostgres()
    url = pg.start()
    log = Path(pg.dir) / "server.log"
    server = Server(url, args.workers, log)
    try:
        slug = seed_study(url, SimpleNamespace(pairs=400, pairs_per_participant=8, ratings_per_pair=5, gold_rate=0.0,
                                               repeats=0, practice=0))
        from sqlalchemy import create_engine, update

        from app.store.models import Study
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(update(Study).where(Study.slug == slug).values(hold_minutes=HOLD_MINUTES))
        engine.dispose()
        server.start()
        run = Run(server.base, slug)
        threads = [threading.Thread(target=run.participant, args=(k,)) for k in range(args.participants)]
        for t in threads:
            t.start()
        events = []

        def phase(name: str, action) -> None:
            run.phase = name
            events.append(f"{name}: {action() or ''}".rstrip(": "))
            time.sleep(args.phase_seconds)

        phase("steady", lambda: None)
        phase("worker kill -9", lambda: f"pid {server.kill_worker()}")
        def restart_server() -> None:
            server.kill_all()
            server.start()

        phase("server kill -9 + restart", restart_server)
        phase("pg restart -m immediate", pg.restart_immediate)
        phase("after", lambda: None)
        run.phase = "attacks"  # the cheap attacks of issue 22, while the participants keep answering
        attacks = run_attacks(server.base, url)
        run.stop.set()
        for t in threads:
            t.join()
        wait = HOLD_MINUTES * 60 - (time.monotonic() - run.last_request) + 1
        time.sleep(max(0.0, wait))
        result = check(url, run)
        print(f"{args.participants} participants, uvicorn --workers {args.workers}, {args.phase_seconds:g} s per phase")
        for e in events:
            print(f"  {e}")
        for k in ("acknowledged", "stored", "lost", "duplicate"):
            print(f"{k:>13}: {result[k]}")
        phases = ["steady", "worker kill -9", "server kill -9 + restart", "pg restart -m immediate", "after", "attacks"]
        print("          5xx: " + ", ".join(f"{p} {run.server_errors[p]}" for p in phases))
        print("  no response: " + ", ".join(f"{p} {run.unanswered[p]}" for p in phases) + "  (retried)")
        print(f"  stuck holds: {result['stuck_holds']} (live {HOLD_MINUTES * 60:g} s after the last request)")
        print("attacks (issue 22), while the participants answer:")
        for a in attacks:
            print(f"  {'ok  ' if a.ok else 'FAIL'} {a.name}: {a.detail}; 5xx {a.server_errors}")
        bad = result["lost"] + result["duplicate"] + result["stuck_holds"] + sum(run.server_errors.values())
        bad += sum(not a.ok for a in attacks) + sum(a.server_errors for a in attacks)
        return 1 if bad or result["acknowledged"] == 0 else 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill_all()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
