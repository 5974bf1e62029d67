"""The report's result figures: the diverging bar of the five answers and the win-rate intervals,
with the arm names in legends and axis labels. `*_figure` returns a matplotlib figure (the paper's
PDF and PNG, `app.reporting.paper`); `*_svg` the same figure inline for report.html.
"""

from __future__ import annotations

from typing import Any

from app.reporting.plotting import pyplot, svg
from app.statistics.scoring import SCORES

# Baseline much better .. treatment much better: warm for the baseline, cool for the treatment.
SCORE_COLOURS = {-2: "#b2182b", -1: "#ef8a62", 0: "#d9d9d9", 1: "#67a9cf", 2: "#2166ac"}


# --------------------------------------------------------------------------------------------
# Plots (inline SVG)
# --------------------------------------------------------------------------------------------


def _groups(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, group summary) for overall, each comparison and each stratum that has data."""
    groups = []
    if result.get("overall"):
        groups.append(("All comparisons", result["overall"]))
    groups += [(f"Comparison: {k}", v) for k, v in result.get("per_comparison", {}).items()]
    groups += [(f"Stratum: {k}", v) for k, v in result.get("per_stratum", {}).items()]
    return groups


def answer_names(arms: tuple[str, str]) -> dict[int, str]:
    """The five un-flipped answers with the arm names: {-2: 'CFG much better', ..., 2: 'SFG much better'}."""
    treat, base = arms
    return {-2: f"{base} much better", -1: f"{base} slightly better", 0: "no preference",
            1: f"{treat} slightly better", 2: f"{treat} much better"}


def diverging_bar_svg(groups: list[tuple[str, dict[str, Any]]], title: str, salt: str,
                      arms: tuple[str, str] = ("treatment", "baseline")) -> str:
    return svg(diverging_bar_figure(groups, title, arms), salt)


def diverging_bar_figure(groups: list[tuple[str, dict[str, Any]]], title: str,
                         arms: tuple[str, str] = ("treatment", "baseline")) -> Any:
    """Diverging stacked bar of the five answers per group, centred on "no preference".

    Each bar spans shares of the group's votes: baseline answers to the left of 0, treatment
    answers to the right, "no preference" split evenly across 0. Legend and axis use the arm names.
    """
    names = answer_names(arms)
    fig, ax = pyplot().subplots(figsize=(9, 0.55 * len(groups) + 1.6))
    labels = []
    for y, (label, g) in enumerate(reversed(groups)):
        shares = {s: g["distribution"]["shares"][str(s)] or 0.0 for s in SCORES}
        left = -(shares[-2] + shares[-1] + shares[0] / 2)
        for s in SCORES:
            ax.barh(y, shares[s], left=left, color=SCORE_COLOURS[s], edgecolor="white", height=0.7,
                    label=names[s] if y == 0 else None)
            if shares[s] >= 0.06:
                ax.text(left + shares[s] / 2, y, f"{shares[s]:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if abs(s) == 2 else "black")
            left += shares[s]
        labels.append(f"{label} (n={g['distribution']['n']})")
    ax.set_yticks(range(len(groups)), labels)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-1, 1)
    ticks = [-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1]
    ax.set_xticks(ticks, [f"{abs(t):.0%}" for t in ticks])
    ax.set_xlabel(f"share of votes  (← {arms[1]} preferred | {arms[0]} preferred →)")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28 if len(groups) < 4 else -0.15), ncol=5, fontsize=8,
              frameon=False)
    return fig


def win_rate_svg(groups: list[tuple[str, dict[str, Any]]], title: str, salt: str,
                 arms: tuple[str, str] = ("treatment", "baseline")) -> str:
    return svg(win_rate_figure(groups, title, arms), salt)


def win_rate_figure(groups: list[tuple[str, dict[str, Any]]], title: str,
                    arms: tuple[str, str] = ("treatment", "baseline")) -> Any:
    """Win rate among decisive votes and tie-as-half rate with their 95% intervals (two-way cluster-robust)."""
    fig, ax = pyplot().subplots(figsize=(9, 0.55 * len(groups) + 1.4))
    n = len(groups)
    for offset, key, colour, name in ((0.15, "win_rate", "#2166ac", "win rate (decisive votes)"),
                                      (-0.15, "tie_half_rate", "#7f7f7f", "tie-as-half rate")):
        for y, (_, g) in enumerate(reversed(groups)):
            est = g[key]
            if est["estimate"] is None:
                continue
            lo = est["ci_low"] if est["ci_low"] is not None else est["estimate"]
            hi = est["ci_high"] if est["ci_high"] is not None else est["estimate"]
            ax.errorbar(est["estimate"], y + offset, xerr=[[est["estimate"] - lo], [hi - est["estimate"]]],
                        fmt="o", color=colour, capsize=3, label=name if y == 0 else None)
    ax.axvline(0.5, color="black", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(n), [label for label, _ in reversed(groups)])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share for {arms[0]} over {arms[1]} (0.5 = no difference); bars: 95% cluster-robust interval")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3 if n < 4 else -0.15), ncol=2, fontsize=8, frameon=False)
    return fig
