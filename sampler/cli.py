"""Sampler commands of `sfgeval`: torch and diffusers are imported inside each command only."""

from __future__ import annotations

import click


@click.command()
@click.option("--prompts", "prompt_file", required=True, type=click.Path(), help="Prompt file: .txt (one per line), .csv or .jsonl (a 'prompt' field).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Pair-set folder (manifest.jsonl + images); re-running resumes.")
@click.option("--model", "model_dir", type=click.Path(), default=None, help="Local diffusers Stable Diffusion 1.x folder.")
@click.option("--tiny", is_flag=True, help="Use the tiny random-weight model (built once into $SFGEVAL_CACHE/tiny-sd).")
@click.option("--seeds-per-prompt", type=click.IntRange(1), default=1, show_default=True)
@click.option("--seed", "base_seed", type=click.IntRange(0), default=0, show_default=True, help="First seed of prompts whose file gives none (seed / evaluation_seed column).")
@click.option("--steps", type=click.IntRange(1), default=50, show_default=True, help="Denoising steps T.")
@click.option("--guidance-scale", type=float, default=7.5, show_default=True, help="CFG scale g (diffusers convention).")
@click.option("--sfg-scale", type=float, default=10.0, show_default=True, help="Segmentation-free scale a.")
@click.option("--sfg-guidance-scale", type=float, default=3.0, show_default=True, help="SFG guidance scale g_bar (diffusers convention).")
@click.option("--sfg-start-step", type=click.IntRange(0), default=None, help="CFG steps before SFG starts, t_s [default: T // 2].")
@click.option("--token-select", type=click.Choice(["head_mean", "per_head"]), default="head_mean", show_default=True)
@click.option("--include-eos", is_flag=True, help="Let EOS/padding tokens be a patch's local semantic.")
@click.option("--height", type=click.IntRange(8), default=None, help="Pixels [default: the model's native size].")
@click.option("--width", type=click.IntRange(8), default=None, help="Pixels [default: the model's native size].")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True, help="Pairs per UNet batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps (ignored under accelerate launch).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True, help="auto: float16 on CUDA, else float32.")
@click.option("--save-maps", is_flag=True, help="Also write researcher-only SFG token maps to OUT/maps/ (never serve them).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N prompts.")
def generate(prompt_file, out_dir, model_dir, tiny, seeds_per_prompt, base_seed, steps, guidance_scale, sfg_scale,
             sfg_guidance_scale, sfg_start_step, token_select, include_eos, height, width, batch_size, device, dtype,
             save_maps, limit) -> None:
    """Generate paired CFG/SFG images from the same seeds into OUT with a manifest.

    Runs on several GPUs under `accelerate launch`, each process taking its own share of pairs.
    """
    from sampler.generate import GenerateError, GenerationSettings, generate_pairs
    from sampler.prompts import PromptFileError
    from sampler.tiny import TINY_VERSION, default_tiny_model_dir, ensure_tiny_model

    if bool(model_dir) == bool(tiny):
        raise click.UsageError("give exactly one of --model DIR or --tiny")
    name = None
    if tiny:
        model_dir, name = ensure_tiny_model(default_tiny_model_dir()), f"sfgeval-{TINY_VERSION}"
    settings = GenerationSettings(
        num_inference_steps=steps, guidance_scale=guidance_scale, sfg_scale=sfg_scale,
        sfg_guidance_scale=sfg_guidance_scale, sfg_start_step=sfg_start_step, token_select=token_select,
        include_eos=include_eos, height=height, width=width,
    )
    try:
        summary = generate_pairs(
            prompt_file, out_dir, model_dir=model_dir, settings=settings, seeds_per_prompt=seeds_per_prompt,
            base_seed=base_seed, batch_size=batch_size, device=device, dtype=dtype, save_maps=save_maps,
            limit=limit, model_name=name,
        )
    except (GenerateError, PromptFileError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"{summary.out_dir}: {summary.written} pairs written, {summary.skipped} already there, "
        f"{summary.total} in this run's share"
    )


# =============================================================================================
# Prompt subsampling (`sfgeval prompts ...`) and objective metrics (`sfgeval metrics ...`).
# Issue 4. Heavy imports (torch, open_clip, torchmetrics) stay inside the command functions.
# =============================================================================================

_PROMPT_WORK = "prompt-work"


def _default_prompt_file() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1] / "data" / "coco_30k.csv")


def _float_list(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated numbers, got {text!r}") from None


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None


def _load_clip_or_fail(model: str, weights: str, device: str):
    from sampler.clip import load_open_clip
    from sampler.weights import WeightsError

    try:
        return load_open_clip(model, weights, device)
    except (WeightsError, ValueError) as e:
        raise click.ClickException(str(e)) from None


def _clip_identity_or_fail(model: str, weights: str) -> dict:
    from sampler.clip import clip_identity
    from sampler.weights import WeightsError

    try:
        return clip_identity(model, weights)
    except WeightsError as e:
        raise click.ClickException(str(e)) from None


_clip_model_option = click.option(
    "--clip-model", default="ViT-g-14", show_default=True, help="open_clip architecture name."
)
_clip_weights_option = click.option(
    "--clip-weights",
    required=True,
    type=click.Path(),
    help="Local open_clip checkpoint file (or the folder holding open_clip_pytorch_model.bin).",
)
_device_option = click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', 'cuda:1', ...")


@click.group()
def prompts() -> None:
    """Choose a diverse, fair prompt subset: encode -> diversity -> select -> (generate CFG) -> strata."""


@prompts.command("encode")
@click.option("--prompts", "prompt_file", type=click.Path(), default=None, help="Prompt CSV [default: data/coco_30k.csv].")
@_clip_model_option
@_clip_weights_option
@click.option("--out", type=click.Path(), default=f"{_PROMPT_WORK}/embeddings.npz", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@_device_option
def prompts_encode(prompt_file, clip_model, clip_weights, out, batch_size, device) -> None:
    """CLIP text embeddings of every prompt, cached: a second run with the same model and file reuses them."""
    from sampler.clip import encode_texts
    from sampler.prompt_embeddings import (
        PromptFileError,
        load_cached_embeddings,
        read_prompt_table,
        save_embeddings,
    )

    try:
        table = read_prompt_table(prompt_file or _default_prompt_file())
    except PromptFileError as e:
        raise click.ClickException(str(e)) from None
    identity = _clip_identity_or_fail(clip_model, clip_weights)
    cached = load_cached_embeddings(out, identity, table)
    if cached is not None:  # checked before loading the model: a multi-GB load is the slow part
        click.echo(f"cached: {out} already holds {len(cached)} embeddings from {clip_model} for this prompt file")
        return
    clip = _load_clip_or_fail(clip_model, clip_weights, device)
    emb = encode_texts(clip, table.prompts, batch_size=batch_size)
    save_embeddings(out, emb, clip.identity, table)
    click.echo(f"wrote {out}: {emb.shape[0]} prompts x {emb.shape[1]} dims ({clip_model})")


def _plot_diversity(summary: list[dict], rows, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s["size"] for s in summary]
    mean = [s["mean"] for s in summary]
    std = [s["std"] for s in summary]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([r.size for r in rows], [r.frechet_distance for r in rows], s=8, alpha=0.35, color="tab:blue", label="draws")
    ax.errorbar(sizes, mean, yerr=std, fmt="o-", color="tab:red", capsize=3, label="mean ± 1 sd")
    ax.fill_between(sizes, [s["min"] for s in summary], [s["max"] for s in summary], color="tab:red", alpha=0.12, label="min–max")
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


@prompts.command("diversity")
@click.option("--embeddings", type=click.Path(), default=f"{_PROMPT_WORK}/embeddings.npz", show_default=True)
@click.option("--sizes", default="100,200,500,1000,2000,5000,10000", show_default=True)
@click.option("--draws", type=click.IntRange(1), default=10, show_default=True, help="Random subsets per size (R).")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed; each draw's own seed is recorded.")
@click.option("--eps", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Ridge added to every covariance diagonal (0: none; recorded in diversity.json).")
@click.option("--out", type=click.Path(), default=_PROMPT_WORK, show_default=True, help="Folder for diversity.csv/.png.")
def prompts_diversity(embeddings, sizes, draws, seed, eps, out) -> None:
    """Fréchet distance between random subsets and the full set, per size (the paper's Figure 10).

    Writes OUT/diversity.csv (one row per draw, with its seed), OUT/diversity_summary.csv and
    OUT/diversity.png. Re-running continues where a killed run stopped; changing the embeddings,
    seed or eps starts over.
    """
    import csv
    import json
    from pathlib import Path

    from tqdm.auto import tqdm

    from sampler import subsample
    from sampler.prompt_embeddings import (
        PromptFileError,
        cache_meta_path,
        load_embeddings,
        sha256_of,
    )

    size_list = _int_list(sizes, "--sizes")
    try:
        emb, _, meta = load_embeddings(embeddings)
    except PromptFileError as e:
        raise click.ClickException(str(e)) from None
    for s in size_list:
        if not 2 <= s <= len(emb):
            raise click.BadParameter(f"size {s} must be between 2 and the number of prompts ({len(emb)})", param_hint="--sizes")
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    rows_path, run_path = outdir / "diversity.csv", outdir / "diversity.json"
    run = {
        "embeddings": str(embeddings),
        "embeddings_meta_sha256": sha256_of(cache_meta_path(embeddings)),
        "model": meta.get("model"),
        "count": int(emb.shape[0]),
        "base_seed": seed,
        "eps": eps,
        "seed_rule": "numpy SeedSequence([base_seed, size, draw]).generate_state(1)[0]; subset = sorted default_rng(seed).choice(N, size, replace=False)",
    }
    done: list[subsample.SweepRow] = []
    if rows_path.is_file() and run_path.is_file() and json.loads(run_path.read_text()) == run:
        # Keep only complete rows (a kill can cut the last line) whose seed follows the rule;
        # rewrite the file with them so appended rows start on a fresh line.
        lines = rows_path.read_text().splitlines(keepends=True)
        for r in csv.DictReader(line for line in lines if line.endswith("\n")):
            try:
                row = subsample.SweepRow(int(r["size"]), int(r["draw"]), int(r["seed"]), float(r["frechet_distance"]))
            except (TypeError, ValueError):
                continue
            if row.seed == subsample.subset_seed(seed, row.size, row.draw):
                done.append(row)
        with open(rows_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["size", "draw", "seed", "frechet_distance"])
            w.writerows([r.size, r.draw, r.seed, repr(r.frechet_distance)] for r in done)
    else:
        run_path.write_text(json.dumps(run, indent=2))
        with open(rows_path, "w", newline="") as f:
            csv.writer(f).writerow(["size", "draw", "seed", "frechet_distance"])
    wanted = {(s, d, subsample.subset_seed(seed, s, d)) for s in size_list for d in range(draws)}
    done_keys = {(r.size, r.draw, r.seed) for r in done}
    todo = len(wanted - done_keys)
    if todo == 0:
        click.echo(f"all {len(wanted)} draws already in {rows_path}")
    with open(rows_path, "a", newline="") as f, tqdm(total=todo, desc="diversity", unit="draw", disable=todo == 0) as bar:
        writer = csv.writer(f)

        def on_row(row: subsample.SweepRow) -> None:
            writer.writerow([row.size, row.draw, row.seed, repr(row.frechet_distance)])
            f.flush()
            bar.set_postfix(size=row.size)
            bar.update(1)

        if todo:
            done += subsample.diversity_sweep(emb, size_list, draws, seed, eps, skip=done_keys, on_row=on_row)
    rows = [r for r in done if (r.size, r.draw, r.seed) in wanted]
    summary = subsample.summarise_sweep(rows)
    with open(outdir / "diversity_summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["size", "draws", "mean", "std", "min", "max"])
        w.writeheader()
        w.writerows(summary)
    model_name = (meta.get("model") or {}).get("model", "CLIP")
    _plot_diversity(summary, rows, str(outdir / "diversity.png"), f"{model_name} text embeddings, N={len(emb)}, R={draws}")
    for s in summary:
        click.echo(f"size {s['size']:>6}: mean {s['mean']:.6g}  sd {s['std']:.3g}  ({s['draws']} draws)")
    click.echo(f"wrote {rows_path}, {outdir / 'diversity_summary.csv'}, {outdir / 'diversity.png'}")


@prompts.command("select")
@click.option("--prompts", "prompt_file", type=click.Path(), default=None, help="Prompt CSV [default: data/coco_30k.csv].")
@click.option("--size", type=click.IntRange(1), default=5000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(), default=f"{_PROMPT_WORK}/subset.csv", show_default=True)
def prompts_select(prompt_file, size, seed, out) -> None:
    """Draw the seeded subset of SIZE prompts and write it as a prompt file (prompt_id,prompt[,seed]) for `generate`.

    The prompts keep the order of the source file; OUT with .json records the seed and source hash.
    """
    import json
    from pathlib import Path

    from sampler import subsample
    from sampler.prompt_embeddings import (
        PromptFileError,
        read_prompt_table,
        write_prompt_table,
    )

    try:
        table = read_prompt_table(prompt_file or _default_prompt_file())
        idx = subsample.draw_subset(len(table.prompts), size, seed)
    except (PromptFileError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    # Keep the source's per-prompt seeds (coco_30k.csv's evaluation_seed) so `generate` uses them.
    seeds = [table.seeds[i] for i in idx]
    extra = {"seed": ["" if v is None else v for v in seeds]} if any(v is not None for v in seeds) else None
    write_prompt_table(out, [table.ids[i] for i in idx], [table.prompts[i] for i in idx], extra)
    record = {
        "source": table.path,
        "source_sha256": table.sha256,
        "size": size,
        "seed": seed,
        "rule": "sorted numpy default_rng(seed).choice(N, size, replace=False)",
    }
    Path(out).with_suffix(".json").write_text(json.dumps(record, indent=2))
    click.echo(f"wrote {out}: {size} of {len(table.prompts)} prompts (seed {seed})")


# Columns of the CLIP-score cache of `prompts strata`: a score belongs to (image, prompt), not the image.
CLIP_CACHE_COLUMNS = ["pair_key", "prompt_id", "prompt", "file", "sha256", "clip_score"]


@prompts.command("strata")
@click.option("--manifest", "manifest_dir", required=True, type=click.Path(), help="Pair-set folder of the subset's images.")
@_clip_model_option
@_clip_weights_option
@click.option("--k", type=click.IntRange(1), default=10, show_default=True, help="Prompts per stratum.")
@click.option("--percentiles", default="10,50,90", show_default=True)
@click.option("--labels", default="low,middle,high", show_default=True)
@click.option("--out", type=click.Path(), default=f"{_PROMPT_WORK}/strata.csv", show_default=True)
@click.option("--scores", "scores_path", type=click.Path(), default=None, help="Score cache, per (image, prompt) [default: OUT's folder/clip_scores.csv].")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@_device_option
def prompts_strata(manifest_dir, clip_model, clip_weights, k, percentiles, labels, out, scores_path, batch_size, device) -> None:
    """CLIP-score the baseline (CFG) image of every pair and pick the prompts nearest the percentiles.

    A prompt's score is the mean over its seeds of 100 x cosine(image, prompt). Writes OUT with
    columns prompt_id, prompt, stratum, clip_score (the prompt file `generate` reads for the human
    study) and OUT with .json (targets and settings). Scores are cached per (image, prompt) for the
    model, so re-running with another k or new pairs in the manifest scores only what is new.
    """
    import csv
    import json
    from pathlib import Path

    from sampler import subsample
    from sampler.manifest import ManifestError, iter_records
    from sampler.prompt_embeddings import write_prompt_table

    pct = _float_list(percentiles, "--percentiles")
    labs = [v.strip() for v in labels.split(",") if v.strip()]
    if len(pct) != len(labs):
        raise click.BadParameter(f"{len(pct)} percentiles but {len(labs)} labels", param_hint="--labels")
    folder = Path(manifest_dir)
    try:
        records = [rec for _, rec in iter_records(folder)]
    except ManifestError as e:
        raise click.ClickException(str(e)) from None
    if not records:
        raise click.ClickException(f"{folder}: the manifest holds no pairs")
    for rec in records:
        if not (folder / rec.baseline.file).is_file():
            raise click.ClickException(f"{folder}: image {rec.baseline.file} of pair {rec.pair_key} is missing")

    identity = _clip_identity_or_fail(clip_model, clip_weights)
    cache = Path(scores_path) if scores_path else Path(out).parent / "clip_scores.csv"
    cache_meta = cache.with_suffix(".json")
    cache.parent.mkdir(parents=True, exist_ok=True)
    # (baseline image sha256, prompt) -> score; the model is the cache's identity (its .json). Not the
    # image alone: identical images of different prompts (e.g. black safety-checker outputs) differ.
    known: dict[tuple[str, str], float] = {}
    if cache.is_file() and cache_meta.is_file() and json.loads(cache_meta.read_text()) == identity:
        import io

        text = cache.read_text(encoding="utf-8")
        text = text[: text.rfind("\n") + 1]  # a kill can cut the last row: drop it
        kept = []
        for r in csv.DictReader(io.StringIO(text, newline="")):
            try:
                known[(r["sha256"], r["prompt"])] = float(r["clip_score"])
                kept.append(r)
            except (TypeError, ValueError, KeyError):
                continue
        with open(cache, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=CLIP_CACHE_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(kept)
    else:
        cache_meta.write_text(json.dumps(identity, indent=2))
        with open(cache, "w", newline="") as f:
            csv.writer(f).writerow(CLIP_CACHE_COLUMNS)
    todo = [rec for rec in records if (rec.baseline.sha256, rec.prompt) not in known]
    if todo:
        from sampler.clip import clip_scores

        clip = _load_clip_or_fail(clip_model, clip_weights, device)

        chunk = max(batch_size * 8, 256)  # flush to the cache every few batches: a kill loses little
        with open(cache, "a", newline="") as f:
            w = csv.writer(f)
            for i in range(0, len(todo), chunk):
                part = todo[i : i + chunk]
                s = clip_scores(
                    clip, [folder / r.baseline.file for r in part], [r.prompt for r in part], batch_size,
                    desc=f"CLIP score {i + len(part)}/{len(todo)}",
                )
                for r, v in zip(part, s):
                    w.writerow([r.pair_key, r.prompt_id, r.prompt, r.baseline.file, r.baseline.sha256, repr(float(v))])
                    known[(r.baseline.sha256, r.prompt)] = float(v)
                f.flush()
    else:
        click.echo(f"all {len(records)} baseline images already scored in {cache}")

    per_prompt: dict[str, list[float]] = {}
    text: dict[str, str] = {}
    for rec in records:
        per_prompt.setdefault(rec.prompt_id, []).append(known[(rec.baseline.sha256, rec.prompt)])
        text[rec.prompt_id] = rec.prompt
    ids = list(per_prompt)
    means = [sum(v) / len(v) for v in per_prompt.values()]
    try:
        picks = subsample.percentile_strata(means, k, pct, labs)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    write_prompt_table(
        out,
        [ids[p.index] for p in picks],
        [text[ids[p.index]] for p in picks],
        {"stratum": [p.label for p in picks], "clip_score": [f"{p.score:.6f}" for p in picks]},
    )
    targets = {p.label: p.target for p in picks}
    Path(out).with_suffix(".json").write_text(
        json.dumps(
            {
                "manifest": str(folder),
                "model": identity,
                "clip_score": "100 * cosine(image, text), mean over the prompt's seeds, baseline arm",
                "prompts_scored": len(ids),
                "k": k,
                "strata": [{"label": l, "percentile": p, "target_score": targets[l]} for l, p in zip(labs, pct)],
                "collisions": "a prompt goes to the stratum whose target is nearest; ties by stratum order, then prompt order",
            },
            indent=2,
        )
    )
    for lab, p in zip(labs, pct):
        click.echo(f"{lab:>8}: percentile {p:g} = CLIP score {targets[lab]:.3f}, {sum(q.label == lab for q in picks)} prompts")
    click.echo(f"wrote {out}")


@click.group()
def metrics() -> None:
    """Objective metrics (the paper's Tables 1 and 2) for the arms of pair sets."""


def _reference_key(files, inception_weights: str, resize: str, fid_features: int) -> dict:
    import hashlib

    from sampler.weights import file_fingerprint

    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"reference_listing": h.hexdigest(), "inception": file_fingerprint(inception_weights), "resize": resize,
            "fid_features": fid_features}


@metrics.command("table")
@click.option("--manifest", "manifests", multiple=True, required=True, type=click.Path(), help="Pair-set folder; repeat for several.")
@click.option("--reference", type=click.Path(), default=None, help="Folder of reference images for FID (e.g. the COCO val2014 images of the prompts).")
@click.option("--inception-weights", type=click.Path(), default=None, help="torch-fidelity InceptionV3 weights file (pt_inception-2015-12-05-6726825d.pth): FID and IS.")
@click.option("--clip-model", default="ViT-g-14", show_default=True, help="open_clip architecture for the CLIP score.")
@click.option("--clip-weights", type=click.Path(), default=None, help="open_clip checkpoint file: CLIP score.")
@click.option("--pickscore", "pickscore_dir", type=click.Path(), default=None, help="PickScore_v1 folder (transformers CLIPModel): win rate.")
@click.option("--pickscore-processor", type=click.Path(), default=None, help="CLIPProcessor folder if not in the PickScore folder (CLIP-ViT-H-14-laion2B-s32B-b79K).")
@click.option("--resize", type=click.Choice(["pil-bicubic", "torch-antialias", "tf1"]), default="pil-bicubic", show_default=True, help="How images reach Inception's 299x299 (after a centre square crop).")
@click.option("--fid-features", type=click.Choice(["2048", "768", "192", "64"]), default="2048", show_default=True, help="Inception layer for FID (2048 = the standard pool3).")
@click.option("--is-splits", type=click.IntRange(1), default=10, show_default=True)
@click.option("--tie-tolerance", type=click.FloatRange(min=0.0), default=0.0, show_default=True, help="PickScore differences up to this count as ties.")
@click.option("--reference-stats", type=click.Path(), default=None, help="Cache of the reference Inception statistics [default: OUT/reference_inception_stats.pt].")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@_device_option
@click.option("--out", type=click.Path(), required=True, help="Folder for metrics.csv, metrics.json, metrics.md.")
def metrics_table(manifests, reference, inception_weights, clip_model, clip_weights, pickscore_dir, pickscore_processor,
                  resize, fid_features, is_splits, tie_tolerance, reference_stats, batch_size, device, out) -> None:
    """FID (vs --reference), CLIP score, Inception Score per arm and the PickScore win rate of treatment vs baseline.

    Each metric runs when its weights are given; FID also needs --reference. Images are checked
    against the manifest's SHA-256 first.
    """
    import csv
    import json
    from pathlib import Path

    import numpy as np
    import torch

    from sampler import metrics as m
    from sampler.clip import clip_scores, pick_device
    from sampler.manifest import ManifestError, validate_folder
    from sampler.weights import WeightsError

    if not (inception_weights or clip_weights or pickscore_dir):
        raise click.UsageError("give at least one of --inception-weights, --clip-weights, --pickscore")
    if reference and not inception_weights:
        raise click.UsageError("--reference (FID) needs --inception-weights")
    try:
        dev = pick_device(device)
    except ValueError as e:
        raise click.ClickException(str(e)) from None

    # Load and check everything before the long passes, so a bad path fails in seconds.
    sets = []
    for folder in manifests:
        try:
            records = validate_folder(Path(folder))
        except ManifestError as e:
            raise click.ClickException(str(e)) from None
        sets.append((Path(folder), records))
    try:
        ref_files = m.list_images(reference) if reference else None
        inception = m.load_inception(inception_weights, dev, int(fid_features)) if inception_weights else None
        clip = _load_clip_or_fail(clip_model, clip_weights, device) if clip_weights else None
        pick = m.load_pickscore(pickscore_dir, pickscore_processor, dev) if pickscore_dir else None
    except (WeightsError, ValueError) as e:
        raise click.ClickException(str(e)) from None

    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    ref_state = None
    ref_cache = Path(reference_stats) if reference_stats else outdir / "reference_inception_stats.pt"
    ref_key = _reference_key(ref_files, inception_weights, resize, int(fid_features)) if ref_files else None
    if ref_key and ref_cache.is_file():
        saved = torch.load(ref_cache, map_location="cpu", weights_only=True)
        if saved.get("key") == ref_key:
            ref_state = saved["state"]
            click.echo(f"reusing reference statistics from {ref_cache}")

    rows = []
    many = len(sets) > 1
    for folder, records in sets:
        arms: dict[str, dict] = {}
        for rec in records:
            for role, side in (("baseline", rec.baseline), ("treatment", rec.treatment)):
                a = arms.setdefault(side.arm, {"role": role, "paths": [], "prompts": [], "sha": []})
                if a["role"] != role:
                    raise click.ClickException(f"{folder}: arm {side.arm!r} is baseline in some pairs and treatment in others")
                a["paths"].append(folder / side.file)
                a["prompts"].append(rec.prompt)
                a["sha"].append(side.sha256)
        result = {arm: {} for arm in arms}
        if inception is not None:
            try:
                inc, state = m.inception_metrics(
                    inception, ref_files, {arm: a["paths"] for arm, a in arms.items()}, resize, batch_size, dev,
                    is_splits, reference_state=ref_state,
                )
            except ValueError as e:
                raise click.ClickException(str(e)) from None
            if ref_files and ref_state is None:
                ref_state = state
                torch.save({"key": ref_key, "state": state}, ref_cache)
            for arm in arms:
                result[arm].update(inc[arm])
        if clip is not None:
            for arm, a in arms.items():
                result[arm]["clip_score"] = float(np.mean(clip_scores(clip, a["paths"], a["prompts"], batch_size, desc=f"CLIP score {arm}")))
        win = None
        if pick is not None:
            # Keyed by (file hash, prompt): identical images of one prompt get one score, so they tie exactly.
            unique: dict[tuple[str, str], Path] = {}
            for rec in records:
                for side in (rec.baseline, rec.treatment):
                    unique.setdefault((side.sha256, rec.prompt), folder / side.file)
            keys = list(unique)
            s = m.pickscores(pick[0], pick[1], [unique[k] for k in keys], [k[1] for k in keys], batch_size, dev)
            score = dict(zip(keys, s))
            for arm, a in arms.items():
                result[arm]["pickscore_mean"] = float(np.mean([score[(h, t)] for h, t in zip(a["sha"], a["prompts"])]))
            win = m.win_rate(
                [score[(r.treatment.sha256, r.prompt)] for r in records],
                [score[(r.baseline.sha256, r.prompt)] for r in records],
                tie_tolerance,
            )
        for arm, a in arms.items():
            row = {c: None for c in m.TABLE_COLUMNS}
            row.update(manifest=str(folder), arm=arm, role=a["role"], images=len(a["paths"]), **result[arm])
            row["manifest_label"] = folder.name if many else ""
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
        "reference": str(reference) if reference else None,
        "reference_images": len(ref_files) if ref_files else 0,
        "inception_weights": str(inception_weights) if inception_weights else None,
        "resize": resize,
        "center_crop": True,
        "fid_features": int(fid_features),
        "is_splits": is_splits,
        "clip_model": clip.identity if clip else None,
        "clip_score": "100 * cosine(image, prompt), mean over the arm's images",
        "pickscore": str(pickscore_dir) if pickscore_dir else None,
        "win_rate": "fraction of pairs with treatment PickScore > baseline; ties separate; 95% Wilson CI",
        "tie_tolerance": tie_tolerance,
        "libraries": {name: __import__(name).__version__ for name in ("torch", "torchmetrics", "torch_fidelity", "open_clip", "transformers")},
    }
    # NaN (e.g. IS spread of a one-split arm) is written as empty / null: JSON has no NaN.
    rows = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    with open(outdir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(m.TABLE_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (outdir / "metrics.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2, default=str, allow_nan=False))
    md = m.markdown_table(rows, {**settings, "clip_model": clip_model if clip else None})
    (outdir / "metrics.md").write_text(md)
    click.echo(md)
    click.echo(f"wrote {outdir / 'metrics.csv'}, {outdir / 'metrics.json'}, {outdir / 'metrics.md'}")
