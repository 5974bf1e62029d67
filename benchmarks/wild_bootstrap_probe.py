"""Probe: the win-rate test's level five ways: t(df), the wild cluster bootstrap-t, the larger of
the two (the report's shown test), a restricted (null-imposed) t statistic and a sign-flip df.

    PYTHONPATH=. python3 benchmarks/wild_bootstrap_probe.py [--scenario NAME] [--reps 1500] [--draws 999]
                                                           [--seed 301] [--at-truth] [--set FIELD=VALUE ...]

Issue 23's last miss: with heavy raters (5 of 40 give 60% of the votes) the t(df) win-rate test
rejected about 0.054 of null studies (docs/statistics.md). This probe simulates studies of one
scenario of `benchmarks/calibration.py` (fields changed with `--set`, e.g. `--set sd_prompt=0`)
and tests win rate = 0.5 (or, with --at-truth, the scenario's true value: one minus the coverage
an inverted test would have) on the same studies with:

- the report's test (`robust.two_way` + `robust.t_test`: CR2 two-way variance, the t statistic's df,
  arcsine scale);
- the wild cluster bootstrap-t (`app.statistics.wild.p_value`, skipped with `--draws 0`): the
  null imposed, one weight per participant, the report's two-way V recomputed in every draw,
  p = (1 + #{|t*| >= |t|}) / (draws + 1), and the test the report shows
  (`significance.shown_test`: the larger of that p-value and t(df)'s; t(df) alone from df 50);
- a restricted t: the participant part of V from residual totals about theta0 instead of the
  estimate (no CR2 factor: under the null their expectation is the working variance), the prompt
  parts as the report's; its 95% point from the working model (normal participant totals with
  variances n + rho n^2, the prompt part normal with a chi-square(df_Q) estimate), 4,000 draws;
- the report's test with a sign-flip participant df: the participant part's df from Rademacher
  signs on the participant residual totals about theta0 (4,000 draws) instead of normal totals.

It also prints the report's mean V over the variance of the estimates across studies, and with
`--ranking` the level of the ranking's joint-fit (Bradley-Terry) contrast of the two arms, the
p-value a K-arm study's `p_holm` is built from. It was the
probe that chose the shown test's method (docs/statistics.md): heavy raters 0.035 / 0.044 with a
first loop version of the bootstrap (Rademacher, 199 draws) against the t df's 0.055 / 0.059
(seeds 301 / 302, 1,500 studies); Zipf logit at the truth 0.040 against 0.057 (seed 303, 1,000).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import special, stats
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration  # the scenarios and their simulator

from app.statistics import robust, wild
from app.statistics.ranking import pair_contrast, rank_arms
from app.statistics.significance import Clusters, shown_test

RESTRICTED_DRAWS = 4000
_RESTRICTED = np.random.default_rng(20261203)
_Z = _RESTRICTED.standard_normal((RESTRICTED_DRAWS, 1))
_U = _RESTRICTED.random(RESTRICTED_DRAWS)


@dataclasses.dataclass(frozen=True)
class AtNull:
    """The report's parts of one study and its participants' residual totals about theta0, computed
    once for both candidates. n, w, d: each participant's decisive votes, working variance and CR2
    weight, as the report's participant part has them (`Part.t_inputs`)."""

    theta: float
    p_p: robust.Part
    p_q: robust.Part
    p_pq: robust.Part
    total: float
    r0: np.ndarray
    n: np.ndarray
    w: np.ndarray
    d: np.ndarray


def at_null(a, b, participant, prompt, stratum, theta0: float) -> AtNull:
    theta, p_p, p_q, p_pq, _, _ = robust._parts(a, b, participant, prompt, stratum, robust.ADJUST)
    codes, g = robust._dense(participant)  # the participant part's cluster order
    n, w, d = p_p.t_inputs[:3]
    return AtNull(theta, p_p, p_q, p_pq, float(b.sum()), np.bincount(codes, a - theta0 * b, g), n, w, d)


def restricted_reject(x: AtNull, theta0: float, zs: np.ndarray) -> bool:
    """The restricted t test of theta = theta0 at 0.05 (see the module docstring). `zs`: standard
    normal draws, (RESTRICTED_DRAWS, clusters) at least."""
    ss = float(x.r0 @ x.r0)
    k = float(x.p_q.v[0] - x.p_pq.v[0])
    if ss + k <= 0:  # as the report: the larger part alone
        k = max(float(x.p_q.v[0]) - ss, 0.0)
    t0 = (x.theta - theta0) * x.total / math.sqrt(ss + k)
    u = zs[:, :x.r0.size] * np.sqrt(x.w)
    kp = max(k, 0.0)
    df_q = float(x.p_q.df[0]) if np.isfinite(x.p_q.df[0]) and x.p_q.df[0] > 0 else 1e6
    chi = stats.chi2.ppf(_U, df_q) / df_q
    t_star = (u.sum(1) + math.sqrt(kp) * _Z[:, 0]) / np.sqrt((u * u).sum(1) + kp * chi)
    return abs(t0) > np.quantile(np.abs(t_star), 0.95)


def wild_df_reject(x: AtNull, theta0: float, signs: np.ndarray) -> bool:
    """The report's test with the participant part's df from sign flips instead of normal totals:
    the t df whose 97.5% point is the 95% point of |sum u| / sqrt(CR2 V_P(u)) for u_g = +-|r_g|
    (r_g: participant residual totals about theta0), the rest as the report (df rule, scale)."""
    h = x.n / x.n.sum()
    u = signs[:, :x.r0.size] * np.abs(x.r0)
    total = u.sum(1)
    centred = u - h * total[:, None]
    c = np.quantile(np.abs(total) / np.sqrt((x.d * centred * centred).sum(1)), 0.95)
    df_p = np.array([special.stdtridf(0.975, c) if c > 1.96 else 1e6])
    p_p, p_q, p_pq = x.p_p, x.p_q, x.p_pq
    v, df = robust.combine(p_p.v, p_q.v, p_pq.v, df_p, p_q.df, robust.DF_RULE, e=(p_p.e, p_q.e, p_pq.e))
    lo, hi = robust.bounds(x.theta, math.sqrt(v[0]) / x.total, df[0], "win_rate")
    return not lo <= theta0 <= hi


def _override(s, pairs: list[str]):
    """`s` with FIELD=VALUE changes (numbers parsed as the field's type)."""
    changes = {}
    for item in pairs:
        key, _, value = item.partition("=")
        if key not in s.__dataclass_fields__:
            raise SystemExit(f"--set: no scenario field {key!r}")
        changes[key] = type(getattr(s, key))(value)
    return dataclasses.replace(s, **changes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="heavy raters latent P=40 null", help="a scenario name of calibration.grid()")
    ap.add_argument("--reps", type=int, default=1500)
    ap.add_argument("--draws", type=int, default=wild.DRAWS)
    ap.add_argument("--seed", type=int, default=301)
    ap.add_argument("--at-truth", action="store_true", help="test the scenario's true win rate instead of 0.5")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="change a scenario field, e.g. sd_prompt=0 (repeatable)")
    ap.add_argument("--ranking", action="store_true",
                    help="also the level of the ranking's joint-fit contrast (two arms; null scenarios)")
    args = ap.parse_args()
    names = {s.name: s for s in calibration.grid()}
    if args.scenario not in names:
        ap.error(f"unknown scenario {args.scenario!r}; one of: {', '.join(names)}")
    s = _override(names[args.scenario], args.set)
    theta0 = calibration.truth(s)[0]["win_rate"] if args.at_truth else 0.5
    rng = np.random.default_rng(args.seed)
    started = time.time()
    zs = np.random.default_rng(args.seed + 1).standard_normal((RESTRICTED_DRAWS, s.n_participants))
    signs = np.where(np.random.default_rng(args.seed + 2).random((RESTRICTED_DRAWS, s.n_participants)) < 0.5, -1.0, 1.0)
    reject_t, reject_wild, reject_max, reject_r, reject_wdf, reject_bt, thetas, vs = [], [], [], [], [], [], [], []
    for _ in tqdm(range(args.reps), desc=s.name, unit="study"):
        d = calibration.simulate(s, rng)
        a, b = robust.ratio_parts(d["score"])["win_rate"]
        keep = b != 0
        cols = (a[keep], b[keep], d["participant"][keep], d["prompt"][keep], d["stratum"][keep])
        est = robust.two_way(*cols)
        p_t = robust.t_test(est, theta0)["p_value"]
        reject_t.append(p_t is not None and p_t <= 0.05)
        thetas.append(est.theta)
        vs.append(est.v)
        if args.ranking and not args.at_truth:  # the joint fit's contrast of the two arms (beta = 0 at the null)
            n = d["score"].size
            rk = rank_arms(["T"] * n, ["B"] * n, d["score"], d["participant"], d["prompt"], d["stratum"])
            p_bt = pair_contrast(rk, "T", "B").p_value
            reject_bt.append(p_bt is not None and p_bt <= 0.05)
        x = at_null(*cols, theta0)
        reject_r.append(restricted_reject(x, theta0, zs))
        reject_wdf.append(wild_df_reject(x, theta0, signs))
        if args.draws:
            shown = shown_test(est, theta0, "win_rate", cols[0], cols[1], Clusters(*cols[2:]), draws=args.draws)
            reject_max.append(shown["p_value"] is not None and shown["p_value"] <= 0.05)
            p_w = shown["p_value_parts"]["wild_bootstrap"]
            if p_w is None:  # not run by the report's test (df >= 50): the bootstrap alone, for the comparison
                p_w = wild.p_value(*cols, est, theta0, "win_rate", draws=args.draws)
            reject_wild.append(p_w is not None and p_w <= 0.05)
    se = math.sqrt(0.05 * 0.95 / args.reps)
    changed = f" ({', '.join(args.set)})" if args.set else ""
    print(f"{s.name}{changed}: {args.reps} studies, theta0 {theta0:.4f}, {args.draws} draws, seed {args.seed}")
    print(f"  t df test rejects            {np.mean(reject_t):.4f}   (MC SE near 0.05: {se:.4f})")
    if args.draws:
        print(f"  wild cluster bootstrap-t     {np.mean(reject_wild):.4f}")
        print(f"  the larger of the two        {np.mean(reject_max):.4f}   (the report's shown test)")
    if reject_bt:
        print(f"  ranking: joint-fit contrast  {np.mean(reject_bt):.4f}   (Bradley-Terry, two arms; its p_value)")
    print(f"  restricted t                 {np.mean(reject_r):.4f}")
    print(f"  sign-flip participant df     {np.mean(reject_wdf):.4f}")
    ok = np.isfinite(np.array(vs, dtype=float))
    print(f"  report's mean V / Var(theta) {np.mean(np.array(vs, float)[ok]) / np.var(np.array(thetas, float)[ok], ddof=1):.3f}"
          f"   ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
