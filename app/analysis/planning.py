"""Planning a study: how many participants a target needs, from assumed effects or a pilot study.

`build_request` reads the inputs into `app.statistics.planning.PlanRequest` (both front ends, the
`sfgeval plan` command and the admin plan page, call it, so they accept and reject the same
values); `run_plan` simulates; `plan_csv` and `summary_lines` are the table and the text both
show; `pilot_rows` reads a pilot study's ratings. The plot is `app.reporting.planning.plan_svg`.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from app.analysis.ratings import rating_rows
from app.store.csvsafe import dict_csv
from app.studies.config import get_study

TABLE_COLUMNS = ("participants", "ratings", "half_width", "power", "sims")


MAX_SD = 100.0  # latent sds are in units of the noise sd (1): beyond this the votes are coin flips
MIN_HALF_WIDTH = 1e-3  # a narrower target needs more participants than any study can have
MAX_PRICE = 1e9


def _check_numbers(**values: float | None) -> None:
    """ValueError (a clear 4xx or CLI error) for a value the simulation cannot use: NaN, infinite,
    or far outside what a study could have (1e308 overflows the simulation, 1e-300 as a half-width
    asks for infinitely many participants)."""
    for name, value in values.items():
        label = name.replace("_", " ")
        if value is None:
            continue
        if not math.isfinite(value):
            raise ValueError(f"{label}: must be a finite number, not {value}")
        if name.startswith("sd_") and not 0 <= value <= MAX_SD:
            raise ValueError(f"{label}: must be between 0 and {MAX_SD:g} (units of the noise sd)")
        if name == "half_width" and value < MIN_HALF_WIDTH:
            raise ValueError(f"{label}: must be at least {MIN_HALF_WIDTH:g}")
        if name == "price_per_rating" and value > MAX_PRICE:
            raise ValueError(f"{label}: must be at most {MAX_PRICE:g}")


def build_request(*, win_rate: float | None, tie_rate: float, sd_participant: float, sd_prompt: float,
                  sd_pair: float, strata: int, prompts_per_stratum: int, seeds_per_prompt: int,
                  ratings_per_participant: int, half_width: float | None, power: float | None, alpha: float,
                  price_per_rating: float | None, sims: int, seed: int, estimator: str,
                  pilot_rows: list[dict[str, Any]] | None = None) -> tuple[Any, dict[str, Any] | None]:
    """(PlanRequest, pilot estimate or None). ValueError says what is wrong with the inputs."""
    from app.statistics.clustered import Design, Effects
    from app.statistics.planning import PlanRequest, effects_from_pilot

    _check_numbers(win_rate=win_rate, tie_rate=tie_rate, sd_participant=sd_participant, sd_prompt=sd_prompt,
                   sd_pair=sd_pair, half_width=half_width, power=power, alpha=alpha, price_per_rating=price_per_rating)
    pilot = None
    if pilot_rows is not None:
        pilot = effects_from_pilot(pilot_rows)
        pilot["exclusions"] = getattr(pilot_rows, "exclusions", None)
        effects = pilot["effects"]
        if win_rate is not None:  # an explicit expected win rate overrides the pilot's
            effects = Effects(**{**effects.__dict__, "win_rate": win_rate})
    else:
        effects = Effects(win_rate=0.6 if win_rate is None else win_rate, tie_rate=tie_rate, sd_participant=sd_participant, sd_prompt=sd_prompt,
                          sd_pair=sd_pair)
    if half_width is not None and power is not None:
        raise ValueError("give either a target half-width or a target power, not both")
    if half_width is None and power is None:
        power = 0.8
    req = PlanRequest(
        design=Design(n_strata=strata, prompts_per_stratum=prompts_per_stratum, seeds_per_prompt=seeds_per_prompt,
                      ratings_per_participant=ratings_per_participant),
        effects=effects, half_width=half_width, power=power, alpha=alpha,
        price_per_rating=price_per_rating, sims=sims, seed=seed, estimator=estimator,
    )
    req.check()
    return req, pilot


def run_plan(req: Any, pilot: dict[str, Any] | None, pilot_slug: str | None, progress: Any = None) -> dict[str, Any]:
    """`app.statistics.planning.plan`, with the pilot estimate (if any) recorded in the result."""
    from app.statistics.planning import plan as simulate_plan

    result = simulate_plan(req, progress=progress)
    if pilot is not None:
        result["pilot"] = {k: v for k, v in pilot.items() if k != "effects"} | {
            "slug": pilot_slug, "exclusions_line": pilot_exclusions_line(pilot.get("exclusions"))}
    return result


def plan_csv(result: dict[str, Any]) -> str:
    return dict_csv(TABLE_COLUMNS, result["table"])  # app.store.csvsafe, like every CSV


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable result (the CLI prints it on stderr; the page shows the same)."""
    e = result["request"]["effects"]
    lines = [f"expected win rate {e['win_rate']:.3f}, ties {e['tie_rate']:.2f}, sds participant "
             f"{e['sd_participant']:.2f} / prompt {e['sd_prompt']:.2f} / pair {e['sd_pair']:.2f} (noise 1)",
             f"{'participants':>12} {'ratings':>8} {'half-width':>10} {'power':>6}"]
    lines += [f"{r['participants']:>12} {r['ratings']:>8} {r['half_width']:>10.4f} {r['power']:>6.3f}"
              for r in result["table"]]
    pilot = result.get("pilot")
    if pilot is not None:
        lines.insert(0, pilot_exclusions_line(pilot.get("exclusions")))
    if result["participants"] is None:
        lines.append(result.get("note", "target not reached"))
    else:
        cost = f", cost {result['cost']:.2f}" if result["cost"] is not None else ""
        lines.append(f"needed: {result['participants']} participants, {result['ratings']} ratings{cost} "
                     f"(binomial answer without random effects: {result['binomial_participants']:.1f} participants)")
    return lines


class PilotRows(list):
    """A pilot's rating rows after its own exclusion rules, with `exclusions`: what was applied
    ({"rules": [{rule, description, removed}], "participants_before", "participants_after"})."""

    exclusions: dict[str, Any] | None = None


def pilot_exclusions_line(exclusions: dict[str, Any] | None) -> str:
    """Which exclusions the pilot estimate applied, in one line."""
    if exclusions is None:
        return "pilot: no exclusion rules applied (ratings as given)"
    applied = [f"{r['description']}: {r['removed']} removed" for r in exclusions["rules"] if r["applied"]]
    if not applied:
        return (f"pilot: no exclusion rules configured; all {exclusions['participants_before']} participants "
                f"used")
    return (f"pilot: the pilot study's exclusion rules applied ({'; '.join(applied)}): "
            f"{exclusions['participants_after']} of {exclusions['participants_before']} participants used")


def pilot_rows(session: Session, slug: str) -> PilotRows:
    """The rating rows of the pilot study `slug` (StudyError when there is none), without the
    participants its exclusion rules remove (the same rules and order as its report), so the plan
    starts from the data the study's results would use; `exclusions` says which were applied."""
    from app.statistics import apply_exclusions, normalise_rules, participant_quality, ratings_from_rows

    study = get_study(session, slug)
    rows = rating_rows(session, study)
    out = PilotRows(rows)
    if not rows:
        out.exclusions = {"rules": [], "participants_before": 0, "participants_after": 0}
        return out
    rules = normalise_rules(study.exclusion_rules or {}, study.min_response_ms or None)
    quality = participant_quality(ratings_from_rows(rows), rules.get("min_response_ms", study.min_response_ms or None),
                                  rules["consistency_tolerance"])
    ex = apply_exclusions(quality, rules)
    kept = {str(p) for p in ex["kept"]}
    out = PilotRows(r for r in rows if str(r["participant"]) in kept)
    out.exclusions = {"rules": [{"rule": st["rule"], "description": st["description"], "removed": st["removed"],
                                 "applied": st["applied"]} for st in ex["steps"]],
                      "participants_before": ex["n_before"], "participants_after": ex["n_after"]}
    return out
