"""Process-wide caches of pair data, and what a trial shows (its left and right images).

Invalidation rule: pairs and images are immutable once imported (nothing in the app updates or
deletes a row of `pairs` or `images`), and a study's list of comparisons changes only together
with its `version` (see `app.studies.config`). So
- `study_pairs` is keyed by (database URL, study id, study version): a new version is a new key;
- `pair_views` is keyed by (database URL, pair id): a pair's view never goes stale. A miss loads
  the views of every pair of the missing pairs' pair sets at once (one query per pair set and
  process), so a process warms up after its first trial of each pair set.
- `study_at_version` is keyed by (database URL, study id, study version): every edit of a study
  (`app.studies.config.update_study`, state changes included) bumps its version, so a study's
  row at one version never changes. The participant path reads the version in the round trip that
  finds the participant and takes the rest of the study's config from here, instead of loading
  every column of the study (and decoding its JSON) on every request.
Entries are never refreshed; each cache is simply emptied when it outgrows its bound. Code that
ever rewrites pairs, images or a study's comparisons or config without bumping the version must
call `clear()` (in every serving process).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.session import make_transient_to_detached

from app.statistics.criteria import gold_target, gold_targets
from app.store.models import Comparison, Image, Pair, Study, Trial

_STUDY_PAIRS: dict[tuple[str, int, int], list[tuple[int, int, bool]]] = {}
_STUDY_PAIRS_MAX = 256


@dataclass(frozen=True)
class PairView:
    """What a trial shows of a pair: its prompt and images (ids and opaque tokens)."""

    prompt: str
    baseline_image_id: int
    treatment_image_id: int
    gold_image_id: int | None
    gold_degraded_arm: str | None
    tokens: dict[int, str]  # image id -> token, for this pair's images


_PAIR_VIEWS: dict[tuple[str, int], PairView] = {}
_PAIR_VIEWS_MAX = 200_000


_base, _treatment, _gold = aliased(Image), aliased(Image), aliased(Image)
# Built once and bound per call: compiling this three-way aliased join costs more than running it.
_PAIR_VIEW_ROWS = (
    select(Pair.id, Pair.prompt, Pair.baseline_image_id, Pair.treatment_image_id, Pair.gold_image_id,
           Pair.gold_degraded_arm, _base.token, _treatment.token, _gold.token)
    .join(_base, _base.id == Pair.baseline_image_id)
    .join(_treatment, _treatment.id == Pair.treatment_image_id)
    .outerjoin(_gold, _gold.id == Pair.gold_image_id)
    .where(Pair.pair_set_id.in_(select(Pair.pair_set_id).where(Pair.id.in_(bindparam("ids", expanding=True)))))
)
_DB_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def database_key(session: Session) -> str:
    """The database a session talks to, as a cache key (str(url), rendered once per engine)."""
    bind = session.get_bind()
    key = _DB_KEYS.get(bind)
    if key is None:
        key = _DB_KEYS[bind] = str(bind.url)
    return key


def clear() -> None:
    """Empty the caches (this process only)."""
    _STUDY_PAIRS.clear()
    _PAIR_VIEWS.clear()
    _STUDIES.clear()


_STUDIES: dict[tuple[str, int, int], Study] = {}
_STUDIES_MAX = 256
_studies = Study.__table__
_STUDY_ROW = select(_studies).where(_studies.c.id == bindparam("study_id"))


def study_at_version(session: Session, study_id: int, version: int) -> Study:
    """Study `study_id` as it is at `version` (the caller read the version in its own transaction):
    a detached, read-only snapshot shared by every request of this process (column attributes
    only: its relationships are not loaded, and touching one raises). A miss reads the row; if
    the study was edited since the caller read `version`, that newer row is returned."""
    key = (database_key(session), study_id, version)
    study = _STUDIES.get(key)
    if study is None:
        row = session.connection().execute(_STUDY_ROW, {"study_id": study_id}).one()
        study = Study(**row._mapping)
        make_transient_to_detached(study)
        if len(_STUDIES) >= _STUDIES_MAX:
            _STUDIES.clear()
        _STUDIES[(key[0], study_id, study.version)] = study
    return study


def study_pairs(session: Session, study: Study) -> list[tuple[int, int, bool]]:
    """(pair id, comparison id, has gold twin) for every pair of the study, in id order."""
    key = (database_key(session), study.id, study.version)
    cached = _STUDY_PAIRS.get(key)
    if cached is None:
        rows = session.execute(
            select(Pair.id, Comparison.id, Pair.gold_image_id.is_not(None))
            .join(Comparison, Comparison.pair_set_id == Pair.pair_set_id)
            .where(Comparison.study_id == study.id)
            .order_by(Pair.id, Comparison.id)
        ).all()
        cached = [(r[0], r[1], bool(r[2])) for r in rows]
        if len(_STUDY_PAIRS) >= _STUDY_PAIRS_MAX:
            _STUDY_PAIRS.clear()
        _STUDY_PAIRS[key] = cached
    return cached


def pair_views(session: Session, pair_ids: set[int]) -> dict[int, PairView]:
    """PairView by pair id for `pair_ids`, in at most one query (none when all are cached)."""
    db = database_key(session)
    out = {p: v for p in pair_ids if (v := _PAIR_VIEWS.get((db, p))) is not None}
    missing = pair_ids - out.keys()
    if missing:
        rows = session.execute(_PAIR_VIEW_ROWS, {"ids": sorted(missing)}).all()
        if len(_PAIR_VIEWS) + len(rows) > _PAIR_VIEWS_MAX:
            _PAIR_VIEWS.clear()
        for pid, prompt, b, t, g, arm, b_tok, t_tok, g_tok in rows:
            tokens = {b: b_tok, t: t_tok}
            if g is not None:
                tokens[g] = g_tok
            _PAIR_VIEWS[(db, pid)] = view = PairView(prompt, b, t, g, arm, tokens)
            if pid in missing:
                out[pid] = view
    return out


def _other_prompt_pair(session: Session, study: Study, pair_id: int, prompt: str) -> int:
    """The pair whose image an 'other_prompt' gold trial of `pair_id` shows (issue 24): the next
    pair of the study (in id order, cyclically) made for a different prompt, or `pair_id` itself."""
    ids = [p for p, _, _ in study_pairs(session, study)]
    start = ids.index(pair_id) if pair_id in ids else -1
    for k in range(1, len(ids)):
        candidate = ids[(start + k) % len(ids)]
        if pair_views(session, {candidate})[candidate].prompt != prompt:
            return candidate
    return pair_id


def _gold_kind(session: Session, trial: Trial, study: Study | None) -> str | None:
    """'degraded' or 'other_prompt' for a gold trial (`app.statistics.criteria.gold_target`), else None."""
    if trial.kind != "gold":
        return None
    study = study if study is not None else session.get(Study, trial.study_id)
    return gold_target(gold_targets(study.questions, study.primary_criterion), trial.position)[0]


def _image_ids(pair: Pair | PairView, trial: Trial, other: PairView | None = None) -> tuple[int, int]:
    """(left, right) image ids of a trial. For gold trials the intact image plays 'treatment'; for
    an 'other_prompt' gold trial (`other`: the pair made for another prompt) the pair's own
    treatment image plays 'treatment' and `other`'s plays 'baseline'."""
    if trial.kind == "gold" and other is not None:
        treatment, baseline = pair.treatment_image_id, other.treatment_image_id
    elif trial.kind == "gold":
        treatment = pair.baseline_image_id if pair.gold_degraded_arm == "baseline" else pair.treatment_image_id
        baseline = pair.gold_image_id
    else:
        treatment, baseline = pair.treatment_image_id, pair.baseline_image_id
    return (treatment, baseline) if trial.treatment_side == "left" else (baseline, treatment)


def _other_view(session: Session, trial: Trial, view: PairView, study: Study | None) -> PairView | None:
    if _gold_kind(session, trial, study) != "other_prompt":
        return None
    study = study if study is not None else session.get(Study, trial.study_id)
    other = _other_prompt_pair(session, study, trial.pair_id, view.prompt)
    return pair_views(session, {other})[other] if other != trial.pair_id else None


def trial_images(session: Session, trial: Trial, study: Study | None = None) -> tuple[Image, Image]:
    """(left, right) images of a trial (image bytes not loaded)."""
    pair = session.get(Pair, trial.pair_id)
    other = _other_view(session, trial, pair_views(session, {trial.pair_id})[trial.pair_id], study)
    left, right = _image_ids(pair, trial, other)
    return session.get(Image, left), session.get(Image, right)


def trial_image_tokens(session: Session, trials: list[Trial], study: Study | None = None) -> list[tuple[str, str]]:
    """(left token, right token) for each trial, in at most one query whatever the number of trials
    (a gold trial of a study with an 'other_prompt' check may need its study: pass it if at hand)."""
    views = pair_views(session, {t.pair_id for t in trials})
    out = []
    for t in trials:
        view = views[t.pair_id]
        other = _other_view(session, t, view, study)
        left, right = _image_ids(view, t, other)
        tokens = {**view.tokens, **other.tokens} if other is not None else view.tokens
        out.append((tokens[left], tokens[right]))
    return out
