"""Paper-ready output of a report folder: the methods paragraph (Markdown and LaTeX) with its
BibTeX file, the tables as booktabs LaTeX and CSV, the figures as PDF and PNG.

`write_paper(out_dir, stats)` writes, next to report.html:

- `methods.md`, `methods.tex`, `references.bib`: design, recruitment, pay and time (when the
  study's datasheet has them), exclusions with counts (the participant flow), the statistical
  method with references; numbers come from the same dicts as the report;
- `tables/main.{csv,tex}` (one row per comparison: the verdict's numbers), `tables/strata.*`,
  `tables/flow.*`, `tables/criteria.*` and `tables/ranking.*` when the statistics have them;
- `figures/answers.{pdf,png}`, `figures/win_rate.{pdf,png}`, `figures/flow.{pdf,png}`: legends,
  axis labels and arm names on every one.

LaTeX tables need `\\usepackage{booktabs}`; every cell is escaped (`latex_escape`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from app.analysis.participant_flow import flow_rows
from app.reporting.verdict import overall_arms, ranking, verdicts

BIBTEX = r"""@article{cameron2011robust,
  author = {Cameron, A. Colin and Gelbach, Jonah B. and Miller, Douglas L.},
  title = {Robust Inference With Multiway Clustering},
  journal = {Journal of Business \& Economic Statistics},
  volume = {29}, number = {2}, pages = {238--249}, year = {2011}
}
@article{bell2002bias,
  author = {Bell, Robert M. and McCaffrey, Daniel F.},
  title = {Bias Reduction in Standard Errors for Linear Regression with Multi-Stage Samples},
  journal = {Survey Methodology}, volume = {28}, number = {2}, pages = {169--181}, year = {2002}
}
@article{pustejovsky2018small,
  author = {Pustejovsky, James E. and Tipton, Elizabeth},
  title = {Small-Sample Methods for Cluster-Robust Variance Estimation and Hypothesis Testing in Fixed Effects Models},
  journal = {Journal of Business \& Economic Statistics}, volume = {36}, number = {4}, pages = {672--683}, year = {2018}
}
@article{mackinnon2017wild,
  author = {MacKinnon, James G. and Webb, Matthew D.},
  title = {Wild Bootstrap Inference for Wildly Different Cluster Sizes},
  journal = {Journal of Applied Econometrics}, volume = {32}, number = {2}, pages = {233--254}, year = {2017}
}
@article{holm1979simple,
  author = {Holm, Sture},
  title = {A Simple Sequentially Rejective Multiple Test Procedure},
  journal = {Scandinavian Journal of Statistics},
  volume = {6}, number = {2}, pages = {65--70}, year = {1979}
}
@article{lan1983discrete,
  author = {Lan, K. K. Gordon and DeMets, David L.},
  title = {Discrete Sequential Boundaries for Clinical Trials},
  journal = {Biometrika}, volume = {70}, number = {3}, pages = {659--663}, year = {1983}
}
@book{jennison2000group,
  author = {Jennison, Christopher and Turnbull, Bruce W.},
  title = {Group Sequential Methods with Applications to Clinical Trials},
  publisher = {Chapman \& Hall/CRC}, year = {2000}
}
@article{krippendorff2011computing,
  author = {Krippendorff, Klaus},
  title = {Computing {Krippendorff's} Alpha-Reliability},
  journal = {Departmental Papers (ASC), University of Pennsylvania}, year = {2011}
}
@article{schulz2010consort,
  author = {Schulz, Kenneth F. and Altman, Douglas G. and Moher, David},
  title = {{CONSORT} 2010 Statement: Updated Guidelines for Reporting Parallel Group Randomised Trials},
  journal = {BMJ}, volume = {340}, pages = {c332}, year = {2010}
}
"""

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "–": "--", "−": "-", "→": r"$\rightarrow$", "±": r"$\pm$", "×": r"$\times$"}


def latex_escape(text: Any) -> str:
    """`text` safe inside a LaTeX paragraph or table cell."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _pct(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{100 * x:.{digits}f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "" if x is None else ("<0.001" if x < 0.001 else f"{x:.3f}")


# --------------------------------------------------------------------------------------------
# Tables: (header, rows) -> CSV and booktabs LaTeX
# --------------------------------------------------------------------------------------------


def table_csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def table_tex(header: list[str], rows: list[list[Any]], caption: str, label: str) -> str:
    """A booktabs table (`\\usepackage{booktabs}`): first column left, the others right."""
    spec = "".join("l" if i == 0 or h in ("verdict", "arm", "note") else "r" for i, h in enumerate(header))
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _group_row(label: str, g: dict[str, Any]) -> list[Any]:
    wr, th, ms = g.get("win_rate") or {}, g.get("tie_half_rate") or {}, g.get("mean_score") or {}
    dist = g.get("distribution") or {}
    return [label, g.get("n_participants", ""), g.get("n_prompts", ""), g.get("n_ratings", ""),
            _pct(dist.get("treatment_preferred")), _pct(dist.get("no_preference")), _pct(dist.get("baseline_preferred")),
            _pct(wr.get("estimate")), _pct(wr.get("ci_low")), _pct(wr.get("ci_high")),
            _pct(th.get("estimate")), _num(ms.get("estimate"), 2), _num(ms.get("ci_low"), 2), _num(ms.get("ci_high"), 2)]


def paper_tables(stats: dict[str, Any]) -> dict[str, tuple[list[str], list[list[Any]], str]]:
    """name -> (header, rows, caption) for every table the statistics support."""
    v = verdicts(stats)
    treat, base = overall_arms(stats)
    key = v["result_set"]
    results = (stats.get("results") or {}).get(key) or {}
    when = "after exclusions" if key == "after_exclusions" else "all participants (every one was excluded)"
    tables: dict[str, tuple[list[str], list[list[Any]], str]] = {}
    tables["main"] = (
        ["comparison", "verdict", "win rate %", "CI low %", "CI high %", "Holm p", "participants", "prompts",
         "ratings", "ties %"],
        [[c["comparison"] or f"{c['treatment']} vs {c['baseline']}", c["headline"], _pct(c["treatment_win_rate"]),
          _pct(c["ci_low"] if c["winner"] != c["baseline"] else 1 - c["ci_high"]),
          _pct(c["ci_high"] if c["winner"] != c["baseline"] else 1 - c["ci_low"]),
          _p(c["p"]), c["n_participants"], c["n_prompts"], c["n_ratings"], _pct(c["ties"])] for c in v["cards"]],
        f"Main result ({when}): win rate of the treatment arm among non-tie votes with 95% two-way "
        f"cluster-robust intervals (participants and prompts), Holm-adjusted p-values.",
    )
    group_header = ["group", "participants", "prompts", "ratings", f"{treat} preferred %", "no preference %",
                    f"{base} preferred %", "win rate %", "CI low %", "CI high %", "tie-as-half %", "mean score",
                    "mean CI low", "mean CI high"]
    strata = results.get("per_stratum") or {}
    if strata:
        tables["strata"] = (group_header, [_group_row(k, g) for k, g in strata.items()],
                            f"Results per prompt stratum ({when}); 95% two-way cluster-robust intervals.")
    criteria = stats.get("criteria") or results.get("per_criterion")
    if isinstance(criteria, dict) and criteria:
        rows = []
        for name, c in criteria.items():
            g = ((c.get("results") or {}).get(key) or {}).get("overall") if "results" in c else c
            if isinstance(g, dict):
                rows.append(_group_row(name, g))
        if rows:
            tables["criteria"] = (group_header, rows, f"Results per criterion ({when}).")
    rk = ranking(stats)
    if rk:
        tables["ranking"] = (["rank", "arm", "strength (log-odds)", "CI low", "CI high", "rank low", "rank high"],
                             [[e.get("rank", ""), e["name"], _num(e.get("strength")), _num(e.get("ci_low")),
                               _num(e.get("ci_high")), e.get("rank_low", ""), e.get("rank_high", "")] for e in rk],
                             f"Joint ranking of the arms; strength on the log-odds scale, {base} = 0.")
    flow = stats.get("flow")
    if flow:
        tables["flow"] = (["stage", "participants", "note"],
                          [[stage.strip(), "" if n is None else n, note] for stage, n, note in flow_rows(flow)],
                          "Participant flow (CONSORT-style).")
    return tables


# --------------------------------------------------------------------------------------------
# Methods paragraph
# --------------------------------------------------------------------------------------------


def methods_text(stats: dict[str, Any], datasheet: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """The methods paragraph as (plain sentence, citation keys) pieces, shared by Markdown and LaTeX."""
    study = stats.get("study") or {}
    cfg = study.get("config") or {}
    treat, base = overall_arms(stats)
    flow = stats.get("flow") or {}
    ds = (datasheet or {}).get("fields") or {}
    out: list[tuple[str, str]] = []
    n_pairs = sum(int(c.get("n_pairs") or 0) for c in study.get("comparisons") or [])
    design = (f"We ran a blind paired comparison of {treat} against {base}: each trial showed one text prompt above "
              f"two images generated from the same prompt and seed, one per method, in random left/right order, ")
    question = study.get("question") or cfg.get("question")
    questions = cfg.get("questions") or []
    if len(questions) > 1:  # several criteria (issue 24): every question, the primary named
        primary = cfg.get("primary") or questions[0]["key"]
        design += ("and asked " + ", ".join(f"\"{q['text']}\" ({q['key']}{', primary' if q['key'] == primary else ''})"
                                           for q in questions) + ", each ")
    else:
        design += (f"and asked \"{question}\" " if question else "and asked for a preference ")
    design += (f"on a five-point scale "
               f"({', '.join((cfg.get('scale_labels') or [])) or 'left much better to right much better'}).")
    out.append((design, ""))
    if cfg:
        out.append((f"The study had {n_pairs} image pairs; each participant rated {cfg.get('pairs_per_participant')} "
                    f"pairs, with a target of {cfg.get('ratings_per_pair')} ratings per pair, "
                    f"gold (quality-check) trials at a rate of {cfg.get('gold_rate')} per main trial and "
                    f"{cfg.get('repeats')} repeated pair(s) with sides swapped per participant.", ""))
    rec = []
    for key, text in (("platform", "Participants were recruited on {}"), ("eligibility", "eligibility: {}"),
                      ("pay", "pay: {}"), ("median_minutes", "median time {} minutes"), ("dates", "data collected {}")):
        val = ds.get(key, {}).get("value") if isinstance(ds.get(key), dict) else None
        if val not in (None, "", []):
            rec.append(text.format(val))
    if rec:
        out.append(("; ".join(rec) + ".", ""))
    if flow:
        ex = ", ".join(f"{s['removed']} by the rule \"{s['description']}\"" for s in flow.get("exclusions", [])
                       if s.get("applied"))
        start = (f"{flow['signed_up']} people signed up and {flow['started']} started; "
                 f"{flow['practice_only']} rated practice trials only. " if flow.get("signed_up") is not None else "")
        out.append((start + f"{flow['rated']} participants rated at least one study trial"
                    + (f" ({flow['completed']} completed the study)" if flow.get("completed") is not None else "")
                    + (f"; exclusion rules fixed before data collection removed {ex}" if ex else
                       "; no participant was excluded")
                    + f", leaving {flow['analysed']} participants and {flow['ratings']['analysable']} preference "
                      f"ratings for analysis (participant flow in the supplement, CONSORT-style).", "schulz2010consort"))
    out.append(("Gold and repeated trials served quality control only. We report the win rate of "
                f"{treat} among decisive (non-tie) votes with 95% confidence intervals from a two-way "
                "cluster-robust variance over participants and prompts (prompts within their stratum), "
                "with bias-reduced (CR2) cluster weights and, for each factor, the degrees of freedom of its "
                "t statistic under a random-effects working model, on the arcsine-square-root scale.",
                "cameron2011robust,bell2002bias,pustejovsky2018small"))
    out.append(("Tests of a 50% win rate use the same t statistic; where the interval has fewer than 50 degrees "
                "of freedom the p-value is the larger of the t reference's and that of a wild cluster bootstrap "
                "with the null imposed (one weight per participant, 999 draws), so a result counts only when "
                "both agree. p-values are Holm-adjusted over the study's comparisons.",
                "mackinnon2017wild,holm1979simple"))
    if stats.get("monitoring"):
        out.append(("Sequential monitoring used Lan-DeMets O'Brien-Fleming spending with repeated confidence "
                    "intervals (two-sided alpha 0.05).", "lan1983discrete,jennison2000group"))
    out.append(("Inter-rater agreement is Krippendorff's ordinal alpha on pairs rated at least twice.",
                "krippendorff2011computing"))
    v = verdicts(stats)
    for c in v["cards"]:
        out.append((c["sentence"], ""))
    return out


def methods_markdown(stats: dict[str, Any], datasheet: dict[str, Any] | None = None) -> str:
    parts = []
    for text, keys in methods_text(stats, datasheet):
        parts.append(text + (f" [{'; '.join('@' + k for k in keys.split(','))}]" if keys else ""))
    title = (stats.get("study") or {}).get("title") or "Study"
    return f"# Methods: {title}\n\n" + " ".join(parts) + "\n\nReferences: references.bib\n"


def methods_latex(stats: dict[str, Any], datasheet: dict[str, Any] | None = None) -> str:
    parts = []
    for text, keys in methods_text(stats, datasheet):
        parts.append(latex_escape(text).replace('"', "''") + (rf"~\cite{{{keys}}}" if keys else ""))
    return ("% Methods paragraph written by sfgeval; needs references.bib (\\bibliography{references}).\n"
            r"\paragraph{Human evaluation.} " + "\n".join(parts) + "\n")


# --------------------------------------------------------------------------------------------
# Figures: PDF and PNG
# --------------------------------------------------------------------------------------------


def flow_figure(flow: dict[str, Any]) -> Any:
    """CONSORT-style boxes: the main path down the middle, removals to the right."""
    from app.reporting.plotting import pyplot

    rows = flow_rows(flow)
    fig, ax = pyplot().subplots(figsize=(7.5, 0.55 * len(rows) + 0.6))
    ax.set_axis_off()
    n = len(rows)
    for i, (stage, count, note) in enumerate(rows):
        y = n - i
        removed = note in ("removed", "rule not applied")
        x = 0.62 if removed else 0.05
        text = f"{stage.strip()}: {'–' if count is None else count}"
        if note and not removed:
            text += f"\n({note})"
        ax.text(x, y, text, va="center", ha="left", fontsize=8,
                bbox={"boxstyle": "round,pad=0.3", "fc": "#f7f7f7" if removed else "white",
                      "ec": "#7f7f7f" if removed else "black", "ls": "--" if removed else "-"})
        if removed:
            ax.annotate("", xy=(0.61, y), xytext=(0.2, y), arrowprops={"arrowstyle": "->", "color": "#7f7f7f"})
    ax.set_xlim(0, 1.3)
    ax.set_ylim(0.3, n + 0.7)
    ax.set_title("Participant flow", fontsize=10)
    return fig


def write_figures(fig_dir: Path, stats: dict[str, Any]) -> dict[str, Path]:
    """answers, win_rate and flow figures as PDF and PNG (legend, axis labels and arm names on each)."""
    from app.reporting.plotting import pyplot
    from app.reporting.result_figures import _groups, diverging_bar_figure, win_rate_figure

    fig_dir.mkdir(parents=True, exist_ok=True)
    arms = overall_arms(stats)
    key, results = verdicts(stats)["result_set"], None
    results = (stats.get("results") or {}).get(key) or {}
    when = "after exclusions" if key == "after_exclusions" else "all participants"
    made: dict[str, Any] = {}
    groups = _groups(results)
    if groups:
        made["answers"] = lambda: diverging_bar_figure(groups, f"Answers, {arms[0]} vs {arms[1]} ({when})", arms)
        made["win_rate"] = lambda: win_rate_figure(groups, f"{arms[0]} win rate with 95% interval ({when})", arms)
    if stats.get("flow"):
        made["flow"] = lambda: flow_figure(stats["flow"])
    paths: dict[str, Path] = {}
    plt = pyplot()
    for name, make in made.items():
        for fmt in ("pdf", "png"):
            fig = make()
            path = fig_dir / f"{name}.{fmt}"
            meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            fig.savefig(path, format=fmt, bbox_inches="tight", dpi=200, metadata=meta)
            plt.close(fig)
            paths[f"figure_{name}_{fmt}"] = path
    return paths


def write_paper(out_dir: Path, stats: dict[str, Any], datasheet: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the methods paragraph, references, tables and figures under out_dir; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"methods_md": out_dir / "methods.md", "methods_tex": out_dir / "methods.tex",
             "references": out_dir / "references.bib"}
    paths["methods_md"].write_text(methods_markdown(stats, datasheet), encoding="utf-8")
    paths["methods_tex"].write_text(methods_latex(stats, datasheet), encoding="utf-8")
    paths["references"].write_text(BIBTEX, encoding="utf-8")
    tdir = out_dir / "tables"
    tdir.mkdir(exist_ok=True)
    for name, (header, rows, caption) in paper_tables(stats).items():
        (tdir / f"{name}.csv").write_text(table_csv(header, rows), encoding="utf-8")
        (tdir / f"{name}.tex").write_text(table_tex(header, rows, caption, f"tab:{name}"), encoding="utf-8")
        paths[f"table_{name}_csv"], paths[f"table_{name}_tex"] = tdir / f"{name}.csv", tdir / f"{name}.tex"
    paths.update(write_figures(out_dir / "figures", stats))
    return paths
