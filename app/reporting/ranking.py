"""The report's section for a study over several arms: win matrix, ranking with intervals, nfe per arm.

`ranking_section(stats)` returns a self-contained HTML fragment (inline SVG figures drawn through
`app.reporting.plotting`) or None when the study has no joint ranking (fewer than 3 arms): a
two-arm study's report is unchanged. Inputs: statistics.json's `ranking` and the after-exclusions
results' `win_matrix` and `ranking_detail` (`app.statistics.ranking`), and the study's comparisons
(their pair sets' `params.set.nfe`, from the sfgeval.set/1 manifest).
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from app.reporting.plotting import pyplot, svg


def arm_nfe(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{arm: {method, nfe, nfe_alone}} from the study's K-arm pair sets (mean per image over the set)."""
    out: dict[str, dict[str, Any]] = {}
    for c in ((stats.get("study") or {}).get("comparisons") or []):
        info = ((c.get("params") or {}).get("set")) or {}
        for arm, v in (info.get("nfe") or {}).items():
            out.setdefault(arm, {"method": (info.get("methods") or {}).get(arm), **v})
    return out


def win_matrix_svg(arms: list[str], matrix: dict[str, dict[str, dict[str, Any]]], salt: str = "winmatrix") -> str:
    """Heatmap: row arm beats column arm, share of decisive votes (number of decisive votes below)."""
    plt = pyplot()
    k = len(arms)
    values = [[math.nan] * k for _ in range(k)]
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.2, 1.0 * k + 1.2))
    for i, a in enumerate(arms):
        for j, b in enumerate(arms):
            cell = (matrix.get(a) or {}).get(b)
            if cell and cell.get("rate") is not None:
                values[i][j] = cell["rate"]
                ax.text(j, i, f"{cell['rate']:.2f}\n({cell['decisive']})", ha="center", va="center", fontsize=8)
    im = ax.imshow(values, cmap="RdBu", vmin=0, vmax=1)
    ax.set_xticks(range(k), arms)
    ax.set_yticks(range(k), arms)
    ax.set_xlabel("column arm")
    ax.set_ylabel("row arm")
    ax.set_title("Row arm preferred over column arm\n(share of decisive votes; votes in brackets)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return svg(fig, salt)


def strength_svg(entries: list[dict[str, Any]], salt: str = "strength") -> str:
    """Strengths (log-odds vs the reference arm) with 95% intervals, best at the top."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(entries) + 1.2))
    for y, e in enumerate(reversed(entries)):
        s = e.get("strength")
        if s is None:
            continue
        lo, hi = e.get("ci_low"), e.get("ci_high")
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color="#555", lw=2)
        ax.plot([s], [y], "o", color="#1f77b4")
    ax.axvline(0, color="#999", lw=1, ls="--")
    ax.set_yticks(range(len(entries)),
                  [f"{e['rank']}. {e['arm']} (ranks {e['rank_low']}-{e['rank_high']})" for e in reversed(entries)])
    ax.set_xlabel("strength: log-odds of being preferred over the reference arm (95% interval)")
    return svg(fig, salt)


def ranking_section(stats: dict[str, Any]) -> str | None:
    """The HTML fragment (see the module docstring), or None without a ranking of 3 or more arms."""
    entries = stats.get("ranking") or []
    if len(entries) < 3:
        return None
    res = (stats.get("results") or {}).get("after_exclusions") or {}
    detail = res.get("ranking_detail") or {}
    arms = [e["arm"] for e in entries]
    nfe = arm_nfe(stats)
    rows = []
    for e in entries:
        n = nfe.get(e["arm"], {})
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        rows.append(f"<tr><td>{e['rank']}</td><td>{escape(str(e['arm']))}</td><td>{escape(str(n.get('method') or ''))}"
                    f"</td><td>{fmt(e.get('strength'))}</td><td>{fmt(e.get('ci_low'))} to {fmt(e.get('ci_high'))}</td>"
                    f"<td>{e['rank_low']}-{e['rank_high']}</td><td>{fmt(n.get('nfe'))}</td>"
                    f"<td>{fmt(n.get('nfe_alone'))}</td></tr>")
    comps = []
    for label, c in (detail.get("comparisons") or {}).items():
        est, p, ph = c.get("estimate"), c.get("p_value"), c.get("p_holm")
        est_s = "" if est is None else f"{est:.2f}"
        p_s = "" if p is None else f"{p:.3g}"
        ph_s = "" if ph is None else f"{ph:.3g}"
        comps.append(f"<tr><td>{escape(str(c['treatment_arm']))} vs {escape(str(c['baseline_arm']))}</td>"
                     f"<td>{est_s}</td><td>{p_s}</td><td>{ph_s}</td></tr>")
    parts = [
        '<section class="section" id="arm-ranking" aria-label="Ranking of the arms">',
        "<h2>Ranking of the arms</h2>",
        f"<p class=\"note\">{escape(detail.get('method') or '')}. Reference arm: "
        f"{escape(str(detail.get('reference') or arms[-1]))} (strength 0). Plausible ranks come from Holm-adjusted "
        "pairwise tests at 5%. nfe: network evaluations per image (mean over the set, from the manifest; shared "
        "steps counted once, in the first arm that ran them; nfe alone: the image made on its own).</p>",
        "<table><thead><tr><th>rank</th><th>arm</th><th>method</th><th>strength</th><th>95% interval</th>"
        "<th>plausible ranks</th><th>nfe</th><th>nfe alone</th></tr></thead><tbody>", *rows, "</tbody></table>",
        f"<figure>{strength_svg(entries)}</figure>",
    ]
    if res.get("win_matrix"):
        parts.append(f"<figure>{win_matrix_svg(arms, res['win_matrix'])}</figure>")
    if comps:
        parts += ["<table><thead><tr><th>comparison</th><th>log-odds difference</th><th>p</th><th>p (Holm)</th></tr>"
                  "</thead><tbody>", *comps, "</tbody></table>"]
    parts.append("</section>")
    return "\n".join(parts)
