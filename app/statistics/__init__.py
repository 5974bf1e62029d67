"""Statistics of a blind paired study: plain functions on exported rating rows.

Package rule: the pure maths (estimates, intervals, tests, exclusions, scoring, monitoring
boundaries, planning and simulation). No database, no web. May import: nothing in `app` outside
`app.statistics`; every other package may import it.

Input: the rows of `app.analysis.ratings.rating_rows` (one dict per rating, the export column names of
docs/api: `participant`, `pair`, `prompt_id`, `stratum`, `treatment_side`, `choice`, `score`,
`is_gold`, `is_repeat`, `response_ms`, ... plus the extra `comparison` column). Output: a
JSON-ready dict (no numpy types, no NaN: missing values are None).

Conventions
- `choice` is the answer as shown: 1 left much better, 2 left slightly better, 3 no preference,
  4 right slightly better, 5 right much better.
- `score` is the un-flipped answer, -2..+2, positive = the treatment (e.g. SFG) was preferred.
  It is computed once on the server (`app.statistics.scoring`); this module never un-flips answers.
- Gold trials (one image obviously degraded) are quality control only: never part of the
  preference results. Repeat trials (a pair shown again, sides swapped) only measure
  consistency: the preference results use each participant's earliest main rating of a pair
  (later duplicates are dropped and counted). Practice trials (`is_practice`, when present)
  are ignored everywhere.
- Win rate = treatment wins / decisive votes (ties dropped); tie-as-half rate = (wins + ties/2)
  / all votes; mean score in points on the -2..+2 scale.
- Intervals: two-way cluster-robust (participants, and prompts within their stratum) with
  bias-reduced CR2 cluster weights and each part's t statistic's degrees of freedom under the
  working model; see `robust` (the one statistics core, shared with monitoring and planning)
  and docs/statistics.md for the simulation that chose it. Votes of one person, or on one
  prompt, are correlated, so intervals that treat votes as independent are too narrow. An
  estimate without an interval says why (`reason`). A crossed (pigeonhole) bootstrap is reported
  as a conservative cross-check.
- Tests shown: the interval's cluster-robust t statistic, p-value the larger of t(df)'s and its
  wild cluster bootstrap's under the null (`wild`), Holm-adjusted across comparisons (`p_holm`);
  tests that assume independent votes are withdrawn (p_value None).

No torch, no database: usable from the app, the command line and tests alike.

Modules, one job each: `rows` (rows -> arrays), `estimates` (distribution, point estimates,
independent-votes intervals), `robust` (headline intervals), `bootstrap` (crossed bootstrap),
`significance` (tests), `wild` (the shown tests' bootstrap p-values), `offline` (export files, no
database), `quality` (quality control), `agreement` (do a participant's answers follow the other
raters? the crowd-review check), `exclusions` (the rules' one schema and their application),
`jsonsafe` (JSON-ready numbers), `results` (`compute_statistics`).
"""

from app.statistics.scoring import CHOICES, SCORE_NAMES, SCORES
from app.statistics.bootstrap import (
    N_COMPONENTS,
    bootstrap_weights,
    crossed_bootstrap_estimates,
    crossed_bootstrap_sums,
    estimates_from_sums,
    percentile_interval,
)
from app.statistics.estimates import INDEPENDENCE_NOTE, distribution, point_estimates, wilson_interval
from app.statistics.exclusions import (
    DEFAULT_RULE_PARAMS,
    ExclusionRules,
    RULE_DESCRIPTIONS,
    RULE_ORDER,
    apply_exclusions,
    normalise_rules,
)
from app.statistics.quality import (
    krippendorff_alpha,
    participant_quality,
    quality_summary,
    repeat_agreement,
    response_times,
    side_bias,
)
from app.statistics.offline import analyze_exports, read_exports
from app.statistics.results import compute_statistics, holm, preference_results
from app.statistics.robust import robust_intervals, two_way
from app.statistics.rows import (
    REQUIRED_COLUMNS,
    Ratings,
    StatisticsInputError,
    preference_mask,
    ratings_from_rows,
)
from app.statistics.significance import pratt_exact_pvalue, significance_tests, wilcoxon_method

__all__ = [
    "CHOICES", "DEFAULT_RULE_PARAMS", "INDEPENDENCE_NOTE", "N_COMPONENTS", "REQUIRED_COLUMNS", "RULE_DESCRIPTIONS",
    "RULE_ORDER", "SCORES", "SCORE_NAMES", "ExclusionRules", "Ratings", "StatisticsInputError", "analyze_exports",
    "apply_exclusions", "bootstrap_weights", "holm", "read_exports", "two_way",
    "compute_statistics", "crossed_bootstrap_estimates", "crossed_bootstrap_sums", "distribution",
    "estimates_from_sums", "krippendorff_alpha", "normalise_rules", "participant_quality", "percentile_interval",
    "point_estimates", "pratt_exact_pvalue", "preference_mask", "preference_results", "quality_summary", "ratings_from_rows",
    "repeat_agreement", "response_times", "robust_intervals", "side_bias", "significance_tests", "wilcoxon_method", "wilson_interval",
]
