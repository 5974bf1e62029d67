"""Load test on loopback: N concurrent simulated participants against the app on PostgreSQL.

Starts its own throwaway PostgreSQL cluster (or uses --database-url), migrates it, seeds a study
with a synthetic pair set, serves the app with `uvicorn --workers W`, and runs N participants
(asyncio + httpx) through the whole participant flow of spec/api.md for a fixed time:

    POST /api/studies/{slug}/participants → loop { GET /next → GET both images → POST answer }

A participant who finishes is replaced by a new one, so N stay active. A share of answers is
sent twice with the same request_id (a double click), and a failed submit is retried with the
same request_id (a network retry): both must store exactly one rating.

At the end every answer the server acknowledged (HTTP 200) is compared with the database:
- lost: acknowledged but not stored (or stored with another choice / trial),
- duplicate: more than one stored rating for one trial, or one request stored twice,
- over target: main ratings of a pair beyond the study's ratings_per_pair.
All three must be 0. It prints ratings per second and p50/p95/p99 latency (ms) of "next" and
"submit" (and of image fetches), and exits non-zero when anything is lost or duplicated.

    python3 benchmarks/load.py                       # 200 participants, 2 workers, 30 s
    python3 benchmarks/load.py --participants 50 --duration 10 --database-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- database and server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    """A private PostgreSQL cluster in a temp dir on 127.0.0.1 (as in scripts/test.sh)."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
        if not bins:
            raise SystemExit("no PostgreSQL server found in /usr/lib/postgresql/*/bin; pass --database-url")
        self.bin = bins[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="sfgeval-load-pg-"))
        self.port = free_port()
        self.root = os.geteuid() == 0
        self.user = "postgres" if self.root else os.environ.get("USER", "postgres")
        if self.root:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.root:
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in cmd)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    def start(self) -> str:
        self._run("initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", self.user)
        opts = (f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=400 "
                "-c fsync=off -c synchronous_commit=off -c shared_buffers=256MB")
        self._run("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-o", opts, "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "sfgeval_load")
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/sfgeval_load"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def tree_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) used so far by process `pid` and its children; None if unknown."""
    if pid is None:
        return None
    try:
        import psutil
    except ImportError:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def write_synthetic_pair_set(folder: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """A generator-style folder (manifest.jsonl + opaque PNGs) of `n` pairs of small images."""
    import hashlib

    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        recs = {}
        for arm in ("cfg", "sfg"):
            name = uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63))).hex + ".png"
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            PILImage.fromarray(arr).save(folder / name, format="PNG")
            recs[arm] = {"arm": arm, "file": name, "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}
        lines.append(json.dumps({
            "schema": "sfgeval.pair/1", "pair_key": f"q{i}:{i}", "prompt_id": f"q{i}",
            "prompt": f"synthetic prompt {i}", "stratum": ("low", "middle", "high")[i % 3], "seed": i,
            "baseline": recs["cfg"], "treatment": recs["sfg"], "params": {"steps": 1},
            "model": {"name_or_path": "synthetic", "fingerprint": "0" * 16},
        }))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def seed_study(url: str, args: argparse.Namespace) -> str:
    """Migrate the database and create an open study over a synthetic pair set; returns its slug."""
    from app.db import session_scope, upgrade_database
    from app.importer import import_pair_set
    from app.studies import create_study

    upgrade_database(url)
    with tempfile.TemporaryDirectory(prefix="sfgeval-load-pairs-") as tmp:
        folder = write_synthetic_pair_set(Path(tmp) / "pairs", args.pairs)
        with session_scope(url) as session:
            pair_set = import_pair_set(session, folder, name="load-test")
            slug = f"load-{uuid.uuid4().hex[:8]}"
            create_study(session, {
                "title": "Load test", "slug": slug, "pair_sets": [pair_set.id], "state": "open",
                "pairs_per_participant": args.pairs_per_participant,
                "ratings_per_pair": args.ratings_per_pair, "gold_rate": args.gold_rate,
                "repeats": args.repeats, "min_response_ms": 0,
            })
    return slug


def start_server(url: str, port: int, workers: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": url, "SFGEVAL_SECRET_KEY": uuid.uuid4().hex, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"the server did not answer /healthz within 60 s:\n{log.read_text()[-3000:]}")


# --------------------------------------------------------------------------- simulated participants

@dataclass
class Stats:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    image_ms: list[float] = field(default_factory=list)
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # request_id -> (trial, choice)
    acked_trials: Counter = field(default_factory=Counter)
    ack_times: list[float] = field(default_factory=list)  # time.monotonic() of each acknowledgement
    statuses: Counter = field(default_factory=Counter)
    replays: int = 0
    retries: int = 0
    participants: int = 0
    finished: int = 0
    no_work: int = 0
    errors: Counter = field(default_factory=Counter)


async def timed(client: httpx.AsyncClient, bucket: list[float], method: str, url: str, **kw) -> httpx.Response:
    t0 = time.perf_counter()
    r = await client.request(method, url, **kw)
    bucket.append((time.perf_counter() - t0) * 1000)
    return r


async def submit(client, stats: Stats, trial: str, token: str, choice: int, request_id: str) -> httpx.Response | None:
    """POST an answer; retry up to 3 times with the same request_id on a network error or 5xx."""
    body = {"choice": choice, "request_id": request_id, "response_ms": random.randint(800, 4000)}
    for attempt in range(4):
        try:
            r = await timed(client, stats.submit_ms, "POST", f"/api/trials/{trial}/answer",
                            json=body, headers={"X-Participant": token})
        except httpx.HTTPError as e:
            stats.errors[f"submit {type(e).__name__}"] += 1
            stats.retries += 1
            continue
        stats.statuses[f"submit {r.status_code}"] += 1
        if r.status_code >= 500:
            stats.retries += 1
            continue
        return r
    return None


async def participant_loop(client: httpx.AsyncClient, slug: str, deadline: float, stats: Stats,
                           args: argparse.Namespace, rng: random.Random) -> None:
    while time.monotonic() < deadline:
        ext = {"PROLIFIC_PID": uuid.uuid4().hex[:24], "STUDY_ID": "load", "SESSION_ID": uuid.uuid4().hex[:12]}
        try:
            r = await client.post(f"/api/studies/{slug}/participants", json={"external_ids": ext})
        except httpx.HTTPError as e:
            stats.errors[f"create {type(e).__name__}"] += 1
            continue
        stats.statuses[f"create {r.status_code}"] += 1
        if r.status_code not in (200, 201):
            stats.no_work += r.status_code == 409
            return
        token = r.json()["participant"]
        stats.participants += 1
        while time.monotonic() < deadline:
            try:
                r = await timed(client, stats.next_ms, "GET", f"/api/participants/{token}/next")
            except httpx.HTTPError as e:
                stats.errors[f"next {type(e).__name__}"] += 1
                continue
            stats.statuses[f"next {r.status_code}"] += 1
            if r.status_code == 409:
                stats.no_work += 1
                return
            if r.status_code != 200:
                await asyncio.sleep(0.05)
                continue
            data = r.json()
            if data.get("done"):
                stats.finished += 1
                break
            if args.images:
                for side in ("left", "right"):
                    try:
                        img = await timed(client, stats.image_ms, "GET", data[side])
                        stats.statuses[f"image {img.status_code}"] += 1
                    except httpx.HTTPError as e:
                        stats.errors[f"image {type(e).__name__}"] += 1
            if args.think_ms:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * args.think_ms / 1000)
            choice, request_id = rng.randint(1, 5), str(uuid.uuid4())
            r = await submit(client, stats, data["trial"], token, choice, request_id)
            if r is None or r.status_code != 200:
                continue
            stats.acked[request_id] = (data["trial"], choice)
            stats.ack_times.append(time.monotonic())
            stats.acked_trials[data["trial"]] += 1
            if rng.random() < args.replay_share:  # a double click: same request_id again
                r2 = await submit(client, stats, data["trial"], token, choice, request_id)
                stats.replays += 1
                if r2 is not None and r2.status_code != 200:
                    stats.errors[f"replay answered {r2.status_code}"] += 1


async def run_load(base_url: str, slug: str, args: argparse.Namespace) -> tuple[Stats, float, float]:
    stats = Stats()
    limits = httpx.Limits(max_connections=args.participants + 10, max_keepalive_connections=args.participants + 10)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(60.0)) as client:
        t0 = time.monotonic()
        deadline = t0 + args.duration
        tasks = [
            asyncio.create_task(participant_loop(client, slug, deadline, stats, args, random.Random(args.seed + i)))
            for i in range(args.participants)
        ]

        async def report() -> None:
            while not all(t.done() for t in tasks):
                await asyncio.sleep(5)
                el = time.monotonic() - t0
                print(f"  {el:5.1f} s: {len(stats.acked)} ratings acknowledged, {stats.participants} participants",
                      flush=True)

        reporter = asyncio.create_task(report())
        # No request is cancelled at the deadline: each participant finishes the one in flight, so
        # every answer is either acknowledged or known to have failed.
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        reporter.cancel()
    return stats, elapsed, t0


# --------------------------------------------------------------------------- checking

def check_database(url: str, slug: str, stats: Stats) -> dict[str, int]:
    from sqlalchemy import func, select

    from app.db import session_scope
    from app.models import Rating, Study, Trial

    with session_scope(url) as session:
        study = session.scalar(select(Study).where(Study.slug == slug))
        rows = session.execute(
            select(Rating.request_id, Trial.public_id, Rating.choice)
            .join(Trial, Rating.trial_id == Trial.id).where(Trial.study_id == study.id)
        ).all()
        per_pair = session.execute(
            select(Trial.pair_id, func.count(Rating.id)).join(Rating, Rating.trial_id == Trial.id)
            .where(Trial.study_id == study.id, Trial.kind == "main").group_by(Trial.pair_id)
        ).all()
        target = study.ratings_per_pair
    stored = defaultdict(list)
    for request_id, trial, choice in rows:
        stored[request_id].append((trial, choice))
    per_trial = Counter(trial for _, trial, _ in rows)
    lost = sum(1 for rid, val in stats.acked.items() if stored.get(rid) != [val])
    duplicate = (sum(n - 1 for n in per_trial.values() if n > 1)
                 + sum(len(v) - 1 for v in stored.values() if len(v) > 1)
                 + sum(n - 1 for n in stats.acked_trials.values() if n > 1))
    return {
        "stored": len(rows),
        "acknowledged": len(stats.acked),
        "lost": lost,
        "duplicate": duplicate,
        "stored_unacknowledged": sum(1 for rid in stored if rid not in stats.acked),
        "over_target": sum(max(0, n - target) for _, n in per_pair),
        "max_main_ratings_per_pair": max((n for _, n in per_pair), default=0),
        "target": target,
    }


def pct(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return f"p50 {p50:7.1f}  p95 {p95:7.1f}  p99 {p99:7.1f}  (n={len(values)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=200, help="concurrent simulated participants")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--database-url", help="an empty PostgreSQL database (default: a throwaway cluster)")
    ap.add_argument("--pairs", type=int, default=300, help="pairs in the synthetic pair set")
    ap.add_argument("--ratings-per-pair", type=int, default=60, help="target ratings per pair")
    ap.add_argument("--pairs-per-participant", type=int, default=20)
    ap.add_argument("--gold-rate", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--replay-share", type=float, default=0.05, help="share of answers sent twice")
    ap.add_argument("--think-ms", type=float, default=0.0, help="mean pause before answering")
    ap.add_argument("--no-images", dest="images", action="store_false", help="skip the two image GETs per trial")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()

    pg = None
    server = None
    workdir = Path(tempfile.mkdtemp(prefix="sfgeval-load-"))
    try:
        url = args.database_url
        if not url:
            pg = ThrowawayPostgres()
            url = pg.start()
            print(f"throwaway PostgreSQL on 127.0.0.1:{pg.port}")
        t = time.monotonic()
        slug = seed_study(url, args)
        print(f"seeded study {slug!r}: {args.pairs} pairs, target {args.ratings_per_pair} ratings/pair "
              f"({time.monotonic() - t:.1f} s)")
        port = free_port()
        server = start_server(url, port, args.workers, workdir / "server.log")
        print(f"uvicorn --workers {args.workers} on 127.0.0.1:{port}; {args.participants} participants "
              f"for {args.duration:g} s")
        load_before = os.getloadavg()[0]
        pg_pid = pg.postmaster_pid() if pg is not None else None
        cpu0 = (tree_cpu_s(server.pid), tree_cpu_s(pg_pid), time.process_time())
        stats, elapsed, t0 = asyncio.run(run_load(f"http://127.0.0.1:{port}", slug, args))
        cpu1 = (tree_cpu_s(server.pid), tree_cpu_s(pg_pid), time.process_time())
        load_after = os.getloadavg()[0]
        cpu = {name: (b - a if a is not None and b is not None else None)
               for name, a, b in zip(("server", "postgres", "client"), cpu0, cpu1)}
        check = check_database(url, slug, stats)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        if pg is not None:
            pg.stop()

    rate = check["acknowledged"] / elapsed
    # The steady-state rate: the second half of the load window (after every participant has
    # signed up and seen a first trial), excluding the drain of in-flight requests.
    half = t0 + args.duration / 2
    in_window = sum(1 for t in stats.ack_times if half <= t < t0 + args.duration)
    steady = in_window / (args.duration / 2)
    print()
    print(f"participants {args.participants} concurrent, uvicorn workers {args.workers}, "
          f"{elapsed:.1f} s (load {args.duration:g} s + in-flight requests)")
    # Other work on the machine skews every figure: say how busy it was.
    print(f"machine             {os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before, "
          f"{load_after:.1f} after the run")
    print(f"ratings/second      {rate:8.1f}   ({check['acknowledged']} acknowledged, {check['stored']} stored, "
          f"over the whole run)")
    print(f"ratings/second      {steady:8.1f}   (second half of the load window only)")
    n = max(1, check["acknowledged"])
    print("CPU during the run  " + ", ".join(
        f"{k} {v:.1f} s ({1000 * v / n:.0f} ms per rating)" for k, v in cpu.items() if v is not None))
    print(f"next   latency ms   {pct(stats.next_ms)}")
    print(f"submit latency ms   {pct(stats.submit_ms)}")
    if args.images:
        print(f"image  latency ms   {pct(stats.image_ms)}")
    print(f"participants started {stats.participants}, finished {stats.finished}; double-click replays "
          f"{stats.replays}; retries {stats.retries}; no-work answers {stats.no_work}")
    print(f"HTTP statuses       {dict(sorted(stats.statuses.items()))}")
    if stats.errors:
        print(f"client errors       {dict(stats.errors)}")
    print(f"lost ratings        {check['lost']}")
    print(f"duplicate ratings   {check['duplicate']}")
    print(f"over target         {check['over_target']} (max main ratings on one pair "
          f"{check['max_main_ratings_per_pair']}, target {check['target']})")
    print(f"stored, not acknowledged (failed requests) {check['stored_unacknowledged']}")
    if args.json_out:
        summary = {
            "participants": args.participants, "workers": args.workers, "elapsed_s": elapsed,
            "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
            "cpu_s": cpu,
            "ratings_per_s": rate, "ratings_per_s_second_half": steady, **check,
            **{f"{k}_ms_p{q}": float(np.percentile(v, q)) if v else None
               for k, v in (("next", stats.next_ms), ("submit", stats.submit_ms), ("image", stats.image_ms))
               for q in (50, 95, 99)},
            "statuses": dict(stats.statuses), "errors": dict(stats.errors),
        }
        args.json_out.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if check["lost"] or check["duplicate"] or check["over_target"] else 0


if __name__ == "__main__":
    sys.exit(main())
