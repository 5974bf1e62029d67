"""The simulated participants of benchmarks/load.py: asyncio + aiohttp on uvloop (a cheap client,
as it shares the machine with the servers under test), each going through the participant flow of
spec/api.md and recording latencies, statuses and every acknowledged answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import aiohttp

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


async def submit(client, stats: Stats, trial: str, token: str, choice: int, request_id: str,
                 answers: dict[str, int] | None = None) -> Reply | None:
    """POST an answer; retry up to 3 times with the same request_id on a network error or 5xx.
    `answers`: {criterion: 1..5} for a study with several questions (then `choice` is the primary's)."""
    body = {"request_id": request_id, "response_ms": random.randint(800, 4000)}
    body.update({"answers": answers} if answers else {"choice": choice})
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
            # Several questions (issue 24): one answer per question, the first (the primary) is `choice`.
            keys = [q["key"] for q in data.get("questions") or []]
            answers = {k: (choice if i == 0 else rng.randint(1, 5)) for i, k in enumerate(keys)} if len(keys) > 1 else None
            r = await submit(client, stats, data["trial"], token, choice, request_id, answers)
            if r is None or r.status_code != 200:
                continue
            stats.acked[request_id] = (data["trial"], choice)
            stats.ack_times.append(time.monotonic())
            stats.acked_trials[data["trial"]] += 1
            if rng.random() < args.replay_share:  # a double click: same request_id again
                r2 = await submit(client, stats, data["trial"], token, choice, request_id, answers)
                stats.replays += 1
                if r2 is not None and r2.status_code != 200:
                    stats.errors[f"replay answered {r2.status_code}"] += 1


async def run_load(base_url: str, slug: str, args: argparse.Namespace, on_warm=None,
                   stats: Stats | None = None) -> tuple[Stats, float, float]:
    """Run the participants for `args.duration` s; `on_warm(stats)` is called once after `args.warmup` s.
    Figures go to a new Stats, or add to `stats` (several windows against one server)."""
    stats = Stats() if stats is None else stats
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
