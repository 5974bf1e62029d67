"""Coverage and width of the 95% intervals, balanced and unbalanced crowds, and the level of every test.

    python3 benchmarks/calibration.py [--reps 1000] [--seed 0] [--only SUBSTRING] [--explore]

Scenario seeds are seed + 1000 x the scenario's index in the full grid, so an `--only` run draws
the same studies as the full grid. `--explore` also prints the candidates issue 23 measured beside
the report's (docs/statistics.md, "What still misses"): MINW-SYM / MINW-ASIN (the report's df rule
with a symmetric / arcsine-scale interval), PSAT-ASIN / PSAT-SYM (df raised to the working
Satterthwaite df where the participant part limits), CR2-SATT (Satterthwaite combination of the
estimated parts), and the heavy-rater null level of PSAT-ASIN's tests.

Each scenario simulates `--reps` studies (fresh participants and prompts each time) and analyses
every study with the methods of `app.statistics.robust`:

- OLD: CR1 cluster weights G / (G - 1), df = min(participants - 1, prompts - strata), symmetric
  t interval (the method before issue 23);
- CR2-MIN: bias-reduced CR2 weights under the random-effects working model, df = min of the two
  parts' Bell-McCaffrey df, symmetric t interval (the report before this change);
- REPORT: CR2 weights, df = min(df_P, df_Q, df_W) (`robust.DF_RULE`), t interval on the
  arcsine-square-root scale (`robust.bounds`, `robust.SCALE`): what the report uses.

Generative models: `latent` (normal participant, prompt and noise terms, cut at +-0.5 and +-1.5
into five answers, as `app/simulation.py`) and `logit` (cumulative logit with skewed, centred
exponential, prompt effects and per-participant answer thresholds). Prompt effects may be
`reversing`: a fifth of the prompts strongly favour the baseline (-1.4 against +0.35 for the
rest, plus N(0, 0.3)). Vote counts per participant are balanced, `heavy` (5 participants give
60% of the votes) or `zipf` (the k-th participant gives about 1/k of the top one's votes). Strata
have fixed offsets (-0.2, 0, +0.2). Every participant rates distinct pairs (prompt x seed) drawn
at random. True values are population values (400,000 draws of the random effects with the exact
answer probabilities given them), per stratum too.

Printed per scenario: coverage (with its Monte Carlo SE) of each method for the win rate; for
CR2-MIN and REPORT also the tie-as-half rate and mean score, and the mean width over the
true-spread width (2 x 1.96 x the SD of the estimate across the simulated studies); per-stratum
intervals (the report's: prompt variance pooled across strata, scaled by each stratum's vote
variance; each stratum's own prompt variance; pooled with df = min and a symmetric interval) with
their coverage and width ratio. Null scenarios (true win rate 0.5, mean score 0) also give the
share of studies each test rejects at 0.05: the tests the report shows (`significance.cluster_tests`:
the larger of the t(df) and wild cluster bootstrap p-values of the interval's t statistic), each of
those two references alone, and the tests the report no longer shows (sign test and Wilcoxon on
votes, Wilcoxon and t test on prompt means).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import special
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.statistics import robust  # noqa: E402
from app.statistics.significance import Clusters, cluster_tests, independent_vote_tests  # noqa: E402

ESTIMATES = robust.ESTIMATES
OFFSETS = (-0.2, 0.0, 0.2)
T_SLIGHT, T_STRONG = 0.5, 1.5
# method: (cluster weights, df rule, interval scale); scale "report" = the report's per estimate (robust.SCALE)
METHODS = {"OLD": ("cr1", "classic", "symmetric"), "CR2-MIN": ("cr2", "min", "symmetric"),
           "BM-ASIN": ("cr2", "min-working", "report", "bm"), "REPORT": ("cr2", robust.DF_RULE, "report")}
CHOSEN = "REPORT"
# --explore: the candidates issue 23 measured beside the report's (docs/statistics.md)
CANDIDATES = {"HALF-T": ("cr2", "min-working", "report", "half"),
              "MINW-SYM": ("cr2", "min-working", "symmetric"), "MINW-ASIN": ("cr2", "min-working", "asin"),
              "PSAT-ASIN": ("cr2", "participant-satterthwaite", "asin"),
              "PSAT-SYM": ("cr2", "participant-satterthwaite", "symmetric"), "CR2-SATT": ("cr2", "satterthwaite", "symmetric")}
EXPLORE = False
STRATUM_KINDS = ("pooled", "own", "pooled-min-sym")


def _interval(theta: float, v: float, df: float, name: str, scale: str) -> tuple[float, float]:
    if not (v > 0 and df > 0 and math.isfinite(v) and math.isfinite(df)):
        return math.nan, math.nan
    if scale == "symmetric":  # unclipped, as the methods before issue 23
        half = sps.t.ppf(0.975, df) * math.sqrt(v)
        return theta - half, theta + half
    lo, hi = robust.bounds(theta, math.sqrt(v), df, name, scale=None if scale == "report" else scale)
    return float(lo), float(hi)


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str = "latent"  # latent | logit
    n_participants: int = 40
    votes: str = "balanced"  # balanced | heavy | zipf
    trials: int = 20  # votes per participant (balanced), per light rater (heavy), of the top rater (zipf)
    n_strata: int = 3
    prompts_per_stratum: int = 10
    seeds: int = 3
    sd_participant: float = 0.8
    sd_prompt: float = 0.5
    prompts: str = "normal"  # normal | reversing
    effect: float = 0.35
    offsets: tuple[float, ...] = field(default=OFFSETS)

    @property
    def n_prompts(self) -> int:
        return self.n_strata * self.prompts_per_stratum

    @property
    def strata_offsets(self) -> np.ndarray:
        if self.n_strata == 1:
            return np.zeros(1)
        return np.linspace(self.offsets[0], self.offsets[-1], self.n_strata)

    def counts(self) -> np.ndarray:
        p = self.n_participants
        if self.votes == "balanced":
            c = np.full(p, self.trials)
        elif self.votes == "heavy":  # 5 participants give 60% of the votes
            heavy = int(round(1.5 * (p - 5) * self.trials / 5))
            c = np.concatenate([np.full(5, heavy), np.full(p - 5, self.trials)])
        elif self.votes == "zipf":
            c = np.maximum(np.round(self.trials / np.arange(1, p + 1)), 3).astype(int)
        else:
            raise ValueError(self.votes)
        n_pairs = self.n_prompts * self.seeds
        if c.max() > n_pairs:
            raise ValueError(f"{self.name}: a participant would rate {c.max()} of {n_pairs} pairs")
        return c

    @property
    def null(self) -> bool:
        return self.effect == 0 and self.prompts == "normal" and self.model == "latent"


def prompt_effects(s: Scenario, rng: np.random.Generator, n: int) -> np.ndarray:
    if s.prompts == "reversing":
        return np.where(rng.random(n) < 0.2, -1.4, 0.35) + rng.normal(0, 0.3, n)
    if s.model == "logit":  # skewed: centred exponential
        return s.sd_prompt * (rng.exponential(1.0, n) - 1.0)
    return rng.normal(0.0, s.sd_prompt, n)


def answer_probabilities(s: Scenario, eta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    cdf = special.expit if s.model == "logit" else sps.norm.cdf
    cuts = np.stack([-T_STRONG * scale, -T_SLIGHT * scale, T_SLIGHT * scale, T_STRONG * scale], axis=-1)
    below = cdf(cuts - eta[..., None])
    full = np.concatenate([np.zeros(eta.shape + (1,)), below, np.ones(eta.shape + (1,))], axis=-1)
    return np.diff(full, axis=-1)


def _values(pr: np.ndarray) -> dict[str, float]:
    win, tie, loss = pr[3:].sum(), pr[2], pr[:2].sum()
    return {"win_rate": win / (win + loss), "tie_half_rate": win + 0.5 * tie, "mean_score": float(pr @ np.arange(-2, 3))}


def truth(s: Scenario, n: int = 400_000, seed: int = 12345) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Population values overall and per stratum."""
    rng = np.random.default_rng(seed)
    per = []
    probs = []
    for off in s.strata_offsets:
        eta = s.effect + off + rng.normal(0, s.sd_participant, n // s.n_strata) + prompt_effects(s, rng, n // s.n_strata)
        scale = np.exp(rng.normal(0, 0.4, eta.size)) if s.model == "logit" else np.ones(eta.size)
        pr = answer_probabilities(s, eta, scale).mean(axis=0)
        probs.append(pr)
        per.append(_values(pr))
    return _values(np.mean(probs, axis=0)), per


def simulate(s: Scenario, rng: np.random.Generator) -> dict[str, np.ndarray]:
    counts = s.counts()
    n_pairs = s.n_prompts * s.seeds
    bias = rng.normal(0.0, s.sd_participant, s.n_participants)
    scale = np.exp(rng.normal(0.0, 0.4, s.n_participants)) if s.model == "logit" else np.ones(s.n_participants)
    q_eff = prompt_effects(s, rng, s.n_prompts)
    order = np.argsort(rng.random((s.n_participants, n_pairs)), axis=1)
    pair = order[np.arange(n_pairs)[None, :] < counts[:, None]]
    part = np.repeat(np.arange(s.n_participants), counts)
    prompt = pair // s.seeds
    stratum = prompt // s.prompts_per_stratum
    eta = s.effect + s.strata_offsets[stratum] + bias[part] + q_eff[prompt]
    noise = rng.logistic(0, 1, part.size) if s.model == "logit" else rng.normal(0, 1, part.size)
    latent, sc = eta + noise, scale[part]
    score = ((latent > T_SLIGHT * sc).astype(int) + (latent > T_STRONG * sc) - (latent < -T_SLIGHT * sc)
             - (latent < -T_STRONG * sc))
    return {"participant": part, "prompt": prompt, "stratum": stratum, "score": score}


def analyse(d: dict[str, np.ndarray], s: Scenario) -> dict:
    """{(method, estimate): (theta, lo, hi, df)}, per-stratum {(kind, h, estimate): ...}, test p-values."""
    part, prompt, stratum, score = d["participant"], d["prompt"], d["stratum"], d["score"]
    out: dict = {}
    methods = {**METHODS, **(CANDIDATES if EXPLORE else {})}
    for name, (a, b) in robust.ratio_parts(score).items():
        keep = b != 0
        aa, bb, pp, qq, ss = a[keep], b[keep], part[keep], prompt[keep], stratum[keep]
        for adjust in ("cr1", "cr2"):
            theta, p_p, p_q, p_pq, _, _ = robust._parts(aa, bb, pp, qq, ss, adjust)
            b2 = bb.sum() ** 2
            n_p, n_q = np.unique(pp).size, np.unique(qq).size
            for method, (adj, rule, scale, *src) in methods.items():
                if adj != adjust or (method == "OLD" and name != "win_rate"):
                    continue
                source = src[0] if src else ("t" if method == CHOSEN else "bm")
                v, df = robust.combine(p_p.v / b2, p_q.v / b2, p_pq.v / b2, p_p.df_of(source), p_q.df_of(source), rule,
                                       classic=(np.array([n_p - 1.0]), np.array([max(n_q - s.n_strata, 1.0)])),
                                       e=(p_p.e, p_q.e, p_pq.e))
                lo, hi = _interval(theta, v[0], df[0], name, scale)
                out[(method, name)] = (theta, lo, hi, df[0])
        if s.n_strata > 1:
            pool = robust.prompt_pool(aa, bb, pp, qq, ss)
            for h in range(s.n_strata):
                m = ss == h
                kinds = [("pooled", pool, robust.DF_RULE, "report", robust.DF_SOURCE),
                         ("pooled-min-sym", pool, "min", "symmetric", "bm")]
                if EXPLORE:
                    kinds.append(("own", None, robust.DF_RULE, "report", robust.DF_SOURCE))
                for kind, pl, rule, scale, source in kinds:
                    est = robust.two_way(aa[m], bb[m], pp[m], qq[m], ss[m], pool=pl, df_rule=rule,
                                         pool_stratum=str(h) if pl is not None else None, df_source=source)
                    th = math.nan if est.theta is None else est.theta
                    lo, hi = _interval(th, est.v or math.nan, est.df or math.nan, name, scale)
                    out[(kind, h, name)] = (th, lo, hi)
    if s.null:
        est_w = robust.two_way(*robust.ratio_parts(score)["win_rate"], part, prompt, stratum)
        est_m = robust.two_way(*robust.ratio_parts(score)["mean_score"], part, prompt, stratum)
        shown = cluster_tests(est_w, est_m, score, Clusters(part, prompt, stratum))
        out["p"] = {"win-rate test (report)": shown["win_rate"]["p_value"],
                    "mean-score test (report)": shown["mean_score"]["p_value"]}
        for name in ("win_rate", "mean_score"):
            short = "win-rate" if name == "win_rate" else "mean-score"
            out["p"][f"{short} t(df) alone (not shown)"] = shown[name]["p_value_parts"]["t_df"]
            out["p"][f"{short} wild bootstrap alone (not shown)"] = shown[name]["p_value_parts"]["wild_bootstrap"]
        for label, (a, b), null, name in (("win-rate t test, BM-ASIN (before)", robust.ratio_parts(score)["win_rate"], 0.5,
                                           "win_rate"),
                                          ("mean-score t test, BM-ASIN (before)", robust.ratio_parts(score)["mean_score"],
                                           0.0, "mean_score")):
            est = robust.two_way(a, b, part, prompt, stratum, df_source="bm")
            out["p"][label] = robust.t_test(est, null, name)["p_value"]
            if EXPLORE:
                est = robust.two_way(a, b, part, prompt, stratum, df_source="half")
                out["p"][label.replace("BM-ASIN (before)", "HALF-T candidate")] = robust.t_test(est, null, name)["p_value"]
        if EXPLORE:  # the rejected candidate that raises the df (participant-satterthwaite), same scale
            for label, (a, b), null, name in (("win-rate t test, PSAT-ASIN candidate", robust.ratio_parts(score)["win_rate"],
                                               0.5, "win_rate"),
                                              ("mean-score t test, PSAT-ASIN candidate",
                                               robust.ratio_parts(score)["mean_score"], 0.0, "mean_score")):
                est = robust.two_way(a, b, part, prompt, stratum, df_rule="participant-satterthwaite", df_source="bm")
                out["p"][label] = robust.t_test(est, null, name)["p_value"]
        old = independent_vote_tests(score, prompt)
        out["p"].update({f"{k} (not shown)": v for k, v in old.items()})
    return out


def run(s: Scenario, reps: int, seed: int) -> dict:
    true, true_h = truth(s)
    rng = np.random.default_rng(seed)
    res = [analyse(simulate(s, rng), s) for _ in range(reps)]
    summary: dict = {"truth": true, "rows": {}, "strata": {}, "tests": {}}
    for key in res[0]:
        if key == "p":
            continue
        vals = np.array([r[key][:3] for r in res], dtype=float)
        if key[0] in STRATUM_KINDS:
            t = true_h[key[1]][key[2]]
        else:
            t = true[key[1]]
        ok = np.isfinite(vals[:, 1])
        cover = ok & (vals[:, 1] <= t) & (t <= vals[:, 2])
        spread = np.nanstd(vals[:, 0], ddof=1)
        width = np.nanmean(vals[ok, 2] - vals[ok, 1]) if ok.any() else math.nan
        row = {"coverage": float(cover.mean()), "mc_se": float(math.sqrt(max(cover.mean() * (1 - cover.mean()), 1e-12)
                                                                          / reps)),
               "width_ratio": float(width / (2 * 1.959964 * spread)) if spread > 0 else math.nan,
               "no_interval": float(1 - ok.mean())}
        if key[0] in STRATUM_KINDS:
            summary["strata"].setdefault((key[0], key[2]), []).append(row)
        else:
            row["df"] = float(np.nanmean([r[key][3] for r in res]))
            summary["rows"][key] = row
    if "p" in res[0]:
        for name in res[0]["p"]:
            p = np.array([np.nan if r["p"][name] is None else r["p"][name] for r in res], dtype=float)
            rej = float(np.mean(np.nan_to_num(p, nan=1.0) <= 0.05))
            summary["tests"][name] = (rej, math.sqrt(max(rej * (1 - rej), 1e-12) / reps))
    return summary


def grid() -> list[Scenario]:
    S = Scenario
    return [
        S("balanced latent P=15 Q/s=10", n_participants=15),
        S("balanced latent P=120 Q/s=30", n_participants=120, prompts_per_stratum=30),
        S("balanced latent P=5 Q/s=10 (40 votes each)", n_participants=5, trials=40, seeds=4),
        S("balanced latent P=200 Q/s=30 (10 votes each)", n_participants=200, prompts_per_stratum=30, trials=10),
        S("balanced logit P=15 Q/s=10 zero effects", model="logit", n_participants=15, sd_participant=0,
          sd_prompt=0),
        S("balanced logit P=120 Q/s=10", model="logit", n_participants=120),
        S("heavy raters latent P=40 (5 give 60%)", votes="heavy", trials=10, seeds=4),
        S("heavy raters logit P=40 (5 give 60%)", model="logit", votes="heavy", trials=10, seeds=4),
        S("heavy raters latent P=40 null", votes="heavy", trials=10, seeds=4, effect=0.0),
        S("zipf latent P=12 over 12 prompts", n_participants=12, votes="zipf", trials=60, n_strata=1,
          prompts_per_stratum=12, seeds=6),
        S("zipf logit P=12 over 12 prompts", model="logit", n_participants=12, votes="zipf", trials=60, n_strata=1,
          prompts_per_stratum=12, seeds=6),
        S("reversing prompts latent P=40 Q/s=10", prompts="reversing"),
        S("reversing prompts logit P=40 Q/s=10", model="logit", prompts="reversing"),
        S("3 prompts/stratum latent P=40", prompts_per_stratum=3, seeds=10),
        S("3 prompts/stratum logit P=120", model="logit", n_participants=120, prompts_per_stratum=3, seeds=10),
        S("30 prompts/stratum heavy logit P=40", model="logit", votes="heavy", trials=10, prompts_per_stratum=30),
    ]


def _band(rows: list[dict]) -> str:
    return (f"{min(x['coverage'] for x in rows):.3f}-{max(x['coverage'] for x in rows):.3f} / "
            f"{max(x['width_ratio'] for x in rows):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000, help="simulated studies per scenario")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="run only scenarios whose name contains this")
    ap.add_argument("--explore", action="store_true",
                    help="also print the candidates: each of the report's two changes alone, and CR2-SATT")
    args = ap.parse_args()
    global EXPLORE
    EXPLORE = args.explore
    # Scenario seeds: seed + 1000 x the scenario's index in the full grid, so an --only run draws the
    # same studies as the full grid.
    scenarios = [(i, s) for i, s in enumerate(grid()) if args.only in s.name]
    started = time.perf_counter()
    results = []
    for i, s in scenarios:
        t0 = time.perf_counter()
        results.append((s, run(s, args.reps, args.seed + 1000 * i)))
        print(f"  {s.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    mc = math.sqrt(0.95 * 0.05 / args.reps)
    print(f"{args.reps} simulated studies per scenario (seed {args.seed}); Monte Carlo SE of a coverage near 0.95: "
          f"{mc:.4f}; width ratio = mean width / (2 x 1.96 x SD of the estimate across studies)\n")
    print("Win rate, nominal 95%: coverage (MC SE) of each method, and the report's width ratio and mean df\n")
    print("| scenario | truth | " + " | ".join(METHODS) + " | REPORT width ratio | REPORT mean df |")
    print("|---|---|" + "---|" * (len(METHODS) + 2))
    for s, r in results:
        cells = " | ".join(f"{r['rows'][(m, 'win_rate')]['coverage']:.3f} ({r['rows'][(m, 'win_rate')]['mc_se']:.3f})"
                           for m in METHODS)
        c = r["rows"][(CHOSEN, "win_rate")]
        print(f"| {s.name} | {r['truth']['win_rate']:.3f} | {cells} | {c['width_ratio']:.2f} | {c['df']:.1f} |")
    for m in METHODS:
        cov = [r["rows"][(m, "win_rate")]["coverage"] for _, r in results]
        print(f"\n{m}: win-rate coverage {min(cov):.3f}-{max(cov):.3f}", end="")
    shown = [m for m in (*METHODS, *(CANDIDATES if EXPLORE else {})) if m != "OLD"]
    for m in shown:
        print(f"\n\n{m}{' (the report)' if m == CHOSEN else ''}, all three estimates: coverage (MC SE) / width ratio\n")
        print("| scenario | " + " | ".join(ESTIMATES) + " |")
        print("|---|" + "---|" * len(ESTIMATES))
        for s, r in results:
            cells = " | ".join(f"{r['rows'][(m, n)]['coverage']:.3f} ({r['rows'][(m, n)]['mc_se']:.3f}) / "
                               f"{r['rows'][(m, n)]['width_ratio']:.2f}" for n in ESTIMATES)
            print(f"| {s.name} | {cells} |")
        allcov = [r["rows"][(m, n)]["coverage"] for _, r in results for n in ESTIMATES]
        print(f"\n{m} coverage over every scenario and estimate: {min(allcov):.3f}-{max(allcov):.3f}", end="")
    print("\n\nPer-stratum intervals: coverage of the worst-best stratum / width ratio of the widest stratum;")
    print("report = prompt variance pooled across strata (scaled by each stratum's vote variance), the report's df rule")
    print("and arcsine scale; own = each stratum's own prompt variance; previous = pooled, df = min, symmetric\n")
    print("| scenario | " + " | ".join(f"{n} report | {n} own | {n} previous" for n in ESTIMATES) + " |")
    print("|---|" + "---|---|---|" * len(ESTIMATES))
    worst: dict[str, list] = {}
    for s, r in results:
        if not r["strata"]:
            continue
        cells = []
        for n in ESTIMATES:
            for kind in ("pooled", "own", "pooled-min-sym"):
                rows = r["strata"].get((kind, n))
                if rows is None:  # "own" only with --explore
                    cells.append("-")
                    continue
                worst.setdefault(kind, []).extend(rows)
                cells.append(_band(rows))
        print(f"| {s.name} | " + " | ".join(cells) + " |")
    for kind, rows in worst.items():
        print(f"\nper-stratum {kind}: coverage {_band(rows)} (widest)", end="")
    print()
    tests = [(s, r) for s, r in results if r["tests"]]
    if tests:
        print("\nNull scenarios: share of studies rejecting at 0.05 (MC SE)\n")
        for s, r in tests:
            print(f"{s.name}:")
            for name, (rej, se) in r["tests"].items():
                print(f"  {name:45s} {rej:.3f} ({se:.3f})")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
