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
