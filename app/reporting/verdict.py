"""The verdict: one plain sentence per comparison, with the arm names, and the rule that chose it.

`verdicts(stats)` reads the statistics dict (`app.analysis.study_statistics.study_statistics` or
`app.statistics.compute_statistics`) defensively and returns one card per comparison plus the
ranking when the statistics have one. The report, the statistics page, the methods paragraph and
the paper tables all take their wording from here, so they cannot disagree.

The wording rule (`RULE`, also printed under the cards): the result set is the one after
exclusions (all participants when the rules excluded everyone). For a comparison with win rate w
among decisive (non-tie) votes, its 95% two-way cluster-robust interval [lo, hi] and its
Holm-adjusted p-value p over the study's comparisons:

- lo > 0.5 and p < alpha: "TREATMENT preferred over BASELINE";
- hi < 0.5 and p < alpha: "BASELINE preferred over TREATMENT" (shares shown for the winner);
- 0.5 - D <= lo and hi <= 0.5 + D: "no difference larger than D shown" (D: the study's
  monitoring margin, default 0.05);
- otherwise: "no clear preference yet" (the interval is too wide to say either).

p is the statistics' own `p_holm` when present; otherwise the two-sided t-test that the
headline interval inverts, t = (w - 0.5) / se with the interval's df (so p < 0.05 exactly
when the interval excludes 0.5), Holm-adjusted here over the comparisons.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Holm-adjusted p-values (None stays None and does not count): the one implementation, app.statistics.ranking
from app.statistics.ranking import holm

ALPHA = 0.05
DEFAULT_MARGIN = 0.05
RULE = (
    "Wording rule: after exclusions, a comparison reads \"A preferred over B\" when the 95% cluster-robust "
    "interval of A's win rate among non-tie votes lies wholly above 50% and its Holm-adjusted p-value is below "
    "0.05; \"no difference larger than D shown\" when the whole interval lies within 50% ± D (D = the study's "
    "margin); otherwise \"no clear preference yet\"."
)


def arm_label(name: str | None) -> str:
    """How an arm is shown: its configured name upper-cased (`sfg` -> `SFG`)."""
    return (name or "").upper()


def _arms(stats: dict[str, Any], label: str) -> tuple[str, str]:
    """(treatment, baseline) display names of a comparison label."""
    for c in ((stats.get("study") or {}).get("comparisons") or []):
        if c.get("label") == label and c.get("treatment_arm") and c.get("baseline_arm"):
            return arm_label(c["treatment_arm"]), arm_label(c["baseline_arm"])
    m = re.search(r"(\S+) vs (\S+)$", label or "")
    if m:
        return arm_label(m.group(1)), arm_label(m.group(2))
    return "treatment", "baseline"


def result_set(stats: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """('after_exclusions' | 'all', results) the verdict reads: after exclusions unless nobody is left."""
    results = stats.get("results") or {}
    after = results.get("after_exclusions") or {}
    if after.get("overall") or not (results.get("all") or {}).get("overall"):
        return "after_exclusions", after
    return "all", results.get("all") or {}


def margin(stats: dict[str, Any]) -> float:
    m = ((stats.get("monitoring") or {}).get("settings") or {}).get("margin")
    if m is None:
        m = (((stats.get("study") or {}).get("config") or {}).get("monitoring") or {}).get("margin")
    return float(m) if m is not None else DEFAULT_MARGIN


def clustered_p(win_rate: dict[str, Any]) -> float | None:
    """Two-sided p of w = 0.5 from the headline interval's own se and df (None without them)."""
    w, se, df = win_rate.get("estimate"), win_rate.get("se"), win_rate.get("df")
    if w is None or se is None or not df or df <= 0:
        return None
    if se <= 0:
        return 0.0 if w != 0.5 else 1.0
    from scipy import stats as sps

    return float(2 * sps.t.sf(abs((w - 0.5) / se), df))


def _given(group: dict[str, Any], key: str) -> float | None:
    """A p-value the statistics provide under `key`, wherever they put it (`compute_statistics`: the
    shown win-rate test, `tests.win_rate`)."""
    tests = group.get("tests") or {}
    for holder in (group, group.get("win_rate") or {}, tests, tests.get("win_rate") or {},
                   tests.get("clustered") or {}):
        v = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(v, (int, float)) and not math.isnan(v):
            return float(v)
    return None


def _wording(w: float | None, lo: float | None, hi: float | None, p: float | None, d: float,
             treat: str, base: str) -> tuple[str, str, str | None]:
    """(kind, headline, winner) by the module's rule."""
    if w is None:
        return "no-data", f"{treat} vs {base}: no decisive votes yet", None
    if lo is None or hi is None:
        return "unclear", f"{treat} vs {base}: too few participants or prompts for an interval yet", None
    significant = p is None or p < ALPHA
    if lo > 0.5 and significant:
        return "preferred", f"{treat} preferred over {base}", treat
    if hi < 0.5 and significant:
        return "preferred", f"{base} preferred over {treat}", base
    if lo >= 0.5 - d and hi <= 0.5 + d:
        return "equivalent", f"No difference larger than {d * 100:g} points between {treat} and {base} shown", None
    return "unclear", f"No clear preference between {treat} and {base} yet", None


def _p_text(p: float | None, holm_applied: bool) -> str:
    if p is None:
        return ""
    name = "Holm p" if holm_applied else "p"
    return f"{name} < 0.001" if p < 0.001 else f"{name} = {p:.3f}"


def _ci_pct(lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None:
        return "95% CI not available"
    return f"95% CI {100 * lo:.0f}–{100 * hi:.0f}%"


def verdicts(stats: dict[str, Any]) -> dict[str, Any]:
    """Cards for the top of the report: {'result_set', 'margin', 'rule', 'cards': [...], 'ranking'}.

    Each card: comparison, treatment, baseline, kind ('preferred' | 'equivalent' | 'unclear' |
    'no-data'), winner, headline, sentence (the whole line with numbers), win_rate, ci_low,
    ci_high (for the winner when one arm is preferred), p, p_kind, n_participants, n_prompts,
    n_ratings, ties (share of votes with no preference).
    """
    key, results = result_set(stats)
    d = margin(stats)
    groups = dict(results.get("per_comparison") or {})
    if not groups and results.get("overall"):
        groups = {"": results["overall"]}
    labels = list(groups)
    given = [_given(groups[k], "p_holm") for k in labels]
    raw = [_given(groups[k], "p_value") for k in labels]
    raw = [r if r is not None else clustered_p(groups[k].get("win_rate") or {}) for r, k in zip(raw, labels)]
    computed = holm(raw)
    adjusted = [g if g is not None else c for g, c in zip(given, computed)]
    p_kind = ("p_holm from the statistics" if any(g is not None for g in given)
              else "clustered t-test of the headline interval, Holm-adjusted here")
    cards = []
    for label, p in zip(labels, adjusted):
        g = groups[label]
        wr = g.get("win_rate") or {}
        w, lo, hi = wr.get("estimate"), wr.get("ci_low"), wr.get("ci_high")
        treat, base = _arms(stats, label) if label else _arms(stats, _single_label(stats))
        kind, headline, winner = _wording(w, lo, hi, p, d, treat, base)
        headline = headline[:1].upper() + headline[1:]
        show_w, show_lo, show_hi = w, lo, hi
        if winner == base and w is not None:
            show_w, show_lo, show_hi = 1 - w, (1 - hi if hi is not None else None), (1 - lo if lo is not None else None)
        who = winner or treat
        dist = g.get("distribution") or {}
        counts = (f"{g.get('n_participants', 0):,} participants, {g.get('n_prompts', 0):,} prompts, "
                  f"{g.get('n_ratings', 0):,} ratings")
        if w is None:
            sentence = f"{headline}; {counts}."
        else:
            ptxt = _p_text(p, len(labels) > 1 or "Holm" in p_kind)
            lead = "" if winner else f"{who} won "
            sentence = (f"{headline}: {lead}{100 * show_w:.0f}% of non-tie votes ({_ci_pct(show_lo, show_hi)})"
                        f"{', ' + ptxt if ptxt else ''}; {counts}.")
        detail = sentence[len(headline):].lstrip(":; ")
        cards.append({
            "detail": detail[:1].upper() + detail[1:],
            "comparison": label, "treatment": treat, "baseline": base, "kind": kind, "winner": winner,
            "headline": headline, "sentence": sentence, "win_rate": show_w, "ci_low": show_lo, "ci_high": show_hi,
            "treatment_win_rate": w, "p": p, "p_kind": p_kind, "n_participants": g.get("n_participants", 0),
            "n_prompts": g.get("n_prompts", 0), "n_ratings": g.get("n_ratings", 0),
            "ties": dist.get("no_preference"),
        })
    return {"result_set": key, "margin": d, "rule": RULE, "cards": cards, "ranking": ranking(stats)}


def _single_label(stats: dict[str, Any]) -> str:
    comps = (stats.get("study") or {}).get("comparisons") or []
    return comps[0].get("label", "") if len(comps) == 1 else ""


def ranking(stats: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The joint ranking (api.md "Several methods") with display names, best first; None without one."""
    entries = stats.get("ranking")
    if isinstance(entries, dict):
        entries = entries.get("arms") or entries.get("entries")
    if not entries or not isinstance(entries, list) or len(entries) < 3:
        return None
    out = []
    for e in entries:
        if not isinstance(e, dict) or "arm" not in e:
            continue
        out.append({**e, "name": arm_label(str(e["arm"]))})
    out.sort(key=lambda e: (e.get("rank") if e.get("rank") is not None else 1e9, -(e.get("strength") or 0)))
    return out or None


def ranking_sentence(entries: list[dict[str, Any]] | None) -> str | None:
    """"Ranking: 1. SFG (ranks 1–1), 2. PAG (ranks 2–3), 3. CFG (ranks 2–3)"."""
    if not entries:
        return None
    parts = []
    for e in entries:
        rl, rh = e.get("rank_low"), e.get("rank_high")
        rng = f" (plausible ranks {rl}–{rh})" if rl is not None and rh is not None else ""
        parts.append(f"{e.get('rank', '?')}. {e['name']}{rng}")
    return "Ranking: " + ", ".join(parts)


def overall_arms(stats: dict[str, Any]) -> tuple[str, str]:
    """(treatment, baseline) names for the whole study: the arms when every comparison shares
    them (e.g. ('SFG', 'CFG')), else the generic ('treatment', 'baseline')."""
    comps = (stats.get("study") or {}).get("comparisons") or []
    treats = {arm_label(c.get("treatment_arm")) for c in comps}
    bases = {arm_label(c.get("baseline_arm")) for c in comps}
    if len(treats) == 1 and len(bases) == 1 and "" not in treats | bases:
        return treats.pop(), bases.pop()
    labels = list(((stats.get("results") or {}).get("all") or {}).get("per_comparison") or {})
    pairs = {_arms(stats, label) for label in labels}
    if len(pairs) == 1 and ("treatment", "baseline") not in pairs:
        return pairs.pop()
    return "treatment", "baseline"
