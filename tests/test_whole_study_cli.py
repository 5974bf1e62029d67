"""README's "A whole study, end to end", run from the command line as a researcher would.

Every step is a real `python3 -m app.cli ...` subprocess (tiny random-weight SD and open_clip
models, six prompts, a few pairs): encode, diversity, select, generate, strata, generate the
human set reusing the scored pairs, import, study create, serve with two participants rating over
the JSON API, report, metrics table. Checks that the images shown are the images the strata were
chosen from: the stratum's CLIP score is recomputed from the imported (blinded) images.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.tiny_metric_models import TINY_CLIP_CONFIG, save_tiny_clip

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red bus on a street", "two cats on a sofa", "a bowl of soup", "a surfer on a wave",
           "a clock on a wall", "a kite in the sky"]


def _sfgeval(cwd: Path, env: dict, *args) -> subprocess.CompletedProcess:
    (res,) = _together(cwd, env, args)
    return res


def _together(cwd: Path, env: dict, *commands) -> list[subprocess.CompletedProcess]:
    """Run independent `sfgeval` commands at the same time (CI has two cores); all must succeed."""
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", *map(str, c)], cwd=cwd, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    done = []
    for c, p in zip(commands, procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"sfgeval {' '.join(map(str, c))}\n{out}\n{err}"
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _rate(base: str, slug: str, n_participants: int) -> int:
    answered = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for p in range(n_participants):
            token = client.post(f"/api/studies/{slug}/participants").json()["participant"]
            while True:
                t = client.get(f"/api/participants/{token}/next").json()
                if t.get("done"):
                    break
                r = client.post(f"/api/trials/{t['trial']}/answer", headers={"X-Participant": token},
                                json={"choice": 4 if p == 0 else 3, "request_id": str(uuid.uuid4())})
                assert r.status_code == 200, r.text
                answered += 1
    return answered


def test_the_readme_study_from_the_command_line(tmp_path, tiny_cache):
    import open_clip

    work = tmp_path
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SFGEVAL_CACHE": str(tiny_cache),
           "SFGEVAL_SECRET_KEY": "e2e-secret-key-for-the-test-only-000"}
    env.pop("SFGEVAL_BASE_URL", None)
    # A custom open_clip architecture from a config file, its name unknown to open_clip.
    config = work / "e2e-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    if "e2e-tiny-clip" not in open_clip.list_models():
        open_clip.add_model_config(config)
    ckpt = save_tiny_clip(work / "clip.pt", seed=3, name="e2e-tiny-clip")
    clip = ["--clip-config", config, "--clip-weights", ckpt, "--device", "cpu"]
    with open(work / "prompts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "prompt", "evaluation_seed"])
        w.writerows([f"{i:06d}", p, 100 + 7 * i] for i, p in enumerate(PROMPTS))

    fast = ["--tiny", "--steps", 2]
    _sfgeval(work, env, "prompts", "select", "--prompts", "prompts.csv", "--size", 5, "--seed", 0)
    _together(work, env, ("prompts", "encode", "--prompts", "prompts.csv", *clip),
              ("generate", "--prompts", "prompt-work/subset.csv", "--out", "pairs-5k", *fast))
    _together(work, env, ("prompts", "diversity", "--sizes", "2,4,6", "--draws", 2),
              ("prompts", "strata", "--manifest", "pairs-5k", "--k", 1, *clip))
    res, _ = _together(work, env, ("generate", "--prompts", "prompt-work/strata.csv", "--out", "pairs-human",
                                   "--seeds-per-prompt", 2, "--reuse", "pairs-5k", *fast),
                       ("metrics", "table", "--manifest", "pairs-5k", *clip, "--out", "results"))
    assert "6 pairs written (3 copied from pairs-5k)" in res.stdout
    assert len(_read_csv(work / "prompt-work" / "diversity.csv")) == 6

    # The strata file carries the seed each prompt was scored on; the human set starts from it.
    from sampler.manifest import iter_records

    strata = _read_csv(work / "prompt-work" / "strata.csv")
    source_seed = {f"{i:06d}": 100 + 7 * i for i in range(len(PROMPTS))}
    assert len(strata) == 3 and all(int(r["seed"]) == source_seed[r["prompt_id"]] for r in strata)
    scored = {r.pair_key: r for _, r in iter_records(work / "pairs-5k")}
    human = {r.pair_key: r for _, r in iter_records(work / "pairs-human")}
    for r in strata:
        s = int(r["seed"])
        first, second = human[f"{r['prompt_id']}:{s}"], human[f"{r['prompt_id']}:{s + 1}"]
        assert first.stratum == second.stratum == r["stratum"]
        assert first.baseline.sha256 == scored[first.pair_key].baseline.sha256 and first.model_dump().get("reused_from")
        assert "reused_from" not in second.model_dump()

    db = f"sqlite:///{work / 'study.sqlite3'}"
    pair_set = _sfgeval(work, env, "import", "pairs-human", "--database-url", db).stdout.strip()
    for slug in ("draft", "e2e"):
        (work / f"{slug}.yaml").write_text(yaml.safe_dump({
            "title": "e2e", "slug": slug, "pair_sets": [int(pair_set)], "pairs_per_participant": 3,
            "ratings_per_pair": 2, "gold_rate": 0, "repeats": 0, "min_response_ms": 0, "state": "open"}))
    # The printed link comes from SFGEVAL_BASE_URL; without it the command says what it assumed.
    res = _sfgeval(work, env, "study", "create", "draft.yaml", "--database-url", db)
    assert res.stdout.splitlines() == ["draft", "http://127.0.0.1:8000/s/draft"]
    assert "SFGEVAL_BASE_URL is not set" in res.stderr
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    res = _sfgeval(work, {**env, "SFGEVAL_BASE_URL": base}, "study", "create", "e2e.yaml", "--database-url", db)
    assert res.stdout.splitlines() == ["e2e", f"{base}/s/e2e"] and "not set" not in res.stderr

    # The stratum's CLIP score, recomputed from the images participants are shown.
    from sqlalchemy import create_engine, text

    from sampler.clip import clip_scores, load_open_clip

    engine = create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.pair_key, i.data FROM pairs p JOIN images i ON i.id = p.baseline_image_id")).all()
    engine.dispose()
    shown = {key: data for key, data in rows}
    model = load_open_clip("e2e-tiny-clip", ckpt, "cpu")
    for r in strata:
        path = work / f"shown-{r['prompt_id']}.png"
        path.write_bytes(shown[f"{r['prompt_id']}:{r['seed']}"])
        (score,) = clip_scores(model, [path], [r["prompt"]], progress=False)
        assert score == pytest.approx(float(r["clip_score"]), abs=1e-4)

    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--database-url", db],
                              cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert _rate(base, "e2e", 2) == 6
    finally:
        server.terminate()
        server.wait(timeout=30)

    files = _sfgeval(work, env, "report", "e2e", "--out", "report", "--draws", 20, "--database-url", db).stdout.split()
    names = {Path(f).name for f in files}
    assert {"report.html", "statistics.json", "ratings.csv", "datasheet.json", "methods.md", "methods.tex",
            "references.bib"} <= names, names
    assert len(_read_csv(work / "report" / "ratings.csv")) == 6
    table = _read_csv(work / "results" / "metrics.csv")
    assert [(r["arm"], r["role"], r["images"]) for r in table] == [("cfg", "baseline", "5"), ("sfg", "treatment", "5")]
    assert all(np.isfinite(float(r["clip_score"])) for r in table)
