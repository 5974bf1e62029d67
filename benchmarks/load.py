"""Load test on loopback: N concurrent simulated participants against the app on PostgreSQL.

Starts its own throwaway PostgreSQL cluster (or uses --database-url), migrates it, seeds a study
with a synthetic pair set, serves the app with `uvicorn --workers W`, and runs N participants
(asyncio + aiohttp on uvloop: a cheap client, as it shares the machine) through the whole participant flow of spec/api.md for a fixed time:

    POST /api/studies/{slug}/participants → loop { GET /next → GET both images → POST answer }

A participant who finishes is replaced by a new one, so N stay active. A share of answers is
sent twice with the same request_id (a double click), and a failed submit is retried with the
same request_id (a network retry): both must store exactly one rating.

At the end every answer the server acknowledged (HTTP 200) is compared with the database:
- lost: acknowledged but not stored (or stored with another choice / trial),
- duplicate: more than one stored rating for one trial, or one request stored twice,
- over target: main ratings of a pair beyond the study's ratings_per_pair.
All three must be 0. It prints ratings per second, p50/p95/p99 latency (ms) of "next" and
"submit" (and of image fetches), server + PostgreSQL CPU per rating and the client's CPU share, and
exits non-zero when anything is lost, duplicated or over target.

    python3 benchmarks/load.py                       # 200 participants, 2 workers, 30 s
    python3 benchmarks/load.py --participants 50 --duration 10 --database-url postgresql+psycopg://...
    python3 benchmarks/load.py --compare-anchor --participants 100 --warmup 10   # ratio to the plain app
    python3 benchmarks/load.py --participants 300 --burst 2 --think-ms 5000       # 300 sign-ups in 2 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import uvloop
from loadsetup import (
    DEFAULT_ANCHOR,
    ThrowawayPostgres,
    anchor_rows,
    app_image_bytes,
    app_rows,
    check_ratings,
    free_port,
    pct,
    per_rating,
    seed_study,
    start_anchor,
    start_server,
    stop,
    tree_cpu_s,
)

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
    first_trial_ms: list[float] = field(default_factory=list)  # sign-up sent -> first trial received
    warm_from: float | None = None  # time.monotonic() after which latencies also go to `warm`
    warm: defaultdict = field(default_factory=lambda: defaultdict(list))


@dataclass
class Reply:
    status_code: int
    body: bytes

    def json(self):
        return json.loads(self.body)


ClientError = (aiohttp.ClientError, asyncio.TimeoutError)


async def request(client: aiohttp.ClientSession, method: str, url: str, **kw) -> Reply:
    async with client.request(method, url, **kw) as r:
        return Reply(r.status, await r.read())


async def timed(client: aiohttp.ClientSession, stats: Stats, what: str, method: str, url: str, **kw) -> Reply:
    """The request, its latency recorded under `what` (and under stats.warm[what] after the warm-up)."""
    t0 = time.perf_counter()
    r = await request(client, method, url, **kw)
    ms = (time.perf_counter() - t0) * 1000
    getattr(stats, f"{what}_ms").append(ms)
    if stats.warm_from is not None and time.monotonic() >= stats.warm_from:
        stats.warm[what].append(ms)
    return r


async def submit(client, stats: Stats, trial: str, token: str, choice: int, request_id: str) -> Reply | None:
    """POST an answer; retry up to 3 times with the same request_id on a network error or 5xx."""
    body = {"choice": choice, "request_id": request_id, "response_ms": random.randint(800, 4000)}
    for attempt in range(4):
        try:
            r = await timed(client, stats, "submit", "POST", f"/api/trials/{trial}/answer",
                            json=body, headers={"X-Participant": token})
        except ClientError as e:
            stats.errors[f"submit {type(e).__name__}"] += 1
            stats.retries += 1
            continue
        stats.statuses[f"submit {r.status_code}"] += 1
        if r.status_code >= 500:
            stats.retries += 1
            continue
        return r
    return None


async def participant_loop(client: aiohttp.ClientSession, slug: str, deadline: float, stats: Stats,
                           args: argparse.Namespace, rng: random.Random, start_delay: float = 0.0) -> None:
    await asyncio.sleep(start_delay)
    first = True  # the time to a first trial is recorded for each task's first sign-up
    while time.monotonic() < deadline:
        signed_up = time.perf_counter()
        ext = {"PROLIFIC_PID": uuid.uuid4().hex[:24], "STUDY_ID": "load", "SESSION_ID": uuid.uuid4().hex[:12]}
        try:
            r = await request(client, "POST", f"/api/studies/{slug}/participants", json={"external_ids": ext})
        except ClientError as e:
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
                r = await timed(client, stats, "next", "GET", f"/api/participants/{token}/next")
            except ClientError as e:
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
            if first and not data.get("done"):
                stats.first_trial_ms.append((time.perf_counter() - signed_up) * 1000)
                first = False
            if data.get("done"):
                stats.finished += 1
                break
            if args.images:
                for side in ("left", "right"):
                    try:
                        img = await timed(client, stats, "image", "GET", data[side])
                        stats.statuses[f"image {img.status_code}"] += 1
                    except ClientError as e:
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


async def run_load(base_url: str, slug: str, args: argparse.Namespace, on_warm=None) -> tuple[Stats, float, float]:
    """Run the participants for `args.duration` s; `on_warm(stats)` is called once after `args.warmup` s."""
    stats = Stats()
    if args.warmup:
        stats.warm_from = time.monotonic() + args.warmup
    # Idle connections are dropped after 4 s, before uvicorn's 5 s keep-alive timeout closes them on
    # its side (a browser does the same; reusing a connection the server just closed fails).
    connector = aiohttp.TCPConnector(limit=args.participants + 10, keepalive_timeout=4)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:
        t0 = time.monotonic()
        deadline = t0 + args.duration
        # A burst: the participants' sign-ups spread evenly over the first `burst_s` seconds.
        delays = [args.burst_s * i / args.participants for i in range(args.participants)]
        tasks = [
            asyncio.create_task(participant_loop(client, slug, deadline, stats, args, random.Random(args.seed + i),
                                                 delays[i]))
            for i in range(args.participants)
        ]

        async def report() -> None:
            while not all(t.done() for t in tasks):
                await asyncio.sleep(10)
                el = time.monotonic() - t0
                print(f"  {el:5.1f} s: {len(stats.acked)} ratings acknowledged, {stats.participants} participants",
                      flush=True)

        async def warm() -> None:
            await asyncio.sleep(args.warmup)
            on_warm(stats)

        reporter = asyncio.create_task(report())
        warmer = asyncio.create_task(warm()) if on_warm is not None else None
        # No request is cancelled at the deadline: each participant finishes the one in flight, so
        # every answer is either acknowledged or known to have failed.
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        reporter.cancel()
        if warmer is not None:
            await warmer
    return stats, elapsed, t0


# --------------------------------------------------------------------------- checking

# --------------------------------------------------------------------------- one measured run

def measure(name: str, server, pg_pid: int | None, base_url: str, slug: str, args: argparse.Namespace,
            rows_of) -> dict:
    """Run the client against `server` and return figures plus the database check.

    `rows_of()` reads back (stored rows, main ratings per pair, target) after the run."""
    load_before = os.getloadavg()[0]

    def snapshot():
        return tree_cpu_s(server.pid), tree_cpu_s(pg_pid), time.process_time()

    def delta(a, b):
        return {k: (y - x if x is not None and y is not None else None)
                for k, x, y in zip(("server", "postgres", "client"), a, b)}

    warm: dict = {}
    cpu0 = snapshot()
    stats, elapsed, t0 = uvloop.run(run_load(
        base_url, slug, args, (lambda st: warm.update(cpu=snapshot(), acked=len(st.acked))) if args.warmup else None))
    cpu1 = snapshot()
    cpu = delta(cpu0, cpu1)
    rows, per_pair, target = rows_of()
    check = check_ratings(rows, per_pair, target, stats)
    half = t0 + args.duration / 2
    n = max(1, check["acknowledged"])
    return {
        "name": name, "stats": stats, "elapsed_s": elapsed, "cpu_s": cpu, "check": check,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
        "ratings_per_s": check["acknowledged"] / elapsed,
        # The steady state: the second half of the load window, excluding the drain of in-flight requests.
        "ratings_per_s_second_half": sum(1 for t in stats.ack_times if half <= t < t0 + args.duration)
        / (args.duration / 2),
        "server_pg_ms_per_rating": per_rating(cpu, n),
        # After the warm-up only (processes started, statements compiled and prepared, caches filled).
        "server_pg_ms_per_rating_warm": (per_rating(delta(warm["cpu"], cpu1), check["acknowledged"] - warm["acked"])
                                         if warm else None),
        # The client's share of the whole machine's CPU during the run.
        "client_cpu_share": cpu["client"] / (elapsed * (os.cpu_count() or 1)),
    }


def print_run(res: dict, args: argparse.Namespace) -> None:
    stats, check, cpu = res["stats"], res["check"], res["cpu_s"]
    n = max(1, check["acknowledged"])
    print(f"\n== {res['name']}: {args.participants} participants, {args.workers} workers, "
          f"{res['elapsed_s']:.1f} s (load {args.duration:g} s + in-flight requests)")
    # Other work on the machine skews every figure: say how busy it was.
    print(f"machine             {os.cpu_count()} CPUs, 1-min load average {res['loadavg_before']:.1f} before, "
          f"{res['loadavg_after']:.1f} after the run")
    print(f"ratings/second      {res['ratings_per_s']:8.1f}   ({check['acknowledged']} acknowledged, "
          f"{check['stored']} stored, over the whole run)")
    print(f"ratings/second      {res['ratings_per_s_second_half']:8.1f}   (second half of the load window only)")
    print("CPU during the run  " + ", ".join(
        f"{k} {v:.1f} s ({1000 * v / n:.1f} ms per rating)" for k, v in cpu.items() if v is not None))
    if res["server_pg_ms_per_rating"] is not None:
        print(f"server+PostgreSQL   {res['server_pg_ms_per_rating']:.1f} ms CPU per rating" + (
            f"; {res['server_pg_ms_per_rating_warm']:.1f} ms after the first {args.warmup:g} s"
            if res["server_pg_ms_per_rating_warm"] is not None else ""))
    print(f"client CPU share    {100 * res['client_cpu_share']:.0f}% of the machine")
    print(f"next   latency ms   {pct(stats.next_ms)}")
    print(f"submit latency ms   {pct(stats.submit_ms)}")
    if args.images:
        print(f"image  latency ms   {pct(stats.image_ms)}")
    for what in ("next", "submit") if args.warmup else ():
        print(f"{what:6} after {args.warmup:g} s {pct(stats.warm[what])}")
    if args.burst_s:
        print(f"first trial ms      {pct(stats.first_trial_ms)}  (sign-up sent -> first trial received, "
              f"{args.participants} sign-ups over {args.burst_s:g} s)")
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


def summary(res: dict, args: argparse.Namespace) -> dict:
    stats = res["stats"]
    out = {k: v for k, v in res.items() if k != "stats" and k != "check"}
    out.update(res["check"], participants=args.participants, workers=args.workers, cpus=os.cpu_count(),
               statuses=dict(stats.statuses), errors=dict(stats.errors))
    for k, v in (("next", stats.next_ms), ("submit", stats.submit_ms), ("image", stats.image_ms),
                 ("first_trial", stats.first_trial_ms), ("next_warm", stats.warm["next"]),
                 ("submit_warm", stats.warm["submit"])):
        for q in (50, 95, 99):
            out[f"{k}_ms_p{q}"] = float(np.percentile(v, q)) if v else None
    return out


def failed(res: dict) -> bool:
    c = res["check"]
    return bool(c["lost"] or c["duplicate"] or c["over_target"])


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
    ap.add_argument("--practice", type=int, default=1, help="practice trials per participant")
    ap.add_argument("--replay-share", type=float, default=0.05, help="share of answers sent twice")
    ap.add_argument("--think-ms", type=float, default=0.0, help="mean pause before answering")
    ap.add_argument("--burst", type=float, default=0.0, dest="burst_s", metavar="SECONDS",
                    help="spread the participants' first sign-ups over this many seconds (a sign-up burst) "
                         "and report the time from sign-up to first trial")
    ap.add_argument("--warmup", type=float, default=0.0, metavar="SECONDS",
                    help="also report CPU per rating counting only after this many seconds of load")
    ap.add_argument("--no-images", dest="images", action="store_false", help="skip the two image GETs per trial")
    ap.add_argument("--compare-anchor", action="store_true",
                    help="run the same client against the reference app (--anchor) first, then the app, on the "
                         "same PostgreSQL, and print CPU per rating for both and the ratio anchor/app")
    ap.add_argument("--anchor", default=str(DEFAULT_ANCHOR), help="path of the reference app")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    args.image_bytes = None

    pg = None
    servers = []
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="sfgeval-load-"))
    try:
        url = args.database_url
        if not url:
            pg = ThrowawayPostgres()
            url = pg.start()
            print(f"throwaway PostgreSQL on 127.0.0.1:{pg.port}")
        pg_pid = pg.postmaster_pid() if pg is not None else None
        t = time.monotonic()
        slug = seed_study(url, args)
        print(f"seeded study {slug!r}: {args.pairs} pairs, target {args.ratings_per_pair} ratings/pair, "
              f"{args.practice} practice, gold rate {args.gold_rate:g}, {args.repeats} repeat(s) "
              f"({time.monotonic() - t:.1f} s)")
        print(f"{args.participants} participants for {args.duration:g} s per server, "
              f"think time {args.think_ms:g} ms, uvicorn --workers {args.workers}")
        if args.compare_anchor:
            args.image_bytes = app_image_bytes(url)
            port = free_port()
            servers.append(start_anchor(url, port, args, workdir / "anchor.log"))
            results.append(measure("anchor", servers[-1], pg_pid, f"http://127.0.0.1:{port}", slug, args,
                                   lambda: (*anchor_rows(url), args.ratings_per_pair)))
            stop(servers.pop())
            print_run(results[-1], args)
        port = free_port()
        servers.append(start_server(url, port, args.workers, workdir / "server.log"))
        results.append(measure("app", servers[-1], pg_pid, f"http://127.0.0.1:{port}", slug, args,
                               lambda: app_rows(url, slug)))
        stop(servers.pop())
        print_run(results[-1], args)
    finally:
        for proc in servers:
            stop(proc)
        if pg is not None:
            pg.stop()
    out = {r["name"]: summary(r, args) for r in results}
    if args.compare_anchor:
        print()
        for key, what in (("server_pg_ms_per_rating", "whole run"),
                          ("server_pg_ms_per_rating_warm", f"after the first {args.warmup:g} s")):
            anchor, app = (r[key] for r in results)
            if anchor and app:
                out[f"ratio_anchor_over_app{key.removeprefix('server_pg_ms_per_rating')}"] = anchor / app
                print(f"server+PostgreSQL CPU per rating ({what}): anchor {anchor:.1f} ms, app {app:.1f} ms; "
                      f"ratio anchor/app {anchor / app:.2f} (target >= 0.80)")
    if args.json_out:
        args.json_out.write_text(json.dumps(out if args.compare_anchor else out["app"], indent=2))
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(failed(r) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
