"""Smoke test of benchmarks/load.py: a few participants for a few seconds on PostgreSQL, and its
lost/duplicate check agrees with the database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
@pytest.mark.slow
def test_load_script_runs_and_finds_nothing_lost(postgres_url, tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--participants", "6", "--workers", "1",
         "--duration", "4", "--pairs", "12", "--ratings-per-pair", "3", "--pairs-per-participant", "4",
         "--replay-share", "0.5", "--database-url", postgres_url, "--json-out", str(out)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["acknowledged"] > 0 and result["stored"] >= result["acknowledged"]
    assert (result["lost"], result["duplicate"], result["over_target"]) == (0, 0, 0)
    assert result["max_main_ratings_per_pair"] <= 3
    assert "p95" in proc.stdout and "lost ratings        0" in proc.stdout


@pytest.mark.postgres
@pytest.mark.slow
def test_compare_in_rounds_checks_both_servers_and_reports_each_round(tmp_path):
    """--compare-anchor --rounds: both servers measured in alternating windows; every window's
    answers are checked against the database, for the reference app (the copy shipped in
    benchmarks/) and for the app."""
    out = tmp_path / "rounds.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--compare-anchor", "--rounds", "2",
         "--anchor", str(ROOT / "benchmarks" / "anchor_app.py"), "--participants", "4", "--workers", "1",
         "--duration", "3", "--warmup", "1", "--pairs", "40", "--ratings-per-pair", "20",
         "--pairs-per-participant", "4", "--replay-share", "0.5", "--json-out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # on its own throwaway PostgreSQL cluster, whose CPU it counts
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert len(result["ratio_anchor_over_app_per_round"]) == 2
    assert result["ratio_anchor_over_app"] > 0
    for name in ("anchor", "app"):
        r = result[name]
        assert r["acknowledged"] > r["measured_ratings"] > 0  # the warm-up's answers are checked too
        assert (r["lost"], r["duplicate"], r["over_target"]) == (0, 0, 0)
    assert "round 2: anchor" in proc.stdout and "2 rounds pooled" in proc.stdout


@pytest.mark.parametrize("script", ["load.py", "faults.py", "bench_statistics.py", "bench_diversity.py",
                                    "calibration.py", "monitoring.py", "bench_sfg.py", "wild_bootstrap_probe.py", "shown_test_power.py",
                                    "agreement_bots.py"])
def test_benchmark_scripts_start(script):
    """Every benchmark script imports and parses its options (a moved helper broke faults.py once)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stdout + proc.stderr
