"""Browser test (Chromium) of issue 25: a finished study from the study page to the verdict, the
report zip downloaded, its LaTeX tables compiled (or checked structurally without a TeX engine),
and the participant flow of the report equal to the progress page's."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from app.accounts.admins import ensure_admin
from tests.test_paper_report import check_paper_folder, finished_study

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url):
    return sqlite_url


def test_finished_study_to_verdict_and_report_zip(chromium, live_server, session, study_factory, tmp_path):
    ensure_admin(session, "admin", "pw-browser")
    session.commit()
    slug, _ = finished_study(session, study_factory, platform="Prolific")
    context = chromium.new_context(accept_downloads=True, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{live_server}/admin/login")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill("pw-browser")
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Studies").wait_for()

        # The progress page: the flow and the shortfall after exclusions.
        page.goto(f"{live_server}/admin/studies/{slug}/progress")
        progress_flow = {stage: page.locator(f"#flow-table [data-stage={stage}]").inner_text()
                         for stage in ("signed_up", "started", "practice_only", "rated", "kept", "analysed")}
        assert page.locator("#shortfall").is_visible()
        assert page.get_by_role("button", name="Top up: re-open for the missing analysable ratings").is_visible()

        # From the study page to the verdict.
        page.goto(f"{live_server}/admin/studies/{slug}")
        page.get_by_role("link", name="Statistics").first.click()
        page.wait_for_url("**/statistics")
        card = page.locator("#verdict .verdict-card").first
        assert card.is_visible() and "SFG" in card.inner_text() and "CFG" in card.inner_text()
        assert "non-tie votes" in card.inner_text() and "95% CI" in card.inner_text()
        box = page.locator("#verdict").bounding_box()
        assert box["y"] + box["height"] <= 800, box  # the headline fits on one screen
        flow_line = page.locator("#flow-line").inner_text()
        assert f"{progress_flow['signed_up']} signed up" in flow_line
        assert f"{progress_flow['analysed']} analysed" in flow_line

        # Report flow table == progress page.
        page.click("#expand-all")
        rows = {r.locator("td").nth(0).inner_text().strip(): r.locator("td").nth(1).inner_text()
                for r in page.locator("#flow-table tr[data-stage]").all()}
        assert rows["Signed up (consented)"] == progress_flow["signed_up"]
        assert rows["Started (given a trial)"] == progress_flow["started"]
        assert rows["practice only (no study rating)"] == progress_flow["practice_only"]
        assert rows["Rated at least one study trial"] == progress_flow["rated"]
        assert rows["Kept after exclusions"] == progress_flow["kept"]
        assert rows["Analysed"] == progress_flow["analysed"]

        # The report folder as a zip.
        with page.expect_download() as info:
            page.click("#report-zip")
        data = info.value.path().read_bytes()
    finally:
        context.close()
    out = tmp_path / "unzipped"
    zipfile.ZipFile(io.BytesIO(data)).extractall(out)
    folder = out / f"{slug}-report"
    stats = json.loads((folder / "statistics.json").read_text(encoding="utf-8"))
    flow = {k: v for k, v in stats["flow"].items() if k != "per_pair"}
    assert {k: str(flow[k]) for k in progress_flow} == progress_flow
    check_paper_folder(folder, flow)
