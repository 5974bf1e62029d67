"""Statistics of a blind paired study: plain functions on exported rating rows.

Input: the rows of `app.export.rating_rows` (one dict per rating, the export column names of
docs/api: `participant`, `pair`, `prompt_id`, `stratum`, `treatment_side`, `choice`, `score`,
`is_gold`, `is_repeat`, `response_ms`, ... plus the extra `comparison` column). Output: a
JSON-ready dict (no numpy types, no NaN: missing values are None).

Conventions
- `choice` is the answer as shown: 1 left much better, 2 left slightly better, 3 no preference,
  4 right slightly better, 5 right much better.
- `score` is the un-flipped answer, -2..+2, positive = the treatment (e.g. SFG) was preferred.
  It is computed once on the server (`app.scoring`); this module never un-flips answers.
- Gold trials (one image obviously degraded) are quality control only: never part of the
  preference results. Repeat trials (a pair shown again, sides swapped) only measure
  consistency: the preference results use each participant's first rating of a pair.
  Practice trials (`is_practice`, when present) are ignored everywhere.
- Win rate = treatment wins / decisive votes (ties dropped); tie-as-half rate = (wins + ties/2)
  / all votes; mean score in points on the -2..+2 scale.
- Intervals: percentile intervals of a crossed bootstrap that resamples participants and
  prompts independently with replacement; a vote's weight in a draw is (copies of its
  participant) x (copies of its prompt). Votes of one person, or on one prompt, are correlated,
  so resampling single votes would give intervals that are too narrow.

No torch, no database: usable from the app, the command line and tests alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import krippendorff
import numpy as np
from scipy import stats as sps

SCORES = (-2, -1, 0, 1, 2)
CHOICES = (1, 2, 3, 4, 5)
# Names of the five answers after un-flipping, most negative (baseline much better) first.
SCORE_NAMES = {
    -2: "baseline much better",
    -1: "baseline slightly better",
    0: "no preference",
    1: "treatment slightly better",
    2: "treatment much better",
}
REQUIRED_COLUMNS = (
    "participant",
    "pair",
    "prompt_id",
    "treatment_side",
    "choice",
    "score",
    "is_gold",
    "is_repeat",
    "response_ms",
)
# Order in which exclusion rules are applied; each rule sees only the participants the
# previous rules kept, so the counts removed at each step add up.
RULE_ORDER = ("fail_gold", "too_fast", "straight_lining", "low_consistency", "side_bias")
RULE_DESCRIPTIONS = {
    "fail_gold": "gold-pair pass rate below {min_gold_pass_rate:g} (a gold pair is passed by "
    "choosing the intact image)",
    "too_fast": "more than {max_fast_share:.0%} of answers faster than {min_response_ms:g} ms",
    "straight_lining": "the same answer on every trial (at least {straight_lining_min_trials} "
    "trials)",
    "low_consistency": "agreement on repeated pairs below {min_consistency:g} (direction of "
    "preference, after un-flipping)",
    "side_bias": "more than {max_side_bias:.0%} of decisive answers on one side (at least "
    "{side_bias_min_votes} decisive answers)",
}
DEFAULT_RULE_PARAMS = {
    "min_gold_pass_rate": 1.0,
    "straight_lining_min_trials": 5,
    "side_bias_min_votes": 5,
}
INDEPENDENCE_NOTE = "assumes every vote is independent (ignores that votes share participants and prompts)"


class StatisticsInputError(ValueError):
    """Rating rows that cannot be analysed (missing column, answer out of range)."""


# --------------------------------------------------------------------------------------------
# Rows -> arrays
# --------------------------------------------------------------------------------------------


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "t", "yes", "y"}
    return bool(value)


def _as_label(value: Any, missing: str = "(none)") -> str:
    return missing if value is None or value == "" else str(value)


@dataclass(frozen=True)
class Ratings:
    """Rating rows as parallel arrays (length N, one entry per rating).

    Identifiers are kept as strings; `participant`, `prompt` and `pair` also as integer codes
    into the sorted unique labels (`participants`, `prompts`, `pairs`).
    """

    participant: np.ndarray  # int codes
    participants: np.ndarray  # labels (str)
    prompt: np.ndarray
    prompts: np.ndarray
    pair: np.ndarray
    pairs: np.ndarray
    comparison: np.ndarray  # str labels
    stratum: np.ndarray  # str labels
    choice: np.ndarray  # int 1..5 as shown
    score: np.ndarray  # int -2..+2, positive = treatment preferred
    treatment_left: np.ndarray  # bool
    is_gold: np.ndarray
    is_repeat: np.ndarray
    gold_passed: np.ndarray  # float: 1 passed, 0 failed, nan for non-gold ratings
    response_ms: np.ndarray  # float, nan when missing

    def __len__(self) -> int:
        return len(self.score)

    def subset(self, mask: np.ndarray) -> Ratings:
        """The ratings where `mask` is true (or at the indices `mask`), with codes re-numbered."""
        coded = {}
        for name, labels_name in (("participant", "participants"), ("prompt", "prompts"), ("pair", "pairs")):
            used, codes = np.unique(getattr(self, name)[mask], return_inverse=True)
            coded[name] = codes.astype(np.int64)
            coded[labels_name] = getattr(self, labels_name)[used]
        plain = ("comparison", "stratum", "choice", "score", "treatment_left", "is_gold", "is_repeat",
                 "gold_passed", "response_ms")
        return Ratings(**coded, **{name: getattr(self, name)[mask] for name in plain})


def _codes(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes into the sorted distinct labels (str) of `values`; None becomes "(none)".

    Codes follow the sorted labels, not row order, so the bootstrap draws (which index
    participants and prompts by code) do not depend on the order the rows came in.
    """
    distinct = set(values)
    label_of = {v: _as_label(v) for v in distinct}
    labels = sorted(set(label_of.values()))
    index = {label: i for i, label in enumerate(labels)}
    code_of = {v: index[label_of[v]] for v in distinct}
    codes = np.fromiter(map(code_of.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, np.asarray(labels, dtype=str)


def _gold_passed(row: Mapping[str, Any], score: int) -> float:
    """1.0 when a gold trial was answered for the intact image, else 0.0.

    On gold trials the intact image plays "treatment" and its degraded twin "baseline" (see
    `app.models`), so a positive score passes; a `gold_passed` column, when present, wins.
    """
    if row.get("gold_passed") is not None:
        return float(_as_bool(row["gold_passed"]))
    return float(score > 0)


def _bools(values: list) -> np.ndarray:
    if set(map(type, values)) <= {bool}:
        return np.array(values, dtype=bool)
    return np.fromiter(map(_as_bool, values), dtype=bool, count=len(values))


def _column(rows: Sequence[Mapping[str, Any]], column: str, default: Any = None) -> list[Any]:
    return [row.get(column, default) for row in rows]


def _ints(rows: Sequence[Mapping[str, Any]], column: str) -> np.ndarray:
    try:
        return np.fromiter(map(int, map(itemgetter(column), rows)), dtype=np.int64, count=len(rows))
    except (TypeError, ValueError):
        for i, row in enumerate(rows):
            try:
                int(row[column])
            except (TypeError, ValueError):
                raise StatisticsInputError(f"rating row {i}: {column} must be an integer, got {row[column]!r}") from None
        raise


def ratings_from_rows(rows: Iterable[Mapping[str, Any]]) -> Ratings:
    """Validate export rows and turn them into arrays; practice rows are dropped.

    Raises StatisticsInputError naming the first bad row and column.
    """
    rows = list(rows)
    required = set(REQUIRED_COLUMNS)
    for i, row in enumerate(rows):
        if not required <= row.keys():
            missing = [c for c in REQUIRED_COLUMNS if c not in row]
            raise StatisticsInputError(f"rating row {i}: missing column(s) {', '.join(missing)}")
    practice = _bools(_column(rows, "is_practice", False))
    if practice.any():
        rows = [row for row, skip in zip(rows, practice.tolist()) if not skip]
    choice, score = _ints(rows, "choice"), _ints(rows, "score")
    for values, name, allowed in ((choice, "choice", CHOICES), (score, "score", SCORES)):
        bad = np.flatnonzero(~np.isin(values, allowed))
        if bad.size:
            raise StatisticsInputError(
                f"rating row {bad[0]}: {name} {values[bad[0]]} is not in {allowed[0]}..{allowed[-1]}"
            )
    side_code, side_labels = _codes(list(map(itemgetter("treatment_side"), rows)))
    bad = sorted(set(side_labels.tolist()) - {"left", "right"})
    if bad:
        first = int(np.flatnonzero(np.isin(side_labels[side_code], bad))[0])
        raise StatisticsInputError(
            f"rating row {first}: treatment_side must be 'left' or 'right', got {rows[first]['treatment_side']!r}"
        )
    treatment_left = side_labels[side_code] == "left"
    is_gold = _bools(list(map(itemgetter("is_gold"), rows)))
    gold_passed = np.full(len(rows), math.nan)
    for i in np.flatnonzero(is_gold):
        gold_passed[i] = _gold_passed(rows[i], int(score[i]))
    rms = list(map(itemgetter("response_ms"), rows))
    participant, participants = _codes(list(map(itemgetter("participant"), rows)))
    prompt, prompts = _codes(list(map(itemgetter("prompt_id"), rows)))
    pair, pairs = _codes(list(map(itemgetter("pair"), rows)))
    comparison, comparisons = _codes([row.get("comparison", row.get("pair_set")) for row in rows])
    stratum, strata = _codes(_column(rows, "stratum"))
    r = Ratings(
        participant=participant, participants=participants, prompt=prompt, prompts=prompts, pair=pair, pairs=pairs,
        comparison=comparisons[comparison],
        stratum=strata[stratum],
        choice=choice,
        score=score,
        treatment_left=treatment_left,
        is_gold=is_gold,
        is_repeat=_bools(list(map(itemgetter("is_repeat"), rows))),
        gold_passed=gold_passed,
        response_ms=np.array(rms, dtype=float) if None not in rms and "" not in rms
        else np.array([math.nan if v is None or v == "" else v for v in rms], dtype=float),
    )
    # A canonical order, so that results (down to the last floating-point bit) do not depend
    # on the order the rows came in (the export sorts by answer time, other callers may not).
    order = np.lexsort((r.response_ms, r.choice, r.treatment_left, r.is_gold, r.is_repeat, r.pair, r.prompt,
                        r.participant))
    return r.subset(order)


def preference_mask(r: Ratings) -> np.ndarray:
    """Ratings that count towards the preference results: not gold, not a repeat."""
    return ~r.is_gold & ~r.is_repeat


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    """A JSON-safe float: None for nan/inf/None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _share(k: float, n: float) -> float | None:
    return _num(k / n) if n else None


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval for k successes in n independent trials."""
    if n == 0:
        return None, None
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return _num(ci.low), _num(ci.high)


# --------------------------------------------------------------------------------------------
# Distribution and point estimates
# --------------------------------------------------------------------------------------------


def distribution(scores: np.ndarray) -> dict[str, Any]:
    """The five-answer distribution (un-flipped) and the paper-style shares.

    Shares are of all votes: `treatment_preferred` (score > 0), `no_preference`,
    `baseline_preferred`, and the "much better" (strong) shares for each side; the
    `*_strong_within_preferred` shares are of that side's preferences only.
    """
    scores = np.asarray(scores, dtype=np.int64)
    n = int(scores.size)
    counts = {str(s): int(np.count_nonzero(scores == s)) for s in SCORES}
    pos, neg = counts["1"] + counts["2"], counts["-1"] + counts["-2"]
    return {
        "n": n,
        "counts": counts,
        "labels": {str(s): SCORE_NAMES[s] for s in SCORES},
        "shares": {k: _share(v, n) for k, v in counts.items()},
        "treatment_preferred": _share(pos, n),
        "no_preference": _share(counts["0"], n),
        "baseline_preferred": _share(neg, n),
        "treatment_much_better": _share(counts["2"], n),
        "baseline_much_better": _share(counts["-2"], n),
        "treatment_strong_within_preferred": _share(counts["2"], pos),
        "baseline_strong_within_preferred": _share(counts["-2"], neg),
    }


def point_estimates(scores: np.ndarray) -> dict[str, float | None]:
    """Win rate among decisive votes, tie-as-half rate, mean score (see module docstring)."""
    scores = np.asarray(scores)
    n = scores.size
    wins, losses = int(np.count_nonzero(scores > 0)), int(np.count_nonzero(scores < 0))
    return {
        "win_rate": _share(wins, wins + losses),
        "tie_half_rate": _share(wins + 0.5 * (n - wins - losses), n),
        "mean_score": _num(scores.mean()) if n else None,
    }


# --------------------------------------------------------------------------------------------
# Crossed bootstrap
# --------------------------------------------------------------------------------------------


def bootstrap_weights(n_participants: int, n_prompts: int, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Resampling counts for a crossed bootstrap: shapes (draws, P) and (draws, Q), float32.

    Row b holds how many copies of each participant / prompt draw b took (each row sums to P
    resp. Q): P indices drawn uniformly with replacement, counted. One numpy Generator seeded
    with `seed` draws both, participants first.
    """
    rng = np.random.default_rng(seed)

    def counts(n: int) -> np.ndarray:
        picks = rng.integers(0, n, size=(draws, n)) + (np.arange(draws) * n)[:, None]
        return np.bincount(picks.ravel(), minlength=draws * n).reshape(draws, n).astype(np.float32)

    return counts(n_participants), counts(n_prompts)


# Per-vote components summed in the bootstrap: count, decisive, treatment win, score.
N_COMPONENTS = 4


def crossed_bootstrap_sums(
    participant: np.ndarray,
    prompt: np.ndarray,
    scores: np.ndarray,
    wp: np.ndarray,
    wq: np.ndarray,
    cell: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sums per bootstrap draw and cell: (cell ids, array (draws, n_cells, 4)).

    participant, prompt: int codes (length N) into the columns of wp (draws, P) and wq
    (draws, Q); cell: optional int group of each vote (e.g. comparison x stratum), so one
    pass serves every group that is a union of cells. A vote's weight in draw b is
    wp[b, participant] * wq[b, prompt]; the 4 sums are of weight x (1, decisive, win, score).

    Votes are first aggregated per (participant, unit) with unit = (cell, prompt), so a draw
    costs one row of a matrix product: sum_i wp[b,p_i] wq[b,q_i] x_i =
    sum_u wq[b,q_u] (wp[b] @ X)[u] with X[p, u] = sum of x over the votes of p in unit u.
    """
    scores = np.asarray(scores, dtype=np.float64)
    cell = np.zeros(scores.size, dtype=np.int64) if cell is None else np.asarray(cell, dtype=np.int64)
    n_q = wq.shape[1]
    used_p, p = np.unique(participant, return_inverse=True)
    used_u, u = np.unique(cell * n_q + prompt, return_inverse=True)  # sorted: units of a cell are contiguous
    n_p, n_u, k = used_p.size, used_u.size, N_COMPONENTS
    comps = np.stack([np.ones_like(scores), scores != 0, scores > 0, scores], axis=1)
    flat = (p * n_u + u)[:, None] * k + np.arange(k)[None, :]
    x = np.bincount(flat.ravel(), weights=comps.ravel(), minlength=n_p * n_u * k).astype(np.float32)
    per_unit = (wp[:, used_p] @ x.reshape(n_p, n_u * k)).reshape(wp.shape[0], n_u, k)
    per_unit *= wq[:, used_u % n_q][:, :, None]
    cells, starts = np.unique(used_u // n_q, return_index=True)
    return cells, np.add.reduceat(per_unit, starts, axis=1).astype(np.float64)


def estimates_from_sums(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Win rate, tie-as-half rate and mean score from (..., 4) bootstrap sums (nan if undefined)."""
    n, decisive, wins, total = np.moveaxis(sums, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "win_rate": wins / decisive,
            "tie_half_rate": (wins + 0.5 * (n - decisive)) / n,
            "mean_score": total / n,
        }


def crossed_bootstrap_estimates(
    participant: np.ndarray,
    prompt: np.ndarray,
    scores: np.ndarray,
    wp: np.ndarray,
    wq: np.ndarray,
) -> dict[str, np.ndarray]:
    """Win rate, tie-as-half rate and mean score of all the votes in every bootstrap draw.

    See `crossed_bootstrap_sums`; returns arrays of length draws.
    """
    _, sums = crossed_bootstrap_sums(participant, prompt, scores, wp, wq)
    return estimates_from_sums(sums.sum(axis=1))


def percentile_interval(draws: np.ndarray, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile interval of bootstrap draws, ignoring draws where the statistic is undefined."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return None, None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return _num(lo), _num(hi)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def significance_tests(scores: np.ndarray, prompt: np.ndarray) -> dict[str, Any]:
    """Sign test, Wilcoxon signed-rank (Pratt zeros) on votes, and tests on prompt means.

    The vote-level tests treat every vote as independent. The prompt-level tests first
    average each prompt's scores (one value per prompt) and then run a Wilcoxon signed-rank
    (Pratt zeros) and a one-sample t-test of the prompt means against 0; they still ignore
    participant effects but not the sharing of votes within a prompt.
    """
    scores = np.asarray(scores, dtype=float)
    wins, losses = int(np.count_nonzero(scores > 0)), int(np.count_nonzero(scores < 0))
    out: dict[str, Any] = {}
    if wins + losses:
        bt = sps.binomtest(wins, wins + losses, 0.5)
        out["sign_test"] = {
            "wins": wins, "losses": losses, "p_value": _num(bt.pvalue),
            "test": "scipy.stats.binomtest(wins, wins + losses, 0.5), two-sided",
            "assumption": INDEPENDENCE_NOTE,
        }
    else:
        out["sign_test"] = {"p_value": None, "reason": "no decisive votes"}
    out["wilcoxon"] = _wilcoxon(scores, "votes")
    out["wilcoxon"]["assumption"] = INDEPENDENCE_NOTE

    codes = np.unique(prompt, return_inverse=True)[1]
    if codes.size:
        means = np.bincount(codes, weights=scores) / np.bincount(codes)
    else:
        means = np.zeros(0)
    prompt_level: dict[str, Any] = {"n_prompts": int(means.size), "mean_of_prompt_means": _num(means.mean()) if means.size else None}
    prompt_level["wilcoxon"] = _wilcoxon(means, "prompt means")
    if means.size >= 2 and np.ptp(means) > 0:
        tt = sps.ttest_1samp(means, 0.0)
        prompt_level["t_test"] = {"statistic": _num(tt.statistic), "p_value": _num(tt.pvalue), "df": int(means.size - 1),
                                  "test": "scipy.stats.ttest_1samp(prompt means, 0), two-sided"}
    else:
        prompt_level["t_test"] = {"p_value": None, "reason": "fewer than two prompts or no variation"}
    prompt_level["assumption"] = "one value per prompt (its mean score); prompts independent"
    out["prompt_level"] = prompt_level
    return out


def wilcoxon_method(values: np.ndarray) -> str:
    """'exact' for up to 50 values without zeros or ties, else 'approx' (normal, tie-corrected).

    scipy's own 'auto' falls back to a permutation test for small samples with ties, which
    takes seconds; the live page cannot wait for that.
    """
    values = np.asarray(values)
    no_ties = np.unique(np.abs(values)).size == values.size
    return "exact" if values.size <= 50 and np.all(values != 0) and no_ties else "approx"


def _wilcoxon(values: np.ndarray, what: str) -> dict[str, Any]:
    method = wilcoxon_method(values)
    test = f"scipy.stats.wilcoxon({what}, zero_method='pratt', method='{method}'), two-sided"
    if np.count_nonzero(values) == 0:
        return {"p_value": None, "reason": "all values are zero", "test": test}
    try:
        res = sps.wilcoxon(values, zero_method="pratt", method=method)
    except ValueError as exc:  # e.g. too few non-zero values
        return {"p_value": None, "reason": str(exc), "test": test}
    return {"statistic": _num(res.statistic), "p_value": _num(res.pvalue), "n": int(values.size), "test": test}


# --------------------------------------------------------------------------------------------
# Quality control
# --------------------------------------------------------------------------------------------


def side_bias(choice: np.ndarray) -> dict[str, Any]:
    """Share of "left" answers among decisive answers (as shown) and a binomial test against 1/2."""
    left = int(np.count_nonzero(choice <= 2))
    right = int(np.count_nonzero(choice >= 4))
    out: dict[str, Any] = {"left": left, "right": right, "left_share": _share(left, left + right)}
    if left + right:
        out["p_value"] = _num(sps.binomtest(left, left + right, 0.5).pvalue)
        out["test"] = "scipy.stats.binomtest(left, left + right, 0.5), two-sided"
    else:
        out["p_value"] = None
    return out


def repeat_agreement(r: Ratings) -> dict[str, np.ndarray]:
    """Each repeat rating next to the participant's first rating of the same pair.

    Returns arrays over the matched repeats: participant (codes), first and repeat score,
    same_direction (the un-flipped scores have the same sign -, 0, +) and exact (equal).
    Repeats whose first rating is missing (e.g. excluded) are skipped.
    """
    key = r.participant * max(r.pairs.size, 1) + r.pair
    firsts = np.flatnonzero(~r.is_repeat & ~r.is_gold)
    # The first rating of each (participant, pair) in row order.
    first_keys, first_pos = np.unique(key[firsts], return_index=True)
    first_idx = firsts[first_pos]
    reps = np.flatnonzero(r.is_repeat & ~r.is_gold)
    where = np.searchsorted(first_keys, key[reps])
    found = (where < first_keys.size) & (first_keys[np.minimum(where, max(first_keys.size - 1, 0))] == key[reps]) \
        if first_keys.size else np.zeros(reps.size, dtype=bool)
    reps = reps[found]
    a = r.score[first_idx[where[found]]]
    b = r.score[reps]
    return {"participant": r.participant[reps], "first": a, "repeat": b,
            "same_direction": np.sign(a) == np.sign(b), "exact": a == b}


def participant_quality(r: Ratings, min_response_ms: float | None) -> list[dict[str, Any]]:
    """One dict per participant (all of their non-practice ratings, gold and repeats included).

    Keys: participant, n_ratings, gold_n, gold_pass_rate, fast_share (share of answers under
    min_response_ms; None without a threshold), distinct_choices, left_share / n_decisive
    (as shown), repeats_n, consistency (share of repeats with the same direction),
    median_response_ms.
    """
    n_p = r.participants.size
    n_ratings = np.bincount(r.participant, minlength=n_p)
    gold = r.is_gold & np.isfinite(r.gold_passed)
    gold_n = np.bincount(r.participant[gold], minlength=n_p)
    gold_pass = np.bincount(r.participant[gold], weights=r.gold_passed[gold], minlength=n_p)
    decisive = r.choice != 3
    n_dec = np.bincount(r.participant[decisive], minlength=n_p)
    n_left = np.bincount(r.participant[r.choice <= 2], minlength=n_p)
    timed = np.isfinite(r.response_ms)
    n_timed = np.bincount(r.participant[timed], minlength=n_p)
    if min_response_ms is not None:
        fast = timed & (r.response_ms < float(min_response_ms))
        n_fast = np.bincount(r.participant[fast], minlength=n_p)
    distinct = np.zeros(n_p, dtype=np.int64)
    pc = np.unique(r.participant * 8 + r.choice)
    np.add.at(distinct, pc // 8, 1)
    agreement = repeat_agreement(r)
    rep_n = np.bincount(agreement["participant"], minlength=n_p)
    rep_same = np.bincount(agreement["participant"], weights=agreement["same_direction"], minlength=n_p)
    order = np.argsort(r.participant, kind="stable")
    bounds = np.searchsorted(r.participant[order], np.arange(n_p + 1))
    out = []
    for j in range(n_p):
        ms = r.response_ms[order[bounds[j]:bounds[j + 1]]]
        ms = ms[np.isfinite(ms)]
        out.append({
            "participant": str(r.participants[j]),
            "n_ratings": int(n_ratings[j]),
            "gold_n": int(gold_n[j]),
            "gold_pass_rate": _share(gold_pass[j], gold_n[j]),
            "fast_share": _share(n_fast[j], n_timed[j]) if min_response_ms is not None else None,
            "distinct_choices": int(distinct[j]),
            "n_decisive": int(n_dec[j]),
            "left_share": _share(n_left[j], n_dec[j]),
            "repeats_n": int(rep_n[j]),
            "consistency": _share(rep_same[j], rep_n[j]),
            "median_response_ms": _num(np.median(ms)) if ms.size else None,
        })
    return out


def krippendorff_alpha(r: Ratings) -> dict[str, Any]:
    """Krippendorff's alpha (ordinal, values -2..+2) over pairs with two or more ratings.

    Units are pairs, values the un-flipped scores of their preference ratings (no gold, no
    repeats). Alpha only depends on the values within each unit, so the value-count form
    (pairs x 5 counts) is used.
    """
    mask = preference_mask(r)
    pair, score = r.pair[mask], r.score[mask]
    n_pairs = r.pairs.size
    counts = np.zeros((n_pairs, len(SCORES)), dtype=np.int64)
    np.add.at(counts, (pair, score + 2), 1)
    multi = counts.sum(axis=1) >= 2
    out: dict[str, Any] = {"level": "ordinal", "n_pairs": int(multi.sum()), "n_ratings": int(counts[multi].sum())}
    if multi.sum() < 1 or len(np.unique(score[np.isin(pair, np.flatnonzero(multi))])) < 2:
        out["alpha"] = None
        out["reason"] = "needs pairs rated at least twice and more than one distinct answer"
        return out
    out["alpha"] = _num(krippendorff.alpha(value_counts=counts[multi], value_domain=list(SCORES),
                                           level_of_measurement="ordinal"))
    return out


def response_times(ms: np.ndarray, min_response_ms: float | None = None) -> dict[str, Any]:
    """Time per trial in milliseconds: n, mean, median, quartiles, 10th/90th percentiles."""
    ms = np.asarray(ms, dtype=float)
    ms = ms[np.isfinite(ms)]
    if ms.size == 0:
        return {"n": 0}
    q = np.percentile(ms, [10, 25, 50, 75, 90])
    out = {"n": int(ms.size), "mean_ms": _num(ms.mean()), "p10_ms": _num(q[0]), "q1_ms": _num(q[1]),
           "median_ms": _num(q[2]), "q3_ms": _num(q[3]), "p90_ms": _num(q[4])}
    if min_response_ms is not None:
        out["share_under_min"] = _share(np.count_nonzero(ms < float(min_response_ms)), ms.size)
        out["min_response_ms"] = float(min_response_ms)
    return out


def quality_summary(r: Ratings, min_response_ms: float | None = None) -> dict[str, Any]:
    """Study-level quality control: side bias, consistency, gold pass rate, alpha, timing."""
    pref = preference_mask(r)
    agreement = repeat_agreement(r)
    gold = r.is_gold & np.isfinite(r.gold_passed)
    participants = participant_quality(r, min_response_ms)
    per_participant_consistency = [p["consistency"] for p in participants if p["consistency"] is not None]
    return {
        "side_bias": side_bias(r.choice[pref]),
        "consistency": {
            "n_repeats": int(agreement["exact"].size),
            "same_direction": _share(agreement["same_direction"].sum(), agreement["exact"].size),
            "exact": _share(agreement["exact"].sum(), agreement["exact"].size),
            "n_participants": len(per_participant_consistency),
            "mean_per_participant": _num(np.mean(per_participant_consistency)) if per_participant_consistency else None,
            # How many participants reached each consistency value (e.g. {"0.5": 3, "1.0": 40}).
            "per_participant_counts": {f"{v:g}": int(c) for v, c in zip(*np.unique(
                np.round(per_participant_consistency, 3), return_counts=True))} if per_participant_consistency else {},
        },
        "gold": {
            "n": int(gold.sum()),
            "pass_rate": _share(r.gold_passed[gold].sum(), gold.sum()),
        },
        "krippendorff_alpha": krippendorff_alpha(r),
        "response_time": response_times(r.response_ms, min_response_ms),
        "participants": participants,
    }


# --------------------------------------------------------------------------------------------
# Exclusions
# --------------------------------------------------------------------------------------------


def normalise_rules(rules: Mapping[str, Any] | None, min_response_ms: float | None = None) -> dict[str, Any]:
    """Fill defaults into a study's `exclusion_rules` and check their types.

    A rule is on when its switch is set (None or absent = off):
    - fail_gold (bool), with min_gold_pass_rate (0..1, default 1: any failed gold pair excludes);
    - max_fast_share (0..1): too fast = more than this share of answers under min_response_ms
      (the rule's own, else the study's `min_response_ms` argument);
    - straight_lining (bool), with straight_lining_min_trials (default 5);
    - min_consistency (0..1): share of repeats answered in the same direction;
    - max_side_bias (0.5..1), with side_bias_min_votes (default 5 decisive answers).
    Unknown keys raise StatisticsInputError (a typo must not silently switch a rule off).
    """
    rules = dict(rules or {})
    known = {"fail_gold", "min_gold_pass_rate", "min_response_ms", "max_fast_share", "straight_lining",
             "straight_lining_min_trials", "min_consistency", "max_side_bias", "side_bias_min_votes"}
    unknown = sorted(set(rules) - known)
    if unknown:
        raise StatisticsInputError(f"unknown exclusion rule(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    out = {**DEFAULT_RULE_PARAMS, **{k: v for k, v in rules.items() if v is not None}}
    if "min_response_ms" not in out and min_response_ms:
        out["min_response_ms"] = min_response_ms
    for key in ("min_gold_pass_rate", "max_fast_share", "min_consistency", "max_side_bias"):
        if key in out:
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise StatisticsInputError(f"exclusion rule {key} must be a number between 0 and 1, got {v!r}")
    for key in ("min_response_ms", "straight_lining_min_trials", "side_bias_min_votes"):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise StatisticsInputError(f"exclusion rule {key} must be a non-negative number, got {v!r}")
    return out


def _active_rules(rules: Mapping[str, Any]) -> list[str]:
    active = []
    if _as_bool(rules.get("fail_gold", False)):
        active.append("fail_gold")
    if rules.get("max_fast_share") is not None and rules.get("min_response_ms"):
        active.append("too_fast")
    if _as_bool(rules.get("straight_lining", False)):
        active.append("straight_lining")
    if rules.get("min_consistency") is not None:
        active.append("low_consistency")
    if rules.get("max_side_bias") is not None:
        active.append("side_bias")
    return active


def _flagged(rule: str, p: Mapping[str, Any], rules: Mapping[str, Any]) -> bool:
    if rule == "fail_gold":
        return p["gold_pass_rate"] is not None and p["gold_pass_rate"] < rules["min_gold_pass_rate"]
    if rule == "too_fast":
        return p["fast_share"] is not None and p["fast_share"] > rules["max_fast_share"]
    if rule == "straight_lining":
        return p["n_ratings"] >= rules["straight_lining_min_trials"] and p["distinct_choices"] == 1
    if rule == "low_consistency":
        return p["consistency"] is not None and p["consistency"] < rules["min_consistency"]
    if rule == "side_bias":
        if p["n_decisive"] < rules["side_bias_min_votes"] or p["left_share"] is None:
            return False
        return max(p["left_share"], 1 - p["left_share"]) > rules["max_side_bias"]
    raise AssertionError(rule)


def apply_exclusions(quality: Sequence[Mapping[str, Any]], rules: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the active rules one after another to per-participant quality records.

    Returns {"rules", "steps": [{rule, description, removed, participants, remaining}],
    "excluded": [...], "kept": [...]}; each step only sees participants kept so far.
    """
    remaining = [p["participant"] for p in quality]
    by_id = {p["participant"]: p for p in quality}
    steps = []
    for rule in _active_rules(rules):
        removed = [pid for pid in remaining if _flagged(rule, by_id[pid], rules)]
        remaining = [pid for pid in remaining if pid not in set(removed)]
        steps.append({"rule": rule, "description": RULE_DESCRIPTIONS[rule].format(**rules),
                      "removed": len(removed), "participants": removed, "remaining": len(remaining)})
    excluded = [p["participant"] for p in quality if p["participant"] not in set(remaining)]
    return {"rules": dict(rules), "steps": steps, "excluded": excluded, "kept": remaining,
            "n_before": len(quality), "n_after": len(remaining)}


# --------------------------------------------------------------------------------------------
# Preference results
# --------------------------------------------------------------------------------------------


def _design(r: Ratings, mask: np.ndarray) -> dict[str, Any]:
    per_pair = np.bincount(r.pair[mask], minlength=r.pairs.size)
    per_pair = per_pair[per_pair > 0]
    return {
        "n_ratings": int(mask.sum()),
        "n_participants": int(np.unique(r.participant[mask]).size),
        "n_prompts": int(np.unique(r.prompt[mask]).size),
        "n_pairs": int(per_pair.size),
        "ratings_per_pair": {
            "mean": _num(per_pair.mean()) if per_pair.size else None,
            "min": int(per_pair.min()) if per_pair.size else None,
            "max": int(per_pair.max()) if per_pair.size else None,
        },
    }


def _group_summary(r: Ratings, mask: np.ndarray, boot: dict[str, np.ndarray], confidence: float) -> dict[str, Any]:
    scores = r.score[mask]
    out: dict[str, Any] = _design(r, mask)
    out["distribution"] = distribution(scores)
    est = point_estimates(scores)
    wins, losses = int((scores > 0).sum()), int((scores < 0).sum())
    indep = {
        "win_rate": wilson_interval(wins, wins + losses, confidence),
        "tie_half_rate": wilson_interval(int(round(2 * wins + (scores.size - wins - losses))), 2 * scores.size, confidence)
        if scores.size else (None, None),
        "mean_score": _t_interval(scores, confidence),
    }
    for name, value in est.items():
        lo, hi = percentile_interval(boot[name], confidence)
        out[name] = {"estimate": value, "ci_low": lo, "ci_high": hi,
                     "ci_independent_votes": {"low": indep[name][0], "high": indep[name][1],
                                              "note": INDEPENDENCE_NOTE}}
    out["tests"] = significance_tests(scores, r.prompt[mask])
    return out


def _t_interval(x: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    if x.size < 2:
        return None, None
    sem = x.std(ddof=1) / math.sqrt(x.size)
    if sem == 0:
        return _num(x.mean()), _num(x.mean())
    lo, hi = sps.t.interval(confidence, x.size - 1, loc=x.mean(), scale=sem)
    return _num(lo), _num(hi)


def preference_results(r: Ratings, *, draws: int, seed: int, confidence: float = 0.95) -> dict[str, Any]:
    """Preference results overall, per comparison and per stratum (gold and repeats left out).

    One set of crossed-bootstrap draws (participants and prompts of the whole set) serves
    every group, so groups are resampled consistently; the sums are computed once per
    (comparison, stratum) cell and added up into the groups.
    """
    pref = preference_mask(r)
    if not pref.any():
        return {"overall": None, "per_comparison": {}, "per_stratum": {}}
    wp, wq = bootstrap_weights(r.participants.size, r.prompts.size, draws, seed)
    comparisons, comp = np.unique(r.comparison[pref], return_inverse=True)
    strata, strat = np.unique(r.stratum[pref], return_inverse=True)
    cells, sums = crossed_bootstrap_sums(r.participant[pref], r.prompt[pref], r.score[pref], wp, wq,
                                         comp * strata.size + strat)
    out = {"overall": _group_summary(r, pref, estimates_from_sums(sums.sum(axis=1)), confidence),
           "per_comparison": {}, "per_stratum": {}}
    for key, labels, cell_group in (("per_comparison", comparisons, cells // strata.size),
                                    ("per_stratum", strata, cells % strata.size)):
        column = r.comparison if key == "per_comparison" else r.stratum
        for i, label in enumerate(labels.tolist()):
            boot = estimates_from_sums(sums[:, cell_group == i].sum(axis=1))
            out[key][label] = _group_summary(r, pref & (column == label), boot, confidence)
    return out


def compute_statistics(
    rows: Iterable[Mapping[str, Any]],
    *,
    exclusion_rules: Mapping[str, Any] | None = None,
    min_response_ms: float | None = None,
    draws: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Everything the report shows, as one JSON-ready dict.

    rows: `app.export.rating_rows` output. exclusion_rules: the study's rules (see
    `normalise_rules`); min_response_ms: the study's minimum response time, used when the
    rules name none. draws / seed: crossed-bootstrap draws and the seed of its generator
    (recorded in the output). Results are given without exclusions ("all") and with them
    ("after_exclusions"; the same dict when no participant was excluded).
    """
    if draws < 1:
        raise StatisticsInputError("bootstrap draws must be at least 1")
    if not 0 < confidence < 1:
        raise StatisticsInputError("confidence must be between 0 and 1")
    r = ratings_from_rows(rows)
    rules = normalise_rules(exclusion_rules, min_response_ms)
    speed_threshold = rules.get("min_response_ms", min_response_ms)
    quality = quality_summary(r, speed_threshold)
    exclusions = apply_exclusions(quality["participants"], rules)
    result_all = preference_results(r, draws=draws, seed=seed, confidence=confidence)
    result_all["quality"] = {k: v for k, v in quality.items() if k != "participants"}
    if exclusions["excluded"]:
        kept = r.subset(np.isin(r.participants[r.participant], exclusions["kept"]))
        result_kept = preference_results(kept, draws=draws, seed=seed, confidence=confidence)
        q_kept = quality_summary(kept, speed_threshold)
        result_kept["quality"] = {k: v for k, v in q_kept.items() if k != "participants"}
    else:
        result_kept = result_all
    return {
        "schema": "sfgeval.statistics/1",
        "conventions": {
            "score": "-2..+2, positive = treatment preferred (un-flipped on the server)",
            "choice": "1 left much better, 2 left slightly better, 3 no preference, 4 right slightly better, 5 right much better",
            "win_rate": "treatment wins / decisive votes",
            "tie_half_rate": "(treatment wins + ties / 2) / all votes",
            "mean_score": "mean of score",
            "excluded_from_preference": "gold trials (quality control) and repeat trials (consistency); practice trials",
        },
        "bootstrap": {
            "method": "crossed: participants and prompts resampled independently with replacement; a vote's weight "
            "is (copies of its participant) x (copies of its prompt); percentile interval",
            "draws": int(draws),
            "seed": int(seed),
            "confidence": float(confidence),
        },
        "design": _design(r, preference_mask(r)) | {
            "n_ratings_total": len(r),
            "n_gold": int(r.is_gold.sum()),
            "n_repeats": int((r.is_repeat & ~r.is_gold).sum()),
        },
        "exclusions": exclusions,
        "participants": quality["participants"],
        "results": {"all": result_all, "after_exclusions": result_kept},
    }
