"""Coverage and width of the 95% intervals of the win rate, tie-as-half rate and mean score.

    python3 benchmarks/calibration.py [--reps 1000] [--draws 200] [--seed 0] [--only SUBSTRING]

A grid of simulated studies (every combination of): 15 or 120 participants; strong or zero
participant and prompt effects; 10 or 30 prompts per stratum (3 strata, 3 seeds per prompt, so 90
or 270 pairs; every participant rates 20 distinct pairs drawn at random); two generative models:

- `latent`: the model of `app/statistics/simulation.py`: latent = effect + stratum offset + participant
  bias + prompt effect + N(0, 1) noise, cut at +-0.5 and +-1.5 into the five answers;
- `logit`: a cumulative-logit model with skewed (centred exponential) prompt effects, logistic
  noise and per-participant answer thresholds (some people say "no preference" more often).

Strong effects: participant SD 1.0, prompt SD 0.7 (latent units); zero: both 0 (and equal
thresholds for everyone). The strata have fixed offsets -0.2, 0, +0.2, fixed by design. The true
values are population values (computed from 400,000 draws of the random effects and the exact
answer probabilities given them).

Methods: OLD = the crossed (pigeonhole) bootstrap percentile interval resampling all
participants and prompts, as before issue 9; BOOT-CORR = pigeonhole bootstrap within strata
with the double-counting correction (variance of the draws minus 2 V_PQ, t interval);
CRVE-SATT = two-way cluster-robust variance V_P + V_Q - V_PQ with Satterthwaite df (as if the
three parts were independent); NEW = the method of `app.statistics.robust`, what the report
uses: the same variance with t(min(P - 1, Q - strata)). Prints per scenario the coverage and mean
width of each method for each estimate; Monte Carlo SE of a coverage near 0.95 with 1000 reps
is 0.007.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import special
from scipy import stats as sps
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.statistics import bootstrap as boot  # noqa: E402
from app.statistics import robust  # noqa: E402

ESTIMATES = robust.ESTIMATES
STRATUM_OFFSETS = (-0.2, 0.0, 0.2)
SEEDS_PER_PROMPT = 3
TRIALS = 20
METHODS = ("OLD", "BOOT-CORR", "CRVE-SATT", "NEW")
T_SLIGHT, T_STRONG = 0.5, 1.5


@dataclass(frozen=True)
class Scenario:
    model: str  # "latent" or "logit"
    n_participants: int
    prompts_per_stratum: int
    strong: bool
    effect: float = 0.35

    @property
    def name(self) -> str:
        return (f"{self.model:6s} P={self.n_participants:<3d} Q/stratum={self.prompts_per_stratum:<2d} "
                f"effects={'strong' if self.strong else 'zero'}")

    @property
    def n_prompts(self) -> int:
        return self.prompts_per_stratum * len(STRATUM_OFFSETS)

    def sd(self) -> tuple[float, float, float]:
        """(participant SD, prompt SD, SD of log threshold scale)."""
        return (1.0, 0.7, 0.4) if self.strong else (0.0, 0.0, 0.0)


def _prompt_effects(s: Scenario, rng: np.random.Generator, n: int) -> np.ndarray:
    sd_q = s.sd()[1]
    if s.model == "logit":  # skewed: centred exponential
        return sd_q * (rng.exponential(1.0, n) - 1.0)
    return rng.normal(0.0, sd_q, n)


def answer_probabilities(s: Scenario, eta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """P(score = -2..+2) given the linear predictor eta and threshold scale: array (..., 5)."""
    cdf = special.expit if s.model == "logit" else sps.norm.cdf
    cuts = np.stack([-T_STRONG * scale, -T_SLIGHT * scale, T_SLIGHT * scale, T_STRONG * scale], axis=-1)
    below = cdf(cuts - eta[..., None])  # P(latent < cut)
    full = np.concatenate([np.zeros(eta.shape + (1,)), below, np.ones(eta.shape + (1,))], axis=-1)
    return np.diff(full, axis=-1)


def truth(s: Scenario, n: int = 400_000, seed: int = 12345) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    sd_p, _, sd_w = s.sd()
    h = rng.integers(0, len(STRATUM_OFFSETS), n)
    eta = s.effect + np.asarray(STRATUM_OFFSETS)[h] + rng.normal(0, sd_p, n) + _prompt_effects(s, rng, n)
    scale = np.exp(rng.normal(0, sd_w, n)) if s.model == "logit" else np.ones(n)
    pr = answer_probabilities(s, eta, scale).mean(axis=0)
    win, tie, loss = pr[3:].sum(), pr[2], pr[:2].sum()
    return {"win_rate": win / (win + loss), "tie_half_rate": win + 0.5 * tie,
            "mean_score": float(pr @ np.arange(-2, 3))}


def simulate(s: Scenario, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One study's preference votes: participant, prompt, stratum (int codes) and score."""
    sd_p, _, sd_w = s.sd()
    n_pairs = s.n_prompts * SEEDS_PER_PROMPT
    bias = rng.normal(0.0, sd_p, s.n_participants)
    scale = np.exp(rng.normal(0.0, sd_w, s.n_participants)) if s.model == "logit" else np.ones(s.n_participants)
    q_eff = _prompt_effects(s, rng, s.n_prompts)
    pairs = np.argsort(rng.random((s.n_participants, n_pairs)), axis=1)[:, :TRIALS]
    part = np.repeat(np.arange(s.n_participants), TRIALS)
    prompt = pairs.ravel() // SEEDS_PER_PROMPT
    stratum = prompt // s.prompts_per_stratum
    eta = s.effect + np.asarray(STRATUM_OFFSETS)[stratum] + bias[part] + q_eff[prompt]
    noise = rng.logistic(0, 1, part.size) if s.model == "logit" else rng.normal(0, 1, part.size)
    latent, sc = eta + noise, scale[part]
    score = ((latent > T_SLIGHT * sc).astype(int) + (latent > T_STRONG * sc) - (latent < -T_SLIGHT * sc)
             - (latent < -T_STRONG * sc))
    return {"participant": part, "prompt": prompt, "stratum": stratum, "score": score}


@functools.lru_cache(maxsize=None)
def t_crit(df: float) -> float:
    return float(sps.t.ppf(0.975, df))


def intervals(d: dict[str, np.ndarray], s: Scenario, draws: int, rng: np.random.Generator) -> dict:
    """{method: {estimate: (low, high)}} for one simulated study."""
    part, prompt, stratum, score = d["participant"], d["prompt"], d["stratum"], d["score"]
    out: dict[str, dict[str, tuple[float, float]]] = {m: {} for m in METHODS}
    wp, wq = boot.bootstrap_weights(s.n_participants, s.n_prompts, draws, int(rng.integers(2**31)))
    old = boot.crossed_bootstrap_estimates(part, prompt, score, wp, wq)
    # Stratified draws over the participants and prompts that have votes (what the report does).
    used_p, p_code = np.unique(part, return_inverse=True)
    used_q, q_code = np.unique(prompt, return_inverse=True)
    wp, wq = boot.bootstrap_weights(used_p.size, used_q.size, draws, int(rng.integers(2**31)),
                                    used_q // s.prompts_per_stratum)
    strat = boot.crossed_bootstrap_estimates(p_code, q_code, score, wp, wq)
    new = robust.robust_intervals(score, part, prompt, stratum)
    for name, (a, b) in robust.ratio_parts(score).items():
        out["OLD"][name] = boot.percentile_interval(old[name])
        out["NEW"][name] = (new[name]["ci_low"], new[name]["ci_high"])
        keep = b != 0
        theta, parts = robust.variance_parts(a[keep], b[keep], part[keep], prompt[keep], stratum[keep])
        (v_p, _), (v_q, _), (v_pq, _) = parts
        v = v_p + v_q - v_pq
        v = v if v > 0 else max(v_p, v_q)
        df_raw = v**2 / sum(x**2 / df for x, df in parts if df > 0)
        half = t_crit(round(max(df_raw, 1), 1)) * np.sqrt(v)
        out["CRVE-SATT"][name] = (theta - half, theta + half)
        v_b = np.nanvar(strat[name], ddof=1) - 2 * v_pq
        v_b = v_b if v_b > 0 else np.nanvar(strat[name], ddof=1)
        half = t_crit(round(new[name]["df"], 1)) * np.sqrt(v_b)
        out["BOOT-CORR"][name] = (theta - half, theta + half)
    return out


def run(s: Scenario, reps: int, draws: int, seed: int, bar: tqdm) -> dict:
    true = truth(s)
    rng = np.random.default_rng(seed)
    hits: dict = {}
    widths: dict = {}
    for _ in range(reps):
        for method, per in intervals(simulate(s, rng), s, draws, rng).items():
            for name, (lo, hi) in per.items():
                key = (method, name)
                ok = lo is not None and hi is not None
                hits.setdefault(key, []).append(ok and lo <= true[name] <= hi)
                widths.setdefault(key, []).append(hi - lo if ok else np.nan)
        bar.update(1)
    return {k: (float(np.mean(hits[k])), float(np.nanmean(widths[k]))) for k in hits}, true


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000, help="simulated studies per scenario")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap draws for OLD and BOOT-CORR")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="run only scenarios whose name contains this")
    args = ap.parse_args()
    grid = [Scenario(m, p, q, strong) for m, p, q, strong in
            itertools.product(("latent", "logit"), (15, 120), (10, 30), (True, False))]
    grid = [s for s in grid if args.only in s.name]
    methods = METHODS
    with tqdm(total=len(grid) * args.reps, desc="simulated studies", file=sys.stderr) as bar:
        results = [(s, *run(s, args.reps, args.draws, args.seed + i, bar)) for i, s in enumerate(grid)]
    print(f"coverage / mean width of nominal 95% intervals; {args.reps} studies per scenario, "
          f"{args.draws} bootstrap draws; MC SE of coverage ~{np.sqrt(0.95 * 0.05 / args.reps):.3f}")
    for name in ESTIMATES:
        print(f"\n{name}")
        print(f"{'scenario':48s} {'truth':>6s} " + " ".join(f"{m:>15s}" for m in methods))
        for s, res, true in results:
            cells = " ".join(f"{res[(m, name)][0]:6.3f} /{res[(m, name)][1]:6.3f} " for m in methods)
            print(f"{s.name:48s} {true[name]:6.3f} {cells}")
        worst = {m: (min(r[(m, name)][0] for _, r, _ in results), max(r[(m, name)][0] for _, r, _ in results))
                 for m in methods}
        print("range of coverage: " + ", ".join(f"{m} {lo:.3f}-{hi:.3f}" for m, (lo, hi) in worst.items()))


if __name__ == "__main__":
    main()
