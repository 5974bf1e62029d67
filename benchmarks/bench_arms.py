"""Cost of a K-arm image set (`generate --arms`) against K separate pipeline runs.

For one prompt and seed, (A) `sampler.arm_set.generate_set` makes every arm's image in one call
(shared CFG steps run once) and (B) each arm is made on its own: cfg by the stock
StableDiffusionPipeline / StableDiffusionXLPipeline, pag by the diffusers PAG pipeline, sfg by
`SFGPipeline(arm="sfg")`, apg and cfg-zero-star by `generate_set` with that arm alone. Reported:
UNet forward calls, UNet evaluations per image (batch rows / images: the manifest's nfe) and the
median wall time of A and of the sum of B, timed alternately.

    python benchmarks/bench_arms.py                         # tiny SD 1.x model, CPU
    python benchmarks/bench_arms.py --sdxl --steps 10       # tiny SDXL model
    python benchmarks/bench_arms.py --arms arms.yaml --model DIR --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "a cute white maltese dog next to a cat on a sofa"
DEFAULT_ARMS = [
    {"name": "cfg", "method": "cfg"},
    {"name": "sfg", "method": "sfg"},
    {"name": "pag", "method": "pag"},
    {"name": "apg", "method": "apg"},
    {"name": "cfg-zero-star", "method": "cfg-zero-star"},
]


class UNetMeter:
    """Counts UNet forwards and evaluations (rows per image) while attached."""

    def __init__(self, unet):
        self.calls = self.rows = 0
        unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls += 1
        sample = args[0] if args else kwargs["sample"]
        self.rows += sample.shape[0]


def separate_runs(sfg, arms, generator, steps_kw):
    """One callable per arm that makes its image on its own (diffusers' pipeline where one exists)."""
    import diffusers

    from sampler.arm_set import generate_set

    pipe = sfg.pipe
    xl = "XL" in type(pipe).__name__
    runs = {}
    for arm in arms:
        p = arm.params
        kw = dict(num_inference_steps=arm.steps, output_type="latent")
        if arm.method == "cfg":
            runs[arm.name] = lambda kw=kw, p=p: pipe(PROMPT, generator=generator(), guidance_scale=p["guidance_scale"], **kw)
        elif arm.method == "pag":
            cls = diffusers.StableDiffusionXLPAGPipeline if xl else diffusers.StableDiffusionPAGPipeline
            pag = cls(**pipe.components, pag_applied_layers=p["pag_applied_layers"])
            pag.set_progress_bar_config(disable=True)
            runs[arm.name] = lambda kw=kw, p=p, pag=pag: pag(PROMPT, generator=generator(), guidance_scale=p["guidance_scale"],
                                                             pag_scale=p["pag_scale"], **kw)
        elif arm.method == "sfg":
            sfg_kw = {k: p[k] for k in ("guidance_scale", "sfg_scale", "sfg_guidance_scale", "sfg_start_step",
                                        "token_select", "include_eos")}
            runs[arm.name] = lambda kw=kw, s=sfg_kw: sfg(PROMPT, arm="sfg", generator=generator(), **s, **kw)
        else:
            runs[arm.name] = lambda a=arm: generate_set(sfg, PROMPT, [a], generator=generator(), output_type="latent")
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--arms", help="arms file (YAML/JSON) [default: cfg, sfg, pag, apg, cfg-zero-star]")
    ap.add_argument("--model", help="diffusers SD 1.x or SDXL folder [default: the tiny random-weight model]")
    ap.add_argument("--sdxl", action="store_true", help="with the tiny model: its SDXL variant")
    ap.add_argument("--steps", type=int, default=10, help="default steps of the arms (T)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (medians reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    import torch

    from sampler.arm_set import generate_set
    from sampler.arms import parse_arms, read_arms, resolve_matching
    from sampler.guidance import nfe_alone
    from sampler.params import SamplerParams
    from sampler.pipeline import SFGPipeline
    from sampler.tiny import ensure_tiny_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = Path(args.model) if args.model else ensure_tiny_model(
        Path(tempfile.gettempdir()) / ("sfgeval-bench-tiny-sdxl" if args.sdxl else "sfgeval-bench-tiny-sd"), sdxl=args.sdxl)
    sfg = SFGPipeline.from_pretrained(model, device=args.device)
    defaults = SamplerParams(num_inference_steps=args.steps)
    arms = read_arms(args.arms, defaults) if args.arms else parse_arms(DEFAULT_ARMS, defaults)
    arms = resolve_matching(arms, nfe_alone)

    def generator():
        return torch.Generator("cpu").manual_seed(0)

    meter = UNetMeter(sfg.pipe.unet)
    together = lambda: generate_set(sfg, PROMPT, arms, generator=generator(), output_type="latent")  # noqa: E731
    runs = separate_runs(sfg, arms, generator, {})

    meter.calls = meter.rows = 0
    out = together()
    set_calls, set_rows = meter.calls, meter.rows
    sep = {}
    for name, run in runs.items():
        meter.calls = meter.rows = 0
        run()
        sep[name] = (meter.calls, meter.rows)

    times_set, times_sep = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        together()
        times_set.append(time.perf_counter() - t)
        t = time.perf_counter()
        for run in runs.values():
            run()
        times_sep.append(time.perf_counter() - t)

    result = {
        "model": "tiny-sdxl" if (args.sdxl and not args.model) else ("tiny-sd1" if not args.model else str(model)),
        "device": args.device, "steps": args.steps, "arms": [a.name for a in arms],
        "set": {"unet_calls": set_calls, "evaluations": set_rows, "nfe": out.nfe,
                "seconds": statistics.median(times_set)},
        "separate": {"unet_calls": sum(c for c, _ in sep.values()), "evaluations": sum(r for _, r in sep.values()),
                     "per_arm_evaluations": {k: r for k, (_, r) in sep.items()},
                     "seconds": statistics.median(times_sep)},
    }
    result["evaluations_ratio"] = round(result["set"]["evaluations"] / result["separate"]["evaluations"], 3)
    result["time_ratio"] = round(result["set"]["seconds"] / result["separate"]["seconds"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        s, p = result["set"], result["separate"]
        print(f"{len(arms)} arms ({', '.join(result['arms'])}), T={args.steps}, {result['model']} on {args.device}")
        print(f"  one set      : {s['unet_calls']:4d} UNet calls, {s['evaluations']:4d} evaluations, {s['seconds']:.3f} s")
        print(f"  separate runs: {p['unet_calls']:4d} UNet calls, {p['evaluations']:4d} evaluations, {p['seconds']:.3f} s")
        print(f"  ratio        : evaluations {result['evaluations_ratio']}, wall time {result['time_ratio']}")
        print(f"  nfe per image: {s['nfe']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
