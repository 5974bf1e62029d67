"""Helpers for the participant browser tests: viewports, starting a study, screenshots, axe."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
VIEWPORTS = {
    "desktop": {"viewport": {"width": 1366, "height": 768}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
    "phone-landscape": {"viewport": {"width": 844, "height": 390}, "is_mobile": True, "has_touch": True},
}


def open_page(chromium, size: str):
    """(context, page) at one of VIEWPORTS; page errors are collected in `page.errors`."""
    context = chromium.new_context(**VIEWPORTS[size])
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return context, page


def start(page, base_url: str, slug: str) -> None:
    """Consent and wait until the first trial's answers are open."""
    page.goto(f"{base_url}/s/{slug}")
    page.check("#consent")
    page.click("#start")
    page.wait_for_url("**/run")
    wait_unlocked(page)


def wait_unlocked(page, progress: str | None = None) -> None:
    if progress is not None:
        page.wait_for_function("t => document.getElementById('progress-text').textContent === t", arg=progress)
    page.wait_for_function("!document.querySelector('.answer').disabled")


def screenshot(page, name: str) -> Path:
    """Save a screenshot under test-artifacts/ (git-ignored); returns its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def axe_violations(page) -> list[str]:
    """WCAG 2 A/AA violations axe-core finds on the page as it is now ("id: target" strings)."""
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(page, options={"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21aa"]}})
    return [f"{v['id']}: {[n['target'] for n in v['nodes']][:3]}" for v in result.response["violations"]]


def box(page, selector: str) -> dict:
    return page.locator(selector).bounding_box()
