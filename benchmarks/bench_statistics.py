"""Time the full statistics of a study: 50,000 ratings, 500 participants, 600 pairs, 1,000 draws.

    python3 benchmarks/bench_statistics.py [--repeats 3] [--draws 1000] [--database]

Reports the median wall time of `app.statistics.compute_statistics` (everything the report and
the live page show, with exclusion rules on, so results are computed with and without
exclusions) against the 2 s target, and, side by side in the same run, the crossed bootstrap
computed per draw with explicit per-vote weights versus the aggregated matrix form it uses.
With --database it also times what the live statistics page does on a cache miss, on a
throwaway SQLite database holding the same ratings: load the rows (`app.reporting.export.rating_rows`),
compute, render the HTML.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import statistics as st  # noqa: E402
from app.statistics.simulation import SimulatedStudy, simulate_rows  # noqa: E402

TARGET_S = 2.0
RULES = {"fail_gold": True, "min_gold_pass_rate": 0.5, "min_response_ms": 800, "max_fast_share": 0.5,
         "straight_lining": True, "min_consistency": 0.3, "max_side_bias": 0.9}


def per_vote_bootstrap(participant, prompt, scores, wp, wq):
    """Reference: one pass over all votes per draw (what the matrix form avoids)."""
    out = np.empty(wp.shape[0])
    for b in range(wp.shape[0]):
        w = wp[b, participant] * wq[b, prompt]
        out[b] = (w * (scores > 0)).sum() / (w * (scores != 0)).sum()
    return out


def seed_database(url: str, rows: list[dict]) -> None:
    """Insert the simulated ratings as a real study (bulk inserts; images are placeholders)."""
    from datetime import timedelta

    from sqlalchemy import insert

    from app.store.db import make_engine, session_factory, upgrade_database
    from app.store.models import Image, Pair, PairSet, Participant, Rating, Trial, utcnow
    from app.studies.config import create_study

    upgrade_database(url)
    engine = make_engine(url)
    now = utcnow()
    with session_factory(engine)() as s:
        images = [Image(token=f"img{i}", sha256="0" * 64, width=1, height=1, byte_len=1, data=b"x") for i in range(2)]
        s.add_all(images)
        comparisons = sorted({r["comparison"] for r in rows})
        sets = [PairSet(name=c, manifest_sha256=f"{i:064d}", baseline_arm="cfg", treatment_arm=c, image_byte_len=1)
                for i, c in enumerate(comparisons)]
        s.add_all(sets)
        s.flush()
        pair_ids = {}
        for r in rows:
            key = r["pair"].removesuffix("-gold")
            if key not in pair_ids:
                ps = sets[comparisons.index(r["comparison"])]
                pair = Pair(pair_set_id=ps.id, pair_key=key, prompt_id=r["prompt_id"], prompt=r["prompt"],
                            stratum=r["stratum"], seed=r["seed"], baseline_image_id=images[0].id,
                            treatment_image_id=images[1].id)
                s.add(pair)
                pair_ids[key] = pair
        s.flush()
        study = create_study(s, {"title": "bench", "pair_sets": [ps.id for ps in sets], "state": "open",
                                 "exclusion_rules": RULES, "min_response_ms": 800})
        comp_id = {c.pair_set_id: c.id for c in study.comparisons}
        people = sorted({r["participant"] for r in rows})
        s.execute(insert(Participant), [{"study_id": study.id, "token": f"t{p}", "seed": 0} for p in people])
        pid = dict(zip(people, s.scalars(Participant.__table__.select().with_only_columns(Participant.id)
                                         .order_by(Participant.id)).all()))
        trials, ratings = [], []
        for i, r in enumerate(rows):
            pair = pair_ids[r["pair"].removesuffix("-gold")]
            kind = "gold" if r["is_gold"] else "repeat" if r["is_repeat"] else "main"
            trials.append({"id": i + 1, "public_id": f"tr{i}", "study_id": study.id, "participant_id": pid[r["participant"]],
                           "pair_id": pair.id, "comparison_id": comp_id[pair.pair_set_id], "position": i, "kind": kind,
                           "treatment_side": r["treatment_side"], "state": "answered", "expires_at": now,
                           "presented_at": now - timedelta(milliseconds=r["response_ms"])})
            ratings.append({"trial_id": i + 1, "request_id": f"rq{i}", "study_version": 1, "choice": r["choice"],
                            "score": r["score"], "treatment_side": r["treatment_side"], "response_ms": r["response_ms"],
                            "answered_at": now})
        s.execute(insert(Trial), trials)
        s.execute(insert(Rating), ratings)
        s.commit()
    engine.dispose()


def time_live_page(url: str, draws: int) -> None:
    from sqlalchemy import select

    from app.store.db import make_engine, session_factory
    from app.analysis.ratings import rating_rows
    from app.store.models import Study
    from app.reporting.report import render_report, study_statistics

    engine = make_engine(url)
    with session_factory(engine)() as s:
        study = s.scalar(select(Study))
        t0 = time.perf_counter()
        t_export = time.perf_counter()
        rating_rows(s, study)
        t_export = time.perf_counter() - t_export
        study_id = study.id
        s.expunge_all()  # a fresh identity map, as in a new request
        t0 = time.perf_counter()
        study = s.get(Study, study_id)
        rows = rating_rows(s, study)
        t1 = time.perf_counter()
        stats = study_statistics(s, study, draws=draws, rows=rows)
        t2 = time.perf_counter()
        render_report(stats, live=True)
        t3 = time.perf_counter()
    engine.dispose()
    print(f"live page cache miss (SQLite, {len(rows)} ratings): load rows {t1 - t0:.3f} s + statistics "
          f"{t2 - t1:.3f} s + render HTML {t3 - t2:.3f} s = {t3 - t0:.3f} s "
          f"(full export rows via app.reporting.export.rating_rows, used by `sfgeval report`: {t_export:.3f} s)")


def timed(fn, repeats, cpu=None):
    """Median wall time of fn() over repeats; appends the median process CPU time to `cpu`."""
    times, cpu_times = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if cpu is not None:
        cpu.append(statistics.median(cpu_times))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--database", action="store_true", help="also time the live page on a SQLite database")
    args = ap.parse_args()

    # 500 participants x 100 trials over 600 pairs (2 comparisons x 300 prompts, 3 strata),
    # plus gold trials and repeats on top, with a few bad participants for the rules to find.
    study = SimulatedStudy(n_participants=500, n_prompts=300, trials_per_participant=100,
                           comparisons=("cfg-vs-sfg-a10", "cfg-vs-sfg-a5"), gold_per_participant=3,
                           repeats_per_participant=2)
    rows = simulate_rows(study, seed=1, always_left=3, too_fast=2)
    main_rows = sum(not r["is_gold"] and not r["is_repeat"] for r in rows)
    print(f"ratings: {len(rows)} ({main_rows} preference ratings), participants: {study.n_participants}, "
          f"pairs: {study.n_prompts * len(study.comparisons)}, bootstrap draws: {args.draws}")

    cpu: list[float] = []
    full = timed(lambda: st.compute_statistics(rows, exclusion_rules=RULES, draws=args.draws, seed=0), args.repeats, cpu)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"compute_statistics (full, with and without exclusions): {full:.3f} s wall, {cpu[0]:.3f} s CPU "
          f"(target < {TARGET_S:.0f} s: {'met' if full < TARGET_S else 'MISSED'}; "
          f"{os.cpu_count()} cores, load average {load:.1f} while measuring)")

    r = st.ratings_from_rows(rows)
    m = st.preference_mask(r)
    wp, wq = st.bootstrap_weights(r.participants.size, r.prompts.size, args.draws, 0)
    p, q, s = r.participant[m], r.prompt[m], r.score[m]
    matrix = timed(lambda: st.crossed_bootstrap_estimates(p, q, s, wp, wq), args.repeats)
    naive = timed(lambda: per_vote_bootstrap(p, q, s, wp, wq), 1)
    same = np.allclose(per_vote_bootstrap(p, q, s, wp[:20], wq[:20]),
                       st.crossed_bootstrap_estimates(p, q, s, wp[:20], wq[:20])["win_rate"], rtol=1e-5)
    print(f"crossed bootstrap, overall group: matrix form {matrix:.3f} s vs per-vote weights {naive:.3f} s "
          f"({naive / matrix:.0f}x faster, same values: {same})")

    if args.database:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.sqlite3"
            seed_database(url, rows)
            time_live_page(url, args.draws)


if __name__ == "__main__":
    main()
