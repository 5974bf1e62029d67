"""The resumable diversity sweep on files (`sfgeval prompts diversity`): rows, summary, plot.

The maths is `sampler.subsample.diversity_sweep`; this module owns the files. OUT/diversity.csv
holds one row per draw with its seed, appended and flushed as each draw finishes;
OUT/diversity.json records what the rows were computed from (embeddings, base seed, eps). A rerun
with the same record keeps the complete rows whose seed follows the rule and computes only the
missing draws; any other record starts over.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from sampler import subsample
from sampler.manifest import sha256_file
from sampler.prompt_embeddings import cache_meta_path, load_embeddings

FIELDS = ["size", "draw", "seed", "frechet_distance"]
SEED_RULE = (
    "numpy SeedSequence([base_seed, size, draw]).generate_state(1)[0]; "
    "subset = sorted default_rng(seed).choice(N, size, replace=False)"
)


@dataclass
class DiversityResult:
    rows: list[subsample.SweepRow]  # every wanted draw, old and new
    summary: list[dict[str, float]]  # `subsample.summarise_sweep`
    computed: int  # draws computed by this call
    files: list[Path]  # rows CSV, summary CSV, plot PNG


def _read_done(rows_path: Path, base_seed: int) -> list[subsample.SweepRow]:
    """Complete rows (a kill can cut the last line) whose seed follows the rule."""
    lines = rows_path.read_text().splitlines(keepends=True)
    done = []
    for r in csv.DictReader(line for line in lines if line.endswith("\n")):
        try:
            row = subsample.SweepRow(int(r["size"]), int(r["draw"]), int(r["seed"]), float(r["frechet_distance"]))
        except (TypeError, ValueError):
            continue
        if row.seed == subsample.subset_seed(base_seed, row.size, row.draw):
            done.append(row)
    return done


def _write_rows(path: Path, rows: list[subsample.SweepRow]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        w.writerows([r.size, r.draw, r.seed, repr(r.frechet_distance)] for r in rows)


def run_diversity(embeddings: str | Path, sizes: list[int], draws: int, base_seed: int, eps: float, out: str | Path,
                  progress: bool = True) -> DiversityResult:
    """Run (or finish) the sweep of `embeddings` (a finished `prompts encode` cache) into `out`.

    Raises PromptFileError when the cache is missing, ValueError for a size outside 2..N.
    """
    from tqdm.auto import tqdm

    emb, _, meta = load_embeddings(embeddings)
    for s in sizes:
        if not 2 <= s <= len(emb):
            raise ValueError(f"size {s} must be between 2 and the number of prompts ({len(emb)})")
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    rows_path, run_path = outdir / "diversity.csv", outdir / "diversity.json"
    run = {
        "embeddings": str(embeddings),
        "embeddings_meta_sha256": sha256_file(cache_meta_path(embeddings)),
        "model": meta.get("model"),
        "count": int(emb.shape[0]),
        "base_seed": base_seed,
        "eps": eps,
        "seed_rule": SEED_RULE,
    }
    done: list[subsample.SweepRow] = []
    if rows_path.is_file() and run_path.is_file() and json.loads(run_path.read_text()) == run:
        done = _read_done(rows_path, base_seed)
    else:
        run_path.write_text(json.dumps(run, indent=2))
    _write_rows(rows_path, done)  # rewritten so appended rows start on a fresh line
    wanted = {(s, d, subsample.subset_seed(base_seed, s, d)) for s in sizes for d in range(draws)}
    done_keys = {(r.size, r.draw, r.seed) for r in done}
    todo = len(wanted - done_keys)
    with open(rows_path, "a", newline="") as f, tqdm(total=todo, desc="diversity", unit="draw",
                                                     disable=todo == 0 or not progress) as bar:
        writer = csv.writer(f)

        def on_row(row: subsample.SweepRow) -> None:
            writer.writerow([row.size, row.draw, row.seed, repr(row.frechet_distance)])
            f.flush()
            bar.set_postfix_str(f"size={row.size}")  # a string: tqdm would print 10000 as 1e+4
            bar.update(1)

        if todo:
            done += subsample.diversity_sweep(emb, sizes, draws, base_seed, eps, skip=done_keys, on_row=on_row)
    rows = [r for r in done if (r.size, r.draw, r.seed) in wanted]
    summary = subsample.summarise_sweep(rows)
    with open(outdir / "diversity_summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["size", "draws", "mean", "std", "min", "max"])
        w.writeheader()
        w.writerows(summary)
    model_name = (meta.get("model") or {}).get("model", "CLIP")
    plot_diversity(summary, rows, outdir / "diversity.png", f"{model_name} text embeddings, N={len(emb)}, R={draws}")
    return DiversityResult(rows, summary, todo, [rows_path, outdir / "diversity_summary.csv", outdir / "diversity.png"])


def plot_diversity(summary: list[dict], rows, path: str | Path, title: str) -> None:
    """Draws, mean ± 1 sd and the min–max band against subset size, log-log (paper Fig. 10)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s["size"] for s in summary]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([r.size for r in rows], [r.frechet_distance for r in rows], s=8, alpha=0.35, color="tab:blue", label="draws")
    ax.errorbar(sizes, [s["mean"] for s in summary], yerr=[s["std"] for s in summary], fmt="o-", color="tab:red",
                capsize=3, label="mean ± 1 sd")
    ax.fill_between(sizes, [s["min"] for s in summary], [s["max"] for s in summary], color="tab:red", alpha=0.12,
                    label="min–max")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("prompts in subset")
    ax.set_ylabel("Fréchet distance to the full set")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
