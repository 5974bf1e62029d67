"""The objective metrics table (`sfgeval metrics table`): per arm FID, IS, CLIP score, PickScore.

`compute_table` loads and checks everything before the long passes (a bad path fails in
seconds), computes each metric whose weights are given, and writes OUT/metrics.csv, metrics.json
and metrics.md. The metric functions themselves are in `sampler.metrics`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampler.manifest import PairRecord, validate_folder


class TableError(ValueError):
    """Input the table cannot be made from; says what."""


@dataclass(frozen=True)
class TableRequest:
    manifests: tuple[str, ...]
    out: str
    reference: str | None = None
    inception_weights: str | None = None
    clip: Any = None  # a sampler.clip_checkpoint.ClipSpec
    pickscore_dir: str | None = None
    pickscore_processor: str | None = None
    resize: str = "pil-bicubic"
    fid_features: int = 2048
    is_splits: int = 10
    tie_tolerance: float = 0.0
    reference_stats: str | None = None
    batch_size: int = 32
    device: str = "auto"


def reference_key(files, inception_weights: str, resize: str, fid_features: int) -> dict:
    """What the cached reference statistics depend on: the image listing and Inception settings."""
    from sampler.weights import file_fingerprint

    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"reference_listing": h.hexdigest(), "inception": file_fingerprint(inception_weights), "resize": resize,
            "fid_features": fid_features}


def _arms(folder: Path, records: list[PairRecord]) -> dict[str, dict]:
    arms: dict[str, dict] = {}
    for rec in records:
        for role, side in (("baseline", rec.baseline), ("treatment", rec.treatment)):
            a = arms.setdefault(side.arm, {"role": role, "paths": [], "prompts": [], "sha": []})
            if a["role"] != role:
                raise TableError(f"{folder}: arm {side.arm!r} is baseline in some pairs and treatment in others")
            a["paths"].append(folder / side.file)
            a["prompts"].append(rec.prompt)
            a["sha"].append(side.sha256)
    return arms


def _pickscore(pick, folder: Path, records: list[PairRecord], arms: dict, req: TableRequest, dev):
    """Per-arm mean PickScore and the treatment's win rate over baseline (per pair)."""
    import numpy as np

    from sampler import metrics as m

    # Keyed by (file hash, prompt): identical images of one prompt get one score, so they tie exactly.
    unique: dict[tuple[str, str], Path] = {}
    for rec in records:
        for side in (rec.baseline, rec.treatment):
            unique.setdefault((side.sha256, rec.prompt), folder / side.file)
    keys = list(unique)
    s = m.pickscores(pick[0], pick[1], [unique[k] for k in keys], [k[1] for k in keys], req.batch_size, dev)
    score = dict(zip(keys, s))
    means = {arm: float(np.mean([score[(h, t)] for h, t in zip(a["sha"], a["prompts"])])) for arm, a in arms.items()}
    win = m.win_rate(
        [score[(r.treatment.sha256, r.prompt)] for r in records],
        [score[(r.baseline.sha256, r.prompt)] for r in records],
        req.tie_tolerance,
    )
    return means, win


def compute_table(req: TableRequest, echo=print) -> tuple[list[dict], dict[str, Any]]:
    """Rows (one per manifest and arm, columns `sampler.metrics.TABLE_COLUMNS`) and the settings;
    also written to req.out. Raises TableError, ManifestError, WeightsError or ValueError."""
    import numpy as np
    import torch

    from sampler import metrics as m
    from sampler.clip import clip_scores, load_open_clip
    from sampler.devices import resolve_device

    if not (req.inception_weights or req.clip or req.pickscore_dir):
        raise TableError("give at least one of --inception-weights, --clip-weights, --pickscore")
    if req.reference and not req.inception_weights:
        raise TableError("--reference (FID) needs --inception-weights")
    dev = resolve_device(req.device)
    # Load and check everything before the long passes, so a bad path fails in seconds.
    sets = [(Path(folder), validate_folder(Path(folder))) for folder in req.manifests]
    ref_files = m.list_images(req.reference) if req.reference else None
    inception = m.load_inception(req.inception_weights, dev, req.fid_features) if req.inception_weights else None
    clip = load_open_clip(req.clip, device=req.device) if req.clip else None
    pick = m.load_pickscore(req.pickscore_dir, req.pickscore_processor, dev) if req.pickscore_dir else None

    outdir = Path(req.out)
    outdir.mkdir(parents=True, exist_ok=True)
    ref_state = None
    ref_cache = Path(req.reference_stats) if req.reference_stats else outdir / "reference_inception_stats.pt"
    ref_key = reference_key(ref_files, req.inception_weights, req.resize, req.fid_features) if ref_files else None
    if ref_key and ref_cache.is_file():
        saved = torch.load(ref_cache, map_location="cpu", weights_only=True)
        if saved.get("key") == ref_key:
            ref_state = saved["state"]
            echo(f"reusing reference statistics from {ref_cache}")

    rows = []
    for folder, records in sets:
        arms = _arms(folder, records)
        result: dict[str, dict] = {arm: {} for arm in arms}
        if inception is not None:
            inc, state = m.inception_metrics(
                inception, ref_files, {arm: a["paths"] for arm, a in arms.items()}, req.resize, req.batch_size, dev,
                req.is_splits, reference_state=ref_state,
            )
            if ref_files and ref_state is None:
                ref_state = state
                torch.save({"key": ref_key, "state": state}, ref_cache)
            for arm in arms:
                result[arm].update(inc[arm])
        if clip is not None:
            for arm, a in arms.items():
                result[arm]["clip_score"] = float(np.mean(clip_scores(clip, a["paths"], a["prompts"], req.batch_size, desc=f"CLIP score {arm}")))
        win = None
        if pick is not None:
            means, win = _pickscore(pick, folder, records, arms, req, dev)
            for arm in arms:
                result[arm]["pickscore_mean"] = means[arm]
        for arm, a in arms.items():
            row = {c: None for c in m.TABLE_COLUMNS}
            row.update(manifest=str(folder), arm=arm, role=a["role"], images=len(a["paths"]), **result[arm])
            row["manifest_label"] = folder.name if len(sets) > 1 else ""
            if win is not None and a["role"] == "treatment":
                row.update(
                    pickscore_pairs=win.n, pickscore_wins=win.wins, pickscore_ties=win.ties, pickscore_losses=win.losses,
                    pickscore_win_rate=win.win_rate, pickscore_tie_rate=win.tie_rate,
                    pickscore_win_ci_low=win.ci_low, pickscore_win_ci_high=win.ci_high,
                )
            rows.append(row)
        rows.sort(key=lambda r: (r["manifest"], r["role"] != "baseline", r["arm"]))

    settings = {
        "manifests": [str(f) for f, _ in sets],
        "reference": str(req.reference) if req.reference else None,
        "reference_images": len(ref_files) if ref_files else 0,
        "inception_weights": str(req.inception_weights) if req.inception_weights else None,
        "resize": req.resize,
        "center_crop": True,
        "fid_features": req.fid_features,
        "is_splits": req.is_splits,
        "clip_model": clip.identity if clip else None,
        "clip_score": "100 * cosine(image, prompt), mean over the arm's images",
        "pickscore": str(req.pickscore_dir) if req.pickscore_dir else None,
        "win_rate": "fraction of pairs with treatment PickScore > baseline; ties separate; 95% Wilson CI",
        "tie_tolerance": req.tie_tolerance,
        "libraries": {name: __import__(name).__version__ for name in ("torch", "torchmetrics", "torch_fidelity", "open_clip", "transformers")},
    }
    # NaN (e.g. IS spread of a one-split arm) is written as empty / null: JSON has no NaN.
    rows = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    write_table(outdir, rows, settings, req.clip.name if clip else None)
    return rows, settings


def write_table(outdir: Path, rows: list[dict], settings: dict[str, Any], clip_name: str | None) -> str:
    """metrics.csv, metrics.json and metrics.md in `outdir`; returns the Markdown."""
    from sampler import metrics as m

    with open(outdir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(m.TABLE_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (outdir / "metrics.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2, default=str, allow_nan=False))
    md = m.markdown_table(rows, {**settings, "clip_model": clip_name})
    (outdir / "metrics.md").write_text(md)
    return md
