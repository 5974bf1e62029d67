"""Exclusion rules and duplicate ratings: one schema, no silent rules, earliest answer kept (issue 9)."""

from __future__ import annotations

import pytest

from app import statistics as st
from app.reporting.report import render_report
from app.statistics.exclusions import ExclusionRules
from app.studies.config import StudyError, parse_config
from tests.test_statistics import row


def timed(participant, prompt, score, when, **kw):
    return row(participant, prompt, score, **kw) | {"answered_at": f"2026-01-01T10:00:{when:02d}+00:00"}


def test_duplicate_main_ratings_keep_the_earliest_answer_and_are_counted():
    base = [timed(p, f"q{i}", s, i) for p in ("a", "b") for i, s in enumerate([1, -1, 2, 0])]
    # A second main rating of (a, q0): answered later, listed first; it must be dropped.
    dup = timed("a", "q0", -2, 50)
    out = st.compute_statistics([dup] + base, draws=20)
    plain = st.compute_statistics(base, draws=20)
    assert out["design"]["n_duplicates_dropped"] == 1 and plain["design"]["n_duplicates_dropped"] == 0
    assert out["results"]["all"]["overall"]["distribution"] == plain["results"]["all"]["overall"]["distribution"]
    assert out["results"]["all"]["overall"]["n_ratings"] == 8
    # The earlier one wins whatever its place in the list: here the duplicate is the earliest.
    early = [timed("a", "q0", -2, 0)] + [r | {"answered_at": "2026-01-01T10:01:00+00:00"} if
                                          (r["participant"], r["prompt_id"]) == ("a", "q0") else r for r in base]
    counts = st.compute_statistics(early, draws=20)["results"]["all"]["overall"]["distribution"]["counts"]
    assert counts["-2"] == 1 and counts["1"] == 1  # a's q0 is -2 now; b's q0 is still +1


def test_consistency_rule_needs_enough_repeats_and_tolerates_one_step():
    def person(pid, pairs):
        rows = [row(pid, f"q{i}", first) for i, (first, _) in enumerate(pairs)]
        rows += [row(pid, f"q{i}", again, repeat=True) for i, (_, again) in enumerate(pairs)]
        rows += [row(pid, f"z{i}", s) for i, s in enumerate([1, -1, 0, 2])]
        return rows

    rows = (person("one_flip", [(2, -2)])                       # a single reversed repeat
            + person("wobbly", [(2, 1), (1, 0), (-1, -2)])       # three repeats, each one step away
            + person("random", [(2, -1), (-2, 1), (1, -1)]))     # three repeats, all far off
    rules = {"min_consistency": 0.5}
    ex = st.compute_statistics(rows, exclusion_rules=rules, draws=10)["exclusions"]
    assert ex["rules"]["consistency_tolerance"] == 1 and ex["rules"]["consistency_min_repeats"] == 3
    assert ex["excluded"] == ["random"]  # one_flip has too few repeats; wobbly agrees within one step
    strict = st.compute_statistics(rows, exclusion_rules=rules | {"consistency_tolerance": 0,
                                                                  "consistency_min_repeats": 1}, draws=10)
    assert sorted(strict["exclusions"]["excluded"]) == ["one_flip", "random", "wobbly"]
    assert "within 0 step(s)" in strict["exclusions"]["steps"][0]["description"]


def test_report_flags_exclusions_that_move_an_estimate_beyond_its_half_width():
    fans = [row(f"fan{j}", f"q{i}", 2, "left" if i % 2 else "right") for j in range(6) for i in range(8)]
    # Critics always answer on the left side: the side-bias rule removes all of them.
    critics = [row(f"critic{j}", f"q{i}", -2 if i % 2 else 1, "left" if i % 2 else "right", ms=2000)
               for j in range(6) for i in range(8)]
    for r in critics:
        r["choice"] = 3 - r["score"] if r["treatment_side"] == "left" else 3 + r["score"]
    out = st.compute_statistics(fans + critics, exclusion_rules={"max_side_bias": 0.9}, draws=50)
    effect = out["exclusions"]["effect"]
    assert out["exclusions"]["n_after"] == 6 and effect["flagged"] is True
    mean = effect["estimates"]["mean_score"]
    assert mean["exceeds"] and abs(mean["difference"]) > mean["half_width"]
    calm = st.compute_statistics(fans + critics, draws=50)
    assert calm["exclusions"]["effect"] == {"flagged": False, "estimates": {}}
    # The report says so next to the exclusion steps.
    assert 'id="exclusion-effect"' in render_report(out) and 'id="exclusion-effect"' not in render_report(calm)


def test_one_schema_refuses_typos_and_inert_speed_rules_everywhere():
    assert set(st.normalise_rules({})) == set(ExclusionRules.model_fields)
    with pytest.raises(st.StatisticsInputError, match="unknown exclusion rule.*min_consistncy"):
        st.normalise_rules({"min_consistncy": 0.5})
    with pytest.raises(StudyError, match="unknown exclusion rule"):
        parse_config({"title": "t", "pair_sets": [1], "exclusion_rules": {"min_consistncy": 0.5}})
    with pytest.raises(StudyError, match="max_fast_share needs a minimum response time"):
        parse_config({"title": "t", "pair_sets": [1], "min_response_ms": 0, "exclusion_rules": {"max_fast_share": 0.5}})
    # Either time limit is enough.
    parse_config({"title": "t", "pair_sets": [1], "min_response_ms": 0,
                  "exclusion_rules": {"max_fast_share": 0.5, "min_response_ms": 700}})
    parse_config({"title": "t", "pair_sets": [1], "min_response_ms": 800, "exclusion_rules": {"max_fast_share": 0.5}})
