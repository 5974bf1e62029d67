"""Raw ratings export: exactly the api.md columns first, CSV and JSON with the same names."""

from __future__ import annotations

import csv
import io
import json
import uuid

from sqlalchemy import select

from app.reporting.export import COLUMNS, EXPORT_COLUMNS, rating_rows, rows_to_csv, rows_to_json
from app.store.models import Rating, Trial

API_MD_COLUMNS = [
    "study", "study_version", "participant", "external_ids", "pair", "pair_set", "prompt_id",
    "prompt", "stratum", "seed", "treatment_side", "choice", "score", "is_gold", "is_repeat",
    "presented_at", "answered_at", "response_ms",
]


def _complete(client, slug, external_ids, choice):
    token = client.post(f"/api/studies/{slug}/participants", json={"external_ids": external_ids}).json()["participant"]
    while True:
        t = client.get(f"/api/participants/{token}/next").json()
        if t.get("done"):
            return token
        r = client.post(f"/api/trials/{t['trial']}/answer", json={"choice": choice, "request_id": str(uuid.uuid4())},
                        headers={"X-Participant": token})
        assert r.status_code == 200


def test_rows_have_the_api_columns_and_true_values(client, session, study_factory):
    # Five pairs: the gold check takes a pair never shown to the participant (issue 22).
    study = study_factory(n_pairs=5, pairs_per_participant=3, gold_rate=0.34, repeats=1, practice_trials=1)
    _complete(client, study.slug, {"PROLIFIC_PID": "abc"}, 5)
    session.expire_all()
    rows = rating_rows(session, study)
    assert list(EXPORT_COLUMNS) == API_MD_COLUMNS
    assert all(list(r)[: len(API_MD_COLUMNS)] == API_MD_COLUMNS for r in rows)
    assert len(rows) == 5  # 3 main + 1 gold + 1 repeat; practice left out by default
    assert sum(r["is_gold"] for r in rows) == 1 and sum(r["is_repeat"] for r in rows) == 1
    assert len(rating_rows(session, study, include_practice=True)) == 6
    trials = {t.public_id: t for t in session.scalars(select(Trial))}
    for row in rows:
        trial = trials[row["trial"]]
        rating = session.scalar(select(Rating).where(Rating.trial_id == trial.id))
        assert row["choice"] == 5
        assert row["score"] == (2 if row["treatment_side"] == "right" else -2) == rating.score
        assert row["external_ids"] == {"PROLIFIC_PID": "abc"}
        assert row["study"] == study.slug and row["study_version"] == study.version
        assert row["pair"] == trial.pair_id and row["prompt"] == trial.pair.prompt
        assert row["comparison"] == "pairs0: sfg vs cfg"
        assert row["response_ms"] >= 0 and row["answered_at"] >= row["presented_at"]
    repeat = next(r for r in rows if r["is_repeat"])
    original = next(r for r in rows if r["trial"] == repeat["repeat_of_trial"])
    assert original["pair"] == repeat["pair"] and original["treatment_side"] != repeat["treatment_side"]


def test_csv_and_json_writers_use_the_same_names(client, session, study_factory):
    study = study_factory(n_pairs=2, pairs_per_participant=2)
    _complete(client, study.slug, {"workerId": "W1", "assignmentId": "A,1"}, 2)
    session.expire_all()
    rows = rating_rows(session, study)
    parsed = list(csv.DictReader(io.StringIO(rows_to_csv(rows))))
    assert list(parsed[0]) == list(COLUMNS)
    assert json.loads(parsed[0]["external_ids"]) == {"workerId": "W1", "assignmentId": "A,1"}
    assert parsed[0]["is_gold"] == "false" and int(parsed[0]["choice"]) == 2
    as_json = json.loads(rows_to_json(rows))
    assert [list(r) for r in as_json] == [list(COLUMNS)] * 2
    assert as_json[0]["score"] == rows[0]["score"]
    assert rows_to_csv([]).strip() == ",".join(COLUMNS)
