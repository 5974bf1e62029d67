"""Set-up and checks for benchmarks/load.py: a throwaway PostgreSQL, a seeded study, the servers under
test (the app, and the plain reference app `../shared/bench/anchor_app.py`), CPU accounting, and the
comparison of acknowledged with stored ratings."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# The reference app: the workplace's copy when there is one, else the copy shipped here.
DEFAULT_ANCHOR = next(p for p in (ROOT.parent / "shared" / "bench" / "anchor_app.py",
                                  ROOT / "benchmarks" / "anchor_app.py") if p.is_file())
sys.path.insert(0, str(ROOT))


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
    """CPU seconds (user + system) used so far by process `pid` and its descendants, the exited ones
    included (a parent that reaps a child adds its times to its own children_user/children_system:
    PostgreSQL backends of closed connections count too); None if unknown."""
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
            total += t.user + t.system + t.children_user + t.children_system
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


QUESTIONS = [{"key": "alignment", "text": "Which image matches the prompt better?"},
             {"key": "quality", "text": "Which image has better visual quality?"},
             {"key": "overall", "text": "Which image is better overall?"}]


def seed_study(url: str, args: argparse.Namespace) -> str:
    """Migrate the database and create an open study over a synthetic pair set; returns its slug."""
    from app.store.db import session_scope, upgrade_database
    from app.studies.importer import import_pair_set
    from app.studies.config import create_study

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
                "repeats": args.repeats, "practice_trials": args.practice, "min_response_ms": 0,
                # --questions N (issue 24): N criteria per trial, the first one primary.
                **({"questions": QUESTIONS[: args.questions]} if getattr(args, "questions", 1) > 1 else {}),
            })
    return slug


def _serve(cmd: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    """Start `cmd` and wait until http://127.0.0.1:port/healthz answers 200."""
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
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


def _uvicorn(target: str, port: int, workers: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", target, *extra, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning"]


def start_server(url: str, port: int, workers: int, log: Path) -> subprocess.Popen:
    """The app under `uvicorn --workers N` (uvicorn[standard]: uvloop and httptools when installed)."""
    # Every simulated participant signs up from 127.0.0.1: the per-address sign-up limit is off here.
    env = {"DATABASE_URL": url, "SFGEVAL_SECRET_KEY": uuid.uuid4().hex, "PYTHONPATH": str(ROOT),
           "SFGEVAL_SIGNUP_RATE_PER_MINUTE": "0"}
    return _serve(_uvicorn("app.main:create_app", port, workers, "--factory"), env, port, log)


def start_anchor(url: str, port: int, args: argparse.Namespace, log: Path) -> subprocess.Popen:
    """The reference app (it creates and seeds its own anchor_* tables) with the same study sizes."""
    anchor = Path(args.anchor).resolve()
    if not anchor.is_file():
        raise SystemExit(f"no anchor app at {anchor}; pass --anchor PATH")
    env = {"DATABASE_URL": url, "ANCHOR_PAIRS": str(args.pairs), "ANCHOR_TARGET": str(args.ratings_per_pair),
           "ANCHOR_PER_PARTICIPANT": str(args.pairs_per_participant),
           "ANCHOR_IMAGE_BYTES": str(args.image_bytes or 3200)}
    cmd = _uvicorn(f"{anchor.stem}:app", port, args.workers, "--app-dir", str(anchor.parent))
    return _serve(cmd, env, port, log)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def anchor_rows(url: str) -> tuple[list[tuple[str, str, int]], list[int]]:
    """The anchor's stored ratings (request_id, trial, choice) and main ratings per pair."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text(
                "SELECT request_id, trial_public_id, choice FROM anchor_ratings"))]
            per_pair = [r[0] for r in conn.execute(text(
                "SELECT count(*) FROM anchor_ratings r JOIN anchor_trials t ON t.id = r.trial_id "
                "GROUP BY t.pair_id"))]
    finally:
        engine.dispose()
    return rows, per_pair


def app_image_bytes(url: str) -> int:
    """Byte length of the seeded pair set's (padded) images, so the anchor serves the same size."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text("SELECT max(image_byte_len) FROM pair_sets")))
    finally:
        engine.dispose()


def app_rows(url: str, slug: str) -> tuple[list[tuple[str, str, int]], list[int], int]:
    """The app's stored ratings (request_id, trial, choice), main ratings per pair, the target.

    With several questions (issue 24) the primary criterion's rows; a trial whose answer lacks a
    criterion's row (or has one twice) shows up as a row with choice -1 (counted as lost)."""
    from sqlalchemy import func, select

    from app.store.db import session_scope
    from app.store.models import Rating, Study, Trial

    with session_scope(url) as session:
        study = session.scalar(select(Study).where(Study.slug == slug))
        rows = session.execute(
            select(Rating.request_id, Trial.public_id, Rating.choice)
            .join(Trial, Rating.trial_id == Trial.id).where(Trial.study_id == study.id, Rating.is_primary)
        ).all()
        n_criteria = len(study.questions or [None])
        incomplete = session.execute(
            select(Rating.request_id, Trial.public_id).join(Trial, Rating.trial_id == Trial.id)
            .where(Trial.study_id == study.id).group_by(Rating.request_id, Trial.public_id)
            .having(func.count(Rating.id) != n_criteria)
        ).all()
        rows = [*rows, *((rid, trial, -1) for rid, trial in incomplete)]
        per_pair = session.execute(
            select(func.count(Rating.id)).join(Trial, Rating.trial_id == Trial.id)
            .where(Trial.study_id == study.id, Trial.kind == "main", Rating.is_primary).group_by(Trial.pair_id)
        ).scalars().all()
        return [tuple(r) for r in rows], list(per_pair), study.ratings_per_pair


def check_ratings(rows: list[tuple[str, str, int]], per_pair: list[int], target: int, stats) -> dict:
    """Compare what the server acknowledged with what it stored: lost, duplicate, over target."""
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
        "over_target": sum(max(0, n - target) for n in per_pair),
        "max_main_ratings_per_pair": max(per_pair, default=0),
        "target": target,
    }


def pct(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return f"p50 {p50:7.1f}  p95 {p95:7.1f}  p99 {p99:7.1f}  (n={len(values)})"


def per_rating(cpu: dict, ratings: int) -> float | None:
    """Server + PostgreSQL CPU milliseconds per rating."""
    if cpu["server"] is None or cpu["postgres"] is None:
        return None
    return 1000 * (cpu["server"] + cpu["postgres"]) / max(1, ratings)
