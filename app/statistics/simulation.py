"""Seeded simulated studies: rating rows with a known true preference (a library for users).

Not used on any request path: import it from Python to check the statistics' calibration for a
planned design, to benchmark them, or to try the report before a study runs, e.g.
`rows = simulate_rows(SimulatedStudy(n_participants=60, effect=0.3), seed=1)`.

Used to check that the statistics are calibrated (tests/test_calibration.py), to benchmark them
(benchmarks/bench_statistics.py) and to exercise the report without a live study.

Model (one latent value per vote, in units of the answer thresholds):
    latent = effect + participant_bias[p] + prompt_effect[q] + noise,   all normal, independent.
The un-flipped score is +2 / +1 / 0 / -1 / -2 as latent passes the thresholds (+-t_slight,
+-t_strong). The side the treatment is shown on is a fair coin per trial; the answer as shown
(`choice`) is derived from score and side. Rows use the export column names of `app.reporting.export`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class SimulatedStudy:
    """Parameters of a simulated study; see the module docstring for the model."""

    n_participants: int = 40
    n_prompts: int = 30
    trials_per_participant: int = 20
    comparisons: tuple[str, ...] = ("cfg-vs-sfg",)
    strata: tuple[str, ...] = ("low", "middle", "high")
    effect: float = 0.4
    sd_participant: float = 0.5
    sd_prompt: float = 0.3
    sd_noise: float = 1.0
    t_slight: float = 0.5
    t_strong: float = 1.5
    gold_per_participant: int = 0
    gold_pass_probability: float = 0.95
    repeats_per_participant: int = 0
    median_response_ms: float = 3500.0

    def _tail(self, cut: float, above: bool) -> float:
        """P(latent > cut) or P(latent < cut) over the population (latent ~ N(effect, total SD))."""
        sd = math.sqrt(self.sd_participant**2 + self.sd_prompt**2 + self.sd_noise**2)
        return float(norm.sf(cut, loc=self.effect, scale=sd) if above else norm.cdf(cut, loc=self.effect, scale=sd))

    @property
    def true_win_rate(self) -> float:
        """Population win rate among decisive votes: P(latent > t) / (P(latent > t) + P(latent < -t))."""
        win, loss = self._tail(self.t_slight, True), self._tail(-self.t_slight, False)
        return win / (win + loss)

    @property
    def true_tie_half_rate(self) -> float:
        """Population P(win) + P(no preference) / 2."""
        win, loss = self._tail(self.t_slight, True), self._tail(-self.t_slight, False)
        return win + 0.5 * (1.0 - win - loss)

    @property
    def true_mean_score(self) -> float:
        """Population mean score: P(> t_slight) + P(> t_strong) - P(< -t_slight) - P(< -t_strong)."""
        return (self._tail(self.t_slight, True) + self._tail(self.t_strong, True)
                - self._tail(-self.t_slight, False) - self._tail(-self.t_strong, False))


def _score(latent: np.ndarray, t_slight: float, t_strong: float) -> np.ndarray:
    return (np.where(latent > t_slight, 1, 0) + np.where(latent > t_strong, 1, 0)
            - np.where(latent < -t_slight, 1, 0) - np.where(latent < -t_strong, 1, 0))


def _choice(score: np.ndarray, treatment_left: np.ndarray) -> np.ndarray:
    """Answer as shown: 1 left much better .. 5 right much better."""
    return np.where(treatment_left, 3 - score, 3 + score)


def simulate_arrays(
    study: SimulatedStudy,
    seed: int,
    *,
    always_left: int = 0,
    too_fast: int = 0,
    fast_ms: float = 300.0,
) -> dict[str, np.ndarray]:
    """One simulated study as parallel arrays (deterministic for a given seed).

    Keys: participant, pair, prompt, comparison (int codes), kind (0 main, 1 repeat, 2 gold),
    treatment_left (bool), choice (1..5 as shown), score (-2..+2), response_ms.

    Each participant rates `trials_per_participant` distinct pairs (pair = comparison x prompt)
    drawn at random, plus gold trials and repeats (sides swapped, fresh noise). The last
    `always_left` participants answer 1 or 2 on every trial regardless of the images; the
    `too_fast` participants before them answer honestly but in about `fast_ms` ms.
    """
    s = study
    rng = np.random.default_rng(seed)
    n_pairs = s.n_prompts * len(s.comparisons)
    if s.trials_per_participant > n_pairs:
        raise ValueError("trials_per_participant exceeds the number of pairs")
    bias = rng.normal(0.0, s.sd_participant, s.n_participants)
    prompt_effect = rng.normal(0.0, s.sd_prompt, s.n_prompts)
    k = s.trials_per_participant
    # Distinct pairs per participant: argsort of random keys is a vectorised sample without replacement.
    pairs = np.argsort(rng.random((s.n_participants, n_pairs)), axis=1)[:, :k]
    part = np.repeat(np.arange(s.n_participants), k)
    pair = pairs.ravel()
    prompt = pair % s.n_prompts
    comp = pair // s.n_prompts
    latent = s.effect + bias[part] + prompt_effect[prompt] + rng.normal(0.0, s.sd_noise, part.size)
    score = _score(latent, s.t_slight, s.t_strong)
    left = rng.random(part.size) < 0.5
    kind = np.zeros(part.size, dtype=np.int64)  # 0 main, 1 repeat, 2 gold

    if s.repeats_per_participant:
        first = np.arange(s.n_participants)[:, None] * k + np.arange(s.repeats_per_participant)[None, :]
        first = first.ravel()
        # Same person, same pair, fresh noise: a repeat agrees only as well as the person is consistent.
        r_latent = s.effect + bias[part[first]] + prompt_effect[prompt[first]] + rng.normal(0.0, s.sd_noise, first.size)
        part = np.concatenate([part, part[first]])
        pair = np.concatenate([pair, pair[first]])
        prompt = np.concatenate([prompt, prompt[first]])
        comp = np.concatenate([comp, comp[first]])
        score = np.concatenate([score, _score(r_latent, s.t_slight, s.t_strong)])
        left = np.concatenate([left, ~left[first]])
        kind = np.concatenate([kind, np.ones(first.size, dtype=np.int64)])

    choice = _choice(score, left)
    if s.gold_per_participant:
        g = s.gold_per_participant
        g_part = np.repeat(np.arange(s.n_participants), g)
        g_pair = rng.integers(0, n_pairs, g_part.size)
        # On gold trials the intact image plays "treatment" (as in app.store.models): passing = score > 0.
        passed = rng.random(g_part.size) < s.gold_pass_probability
        g_score = np.where(passed, 1, -1) * rng.integers(1, 3, g_part.size)
        g_left = rng.random(g_part.size) < 0.5
        g_choice = _choice(g_score, g_left)
        part = np.concatenate([part, g_part])
        pair = np.concatenate([pair, g_pair])
        prompt = np.concatenate([prompt, g_pair % s.n_prompts])
        comp = np.concatenate([comp, g_pair // s.n_prompts])
        choice = np.concatenate([choice, g_choice])
        left = np.concatenate([left, g_left])
        kind = np.concatenate([kind, np.full(g_part.size, 2)])

    response_ms = rng.lognormal(math.log(s.median_response_ms), 0.5, part.size)
    special_left = part >= s.n_participants - always_left
    special_fast = (part >= s.n_participants - always_left - too_fast) & ~special_left
    choice = np.where(special_left, rng.integers(1, 3, part.size), choice)
    response_ms = np.where(special_fast, rng.normal(fast_ms, fast_ms / 10, part.size).clip(50), response_ms)
    score = np.where(left, 3 - choice, choice - 3)
    return {"participant": part, "pair": pair, "prompt": prompt, "comparison": comp, "kind": kind,
            "treatment_left": left, "choice": choice, "score": score, "response_ms": response_ms}


def simulate_rows(study: SimulatedStudy, seed: int, **kwargs: Any) -> list[dict[str, Any]]:
    """Rating rows (export column names) of `simulate_arrays(study, seed, **kwargs)`."""
    s = study
    a = simulate_arrays(study, seed, **kwargs)
    part, prompt, comp, kind, left = a["participant"], a["prompt"], a["comparison"], a["kind"], a["treatment_left"]
    choice, score, response_ms = a["choice"], a["score"], a["response_ms"]
    stratum_of_prompt = np.arange(s.n_prompts) % len(s.strata)
    rows = []
    for i in range(part.size):
        is_gold = bool(kind[i] == 2)
        row = {
            "study": "simulated",
            "study_version": 1,
            "participant": f"p{part[i]:04d}",
            "external_ids": {},
            "pair": f"c{comp[i]}-q{prompt[i]:04d}" + ("-gold" if is_gold else ""),
            "pair_set": int(comp[i]) + 1,
            "prompt_id": f"q{prompt[i]:04d}",
            "prompt": f"simulated prompt {prompt[i]}",
            "stratum": s.strata[stratum_of_prompt[prompt[i]]],
            "seed": int(prompt[i]),
            "treatment_side": "left" if left[i] else "right",
            "choice": int(choice[i]),
            "score": int(score[i]),
            "is_gold": is_gold,
            "is_repeat": bool(kind[i] == 1),
            "presented_at": None,
            "answered_at": None,
            "response_ms": int(round(response_ms[i])),
            "comparison": s.comparisons[comp[i]],
        }
        rows.append(row)
    return rows
