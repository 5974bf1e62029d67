"""Studies: the list, the study form (new, edit, from a config file), state changes, the config
as a file, live progress and the ratings export. All writes go through `app.studies.config`, which
bumps the version."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from app.web.deps import SessionDep
from app.web.pages import FormDep, admin_router, get_study, redirect, render, twin
from app.web.routes.admin.pair_sets import pair_set_rows
from app.web.schemas import Progress, StudiesList
from app.web.auth import CurrentAdmin, flash
from app.studies.config_files import dump_config, parse_config_text
from app.studies.lifecycle import participant_links
from app.store.models import AdminUser, Comparison, Pair, Rating, Study, StudyVersion, Trial
from app.analysis.participant_flow import study_progress_with_flow
from app.studies.config import (
    TRANSITIONS,
    StudyError,
    create_study,
    has_ratings,
    set_state,
    study_config,
    update_study,
)
from app.studies.form import ABOUT_LABELS, blank_form, form_to_config, form_values, submitted_values

router = admin_router()

ACTION_NAMES = {"open": "Open", "closed": "Close", "archived": "Archive"}


def study_rows(session: Session) -> list[dict[str, Any]]:
    """One row per study, newest first: state, version, ratings (all but practice), main ratings
    against the target (pairs x ratings per pair)."""
    counts: dict[int, dict[str, int]] = {}
    for study_id, kind, n in session.execute(
        select(Trial.study_id, Trial.kind, func.count(Rating.id))
        .join(Rating, Rating.trial_id == Trial.id)
        .where(Trial.kind != "practice", Rating.is_primary)  # one row per answered trial
        .group_by(Trial.study_id, Trial.kind)
    ):
        counts.setdefault(study_id, {})[kind] = int(n)
    pairs = dict(
        session.execute(
            select(Comparison.study_id, func.count(Pair.id))
            .join(Pair, Pair.pair_set_id == Comparison.pair_set_id)
            .group_by(Comparison.study_id)
        ).all()
    )
    return [
        {
            "slug": s.slug, "title": s.title, "state": s.state, "version": s.version,
            "ratings": sum(counts.get(s.id, {}).values()), "main_ratings": counts.get(s.id, {}).get("main", 0),
            "target_ratings": int(pairs.get(s.id, 0)) * s.ratings_per_pair,
        }
        for s in session.scalars(select(Study).order_by(Study.created_at.desc(), Study.id.desc()))
    ]


@twin(router, "/studies", "admin/studies.html", StudiesList)
def studies_data(admin: CurrentAdmin, session: SessionDep) -> StudiesList:
    return StudiesList(studies=study_rows(session))


def _render_form(
    request: Request, admin: AdminUser, session: Session, study: Study | None, form: dict[str, Any],
    error: str | None = None, locked: bool = False,
) -> Response:
    return render(
        request, "admin/study_form.html", admin, status_code=422 if error else 200, study=study,
        form=form, locked=locked, error=error, pair_sets=pair_set_rows(session), about_labels=ABOUT_LABELS,
        action=f"/admin/studies/{study.slug}/edit" if study else "/admin/new-study",
    )


@router.get("/new-study")
def new_study_page(request: Request, admin: CurrentAdmin, session: SessionDep) -> Response:
    return _render_form(request, admin, session, None, blank_form())


@router.post("/new-study")
def create_study_from_form(request: Request, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    try:
        study = create_study(session, form_to_config(form, None))
        session.commit()
    except StudyError as e:
        session.rollback()
        # Every field as typed, valid or not (app.studies.form.submitted_values).
        return _render_form(request, admin, session, None, submitted_values(form), str(e))
    flash(request, f"Study {study.slug!r} created (version 1, {study.state}).", "success")
    return redirect(f"/admin/studies/{study.slug}")


@router.get("/new-study/from-config")
def import_config_page(request: Request, admin: CurrentAdmin) -> Response:
    return render(request, "admin/config_import.html", admin, error=None, config_text="")


@router.post("/new-study/from-config")
def import_config(request: Request, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    upload = form.get("config_file")
    text = str(form.get("config_text") or "")
    study = None
    try:
        if isinstance(upload, UploadFile) and upload.filename:
            try:
                text = upload.file.read().decode("utf-8")
            except UnicodeDecodeError:
                raise StudyError(f"{upload.filename}: not a UTF-8 text file") from None
        if not text.strip():
            raise StudyError("choose a config file or paste its text")
        study = create_study(session, parse_config_text(text))
        session.commit()
    except StudyError as e:
        session.rollback()
        return render(request, "admin/config_import.html", admin, status_code=422, error=str(e), config_text=text)
    flash(request, f"Study {study.slug!r} created from the config file.", "success")
    return redirect(f"/admin/studies/{study.slug}")


@router.get("/studies/{slug}")
def study_page(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    study = get_study(session, slug)
    counts = dict(session.execute(select(Pair.pair_set_id, func.count(Pair.id)).group_by(Pair.pair_set_id)).all())
    comparisons = [
        {"pair_set_id": c.pair_set_id, "label": c.label, "n_pairs": int(counts.get(c.pair_set_id, 0))}
        for c in study.comparisons
    ]
    versions = [
        {"version": v.version, "created_at": v.created_at, "config_yaml": dump_config(v.config), "note": v.note}
        for v in session.scalars(
            select(StudyVersion).where(StudyVersion.study_id == study.id).order_by(StudyVersion.version.desc())
        )
    ]
    return render(
        request, "admin/study.html", admin, study=study, comparisons=comparisons, versions=versions,
        transitions=TRANSITIONS.get(study.state, ()), action_names=ACTION_NAMES,
        links=participant_links(str(request.base_url), study.slug),
        default_hold_minutes=request.app.state.settings.hold_minutes,
    )


@router.get("/studies/{slug}/edit")
def edit_study_page(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    study = get_study(session, slug)
    if study.state == "archived":
        flash(request, "This study is archived and can no longer be edited.", "error")
        return redirect(f"/admin/studies/{slug}")
    return _render_form(
        request, admin, session, study, form_values(study_config(study)), locked=has_ratings(session, study)
    )


@router.post("/studies/{slug}/edit")
def edit_study(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    study = get_study(session, slug)
    locked = has_ratings(session, study)
    current = study_config(study)
    raw: dict[str, Any] = {}
    try:
        raw = form_to_config(form, study, locked)
        before = study.version
        update_study(session, study, raw)
        session.commit()
        changed = study.version != before
    except StudyError as e:
        session.rollback()
        return _render_form(request, admin, session, study, form_values({**current, **raw}), str(e), locked)
    if changed:
        flash(request, f"Saved as version {study.version}.", "success")
    else:
        flash(request, "Nothing changed; the version stays the same.", "info")
    return redirect(f"/admin/studies/{study.slug}")


@router.post("/studies/{slug}/state")
def change_state(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    study = get_study(session, slug)
    target = str(form.get("state") or "")
    try:
        set_state(session, study, target)
        session.commit()
    except StudyError as e:
        session.rollback()
        flash(request, str(e)[:1].upper() + str(e)[1:], "error")
        return redirect(f"/admin/studies/{slug}")
    flash(request, f"The study is now {study.state} (version {study.version}).", "success")
    return redirect(f"/admin/studies/{slug}")


@router.get("/studies/{slug}/config.{fmt}")
def study_config_file(slug: str, fmt: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    if fmt not in ("yaml", "json"):
        raise HTTPException(status_code=404, detail="config formats: .yaml or .json")
    study = get_study(session, slug)
    media = "application/json" if fmt == "json" else "application/yaml"
    return Response(
        dump_config(study_config(study), fmt), media_type=f"{media}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{slug}.{fmt}"'},
    )


# --- progress and export -------------------------------------------------------------------

@twin(router, "/studies/{slug}/progress", "admin/progress.html", Progress)
def progress_data(slug: str, admin: CurrentAdmin, session: SessionDep) -> Progress:
    return Progress.model_validate(study_progress_with_flow(session, get_study(session, slug)))


@router.post("/studies/{slug}/top-up")
def top_up(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    """Re-open the study for the analysable ratings exclusions removed: the target per pair goes up
    by the largest gap (least-rated pairs are served first) and a closed study opens again."""
    study = get_study(session, slug)
    plan = study_progress_with_flow(session, study)["top_up"]
    if plan is None:
        flash(request, "Nothing to top up: every pair has its target of analysable ratings.", "info")
        return redirect(f"/admin/studies/{slug}/progress")
    changes: dict[str, Any] = {"ratings_per_pair": plan["ratings_per_pair"]}
    if study.state == "closed":
        changes["state"] = "open"
    try:
        update_study(session, study, changes, note={"kind": "top-up", "largest_gap": plan["largest_gap"],
                                                    "pairs_short": plan["pairs_short"]})
        session.commit()
    except StudyError as e:
        session.rollback()
        flash(request, str(e)[:1].upper() + str(e)[1:], "error")
        return redirect(f"/admin/studies/{slug}/progress")
    flash(request, f"Topped up: {plan['pairs_short']} pair(s) short of analysable ratings; target now "
                   f"{study.ratings_per_pair} ratings per pair, study {study.state} (version {study.version}).",
          "success")
    return redirect(f"/admin/studies/{slug}/progress")


@router.get("/studies/{slug}/export.{fmt}")
def export_ratings(slug: str, fmt: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    from app.reporting import export

    if fmt not in ("csv", "json"):
        raise HTTPException(status_code=404, detail="export formats: .csv or .json")
    study = get_study(session, slug)
    rows = export.rating_rows(session, study)
    if fmt == "csv":
        body, media = export.rows_to_csv(rows), "text/csv; charset=utf-8"
    else:
        body, media = export.rows_to_json(rows), "application/json"
    return Response(
        body, media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{slug}-ratings.{fmt}"', "Cache-Control": "no-store"},
    )
