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
