"""Cost of SFG against CFG, measured side by side in one run on the same pipeline.

(1) one SFG denoising step (UNet on [cond, perturbed] + guidance + scheduler step) against one
    stock CFG step (UNet on [uncond, cond], stock processors).      target: ratio <= 1.05
(2) one CFG/SFG pair from the shared-prefix generator (`SFGPipeline.pairs`) against two
    independent stock CFG images (`StableDiffusionPipeline.__call__`), same T, size, seed.
    target: ratio <= (2T - t_s) / (2T) + 0.03  (0.78 at t_s = T/2)

Timings alternate A/B and report medians, so drift (thermal, other load) hits both sides.

    python benchmarks/bench_sfg.py                      # tiny random-weight model (CPU)
    python benchmarks/bench_sfg.py --full-arch          # SD 1.x layer shapes, random weights, 128 px
    python benchmarks/bench_sfg.py --model DIR --device cuda --dtype float16   # real weights
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampler.attention import SFGControl  # noqa: E402
from sampler.pipeline import SFGPipeline, sfg_attention  # noqa: E402

PROMPT = "a cute white maltese dog next to a cat on a sofa"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def alternate(fns, repeats, device, warmup=1):
    """Median seconds of each function, calls interleaved with a rotating order."""
    for _ in range(warmup):
        for f in fns:
            f()
    times = [[] for _ in fns]
    for i in range(repeats):
        for j in range(len(fns)):
            k = (i + j) % len(fns)
            times[k].append(timed(fns[k], device))
    return [statistics.median(t) for t in times]


@torch.no_grad()
def bench_step(sp: SFGPipeline, batch: int, height: int, width: int, steps: int, repeats: int):
    pipe, device = sp.pipe, sp.device
    prompts = [PROMPT] * batch
    cond, uncond = pipe.encode_prompt(prompts, device, 1, True)
    mask = sp.candidate_mask(prompts).to(device)
    pipe.scheduler.set_timesteps(steps, device=device)
    t = pipe.scheduler.timesteps[steps // 2]
    g = torch.Generator("cpu").manual_seed(0)
    lat = torch.randn(batch, pipe.unet.config.in_channels, height // 8, width // 8, generator=g).to(device, cond.dtype)
    emb_cfg, emb_sfg = torch.cat([uncond, cond]), torch.cat([cond, cond])
    control = SFGControl(scale=10.0)
    unet = pipe.unet

    # A fresh scheduler per call keeps the multistep history the same every time; made
    # before timing so that neither side pays for it.
    base = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    base.set_timesteps(steps, device=device)
    pool = [copy.deepcopy(base) for _ in range(4 * (repeats + 1))]

    def step(emb, guide):
        sched = pool.pop()
        x = sched.scale_model_input(torch.cat([lat, lat]), t)
        eps = unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
        first, second = eps.chunk(2)
        sched.step(guide(first, second), t, lat, return_dict=False)

    def cfg_step():
        control.perturbed_from, control.candidate_mask = None, None
        step(emb_cfg, lambda u, c: u + 7.5 * (c - u))

    def sfg_step():
        control.perturbed_from, control.candidate_mask = batch, mask
        step(emb_sfg, lambda c, bar: bar + 3.0 * (c - bar))

    (t_cfg,) = alternate([cfg_step], repeats, device)  # processors as loaded (stock)
    with sfg_attention(unet, control):  # installed once, as for a whole generation
        t_cfg_inst, t_sfg = alternate([cfg_step, sfg_step], repeats, device)
    return t_cfg, t_cfg_inst, t_sfg


@torch.no_grad()
def bench_pair(sp: SFGPipeline, batch: int, height: int, width: int, steps: int, t_s: int, repeats: int):
    prompts = [PROMPT] * batch
    kw = dict(num_inference_steps=steps, height=height, width=width)

    def gens():
        return [torch.Generator("cpu").manual_seed(i) for i in range(batch)]

    def pair():
        sp.pairs(prompts, generator=gens(), sfg_start_step=t_s, output_type="np", **kw)

    def two_cfg():
        sp.pipe(prompts, generator=gens(), output_type="np", **kw)
        sp.pipe(prompts, generator=gens(), output_type="np", **kw)

    return alternate([pair, two_cfg], repeats, sp.device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, help="diffusers SD 1.x folder (real weights)")
    src.add_argument("--full-arch", action="store_true", help="full SD 1.x architecture, random weights")
    ap.add_argument("--size", type=int, default=None, help="pixels (default: tiny 64, full-arch 128, model 512)")
    ap.add_argument("--steps", type=int, default=None, help="T (default: tiny 20, full-arch 10, model 50)")
    ap.add_argument("--sfg-start-step", type=int, default=None, help="t_s (default T // 2)")
    ap.add_argument("--batch", type=int, default=1, help="prompts per batch")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default: 20 steps / 3 pairs)")
    ap.add_argument("--pair-repeats", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--only", choices=["step", "pair"], default=None, help="run one of the two measurements")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    if args.model:
        sp = SFGPipeline.from_pretrained(args.model, device=device, torch_dtype=dtype)
        label, size, steps = str(args.model), args.size or 512, args.steps or 50
    elif args.full_arch:
        from sampler.tiny import build_full_sd_pipeline

        t0 = time.perf_counter()
        pipe = build_full_sd_pipeline().to(device, dtype)
        print(f"built full SD 1.x architecture in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        pipe.set_progress_bar_config(disable=True)
        sp, label, size, steps = SFGPipeline(pipe), "full SD 1.x architecture (random weights)", args.size or 128, args.steps or 10
    else:
        from sampler.tiny import ensure_tiny_model

        model = ensure_tiny_model(Path(tempfile.gettempdir()) / "sfgeval-bench-tiny")
        sp = SFGPipeline.from_pretrained(model, device=device, torch_dtype=dtype)
        label, size, steps = "tiny random-weight SD 1.x", args.size or 64, args.steps or 20
    sp.pipe.set_progress_bar_config(disable=True)
    t_s = steps // 2 if args.sfg_start_step is None else args.sfg_start_step
    repeats = args.repeats or 20
    pair_repeats = args.pair_repeats or 3

    t_cfg = t_cfg_inst = t_sfg = t_pair = t_two = float("nan")
    if args.only in (None, "step"):
        t_cfg, t_cfg_inst, t_sfg = bench_step(sp, args.batch, size, size, steps, repeats)
    if args.only in (None, "pair"):
        t_pair, t_two = bench_pair(sp, args.batch, size, size, steps, t_s, pair_repeats)
    step_ratio, pair_ratio = t_sfg / t_cfg_inst, t_pair / t_two
    pair_target = (2 * steps - t_s) / (2 * steps) + 0.03
    result = {
        "model": label,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "size": size,
        "batch": args.batch,
        "steps": steps,
        "sfg_start_step": t_s,
        "threads": torch.get_num_threads(),
        "cfg_step_s_stock_processors": t_cfg,
        "cfg_step_s": t_cfg_inst,
        "sfg_step_s": t_sfg,
        "step_ratio": step_ratio,
        "step_target": 1.05,
        "pair_s": t_pair,
        "two_cfg_images_s": t_two,
        "pair_ratio": pair_ratio,
        "pair_target": pair_target,
    }
    print(f"{label} on {result['device']} ({args.dtype}), {size}x{size}, batch {args.batch}, T={steps}, t_s={t_s}")
    if args.only in (None, "step"):
        print(f"  (1) CFG step {t_cfg_inst * 1e3:8.1f} ms (stock processors {t_cfg * 1e3:.1f} ms)")
        print(f"      SFG step {t_sfg * 1e3:8.1f} ms   ratio {step_ratio:.3f}  (target <= 1.05: {'ok' if step_ratio <= 1.05 else 'MISSED'})")
    if args.only in (None, "pair"):
        print(f"  (2) pair     {t_pair:8.3f} s    two CFG images {t_two:.3f} s")
        print(f"      ratio {pair_ratio:.3f}  (target <= {pair_target:.3f}: {'ok' if pair_ratio <= pair_target else 'MISSED'})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
