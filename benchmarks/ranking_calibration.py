"""Calibration of the K-arm ranking (app.statistics.ranking): interval coverage and family-wise error.

Simulated studies of K arms with crossed random effects per arm (participant x arm and prompt x
arm, so one participant's or one prompt's votes go together across comparisons), ties, strata, and
raters who give very different numbers of votes ("unbalanced": log-normal vote counts, the busiest
raters give 5-10x the median). Pairs (prompt x comparison) are handed out least-rated first, as
the app does, so every comparison reaches about the same number of votes and each participant sees
a mix of comparisons.

Latent vote: mu_t - mu_b + a[p, t] - a[p, b] + g[q, t] - g[q, b] + N(0, 1); |latent| <= tie is a
tie. The true population-averaged strengths (the joint fit's target) solve the population score
equations of the Bradley-Terry fit with each comparison's marginal decisive-vote win rate,
computed exactly from the normal model.

Printed per scenario, with Monte Carlo SEs:
- coverage of the 95% strength intervals (each arm vs the reference) and of every pairwise contrast
  (mean over contrasts; the lowest single contrast);
- under the global null (all arms equal): family-wise error of Holm over the study's comparisons
  for (a) contrasts of the joint fit (the method used) and (b) per-comparison cluster-robust win-rate
  t tests (`app.statistics.robust`), each followed by Holm.

Usage: PYTHONPATH=. python benchmarks/ranking_calibration.py [--reps 2000] [--seed 1] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm
from scipy.stats import t as t_dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.statistics.ranking import holm, pair_contrast, rank_arms, two_way_contrasts  # noqa: E402
from app.statistics.robust import ratio_parts, t_test, two_way  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    name: str
    mu: tuple[float, ...]  # latent arm effects, reference first
    comparisons: str = "all-pairs"  # or "vs-baseline"
    n_participants: int = 40
    n_prompts: int = 24
    n_strata: int = 3
    votes_per_participant: int = 24  # median
    unbalanced: bool = True
    sd_participant_arm: float = 0.35
    sd_prompt_arm: float = 0.3
    tie: float = 0.25

    @property
    def k(self) -> int:
        return len(self.mu)

    def pairs(self) -> list[tuple[int, int]]:
        """(treatment, baseline) arm indices."""
        if self.comparisons == "vs-baseline":
            return [(i, 0) for i in range(1, self.k)]
        return [(i, j) for i in range(1, self.k) for j in range(i)]


SCENARIOS = [
    Scenario("null K=4 all-pairs unbalanced", (0, 0, 0, 0)),
    Scenario("null K=4 vs-baseline unbalanced", (0, 0, 0, 0), comparisons="vs-baseline"),
    Scenario("null K=3 all-pairs unbalanced, 20 raters", (0, 0, 0), n_participants=20, n_prompts=18),
    Scenario("effects K=4 all-pairs unbalanced", (0, 0.25, 0.45, 0.1)),
    Scenario("effects K=4 vs-baseline unbalanced", (0, 0.3, 0.15, -0.1), comparisons="vs-baseline"),
    Scenario("effects K=3 all-pairs balanced", (0, 0.3, 0.1), unbalanced=False),
    Scenario("effects K=5 all-pairs unbalanced, 60 raters", (0, 0.2, 0.4, 0.1, -0.15), n_participants=60,
             n_prompts=30),
]


def true_strengths(sc: Scenario) -> np.ndarray:
    """Population target of the joint fit (reference arm first, = 0)."""
    sd = math.sqrt(1 + 2 * sc.sd_participant_arm**2 + 2 * sc.sd_prompt_arm**2)
    pairs = sc.pairs()
    mu = np.asarray(sc.mu, float)
    x = np.zeros((len(pairs), sc.k))
    for r, (t, b) in enumerate(pairs):
        x[r, t], x[r, b] = 1, -1
    x = x[:, 1:]
    delta = np.array([mu[t] - mu[b] for t, b in pairs])
    win, loss = norm.cdf((delta - sc.tie) / sd), norm.cdf((-delta - sc.tie) / sd)
    d, pi = win + loss, win / (win + loss)
    beta = np.zeros(sc.k - 1)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ beta)))
        grad = x.T @ (d * (pi - p))
        hess = x.T @ (x * (d * p * (1 - p))[:, None])
        beta = beta + np.linalg.solve(hess, grad)
    return np.concatenate([[0.0], beta])


def davidson_target(sc: Scenario) -> np.ndarray:
    """Population target of the Davidson fit (reference first, = 0): its population score equations."""
    sd = math.sqrt(1 + 2 * sc.sd_participant_arm**2 + 2 * sc.sd_prompt_arm**2)
    pairs = sc.pairs()
    mu = np.asarray(sc.mu, float)
    delta = np.array([mu[t] - mu[b] for t, b in pairs])
    pw, pl = norm.cdf((delta - sc.tie) / sd), norm.cdf((-delta - sc.tie) / sd)
    pt = 1 - pw - pl
    t_idx = np.array([t for t, _ in pairs])
    b_idx = np.array([b for _, b in pairs])
    theta, *_ = _davidson_newton(t_idx, b_idx, pw, pl, pt, sc.k)
    return np.concatenate([[0.0], theta[:-1]])


def _davidson_newton(t_idx, b_idx, yw, yl, yt, k, iters=40):
    """Davidson (1970) ties model, P(win) = e^(d/2) / (e^(d/2) + e^(-d/2) + nu), d = beta_t - beta_b:
    maximum likelihood by Newton on (beta without the reference, log nu); yw/yl/yt may be weights."""
    n = t_idx.size
    x = np.zeros((n, k))
    x[np.arange(n), t_idx] += 1
    x[np.arange(n), b_idx] -= 1
    x = x[:, 1:]
    theta = np.zeros(k)
    theta[-1] = math.log(max(yt.sum(), 1e-3) / max((yw + yl).sum(), 1e-3) * 2)
    for _ in range(iters):
        d, nu = x @ theta[:-1], math.exp(theta[-1])
        a, b = np.exp(d / 2), np.exp(-d / 2)
        den = a + b + nu
        pw, pl, pt = a / den, b / den, nu / den
        g_d = (yw - yl) / 2 - (pw - pl) / 2
        g_n = yt - pt * (yw + yl + yt)
        grad = np.concatenate([x.T @ g_d, [g_n.sum()]])
        tot = yw + yl + yt
        i_dd = tot * (pw + pl - (pw - pl) ** 2) / 4
        i_nn = tot * pt * (1 - pt)
        i_dn = -tot * pt * (pw - pl) / 2
        info = np.zeros((k, k))
        info[:-1, :-1] = x.T @ (x * i_dd[:, None])
        info[:-1, -1] = info[-1, :-1] = x.T @ i_dn
        info[-1, -1] = i_nn.sum()
        step = np.linalg.solve(info, grad)
        theta = theta + step
        if np.abs(step).max() < 1e-10:
            break
    return theta, x, info, (g_d, g_n, i_dd, i_dn, i_nn)


def davidson_contrasts(d: dict[str, np.ndarray], k: int, cmat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimates, V, df) of contrasts of the Davidson strengths with the same two-way CR2 core."""
    s = d["score"]
    yw, yl, yt = (s > 0).astype(float), (s < 0).astype(float), (s == 0).astype(float)
    theta, x, info, (g_d, g_n, i_dd, i_dn, i_nn) = _davidson_newton(d["t"], d["b"], yw, yl, yt, k)
    inv = np.linalg.inv(info)
    c_full = np.hstack([cmat, np.zeros((cmat.shape[0], 1))])
    lin = c_full @ inv  # (C, k)
    ld = lin[:, :-1] @ x.T  # (C, N): coefficient on the d-score
    ln = lin[:, -1:]  # (C, 1): coefficient on the nu-score
    psi = ld * g_d[None, :] + ln * g_n[None, :]
    u = ld**2 * i_dd[None, :] + 2 * ld * ln * i_dn[None, :] + ln**2 * i_nn[None, :]
    v, df = two_way_contrasts(psi, u, d["participant"], d["prompt"], d["stratum"])
    return cmat @ theta[:-1], v, df


def simulate(sc: Scenario, rng: np.random.Generator) -> dict[str, np.ndarray]:
    pairs = sc.pairs()
    n_comp = len(pairs)
    n_pairs = sc.n_prompts * n_comp
    m = sc.votes_per_participant
    if sc.unbalanced:
        counts = np.clip(np.round(m * np.exp(rng.normal(0, 0.8, sc.n_participants))), 2, n_pairs).astype(int)
    else:
        counts = np.full(sc.n_participants, m)
    order = rng.permutation(n_pairs)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    part = np.repeat(np.arange(sc.n_participants), counts)
    offset = np.arange(part.size) - np.repeat(start, counts)
    pair = order[(np.repeat(start, counts) + offset) % n_pairs]
    prompt = pair % sc.n_prompts
    comp = pair // sc.n_prompts
    t_idx = np.array([t for t, _ in pairs])[comp]
    b_idx = np.array([b for _, b in pairs])[comp]
    a = rng.normal(0, sc.sd_participant_arm, (sc.n_participants, sc.k))
    g = rng.normal(0, sc.sd_prompt_arm, (sc.n_prompts, sc.k))
    mu = np.asarray(sc.mu, float)
    latent = (mu[t_idx] - mu[b_idx] + a[part, t_idx] - a[part, b_idx] + g[prompt, t_idx] - g[prompt, b_idx]
              + rng.normal(0, 1, part.size))
    score = np.where(latent > sc.tie, 1, np.where(latent < -sc.tie, -1, 0))
    return {"participant": part, "prompt": prompt, "stratum": prompt % sc.n_strata, "comp": comp,
            "t": t_idx, "b": b_idx, "score": score}


def run(sc: Scenario, reps: int, seed: int, confidence: float = 0.95, davidson: bool = False) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    names = [f"a{i}" for i in range(sc.k)]
    truth = true_strengths(sc)
    pairs = sc.pairs()
    all_pairs = [(i, j) for i in range(sc.k) for j in range(i)]
    null = max(sc.mu) == min(sc.mu)
    cover_s = np.zeros(sc.k - 1)
    cover_p = np.zeros(len(all_pairs))
    fw_joint = fw_wr = done = 0
    dav_truth = davidson_target(sc)
    cmat = np.zeros((len(all_pairs), sc.k - 1))
    for r, (i, j) in enumerate(all_pairs):
        if i:
            cmat[r, i - 1] += 1
        if j:
            cmat[r, j - 1] -= 1
    dav_cover = np.zeros(len(all_pairs))
    width_bt = width_dav = 0.0
    for _ in range(reps):
        d = simulate(sc, rng)
        rk = rank_arms([names[i] for i in d["t"]], [names[i] for i in d["b"]], d["score"], d["participant"],
                       d["prompt"], d["stratum"], reference=names[0])
        if rk.reason:
            continue
        done += 1
        for i in range(1, sc.k):
            lo, hi = rk.strengths[names[i]].interval(confidence)
            cover_s[i - 1] += lo is not None and lo <= truth[i] <= hi
        for r, (i, j) in enumerate(all_pairs):
            lo, hi = pair_contrast(rk, names[i], names[j]).interval(confidence)
            cover_p[r] += lo is not None and lo <= truth[i] - truth[j] <= hi
            width_bt += (hi - lo) if lo is not None else 0.0
        if davidson:
            est, v, df = davidson_contrasts(d, sc.k, cmat)
            half = t_dist.ppf(0.5 + confidence / 2, df) * np.sqrt(v)
            target = cmat @ dav_truth[1:]
            dav_cover += np.abs(est - target) <= half
            width_dav += float((2 * half).sum())
        if null:
            p_joint = holm([pair_contrast(rk, names[t], names[b]).p_value for t, b in pairs])
            fw_joint += any(p is not None and p < 1 - confidence for p in p_joint)
            p_wr = []
            for c in range(len(pairs)):
                sel = d["comp"] == c
                a, b = ratio_parts(d["score"][sel])["win_rate"]
                est = two_way(a, b, d["participant"][sel], d["prompt"][sel], d["stratum"][sel])
                p_wr.append(t_test(est, 0.5)["p_value"])
            fw_wr += any(p is not None and p < 1 - confidence for p in holm(p_wr))
    n = max(done, 1)
    out = {"reps": done, "coverage_strength": cover_s.mean() / n, "coverage_strength_min": cover_s.min() / n,
           "coverage_pairs": cover_p.mean() / n, "coverage_pairs_min": cover_p.min() / n}
    if davidson:
        out["davidson_pairs"] = dav_cover.mean() / n
        out["davidson_pairs_min"] = dav_cover.min() / n
        out["width_ratio"] = width_dav / width_bt if width_bt else math.nan
    if null:
        out["fwer_joint"] = fw_joint / n
        out["fwer_winrate_holm"] = fw_wr / n
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--reps", type=int, default=2000, help="simulated studies per scenario (default 2000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="run only scenarios whose name contains one of these")
    ap.add_argument("--davidson", action="store_true",
                    help="also fit Davidson's ties model (the alternative the Bradley-Terry fit was chosen against): "
                         "pairwise coverage and mean interval width relative to Bradley-Terry")
    args = ap.parse_args(argv)
    if args.davidson:
        print("| scenario | studies | Bradley-Terry pairwise coverage (mean / lowest) | Davidson pairwise coverage "
              "(mean / lowest) | Davidson width / Bradley-Terry width |")
        print("|---|---|---|---|---|")
        for i, sc in enumerate(SCENARIOS):
            if args.only and not any(s in sc.name for s in args.only):
                continue
            r = run(sc, args.reps, args.seed + 1000 * i, davidson=True)
            print(f"| {sc.name} | {r['reps']} | {r['coverage_pairs']:.3f} / {r['coverage_pairs_min']:.3f} | "
                  f"{r['davidson_pairs']:.3f} / {r['davidson_pairs_min']:.3f} | {r['width_ratio']:.3f} |", flush=True)
        return
    se = lambda p, n: math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))  # noqa: E731
    print("| scenario | studies | strength coverage (mean / lowest arm) | pairwise coverage (mean / lowest pair) | "
          "FWER joint + Holm | FWER win-rate tests + Holm |")
    print("|---|---|---|---|---|---|")
    for i, sc in enumerate(SCENARIOS):
        if args.only and not any(s in sc.name for s in args.only):
            continue
        t0 = time.time()
        r = run(sc, args.reps, args.seed + 1000 * i)
        n = r["reps"]
        fw = lambda key: f"{r[key]:.3f} ± {se(r[key], n):.3f}" if key in r else "-"  # noqa: E731
        print(f"| {sc.name} | {n} | {r['coverage_strength']:.3f} / {r['coverage_strength_min']:.3f} "
              f"(± {se(r['coverage_strength_min'], n):.3f}) | {r['coverage_pairs']:.3f} / {r['coverage_pairs_min']:.3f} "
              f"(± {se(r['coverage_pairs_min'], n):.3f}) | {fw('fwer_joint')} | {fw('fwer_winrate_holm')} |",
              flush=True)
        print(f"<!-- {sc.name}: {time.time() - t0:.0f} s -->", file=sys.stderr)


if __name__ == "__main__":
    main()
