"""Arms of an image set: what `sfgeval generate --arms ARMS.yaml` reads, checks and hashes.

An arms file (YAML or JSON) is a list of arms, or a mapping with the list under `arms`::

    - {name: cfg, method: cfg, params: {guidance_scale: 7.5}}
    - {name: sfg, method: sfg, params: {sfg_scale: 10}}
    - {name: pag, method: pag, params: {pag_scale: 3.0, pag_applied_layers: [mid]}}
    - {name: cfg-matched, method: cfg, params: {match_nfe_of: pag}}

The first arm is the baseline unless one says `baseline: true`. Every method's parameters have
defaults (`METHODS`); `num_inference_steps` and `guidance_scale` default to the run's `--steps`
and `--guidance-scale`. Unknown methods, unknown parameters, bad values and repeated names are
refused with an `ArmsError` that names the arm, before any model loads.

Compute matching: `match_nfe_of: OTHER` raises this arm's `num_inference_steps` to the smallest T
whose network evaluations (alone, `nfe_alone`) reach OTHER's (`resolve_matching`).

Pure Python (no torch): the settings hash of an arm is what resume and `--reuse` compare.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sampler.params import TOKEN_SELECT, SamplerParams

ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_STEPS, _SCALE = "num_inference_steps", "guidance_scale"

# method -> its parameters and their defaults (None for steps/scale: the run's --steps /
# --guidance-scale). Defaults of pag/apg/cfg-zero-star are diffusers' own.
METHODS: dict[str, dict[str, Any]] = {
    "cfg": {_STEPS: None, _SCALE: None},
    "sfg": {
        _STEPS: None, _SCALE: None,
        "sfg_scale": SamplerParams.sfg_scale,
        "sfg_guidance_scale": SamplerParams.sfg_guidance_scale,
        "sfg_start_step": None,  # None: T // 2 (resolved, so the hash holds the number)
        "token_select": SamplerParams.token_select,
        "include_eos": SamplerParams.include_eos,
    },
    "pag": {_STEPS: None, _SCALE: None, "pag_scale": 3.0, "pag_adaptive_scale": 0.0, "pag_applied_layers": ["mid"]},
    "apg": {
        _STEPS: None, _SCALE: None,
        "adaptive_projected_guidance_momentum": None,
        "adaptive_projected_guidance_rescale": 15.0,
        "eta": 1.0,
        "guidance_rescale": 0.0,
        "use_original_formulation": False,
        "start": 0.0,
        "stop": 1.0,
    },
    "cfg-zero-star": {
        _STEPS: None, _SCALE: None,
        "zero_init_steps": 1,
        "guidance_rescale": 0.0,
        "use_original_formulation": False,
        "start": 0.0,
        "stop": 1.0,
    },
}
MATCH = "match_nfe_of"


class ArmsError(ValueError):
    """An arms file or arm that cannot be used; the message names the file and the arm."""


@dataclass(frozen=True)
class ArmSpec:
    """One arm: a name (manifest key, never shown to participants), a method (`METHODS`) and its
    complete parameters (defaults filled in, `sfg_start_step` resolved)."""

    name: str
    method: str
    params: dict[str, Any] = field(hash=False)
    baseline: bool = False

    @property
    def steps(self) -> int:
        return int(self.params[_STEPS])

    @property
    def match_nfe_of(self) -> str | None:
        return self.params.get(MATCH)

    def settings(self) -> dict[str, Any]:
        """What makes this arm's images: method and parameters (the name is only a label)."""
        return {"method": self.method, "params": self.params}

    def settings_hash(self, shared: Mapping[str, Any]) -> str:
        """sha256 of the arm's settings and the run's shared ones (size, scheduler, dtype,
        model fingerprint): equal hashes make equal images from equal seeds."""
        blob = json.dumps({"arm": self.settings(), "shared": shared}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def classic_arms(settings: SamplerParams) -> list[ArmSpec]:
    """The two arms of a run without --arms: cfg (baseline) and sfg, from `settings`."""
    sfg = {k: getattr(settings, k) for k in METHODS["sfg"]}
    raw = [{"name": "cfg", "method": "cfg"}, {"name": "sfg", "method": "sfg", "params": sfg}]
    return parse_arms(raw, settings)


def read_arms(path: str | Path, defaults: SamplerParams = SamplerParams()) -> list[ArmSpec]:
    """The arms of a YAML or JSON file (ArmsError naming the file when anything is wrong)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ArmsError(f"--arms {path}: cannot read the file ({e})") from None
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as e:  # yaml and json raise several types; say where
        raise ArmsError(f"--arms {path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {e}") from None
    try:
        return parse_arms(raw, defaults)
    except ArmsError as e:
        raise ArmsError(f"--arms {path}: {e}") from None


def parse_arms(raw: Any, defaults: SamplerParams = SamplerParams()) -> list[ArmSpec]:
    """Checked arms from a decoded arms file: a list of {name, method, params?, baseline?}."""
    if isinstance(raw, dict) and set(raw) == {"arms"}:
        raw = raw["arms"]
    if not isinstance(raw, list) or not raw:
        raise ArmsError("expected a non-empty list of arms ({name, method, params})")
    arms, seen = [], set()
    for i, item in enumerate(raw, 1):
        where = f"arm {i}"
        if not isinstance(item, dict):
            raise ArmsError(f"{where}: expected a mapping with name, method and params, got {type(item).__name__}")
        unknown = set(item) - {"name", "method", "params", "baseline"}
        if unknown:
            raise ArmsError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))} (allowed: name, method, params, baseline)")
        name = item.get("name")
        if not isinstance(name, str) or not ARM_NAME.match(name):
            raise ArmsError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-' (got {name!r})")
        where = f"arm {name!r}"
        if name in seen:
            raise ArmsError(f"{where}: the name is used twice")
        seen.add(name)
        method = item.get("method")
        if method not in METHODS:
            raise ArmsError(f"{where}: unknown method {method!r} (one of {', '.join(METHODS)})")
        baseline = item.get("baseline", False)
        if not isinstance(baseline, bool):
            raise ArmsError(f"{where}: baseline must be true or false")
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise ArmsError(f"{where}: params must be a mapping")
        arms.append(ArmSpec(name, method, _check_params(where, method, params, defaults), baseline))
    if len(arms) < 2:
        raise ArmsError("a set needs at least two arms (a baseline and one to compare with it)")
    flagged = [a.name for a in arms if a.baseline]
    if len(flagged) > 1:
        raise ArmsError(f"only one arm may say baseline: true (got {', '.join(flagged)})")
    if not flagged:
        arms[0] = replace(arms[0], baseline=True)
    names = {a.name for a in arms}
    for a in arms:
        target = a.match_nfe_of
        if target is None:
            continue
        if target not in names or target == a.name:
            raise ArmsError(f"arm {a.name!r}: match_nfe_of names {target!r}, which is not another arm of this file")
        if next(b for b in arms if b.name == target).match_nfe_of is not None:
            raise ArmsError(f"arm {a.name!r}: match_nfe_of {target!r}, which is itself compute-matched (no chains)")
    return arms


def _check_params(where: str, method: str, params: dict, defaults: SamplerParams) -> dict[str, Any]:
    allowed = METHODS[method]
    unknown = set(params) - set(allowed) - {MATCH}
    if unknown:
        raise ArmsError(f"{where}: unknown parameter(s) for {method}: {', '.join(sorted(map(str, unknown)))} "
                        f"(allowed: {', '.join([*allowed, MATCH])})")
    out = {**allowed, **params}
    out[_STEPS] = defaults.num_inference_steps if out[_STEPS] is None else out[_STEPS]
    out[_SCALE] = defaults.guidance_scale if out[_SCALE] is None else out[_SCALE]
    try:
        _check_values(method, out)
    except (TypeError, ValueError) as e:
        raise ArmsError(f"{where}: {e}") from None
    if method == "sfg":
        out["sfg_start_step"] = SamplerParams(num_inference_steps=out[_STEPS], guidance_scale=out[_SCALE],
                                              sfg_start_step=out["sfg_start_step"]).start_step()
    if MATCH in out and not isinstance(out[MATCH], str):
        raise ArmsError(f"{where}: match_nfe_of must name another arm")
    return out


def _number(params: dict, key: str, low: float | None = None, integer: bool = False) -> None:
    v = params[key]
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        raise ValueError(f"{key} must be {'an integer' if integer else 'a number'} (got {v!r})")
    if low is not None and v < low:
        raise ValueError(f"{key} must be >= {low} (got {v!r})")


def _check_values(method: str, p: dict) -> None:
    _number(p, _STEPS, 1, integer=True)
    _number(p, _SCALE)
    if method in ("cfg", "sfg") and p[_SCALE] <= 1.0:
        raise ValueError("guidance_scale must be > 1 (CFG's unconditional pass is what the method uses)")
    if method == "sfg":
        _number(p, "sfg_scale")
        _number(p, "sfg_guidance_scale")
        if p["sfg_start_step"] is not None:
            _number(p, "sfg_start_step", 0, integer=True)
        if p["token_select"] not in TOKEN_SELECT:
            raise ValueError(f"token_select must be one of {TOKEN_SELECT} (got {p['token_select']!r})")
        if not isinstance(p["include_eos"], bool):
            raise ValueError("include_eos must be true or false")
    if method == "pag":
        _number(p, "pag_scale", 0)
        _number(p, "pag_adaptive_scale", 0)
        layers = p["pag_applied_layers"]
        if isinstance(layers, str):
            p["pag_applied_layers"] = layers = [layers]
        if not isinstance(layers, list) or not layers or not all(isinstance(x, str) and x for x in layers):
            raise ValueError("pag_applied_layers must be a layer name pattern or a list of them (e.g. [mid])")
    if method in ("apg", "cfg-zero-star"):
        _number(p, "guidance_rescale", 0)
        _number(p, "start", 0)
        _number(p, "stop", 0)
        if not 0 <= p["start"] < 1 or not p["start"] <= p["stop"] <= 1:
            raise ValueError("start and stop are fractions of the schedule, 0 <= start < 1, start <= stop <= 1")
        if not isinstance(p["use_original_formulation"], bool):
            raise ValueError("use_original_formulation must be true or false")
    if method == "apg":
        if p["adaptive_projected_guidance_momentum"] is not None:
            _number(p, "adaptive_projected_guidance_momentum")
        _number(p, "adaptive_projected_guidance_rescale", 0)
        _number(p, "eta")
    if method == "cfg-zero-star":
        _number(p, "zero_init_steps", 0, integer=True)


def resolve_matching(arms: list[ArmSpec], nfe_alone: Callable[[ArmSpec], int]) -> list[ArmSpec]:
    """Arms with every `match_nfe_of` resolved: the matched arm's `num_inference_steps` becomes
    the smallest T >= its own whose evaluations alone reach the target arm's,
    nfe_alone(arm with T) >= nfe_alone(target) (for CFG matching PAG-with-CFG: 2T' >= 3T, so
    T' = ceil(3T / 2)). The original step count is kept as `base_num_inference_steps`."""
    by_name = {a.name: a for a in arms}
    out = []
    for a in arms:
        if a.match_nfe_of is None or "base_num_inference_steps" in a.params:
            out.append(a)
            continue
        want = nfe_alone(by_name[a.match_nfe_of])
        steps = a.steps
        while nfe_alone(_with_steps(a, steps)) < want:
            steps += 1
            if steps > 100 * max(want, 1):  # an arm whose cost does not grow with T
                raise ArmsError(f"arm {a.name!r}: cannot reach {want} evaluations by adding steps")
        out.append(_with_steps(a, steps, base=a.steps))
    return out


def _with_steps(arm: ArmSpec, steps: int, base: int | None = None) -> ArmSpec:
    params = {**arm.params, _STEPS: steps}
    if base is not None:
        params["base_num_inference_steps"] = base
    return replace(arm, params=params)
