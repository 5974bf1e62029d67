"""Offline analysis from export files (app/statistics/offline.py): the same statistics as from rows."""

from __future__ import annotations

import json

import pytest

from app import statistics as st
from app.reporting.export import rows_to_csv, rows_to_json
from app.statistics.simulation import SimulatedStudy, simulate_rows
from app.statistics.offline import analyze_exports, load_rules, read_exports

RULES = {"max_side_bias": 0.9, "min_response_ms": 800, "max_fast_share": 0.5}


def _rows(seed=1, **kw):
    study = SimulatedStudy(n_participants=20, n_prompts=12, trials_per_participant=8, gold_per_participant=1,
                           repeats_per_participant=1, **kw)
    return simulate_rows(study, seed=seed, always_left=1, too_fast=1)


def test_csv_and_json_exports_give_the_reports_statistics(tmp_path):
    rows = _rows()
    (tmp_path / "r.csv").write_text(rows_to_csv(rows))
    (tmp_path / "r.json").write_text(rows_to_json(rows))
    (tmp_path / "rules.yaml").write_text("exclusion_rules:\n  max_side_bias: 0.9\n  min_response_ms: 800\n"
                                         "  max_fast_share: 0.5\n")
    direct = st.compute_statistics(rows, exclusion_rules=RULES, draws=50, seed=3)
    for name in ("r.csv", "r.json"):
        out = analyze_exports([tmp_path / name], tmp_path / "rules.yaml", draws=50, seed=3)
        assert json.dumps(out["results"], sort_keys=True) == json.dumps(direct["results"], sort_keys=True)
        assert out["exclusions"]["excluded"] == direct["exclusions"]["excluded"] != []
        assert out["source"]["n_rows"] == len(rows)
    assert load_rules(tmp_path / "rules.yaml") == RULES


def test_several_exports_are_pooled_and_ids_kept_apart_across_studies(tmp_path):
    a, b = _rows(1), _rows(2, comparisons=("other",))
    for r in b:
        r["study"] = "second"
    (tmp_path / "a.csv").write_text(rows_to_csv(a))
    (tmp_path / "b.csv").write_text(rows_to_csv(b))
    pooled = read_exports([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert len(pooled) == len(a) + len(b)
    assert len({r["participant"] for r in pooled}) == 40  # same ids "p0000".. in both studies, kept apart
    out = analyze_exports([tmp_path / "a.csv", tmp_path / "b.csv"], draws=20)
    assert set(out["results"]["all"]["per_comparison"]) == {"cfg-vs-sfg", "other"}
    assert out["results"]["all"]["overall"]["n_participants"] == 40


def test_bad_files_are_refused_with_a_message(tmp_path):
    (tmp_path / "x.csv").write_text("participant,score\n1,2\n")
    with pytest.raises(st.StatisticsInputError, match="missing column"):
        analyze_exports([tmp_path / "x.csv"])
    with pytest.raises(st.StatisticsInputError, match="no such file"):
        read_exports([tmp_path / "nope.csv"])
