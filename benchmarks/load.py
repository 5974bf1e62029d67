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
    python3 benchmarks/load.py --compare-anchor --participants 100 --duration 20 --warmup 10 --rounds 4
                                                     # the same, both servers measured in alternation
    python3 benchmarks/load.py --participants 300 --burst 2 --think-ms 5000       # 300 sign-ups in 2 s
    python3 benchmarks/load.py --questions 2 --participants 50 --duration 20      # two criteria per trial
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop
from loadclient import Stats, run_load
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

# --------------------------------------------------------------------------- one measured run

def _cpu_snapshot(server_pid: int, pg_pid: int | None):
    return tree_cpu_s(server_pid), tree_cpu_s(pg_pid), time.process_time()


def _cpu_delta(a, b) -> dict:
    return {k: (y - x if x is not None and y is not None else None)
            for k, x, y in zip(("server", "postgres", "client"), a, b)}


def _cpu_sum(a: dict, b: dict) -> dict:
    return {k: (a[k] + b[k] if a[k] is not None and b[k] is not None else None) for k in a}


def measure(name: str, server, pg_pid: int | None, base_url: str, slug: str, args: argparse.Namespace,
            rows_of) -> dict:
    """Run the client against `server` and return figures plus the database check.

    `rows_of()` reads back (stored rows, main ratings per pair, target) after the run."""
    load_before = os.getloadavg()[0]
    warm: dict = {}
    cpu0 = _cpu_snapshot(server.pid, pg_pid)
    stats, elapsed, t0 = uvloop.run(run_load(
        base_url, slug, args,
        (lambda st: warm.update(cpu=_cpu_snapshot(server.pid, pg_pid), acked=len(st.acked))) if args.warmup else None))
    cpu1 = _cpu_snapshot(server.pid, pg_pid)
    cpu = _cpu_delta(cpu0, cpu1)
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
        "server_pg_ms_per_rating_warm": (per_rating(_cpu_delta(warm["cpu"], cpu1),
                                                    check["acknowledged"] - warm["acked"]) if warm else None),
        # The client's share of the whole machine's CPU during the run.
        "client_cpu_share": cpu["client"] / (elapsed * (os.cpu_count() or 1)),
    }


def measure_in_rounds(servers: dict, pg_pid: int | None, bases: dict, slug: str, args: argparse.Namespace,
                      rows_of: dict) -> tuple[dict, list[dict]]:
    """Both servers up at once, measured in alternating windows of `args.duration` s: anchor, app,
    app, anchor, anchor, ... (ABBA), so that a drift of the machine's speed during the run, which on a
    shared VM is larger than the difference being measured, hits both alike. Each server first
    gets one unmeasured warm-up window of `args.warmup` s. Every window's answers are checked
    against the database at the end. Returns the pooled figures per server (as `measure`) and the
    CPU per rating of each round."""
    stats = {name: Stats() for name in servers}
    load_before = os.getloadavg()[0]
    window = lambda seconds: argparse.Namespace(**{**vars(args), "duration": seconds, "warmup": 0})  # noqa: E731
    if args.warmup:
        for name in servers:
            uvloop.run(run_load(bases[name], slug, window(args.warmup), stats=stats[name]))
    total = {name: {"cpu": dict.fromkeys(("server", "postgres", "client"), 0.0), "acked": 0, "elapsed": 0.0}
             for name in servers}
    rounds = []
    for r in range(args.rounds):
        row = {}
        for name in (("anchor", "app") if r % 2 == 0 else ("app", "anchor")):
            acked0, cpu0 = len(stats[name].acked), _cpu_snapshot(servers[name].pid, pg_pid)
            _, elapsed, _ = uvloop.run(run_load(bases[name], slug, window(args.duration), stats=stats[name]))
            cpu, acked = _cpu_delta(cpu0, _cpu_snapshot(servers[name].pid, pg_pid)), len(stats[name].acked) - acked0
            row[name] = per_rating(cpu, acked)
            t = total[name]
            t["acked"] += acked
            t["elapsed"] += elapsed
            t["cpu"] = _cpu_sum(t["cpu"], cpu)
        rounds.append(row)
        if None in row.values():  # PostgreSQL's CPU is only known for the throwaway cluster
            print(f"round {r + 1} done", flush=True)
            continue
        print(f"round {r + 1}: anchor {row['anchor']:.1f} ms, app {row['app']:.1f} ms of server+PostgreSQL CPU "
              f"per rating; ratio {row['anchor'] / row['app']:.2f}", flush=True)
    results = {}
    for name in servers:
        t = total[name]
        check = check_ratings(*rows_of[name](), stats[name])
        results[name] = {
            "name": name, "stats": stats[name], "elapsed_s": t["elapsed"], "cpu_s": t["cpu"], "check": check,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
            "ratings_per_s": t["acked"] / t["elapsed"], "ratings_per_s_second_half": None,
            "server_pg_ms_per_rating": per_rating(t["cpu"], t["acked"]), "server_pg_ms_per_rating_warm": None,
            "client_cpu_share": t["cpu"]["client"] / (t["elapsed"] * (os.cpu_count() or 1)),
            "measured_ratings": t["acked"],
        }
    return results, rounds


def print_run(res: dict, args: argparse.Namespace) -> None:
    stats, check, cpu = res["stats"], res["check"], res["cpu_s"]
    n = max(1, res.get("measured_ratings", check["acknowledged"]))
    rounds = f"{args.rounds} windows of " if args.rounds > 1 else ""
    print(f"\n== {res['name']}: {args.participants} participants, {args.workers} workers, "
          f"{res['elapsed_s']:.1f} s measured (load {rounds}{args.duration:g} s + in-flight requests)")
    # Other work on the machine skews every figure: say how busy it was.
    print(f"machine             {os.cpu_count()} CPUs, 1-min load average {res['loadavg_before']:.1f} before, "
          f"{res['loadavg_after']:.1f} after the run")
    print(f"ratings/second      {res['ratings_per_s']:8.1f}   ({check['acknowledged']} acknowledged, "
          f"{check['stored']} stored, over the whole run)")
    if res["ratings_per_s_second_half"] is not None:
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
    for what in ("next", "submit") if args.warmup and args.rounds == 1 else ():
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
    ap.add_argument("--questions", type=int, default=1, choices=(1, 2, 3),
                    help="questions (criteria) per trial; 2 or 3: one answer request carries them all (issue 24)")
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
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --compare-anchor: run both servers at once and measure them in this many "
                         "alternating rounds (anchor, app, app, anchor, ...; --duration s each, after one "
                         "--warmup window each), pooling CPU per rating; steadier than one window each")
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
        rounds = []
        if args.compare_anchor and args.rounds > 1:
            args.image_bytes = app_image_bytes(url)
            ports = {"anchor": free_port(), "app": free_port()}
            servers.append(start_anchor(url, ports["anchor"], args, workdir / "anchor.log"))
            servers.append(start_server(url, ports["app"], args.workers, workdir / "server.log"))
            pooled, rounds = measure_in_rounds(
                dict(zip(("anchor", "app"), servers)), pg_pid,
                {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, slug, args,
                {"anchor": lambda: (*anchor_rows(url), args.ratings_per_pair), "app": lambda: app_rows(url, slug)})
            while servers:
                stop(servers.pop())
            results.extend((pooled["anchor"], pooled["app"]))
            for res in results:
                print_run(res, args)
        else:
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
        if rounds and None not in rounds[0].values():
            ratios = [r["anchor"] / r["app"] for r in rounds]
            out["ratio_anchor_over_app_per_round"] = ratios
            print("ratio anchor/app per round: " + ", ".join(f"{x:.2f}" for x in ratios)
                  + f" (median {statistics.median(ratios):.2f})")
        for key, what in (("server_pg_ms_per_rating", f"{len(rounds)} rounds pooled" if rounds else "whole run"),
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
