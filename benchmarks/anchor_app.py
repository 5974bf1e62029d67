# The plain reference app of benchmarks/load.py --compare-anchor, copied unchanged from the
# workplace's ../shared/bench/anchor_app.py, so that the comparison also runs from a clean clone.
# load.py prefers ../shared/bench/anchor_app.py when that file exists.
"""Performance anchor: the participant JSON API of spec/api.md done the plainest way.

A minimal FastAPI + SQLAlchemy Core + PostgreSQL app that serves the same four requests a
participant makes (create, next, two images, answer) with the same guarantees that matter for
the ratio: one transaction per request, a pair never over its target (row lock, SKIP LOCKED),
no pair twice for one participant, idempotent answers by request_id, answers stored once.
It has no practice, gold, repeats, preload, exclusion rules, admin or blinding re-encode, so it
is a floor for CPU per rating, not a product. Point a load client at it and at the app in the
same run and report app / anchor.

    DATABASE_URL=postgresql+psycopg://USER@127.0.0.1:PORT/DB ANCHOR_PAIRS=300 ANCHOR_TARGET=60 \
        python -m uvicorn anchor_app:app --app-dir ../shared/bench --workers 2 --no-access-log

On start it creates its own tables (prefix anchor_) and, if empty, seeds ANCHOR_PAIRS pairs with
random ANCHOR_IMAGE_BYTES-byte images and one open study; any slug is accepted. Ratings stored:
SELECT request_id, trial_public_id, choice FROM anchor_ratings.
"""

from __future__ import annotations

import os
import secrets
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import (BigInteger, Column, ForeignKey, Integer, LargeBinary, MetaData, SmallInteger, String,
                        Table, Text, UniqueConstraint, bindparam, create_engine, func, insert, select, text,
                        update)

URL = os.environ["DATABASE_URL"]
PAIRS = int(os.environ.get("ANCHOR_PAIRS", "300"))
TARGET = int(os.environ.get("ANCHOR_TARGET", "60"))
PER_PARTICIPANT = int(os.environ.get("ANCHOR_PER_PARTICIPANT", "20"))
IMAGE_BYTES = int(os.environ.get("ANCHOR_IMAGE_BYTES", "3200"))

md = MetaData()
pairs = Table("anchor_pairs", md, Column("id", Integer, primary_key=True), Column("prompt", Text),
              Column("assigned", Integer, nullable=False, server_default="0"))
images = Table("anchor_images", md, Column("token", String(32), primary_key=True),
               Column("data", LargeBinary, nullable=False))
participants = Table("anchor_participants", md, Column("id", BigInteger, primary_key=True),
                     Column("token", String(32), unique=True, nullable=False))
trials = Table("anchor_trials", md, Column("id", BigInteger, primary_key=True),
               Column("public_id", String(32), unique=True, nullable=False),
               Column("participant_id", BigInteger, ForeignKey("anchor_participants.id"), nullable=False),
               Column("pair_id", Integer, ForeignKey("anchor_pairs.id"), nullable=False),
               Column("left_token", String(32)), Column("right_token", String(32)),
               Column("request_id", String(100)), Column("choice", SmallInteger),
               UniqueConstraint("participant_id", "pair_id"))
ratings = Table("anchor_ratings", md, Column("id", BigInteger, primary_key=True),
                Column("trial_id", BigInteger, ForeignKey("anchor_trials.id"), unique=True, nullable=False),
                Column("trial_public_id", String(32), nullable=False),
                Column("request_id", String(100), nullable=False), Column("choice", SmallInteger, nullable=False))

engine = create_engine(URL, pool_size=int(os.environ.get("POOL_SIZE", "20")), max_overflow=0)
_images: dict[str, bytes] = {}


def _seed() -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(4242)"))
        md.create_all(conn)
        if conn.scalar(select(func.count()).select_from(pairs)):
            return
        conn.execute(insert(pairs), [{"prompt": f"synthetic prompt {i}"} for i in range(PAIRS)])
        conn.execute(insert(images), [{"token": secrets.token_hex(16), "data": os.urandom(IMAGE_BYTES)}
                                      for _ in range(2 * PAIRS)])


_seed()
_TOKENS = [r.token for r in engine.connect().execute(select(images.c.token))]
app = FastAPI()

_OPEN = select(trials.c.public_id, trials.c.pair_id, trials.c.left_token, trials.c.right_token).where(
    trials.c.participant_id == bindparam("p"), trials.c.choice.is_(None)).limit(1)
_DONE = select(func.count()).select_from(trials).where(trials.c.participant_id == bindparam("p"))
_CLAIM = (select(pairs.c.id, pairs.c.prompt)
          .where(pairs.c.assigned < TARGET,
                 ~pairs.c.id.in_(select(trials.c.pair_id).where(trials.c.participant_id == bindparam("p"))))
          .order_by(pairs.c.assigned).limit(1).with_for_update(skip_locked=True))


class Answer(BaseModel):
    choice: int
    request_id: str
    response_ms: int | None = None


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.post("/api/studies/{slug}/participants", status_code=201)
def new_participant(slug: str):
    token = secrets.token_hex(16)
    with engine.begin() as conn:
        conn.execute(insert(participants).values(token=token))
    return {"participant": token}


@app.get("/api/participants/{token}/next")
def next_trial(token: str):
    with engine.begin() as conn:
        pid = conn.scalar(select(participants.c.id).where(participants.c.token == token))
        if pid is None:
            raise HTTPException(403, "unknown participant token")
        row = conn.execute(_OPEN, {"p": pid}).first()
        done = conn.scalar(_DONE, {"p": pid})
        if row is None:
            if done >= PER_PARTICIPANT:
                return {"done": True, "progress": {"done": done, "total": PER_PARTICIPANT}}
            pair = conn.execute(_CLAIM, {"p": pid}).first()
            if pair is None:
                return JSONResponse({"detail": "no work", "reason": "no_work"}, status_code=409)
            conn.execute(update(pairs).where(pairs.c.id == pair.id).values(assigned=pairs.c.assigned + 1))
            left, right = secrets.choice(_TOKENS), secrets.choice(_TOKENS)
            public_id = secrets.token_hex(16)
            conn.execute(insert(trials).values(public_id=public_id, participant_id=pid, pair_id=pair.id,
                                               left_token=left, right_token=right))
            row = (public_id, pair.id, left, right)
            done += 1
    return {"trial": row[0], "prompt": f"synthetic prompt {row[1]}", "left": f"/i/{row[2]}",
            "right": f"/i/{row[3]}", "progress": {"done": done - 1, "total": PER_PARTICIPANT}, "preload": None}


@app.get("/i/{token}")
def image(token: str):
    data = _images.get(token)
    if data is None:
        with engine.connect() as conn:
            data = conn.scalar(select(images.c.data).where(images.c.token == token))
        if data is None:
            raise HTTPException(404)
        _images[token] = data
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@app.post("/api/trials/{public_id}/answer")
def answer(public_id: str, body: Answer, x_participant: Annotated[str | None, Header()] = None):
    if not 1 <= body.choice <= 5:
        raise HTTPException(422, "choice must be 1..5")
    with engine.begin() as conn:
        row = conn.execute(
            select(trials.c.id, trials.c.request_id, trials.c.choice)
            .join(participants, participants.c.id == trials.c.participant_id)
            .where(trials.c.public_id == public_id, participants.c.token == x_participant)
            .with_for_update(of=trials)).first()
        if row is None:
            raise HTTPException(404, "unknown trial")
        if row.choice is not None:
            if row.request_id == body.request_id:
                return {"ok": True}
            raise HTTPException(409, "already answered")
        conn.execute(update(trials).where(trials.c.id == row.id)
                     .values(choice=body.choice, request_id=body.request_id))
        conn.execute(insert(ratings).values(trial_id=row.id, trial_public_id=public_id,
                                            request_id=body.request_id, choice=body.choice))
    return {"ok": True}
