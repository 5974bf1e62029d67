"""What every pair of one folder shares: the run signature written in each manifest line.

A folder holds pairs of one signature only (steps, guidance parameters, size, scheduler and its
config, dtype, model fingerprint). `run_signature` builds it from the settings and the model
folder's config files (no weights load), so `check_resume` refuses a folder made with other
settings in seconds, and `--reuse` copies only pairs made exactly the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampler.manifest import PairRecord
from sampler.model_folder import GenerateError, scheduler_facts
from sampler.settings import GenerationSettings


def _plain_json(value: Any) -> Any:
    """Strict-JSON values (a manifest is read by other tools): tuples to lists, non-finite floats
    (e.g. DPMSolver's lambda_min_clipped = -inf) and other objects to strings."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class RunSignature:
    """What every pair of one folder shares: the parameters recorded in each manifest line."""

    shared: dict[str, Any]  # record["params"]
    baseline: dict[str, Any]  # record["baseline"]["params"]
    treatment: dict[str, Any]  # record["treatment"]["params"]
    model: dict[str, Any]  # record["model"]

    def key(self) -> dict[str, Any]:
        """The parts that must not change between runs writing into one folder."""
        return {"params": self.shared, "baseline": self.baseline, "treatment": self.treatment,
                "model": self.model["fingerprint"]}

    @staticmethod
    def key_of(record: PairRecord) -> dict[str, Any]:
        rec = record.model_dump(by_alias=True)
        return {"params": rec["params"], "baseline": rec["baseline"]["params"],
                "treatment": rec["treatment"]["params"], "model": rec["model"]["fingerprint"]}


def run_signature(settings: GenerationSettings, model_dir: Path, dtype, identity: dict[str, Any], pipeline=None) -> RunSignature:
    """The parameters every pair of this run records (no model weights are loaded for it)."""
    scheduler, scheduler_config, native = scheduler_facts(model_dir, pipeline)
    height, width = settings.height or native, settings.width or native
    if height % 8 or width % 8:
        raise GenerateError(f"height and width must be multiples of 8 (got {height}x{width})")
    t_s = settings.start_step()
    shared = {
        "num_inference_steps": settings.num_inference_steps,
        "guidance_scale": settings.guidance_scale,
        "shared_prefix_steps": t_s,
        "height": height,
        "width": width,
        "scheduler": scheduler,
        "scheduler_config": {k: v for k, v in scheduler_config.items() if not k.startswith("_")},
        "dtype": str(dtype).removeprefix("torch."),
        "noise": "torch.Generator('cpu').manual_seed(seed), one per pair",
    }
    treatment = {
        "guidance": "sfg",
        "guidance_scale": settings.guidance_scale,
        "sfg_scale": settings.sfg_scale,
        "sfg_guidance_scale": settings.sfg_guidance_scale,
        "sfg_start_step": t_s,
        "token_select": settings.token_select,
        "include_eos": settings.include_eos,
    }
    return RunSignature(_plain_json(shared), {"guidance": "cfg", "guidance_scale": settings.guidance_scale}, treatment, identity)


def check_resume(out_dir: Path, done: dict[str, PairRecord], signature: RunSignature) -> None:
    """GenerateError unless the pairs already in `out_dir` were made with `signature`."""
    mine = signature.key()
    for rec in done.values():
        theirs = RunSignature.key_of(rec)
        if theirs != mine:
            diff = sorted(k for k in mine if mine[k] != theirs[k])
            raise GenerateError(
                f"{out_dir} already holds pairs made with different {', '.join(diff)}; "
                "use another --out folder (nothing was changed)"
            )
        return
