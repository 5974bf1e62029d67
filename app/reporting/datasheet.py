"""The datasheet of a human study: the fields reviewers and HEDS-style checklists ask for.

`study_datasheet(session, study, stats)` returns {"schema", "fields": {key: {"label", "value",
"source", "missing"}}, "missing": [keys]}. Sources: "config" (the study's config, including its
`about` details), "product" (fixed by this software: the consent text when none is configured,
the blinding and randomisation), "data" (the database: dates, median time, counts). A field the
config lacks is listed as missing with value None: never invented. Written as datasheet.json and
rendered in the report's "Datasheet" section. Only reads.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.models import Participant, Rating, Study, Trial
from app.studies.config import DEFAULT_CONSENT_TEXT, study_config

SCHEMA = "sfgeval.datasheet/1"
BLINDING = ("left/right side random per trial and stored; pair order shuffled per participant; images re-encoded "
            "with opaque names, so nothing a participant can see reveals which method made an image")


def _field(label: str, value: Any, source: str) -> dict[str, Any]:
    missing = value is None or value == "" or value == []
    return {"label": label, "value": None if missing else value, "source": source if not missing else None,
            "missing": missing}


def study_datasheet(session: Session, study: Study, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """The datasheet of `study` (see the module docstring); `stats` adds the participant flow."""
    cfg = study_config(study)
    about = cfg.get("about") or {}
    first, last = session.execute(
        select(func.min(Rating.answered_at), func.max(Rating.answered_at))
        .join(Trial, Trial.id == Rating.trial_id).where(Trial.study_id == study.id)
    ).one()
    spans = [(f - c).total_seconds() / 60 for c, f in session.execute(
        select(Participant.created_at, Participant.finished_at)
        .where(Participant.study_id == study.id, Participant.finished_at.is_not(None))
    ) if c and f]
    flow = (stats or {}).get("flow") or {}
    rules = ((stats or {}).get("exclusions") or {}).get("steps") or []
    comparisons = ((stats or {}).get("study") or {}).get("comparisons") or []
    fields = {
        "title": _field("Study title", cfg["title"], "config"),
        "task": _field("Task as shown", "a text prompt above two images from the same prompt and seed; the "
                       "participant answers the question with one of five buttons (keys 1 to 5)", "product"),
        "question": _field("Question text as shown", cfg["question"], "config") if not cfg.get("questions") else
        _field("Questions as shown, one per criterion (issue 24)",
               "; ".join(f"{q['key']}: {q['text']}" + (" (primary)" if q["key"] == (cfg.get("primary") or
                                                                     cfg["questions"][0]["key"]) else "")
                         for q in cfg["questions"]), "config"),
        "scale_labels": _field("Answer labels as shown", cfg["scale_labels"], "config"),
        "instructions": _field("Instructions as shown", cfg["instructions"], "config"),
        "gold_instruction": _field("Text shown on check (gold) trials", cfg.get("gold_instruction"), "config"),
        "consent_text": _field("Consent text as shown", about.get("consent_text") or DEFAULT_CONSENT_TEXT,
                               "config" if about.get("consent_text") else "product"),
        "purpose_statement": _field("What participants were told about the purpose",
                                    about.get("purpose_statement"), "config"),
        "platform": _field("Platform", about.get("platform"), "config"),
        "recruitment": _field("Recruitment", about.get("recruitment"), "config"),
        "eligibility": _field("Eligibility", about.get("eligibility"), "config"),
        "pay": _field("Pay", about.get("pay"), "config"),
        "estimated_minutes": _field("Time advertised (minutes)", about.get("estimated_minutes"), "config"),
        "median_minutes": _field("Median time of those who finished (minutes)",
                                 round(median(spans), 1) if spans else None, "data"),
        "ethics_approval": _field("Ethics approval", about.get("ethics_approval"), "config"),
        "dates": _field("Dates of data collection (first and last rating, UTC)",
                        f"{first:%Y-%m-%d} to {last:%Y-%m-%d}" if first and last else None, "data"),
        "arms": _field("Methods compared (treatment vs baseline)",
                       [f"{c.get('treatment_arm')} vs {c.get('baseline_arm')}" for c in comparisons], "data"),
        "design": _field("Design", f"{cfg['pairs_per_participant']} pairs per participant, target "
                         f"{cfg['ratings_per_pair']} ratings per pair, gold rate {cfg['gold_rate']}, "
                         f"{cfg['repeats']} repeat(s), {cfg['practice_trials']} practice trial(s)", "config"),
        "blinding": _field("Blinding and randomisation", BLINDING, "product"),
        "exclusion_rules": _field("Exclusion rules (fixed before data collection)",
                                  [f"{s['description']}: {s['removed']} removed" if s.get("applied")
                                   else f"{s['description']} (not applied)" for s in rules]
                                  or ("none configured" if stats is not None else None), "config"),
        "participants": _field("Participants (signed up / started / rated / analysed)",
                               (f"{flow.get('signed_up')} / {flow.get('started')} / {flow.get('rated')} / "
                                f"{flow.get('analysed')}") if flow else None, "data"),
        "completion": _field("Completion code or redirect", "redirect to a URL" if cfg.get("redirect_url")
                             else "completion code shown at the end", "config"),
    }
    return {"schema": SCHEMA, "study": study.slug, "version": study.version, "fields": fields,
            "missing": [k for k, f in fields.items() if f["missing"]]}
