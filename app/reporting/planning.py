"""The plan's figure: interval half-width (and power) against participants."""

from __future__ import annotations

from typing import Any

from app.reporting.plotting import pyplot, svg


def plan_svg(result: dict[str, Any]) -> str:
    """Half-width (and power, for a power target) against participants: simulated points and fit."""
    table, curve = result["table"], result["curve"]
    power = "power" in result["target"]
    fig, axes = pyplot().subplots(1, 2 if power else 1, figsize=(10 if power else 6, 3.6), squeeze=False)
    panels = [("half_width", "mean interval half-width", result["request"]["half_width"])]
    if power:
        panels.append(("power", "power (interval above 0.5)", result["target"]["power"]))
    for ax, (key, label, target) in zip(axes[0], panels):
        ax.plot([r["participants"] for r in table], [r[key] for r in table], "o", color="#2166ac", label="simulated")
        ax.plot(curve["participants"], curve[key], "-", color="#7f7f7f", label="fit")
        if target is not None:
            ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label="target")
        if result["participants"] is not None:
            ax.axvline(result["participants"], color="#b2182b", linewidth=0.8, label="needed")
        ax.set_xscale("log")
        ticks = [r["participants"] for r in table]
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("participants")
        ax.set_ylabel(label)
        ax.legend(fontsize=8, frameon=False)
    return svg(fig, "plan")
