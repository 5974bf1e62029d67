"""Who sees which pair next, and recording answers: the participant flow's rules in one package.

Package rule: owns participants' plans, trials, holds and ratings as they are written. May import:
`app.store`, `app.statistics` (scoring), `app.settings`.

Rules (evaluation protocol, section 3):
- Each participant gets a plan at sign-up: optional practice trials first, then main trials with
  gold trials (at `gold_rate` per main trial) and `repeats` repeated pairs shuffled in. Sides are
  balanced per participant (equal left/right, shuffled). All of it comes from one RNG seeded by
  the study seed and the participant's recorded seed, so a plan can be reproduced.
- Main trials take the least-rated pairs first; a pair never gets more main ratings (answered or
  held) than `ratings_per_pair`, and a participant never sees the same pair twice except in a
  planned repeat, which shows an earlier pair again with the sides swapped.
- A practice trial takes a pair its participant will not compare later; near the end of a study
  (no more open pairs than the participant's main trials) it avoids the pairs still under target,
  so the last open slots can go to any newcomer.
- A trial is held for `hold_minutes`; an expired hold no longer counts and its slot is reissued.
- A participant holds at most two trials: the current one and the next (so the page can preload
  its images). Answers must come in order.
- "Least-rated" reads each pair's tally of answered main trials (`PairTally`, +1 in the same
  transaction that answers a main trial) plus its live holds, so ranking costs the same whatever
  the number of ratings; the target check itself counts the pair's trials under its row lock.
- Race-free without a study-wide lock: see `allocation._Allocation` (per-pair row locks that skip,
  never wait) and `answers.submit_answer` (conditional state change). On SQLite every transaction
  is BEGIN IMMEDIATE (see `app.store.db`), which serialises writers.

Modules, one job each:
- `plans`: a participant's seeded plan (trial kinds and sides).
- `signup`: crowd ids and creating or resuming a participant.
- `allocation`: filling plan slots with trials (`next_trial`) and progress.
- `answers`: storing a rating, idempotently per request id (`submit_answer`).
- `pair_cache`: the process-wide caches of immutable pair data, and what a trial shows.
"""

from app.assignment.allocation import (
    LOOKAHEAD,
    NO_WORK,
    NextResult,
    attach,
    hold_for,
    next_trial,
    progress,
)
from app.assignment.answers import AnswerResult, participant_id_of, submit_answer
from app.assignment.errors import FlowError
from app.assignment.pair_cache import (
    PairView,
    pair_views,
    study_at_version,
    trial_image_tokens,
    trial_images,
)
from app.assignment.plans import make_plan
from app.assignment.signup import (
    CROWD_ID_KEYS,
    MAX_EXTERNAL_IDS,
    PERSON_KEYS,
    clean_external_ids,
    create_participant,
)

__all__ = [
    "CROWD_ID_KEYS", "LOOKAHEAD", "MAX_EXTERNAL_IDS", "NO_WORK", "PERSON_KEYS", "AnswerResult", "FlowError",
    "NextResult", "PairView", "attach", "clean_external_ids", "create_participant", "hold_for", "make_plan",
    "next_trial", "pair_views", "participant_id_of", "progress", "study_at_version", "submit_answer",
    "trial_image_tokens", "trial_images",
]
