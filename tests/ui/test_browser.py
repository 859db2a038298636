"""The UI in a real browser (Debian's chromium through Playwright) against the real
``docpipe serve`` over a store with real runs: filter, open a failed run, read its traceback,
fix the fault, retry with the token, see the run succeed. Screenshots: test-artifacts/ui/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import ROOT
from ui_runs import FLOW, make_runs, serving

pytestmark = pytest.mark.slow

TOKEN = "browser-test-token-42"
SHOTS = ROOT / "test-artifacts" / "ui"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``docpipe serve`` on a free loopback port over a store with one batch of real runs."""
    made = make_runs(tmp_path, FLOW)
    with serving(made, tmp_path, TOKEN) as base:
        yield {**made, "base": base}


def test_find_a_failed_run_fix_it_and_retry_it_in_the_browser(server):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="needs the uitest extra")
    expect, sync_playwright = playwright.expect, playwright.sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    base = server["base"]
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            page.goto(f"{base}/runs")
            expect(page.locator("h1")).to_have_text("Flow runs")
            expect(page.locator('.count[data-status="failed"] b')).to_have_text("1")
            expect(page.locator('.count[data-status="succeeded"] b')).to_have_text("2")
            expect(page.locator("table.runs tbody tr")).to_have_count(3)
            page.screenshot(path=str(SHOTS / "runs.png"), full_page=True)

            page.select_option("#filters select[name=status]", "failed")
            page.click("#filters button")
            page.wait_for_url("**/runs?*status=failed*")
            rows = page.locator("table.runs tbody tr")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("late.txt")
            page.screenshot(path=str(SHOTS / "runs-failed.png"), full_page=True)

            rows.first.get_by_role("link", name="late.txt").click()
            expect(page.locator("#run-status")).to_have_text("failed")
            expect(page.locator("pre.traceback").first).to_contain_text("FileNotFoundError")
            expect(page.locator("pre.traceback").first).to_contain_text("Traceback (most recent call last)")
            run_url = page.url
            page.screenshot(path=str(SHOTS / "run-failed.png"), full_page=True)

            (server["docs"] / "late.txt").write_text("now\nit\nexists", encoding="utf-8")  # fix the fault
            form = page.locator("#retry-form")
            form.locator("input[name=token]").fill(TOKEN)
            form.get_by_role("button", name="Retry").click()
            page.wait_for_url(run_url + "?job=*")
            expect(page.locator("#run-status")).to_have_text("succeeded", timeout=90_000)  # the page reloads itself
            expect(page.locator("pre.traceback")).to_have_count(1)  # the first attempt's error is kept
            expect(page.locator("table.timeline")).to_contain_text("lengths[2]")
            page.locator("table.timeline").get_by_role("link", name="upper", exact=True).click()
            upper = page.locator("details.step-detail", has_text="toy.upper")
            expect(upper).to_have_attribute("open", "")  # the timeline's link unfolds the step's entry
            expect(upper).to_contain_text("NOW\\nIT\\nEXISTS")
            expect(page.locator("#logout")).to_be_visible()  # the token was entered once: the cookie keeps it
            page.screenshot(path=str(SHOTS / "run-succeeded.png"), full_page=True)

            page.goto(f"{base}/runs")
            expect(page.locator('.count[data-status="failed"] b')).to_have_text("0")
            expect(page.locator('.count[data-status="succeeded"] b')).to_have_text("3")
            # a run started elsewhere (here: through the API) appears on the open page by itself
            files = {"files": ("api.txt", b"started through the API", "text/plain")}
            reply = httpx.post(f"{base}/api/runs/upload", data={"flow": "ui-demo"}, files=files,
                               headers={"Authorization": f"Bearer {TOKEN}"})
            assert reply.status_code == 202, reply.text
            expect(page.locator('.count[data-status="succeeded"] b')).to_have_text("4", timeout=90_000)
            expect(page.locator("table.runs td.doc").first).to_contain_text("(uploaded api.txt)")

            good = page.goto(f"{base}/runs?correlation_id=ticket-7")
            assert good is not None and good.ok
            page.get_by_role("link", name="good.txt").click()
            shown = page.locator("table.values").first  # the <script> of a block's output shown as text
            expect(shown).to_contain_text("<SCRIPT>ALERT('OWNED')</SCRIPT>")

            page.goto(f"{base}/flows")
            page.get_by_role("link", name="ui-demo").first.click()
            expect(page.locator("pre.json")).to_contain_text('"toy.linelen"')
            page.screenshot(path=str(SHOTS / "flow.png"), full_page=True)
            page.goto(f"{base}/flows")
            page.screenshot(path=str(SHOTS / "flows.png"), full_page=True)

            page.goto(f"{base}/blocks")
            expect(page.locator("#block-toy\\.read")).to_contain_text("toy.read")
            page.screenshot(path=str(SHOTS / "blocks.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []  # no script errors, nothing refused by the content security policy
