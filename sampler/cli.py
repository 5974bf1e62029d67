"""Sampler commands of `sfgeval`: torch and diffusers are imported inside each command only."""

from __future__ import annotations

import click

from sampler.params import TOKEN_SELECT, SamplerParams

_P = SamplerParams  # option defaults come from the one settings class


@click.command()
@click.option("--prompts", "prompt_file", required=True, type=click.Path(), help="Prompt file: .txt (one per line), .csv or .jsonl (a 'prompt' field).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Pair-set folder (manifest.jsonl + images); re-running resumes.")
@click.option("--model", "model_dir", type=click.Path(), default=None, help="Local diffusers Stable Diffusion 1.x or SDXL folder.")
@click.option("--tiny", is_flag=True, help="Use the tiny random-weight model (built once into $SFGEVAL_CACHE/tiny-sd).")
@click.option("--seeds-per-prompt", type=click.IntRange(1), default=1, show_default=True)
@click.option("--seed", "base_seed", type=click.IntRange(0), default=0, show_default=True, help="First seed of prompts whose file gives none (seed / evaluation_seed column).")
@click.option("--steps", type=click.IntRange(1), default=_P.num_inference_steps, show_default=True, help="Denoising steps T.")
@click.option("--guidance-scale", type=float, default=_P.guidance_scale, show_default=True, help="CFG scale g (diffusers convention).")
@click.option("--sfg-scale", type=float, default=_P.sfg_scale, show_default=True, help="Segmentation-free scale a.")
@click.option("--sfg-guidance-scale", type=float, default=_P.sfg_guidance_scale, show_default=True, help="SFG guidance scale g_bar (diffusers convention).")
@click.option("--sfg-start-step", type=click.IntRange(0), default=None, help="CFG steps before SFG starts, t_s [default: T // 2].")
@click.option("--token-select", type=click.Choice(TOKEN_SELECT), default=_P.token_select, show_default=True)
@click.option("--include-eos", is_flag=True, default=_P.include_eos, help="Let EOS/padding tokens be a patch's local semantic.")
@click.option("--height", type=click.IntRange(8), default=None, help="Pixels [default: the model's native size].")
@click.option("--width", type=click.IntRange(8), default=None, help="Pixels [default: the model's native size].")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True, help="Pairs per UNet batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps (ignored under accelerate launch).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True, help="auto: float16 on CUDA, else float32.")
@click.option("--save-maps", is_flag=True, help="Also write researcher-only SFG token maps to OUT/maps/ (never serve them).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N prompts.")
@click.option("--reuse", "reuse_from", type=click.Path(file_okay=False), default=None,
              help="Pair-set folder (e.g. the 5K set the strata were scored on): pairs it holds with the same key, prompt and settings are copied, not generated again.")
@click.option("--arms", "arms_file", type=click.Path(dir_okay=False), default=None,
              help="YAML/JSON list of arms {name, method, params, baseline?} (methods cfg, sfg, pag, apg, cfg-zero-star): one image per arm from the same noise, manifest sfgeval.set/1. --steps and --guidance-scale are the arms' defaults.")
def generate(prompt_file, out_dir, model_dir, tiny, seeds_per_prompt, base_seed, steps, guidance_scale, sfg_scale,
             sfg_guidance_scale, sfg_start_step, token_select, include_eos, height, width, batch_size, device, dtype,
             save_maps, limit, reuse_from, arms_file) -> None:
    """Generate paired CFG/SFG images from the same seeds into OUT with a manifest
    (or, with --arms, one image per arm of the arms file).

    Runs on several GPUs under `accelerate launch`, each process taking its own share of pairs.
    """
    from sampler.generate import GenerateError, GenerationSettings, generate_pairs
    from sampler.prompts import PromptFileError
    from sampler.tiny import TINY_VERSION, default_tiny_model_dir, ensure_tiny_model

    if bool(model_dir) == bool(tiny):
        raise click.UsageError("give exactly one of --model DIR or --tiny")
    if arms_file is not None and save_maps:
        raise click.UsageError("--save-maps is not available with --arms")
    arms = None
    if arms_file is not None:  # checked before any model is built or loaded
        from sampler.arms import ArmsError, read_arms

        try:
            arms = read_arms(arms_file, SamplerParams(num_inference_steps=steps, guidance_scale=guidance_scale))
        except (ArmsError, ValueError) as e:
            raise click.ClickException(str(e)) from None
    name = None
    if tiny:
        model_dir, name = ensure_tiny_model(default_tiny_model_dir()), f"sfgeval-{TINY_VERSION}"
    try:
        settings = GenerationSettings(
            num_inference_steps=steps, guidance_scale=guidance_scale, sfg_scale=sfg_scale,
            sfg_guidance_scale=sfg_guidance_scale, sfg_start_step=sfg_start_step, token_select=token_select,
            include_eos=include_eos, height=height, width=width,
        )
        if arms is not None:
            from sampler.sets import generate_sets

            sets = generate_sets(
                prompt_file, out_dir, arms=arms, model_dir=model_dir, settings=settings,
                seeds_per_prompt=seeds_per_prompt, base_seed=base_seed, batch_size=batch_size, device=device,
                dtype=dtype, limit=limit, model_name=name, reuse_from=reuse_from,
            )
        else:
            summary = generate_pairs(
                prompt_file, out_dir, model_dir=model_dir, settings=settings, seeds_per_prompt=seeds_per_prompt,
                base_seed=base_seed, batch_size=batch_size, device=device, dtype=dtype, save_maps=save_maps,
                limit=limit, model_name=name, reuse_from=reuse_from,
            )
    except (GenerateError, PromptFileError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if arms is not None:
        reused = f" ({sets.reused} copied from {reuse_from})" if reuse_from else ""
        click.echo(f"{sets.out_dir}: {sets.images} images written{reused} in {sets.written} sets, "
                   f"{sets.complete} sets already complete, {sets.total} in this run's share")
        return
    reused = f" ({summary.reused} copied from {reuse_from})" if reuse_from else ""
    click.echo(
        f"{summary.out_dir}: {summary.written} pairs written{reused}, {summary.skipped} already there, "
        f"{summary.total} in this run's share"
    )


# =============================================================================================
# Prompt subsampling (`sfgeval prompts ...`) and objective metrics (`sfgeval metrics ...`).
# Parsing only: the work is in sampler.prompt_embeddings, sampler.diversity, sampler.strata and
# sampler.metrics_table. Heavy imports (torch, open_clip, torchmetrics) stay inside the commands.
# =============================================================================================

_PROMPT_WORK = "prompt-work"


def _default_prompt_file() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1] / "data" / "coco_30k.csv")


def _number_list(text: str, what: str, kind=float) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated {'integers' if kind is int else 'numbers'}, got {text!r}") from None


def _clip_spec(clip_model, clip_weights, clip_config):
    """The resolved open_clip model of the --clip-* options (nothing built), or a clear error."""
    from sampler.clip_checkpoint import resolve_clip
    from sampler.weights import WeightsError

    try:
        return resolve_clip(clip_model, clip_weights, clip_config)
    except WeightsError as e:
        raise click.ClickException(str(e)) from None


def _load_clip(spec, device: str):
    from sampler.clip import load_open_clip
    from sampler.weights import WeightsError

    try:
        return load_open_clip(spec, device=device)
    except (WeightsError, ValueError) as e:
        raise click.ClickException(str(e)) from None


def _clip_options(required: bool):
    """--clip-model / --clip-config / --clip-weights, shared by every command that uses CLIP."""

    def wrap(f):
        f = click.option("--clip-weights", required=False, type=click.Path(), default=None,
                         help="Local open_clip checkpoint file (or the folder holding open_clip_pytorch_model.bin)"
                         + ("." if required else ": CLIP score."))(f)
        f = click.option("--clip-config", type=click.Path(dir_okay=False), default=None,
                         help="open_clip model config JSON of a custom architecture, registered under the file's name.")(f)
        f = click.option("--clip-model", default=None,
                         help="open_clip architecture name, or local-dir:FOLDER (open_clip_config.json + checkpoint) [default: ViT-g-14].")(f)
        return f

    return wrap


_device_option = click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', 'cuda:1', ...")


@click.group()
def prompts() -> None:
    """Choose a diverse, fair prompt subset: encode -> diversity -> select -> (generate CFG) -> strata."""


@prompts.command("encode")
@click.option("--prompts", "prompt_file", type=click.Path(), default=None, help="Prompt CSV [default: data/coco_30k.csv].")
@_clip_options(required=True)
@click.option("--out", type=click.Path(), default=f"{_PROMPT_WORK}/embeddings.npz", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--chunk", type=click.IntRange(1), default=2048, show_default=True, help="Prompts saved per step: a killed run resumes from the last finished chunk.")
@_device_option
def prompts_encode(prompt_file, clip_model, clip_config, clip_weights, out, batch_size, chunk, device) -> None:
    """CLIP text embeddings of every prompt, cached: a second run with the same model and file reuses
    them, and a killed run continues where it stopped."""
    from sampler.prompt_embeddings import PromptFileError, encode_resumable, load_cached_embeddings, read_prompt_table

    try:
        table = read_prompt_table(prompt_file or _default_prompt_file())
    except PromptFileError as e:
        raise click.ClickException(str(e)) from None
    spec = _clip_spec(clip_model, clip_weights, clip_config)
    identity = spec.identity()
    cached = load_cached_embeddings(out, identity, table)
    if cached is not None:  # checked before loading the model: a multi-GB load is the slow part
        click.echo(f"cached: {out} already holds {len(cached)} embeddings from {spec.name} for this prompt file")
        return
    clip = _load_clip(spec, device)

    def encode(texts):
        from sampler.clip import encode_texts

        return encode_texts(clip, texts, batch_size=batch_size)

    emb = encode_resumable(out, identity, table, encode, chunk=chunk)
    click.echo(f"wrote {out}: {emb.shape[0]} prompts x {emb.shape[1]} dims ({spec.name})")


@prompts.command("diversity")
@click.option("--embeddings", type=click.Path(), default=f"{_PROMPT_WORK}/embeddings.npz", show_default=True)
@click.option("--sizes", default="100,200,500,1000,2000,5000,10000", show_default=True)
@click.option("--draws", type=click.IntRange(1), default=10, show_default=True, help="Random subsets per size (R).")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed; each draw's own seed is recorded.")
@click.option("--eps", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Ridge added to every covariance diagonal (default none: the eigenvalue form handles rank deficiency).")
@click.option("--out", type=click.Path(), default=_PROMPT_WORK, show_default=True, help="Folder for diversity.csv/.png.")
def prompts_diversity(embeddings, sizes, draws, seed, eps, out) -> None:
    """Fréchet distance between random subsets and the full set, per size (the paper's Figure 10).

    Writes OUT/diversity.csv (one row per draw, with its seed), OUT/diversity_summary.csv and
    OUT/diversity.png. Re-running continues where a killed run stopped; changing the embeddings,
    seed or eps starts over.
    """
    from sampler.diversity import run_diversity
    from sampler.prompt_embeddings import PromptFileError

    size_list = _number_list(sizes, "--sizes", int)
    try:
        result = run_diversity(embeddings, size_list, draws, seed, eps, out)
    except PromptFileError as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--sizes") from None
    if result.computed == 0:
        click.echo(f"all {len(result.rows)} draws already in {result.files[0]}")
    for s in result.summary:
        click.echo(f"size {s['size']:>6}: mean {s['mean']:.6g}  sd {s['std']:.3g}  ({s['draws']} draws)")
    click.echo(f"wrote {', '.join(str(f) for f in result.files)}")


@prompts.command("select")
@click.option("--prompts", "prompt_file", type=click.Path(), default=None, help="Prompt CSV [default: data/coco_30k.csv].")
@click.option("--size", type=click.IntRange(1), default=5000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(), default=f"{_PROMPT_WORK}/subset.csv", show_default=True)
def prompts_select(prompt_file, size, seed, out) -> None:
    """Draw the seeded subset of SIZE prompts and write it as a prompt file (prompt_id,prompt[,seed]) for `generate`.

    The prompts keep the order of the source file; OUT with .json records the seed and source hash.
    """
    from sampler.prompt_embeddings import PromptFileError, write_subset

    try:
        n = write_subset(prompt_file or _default_prompt_file(), size, seed, out)
    except (PromptFileError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {out}: {size} of {n} prompts (seed {seed})")


@prompts.command("strata")
@click.option("--manifest", "manifest_dir", required=True, type=click.Path(), help="Pair-set folder written by `sfgeval generate` (the subset's images).")
@_clip_options(required=True)
@click.option("--k", type=click.IntRange(1), default=10, show_default=True, help="Prompts per stratum.")
@click.option("--percentiles", default="10,50,90", show_default=True)
@click.option("--labels", default="low,middle,high", show_default=True)
@click.option("--out", type=click.Path(), default=f"{_PROMPT_WORK}/strata.csv", show_default=True)
@click.option("--scores", "scores_path", type=click.Path(), default=None, help="Per-image score cache [default: OUT's folder/clip_scores.csv].")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@_device_option
def prompts_strata(manifest_dir, clip_model, clip_config, clip_weights, k, percentiles, labels, out, scores_path,
                   batch_size, device) -> None:
    """CLIP-score the baseline (CFG) image of every pair and pick the prompts nearest the percentiles.

    A prompt's score is the mean over its seeds of 100 x cosine(image, prompt). Writes OUT with
    columns prompt_id, prompt, stratum, clip_score, seed (the prompt file `generate` reads for the
    human study; seed = the prompt's scored image) and OUT with .json (targets and settings).
    Scores are cached per image, prompt and model, so re-running with another k or new pairs in
    the manifest scores only what is new.
    """
    from sampler.strata import StrataError, read_pair_folder, run_strata

    pct = _number_list(percentiles, "--percentiles")
    labs = [v.strip() for v in labels.split(",") if v.strip()]
    if len(pct) != len(labs):
        raise click.BadParameter(f"{len(pct)} percentiles but {len(labs)} labels", param_hint="--labels")
    try:
        read_pair_folder(manifest_dir)  # before the CLIP checks: the folder is the first thing to get right
    except StrataError as e:
        raise click.ClickException(str(e)) from None
    spec = _clip_spec(clip_model, clip_weights, clip_config)
    loaded = []

    def scorer(paths, texts, label):
        from sampler.clip import clip_scores

        if not loaded:
            loaded.append(_load_clip(spec, device))
        return clip_scores(loaded[0], paths, texts, batch_size, desc=label)

    try:
        rows, targets, scored = run_strata(manifest_dir, spec.identity(), scorer, k, pct, labs, out, scores_path,
                                           chunk=max(batch_size * 8, 256))
    except (StrataError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if not scored:
        click.echo("all baseline images already scored in the cache")
    for lab, p in zip(labs, pct):
        click.echo(f"{lab:>8}: percentile {p:g} = CLIP score {targets[lab]:.3f}, {sum(r.stratum == lab for r in rows)} prompts")
    click.echo(f"wrote {out}")


@click.group()
def metrics() -> None:
    """Objective metrics (the paper's Tables 1 and 2) for the arms of pair sets."""


@metrics.command("table")
@click.option("--manifest", "manifests", multiple=True, required=True, type=click.Path(), help="Pair-set folder; repeat for several.")
@click.option("--reference", type=click.Path(), default=None, help="Folder of reference images for FID (e.g. the COCO val2014 images of the prompts).")
@click.option("--inception-weights", type=click.Path(), default=None, help="torch-fidelity InceptionV3 weights file (pt_inception-2015-12-05-6726825d.pth): FID and IS.")
@_clip_options(required=False)
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
def metrics_table(manifests, reference, inception_weights, clip_model, clip_config, clip_weights, pickscore_dir,
                  pickscore_processor, resize, fid_features, is_splits, tie_tolerance, reference_stats, batch_size,
                  device, out) -> None:
    """FID (vs --reference), CLIP score, Inception Score per arm and the PickScore win rate of treatment vs baseline.

    Each metric runs when its weights are given; FID also needs --reference. Images are checked
    against the manifest's SHA-256 first.
    """
    from pathlib import Path

    from sampler.manifest import ManifestError
    from sampler.metrics_table import TableError, TableRequest, compute_table
    from sampler.weights import WeightsError

    uses_clip = clip_weights or clip_config or (clip_model or "").startswith("local-dir:")
    spec = _clip_spec(clip_model, clip_weights, clip_config) if uses_clip else None
    req = TableRequest(
        manifests=tuple(manifests), out=out, reference=reference, inception_weights=inception_weights, clip=spec,
        pickscore_dir=pickscore_dir, pickscore_processor=pickscore_processor, resize=resize,
        fid_features=int(fid_features), is_splits=is_splits, tie_tolerance=tie_tolerance,
        reference_stats=reference_stats, batch_size=batch_size, device=device,
    )
    try:
        compute_table(req, echo=click.echo)
    except TableError as e:
        raise click.UsageError(str(e)) from None
    except (ManifestError, WeightsError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    outdir = Path(out)
    click.echo((outdir / "metrics.md").read_text())
    click.echo(f"wrote {outdir / 'metrics.csv'}, {outdir / 'metrics.json'}, {outdir / 'metrics.md'}")
