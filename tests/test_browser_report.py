"""Browser test (Chromium through Playwright): the HTML report opens with the network blocked
and shows its plots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.report import write_report
from app.simulation import SimulatedStudy, simulate_rows
from app.statistics import compute_statistics

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _need_browser():
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        problem = "playwright is not installed"
    else:
        problem = None if Path(CHROMIUM).exists() else f"{CHROMIUM} not found"
    if problem:
        if os.environ.get("SFGEVAL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SFGEVAL_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)


@pytest.fixture
def report_file(tmp_path) -> Path:
    study = SimulatedStudy(n_participants=24, n_prompts=12, trials_per_participant=10, comparisons=("a10", "a5"),
                           gold_per_participant=1, repeats_per_participant=1)
    rows = simulate_rows(study, seed=4, always_left=2)
    stats = compute_statistics(rows, exclusion_rules={"max_side_bias": 0.9}, draws=200, seed=1)
    assert stats["exclusions"]["excluded"], "the always-left participants should be excluded"
    return write_report(tmp_path / "report", stats, rows)["report"]


def test_report_opens_offline_and_shows_its_plots(report_file):
    _need_browser()
    from playwright.sync_api import sync_playwright

    attempted = []

    def only_files(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
            context.route("**", only_files)
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(report_file.as_uri(), wait_until="load")

            plots = page.locator("figure.plot svg")
            # Diverging bars and win-rate intervals, with and without exclusions.
            assert plots.count() == 4
            for i in range(plots.count()):
                plot = plots.nth(i)
                plot.scroll_into_view_if_needed()
                assert plot.is_visible()
                box = plot.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 100, box
            # The bars are drawn: filled shapes with the five answer colours inside the first plot.
            colours = page.locator("figure[data-plot=bars] svg").first.evaluate(
                "svg => Array.from(svg.querySelectorAll('path')).map(p => getComputedStyle(p).fill)")
            for rgb in ("rgb(178, 24, 43)", "rgb(33, 102, 172)", "rgb(217, 217, 217)"):
                assert rgb in colours
            headline = page.locator("#headline").inner_text()
            assert "treatment was preferred in" in headline and "%" in headline
            assert page.locator("#exclusions table tr").count() >= 3
        finally:
            browser.close()
    assert attempted == []  # nothing but the file itself was requested
