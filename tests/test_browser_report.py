"""Browser test (Chromium through Playwright, the `chromium` fixture): the HTML report opens
with the network blocked and shows its plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.reporting.report import write_report
from app.statistics.simulation import SimulatedStudy, simulate_rows
from app.statistics import compute_statistics

pytestmark = pytest.mark.browser


@pytest.fixture
def report_file(tmp_path) -> Path:
    study = SimulatedStudy(n_participants=24, n_prompts=12, trials_per_participant=10, comparisons=("a10", "a5"),
                           gold_per_participant=1, repeats_per_participant=1)
    rows = simulate_rows(study, seed=4, always_left=2)
    stats = compute_statistics(rows, exclusion_rules={"max_side_bias": 0.9}, draws=200, seed=1)
    assert stats["exclusions"]["excluded"], "the always-left participants should be excluded"
    return write_report(tmp_path / "report", stats, rows)["report"]


def test_report_opens_offline_and_shows_its_plots(chromium, report_file):
    attempted = []

    def only_files(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort()

    context = chromium.new_context(offline=True, viewport={"width": 1200, "height": 900})
    try:
        context.route("**", only_files)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(report_file.as_uri(), wait_until="load")

        # Verdict first: one card per comparison in plain words, on the first screen; details collapsed.
        cards = page.locator("#verdict .verdict-card")
        assert cards.count() == 2
        assert "non-tie votes" in cards.first.inner_text() and "95% CI" in cards.first.inner_text()
        verdict_box = page.locator("#verdict").bounding_box()
        assert verdict_box["y"] + verdict_box["height"] <= 900, verdict_box
        assert not page.locator("figure.plot svg").first.is_visible()
        page.click("#expand-all")

        plots = page.locator("figure.plot svg")
        # Diverging bars and win-rate intervals, with and without exclusions.
        assert plots.count() == 4
        for i in range(plots.count()):
            plot = plots.nth(i)
            plot.scroll_into_view_if_needed()
            assert plot.is_visible()
            box = plot.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100, box
        # The bars are drawn: filled shapes in the answer colours inside the first plot.
        colours = page.locator("figure[data-plot=bars] svg").first.evaluate(
            "svg => Array.from(svg.querySelectorAll('path')).map(p => getComputedStyle(p).fill)")
        for rgb in ("rgb(178, 24, 43)", "rgb(33, 102, 172)", "rgb(217, 217, 217)"):
            assert rgb in colours
        headline = page.locator("#headline").inner_text()
        assert "(treatment) was preferred in" in headline and "%" in headline
        assert page.locator("#exclusions table tr").count() >= 3
    finally:
        context.close()
    assert attempted == []  # nothing but the file itself was requested
