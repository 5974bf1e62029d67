"""Admin pages for planning and monitoring a study.

- `GET/POST /admin/studies/{slug}/plan`: the sample-size form (`app.statistics.planning`, same inputs as
  `sfgeval plan`, pre-filled from the study), with the plot and the table of the simulated curve.
  The default simulation takes well under a second to a few seconds, so it runs in the request.
- `POST /admin/studies/{slug}/monitoring`: the study's monitoring settings (auto-close, margin,
  looks), saved as a new study version like any other edit.
- `POST /admin/studies/{slug}/monitoring/stop`: the admin applies the monitoring stop by hand (closes
  the study when every comparison says "stop", recording the stop once).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.web.deps import SessionDep
from app.web.pages import FormDep, get_study, redirect, render
from app.web.auth import CurrentAdmin, flash, verify_csrf
from app.store.models import Study
from app.statistics.monitoring import MonitoringSettings
from app.studies.config import StudyError, update_study

router = APIRouter(prefix="/admin/studies", include_in_schema=False, dependencies=[Depends(verify_csrf)])

FIELDS = {  # form field -> (type, default); blank = default
    "win_rate": (float, None), "pilot": (str, None), "tie_rate": (float, 0.2), "sd_participant": (float, 0.5),
    "sd_prompt": (float, 0.3), "sd_pair": (float, 0.0), "strata": (int, 3), "prompts_per_stratum": (int, 20),
    "seeds_per_prompt": (int, 1), "ratings_per_participant": (int, 20), "half_width": (float, None),
    "power": (float, None), "alpha": (float, 0.05), "price_per_rating": (float, None), "sims": (int, 200),
    "seed": (int, 0),
}
MAX_WEB_SIMS = 2000


def study_defaults(study: Study) -> dict[str, Any]:
    """Form values from the study: its strata, prompts and ratings per participant."""
    pairs = [p for c in study.comparisons for p in c.pair_set.pairs]
    strata = {p.stratum for p in pairs} or {None}
    prompts = {p.prompt_id for p in pairs}
    per_prompt = max(1, round(len(pairs) / max(len(prompts), 1)))
    out = {k: v for k, (_, v) in FIELDS.items()}
    if pairs:
        out.update(strata=len(strata), prompts_per_stratum=max(1, round(len(prompts) / len(strata))),
                   seeds_per_prompt=per_prompt,
                   ratings_per_participant=min(study.pairs_per_participant, len(pairs)))
    return out


def parse_form(form) -> dict[str, Any]:
    """Typed values of the plan form; ValueError names the bad field."""
    values: dict[str, Any] = {}
    for name, (kind, default) in FIELDS.items():
        raw = str(form.get(name) or "").strip()
        try:
            values[name] = default if raw == "" else kind(raw)
        except ValueError:
            raise ValueError(f"{name.replace('_', ' ')}: {raw!r} is not a valid {kind.__name__}") from None
    if not 20 <= values["sims"] <= MAX_WEB_SIMS:
        raise ValueError(f"simulations per point: between 20 and {MAX_WEB_SIMS} on this page (use sfgeval plan)")
    return values


def plan_for_form(session, values: dict[str, Any]) -> dict[str, Any]:
    from app.analysis.planning import build_request, plan_csv, summary_lines
    from app.analysis.planning import run_plan as simulate
    from app.reporting.planning import plan_svg
    from app.analysis.planning import pilot_rows

    rows = None
    if values["pilot"]:
        try:
            # The pilot's rows after its own exclusion rules (the plan names which it applied).
            rows = pilot_rows(session, values["pilot"])
        except StudyError as e:
            raise ValueError(f"pilot study: {e}") from None
    req, pilot = build_request(
        win_rate=values["win_rate"], tie_rate=values["tie_rate"], sd_participant=values["sd_participant"],
        sd_prompt=values["sd_prompt"], sd_pair=values["sd_pair"], strata=values["strata"],
        prompts_per_stratum=values["prompts_per_stratum"], seeds_per_prompt=values["seeds_per_prompt"],
        ratings_per_participant=values["ratings_per_participant"], half_width=values["half_width"],
        power=values["power"], alpha=values["alpha"], price_per_rating=values["price_per_rating"], sims=values["sims"], seed=values["seed"],
        estimator="fast", pilot_rows=rows)
    result = simulate(req, pilot, values["pilot"])
    return {"result": result, "svg": plan_svg(result), "csv": plan_csv(result), "summary": summary_lines(result)}


@router.get("/{slug}/plan")
def plan_page(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    study = get_study(session, slug)
    return render(request, "admin/plan.html", admin, study=study, values=study_defaults(study), error=None, plan=None)


@router.post("/{slug}/plan")
def plan_submit(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    study = get_study(session, slug)
    shown = {**study_defaults(study), **{k: str(form.get(k) or "") for k in FIELDS}}
    try:
        values = parse_form(form)
        planned = plan_for_form(session, values)
    except ValueError as e:
        return render(request, "admin/plan.html", admin, status_code=422, study=study, values=shown, error=str(e),
                      plan=None)
    return render(request, "admin/plan.html", admin, study=study, values=shown, error=None, plan=planned)


@router.post("/{slug}/monitoring")
def monitoring_settings(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep,
                        form: FormDep) -> Response:
    study = get_study(session, slug)
    current = MonitoringSettings.model_validate(study.monitoring or {}).model_dump()
    try:
        settings = MonitoringSettings.model_validate({
            "auto_close": "auto_close" in form,
            "margin": str(form.get("margin") or "").strip() or current["margin"],
            "look_every": str(form.get("look_every") or "").strip() or current["look_every"],
        }).model_dump()
        before = study.version
        update_study(session, study, {"monitoring": settings})
        session.commit()
    except ValidationError as e:
        session.rollback()
        err = e.errors()[0]
        flash(request, f"Monitoring {'.'.join(str(p) for p in err['loc'])}: {err['msg']}", "error")
        return redirect(f"/admin/studies/{slug}")
    except StudyError as e:
        session.rollback()
        flash(request, str(e), "error")
        return redirect(f"/admin/studies/{slug}")
    if study.version != before:
        flash(request, f"Monitoring settings saved as version {study.version}.", "success")
    else:
        flash(request, "Nothing changed; the version stays the same.", "info")
    return redirect(f"/admin/studies/{slug}")


@router.post("/{slug}/monitoring/stop")
def monitoring_stop(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    from app.analysis.study_statistics import apply_monitoring_stop
    from app.statistics import StatisticsInputError

    study = get_study(session, slug)
    try:
        note = apply_monitoring_stop(session, study, by_admin=True)
    except StatisticsInputError as e:
        session.rollback()
        flash(request, f"Monitoring not computed: {e}", "error")
        return redirect(f"/admin/studies/{slug}")
    if note is None:
        flash(request, "Not closed: the study is not open or monitoring does not say stop.", "info")
        return redirect(f"/admin/studies/{slug}")
    session.commit()
    flash(request, f"Closed at the monitoring stop (version {study.version}).", "success")
    return redirect(f"/admin/studies/{slug}")
