"""The review pages in a real browser (Debian's chromium through Playwright) against the real
``docpipe serve``: a low-confidence real PDF waits in the queue, a reviewer picks its class
with the keyboard and the run completes with the reviewed class and the reviewer in its
results; two browsers race for one task; the server is killed with ``kill -9`` while a task is
claimed, restarted, the lease runs out, another reviewer answers and the run completes once.
Screenshots: test-artifacts/ui/review-*.png."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import DOCPIPE, ROOT, TOYS
from ui_runs import free_port

from docpipe.engine import Engine
from docpipe.planner import build_plan
from docpipe.plugins import Registry
from docpipe.store import Store

pytestmark = pytest.mark.slow

TOKEN = "review-browser-token-7"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHOTS = ROOT / "test-artifacts" / "ui"
SAMPLES = ROOT / "samples"

#: a real PDF's text layer (pdf.text), a stand-in classifier that is never sure, a review
#: step, and a step after it that reads the answer
PDF_FLOW: dict[str, Any] = {
    "name": "review-pdf", "version": "1", "outputs": ["doc_class", "doc_class_reviewed_by", "tag"],
    "steps": [
        {"id": "text", "block": "pdf.text"},
        {"id": "classify", "expr": "'invoice' if 'INVOICE' in text else 'letter'", "output": "doc_class"},
        {"id": "score", "expr": "0.41", "output": "doc_class_score"},
        {"id": "check", "review": {"kind": "choose", "key": "doc_class", "prompt": "Which type?",
                                   "choices": ["letter", "invoice", "contract"]},
         "when": "doc_class_score < 0.5"},
        {"id": "tag", "expr": "doc_class + '/' + str(doc_class_reviewed_by)", "output": "tag"},
    ],
}


class Server:
    """The real ``docpipe serve`` on one loopback port, which it keeps across restarts."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url, self.tmp_path = url, tmp_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.tmp_path / f"serve-{self.starts}.log"
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [DOCPIPE, "serve", "--port", str(self.port), "--db", self.url, "--data-dir",
                 str(self.tmp_path / "data"), "--plugin", TOYS, "--workers", "1"],
                env={**os.environ, "DOCPIPE_TOKEN": TOKEN}, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp_path)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/openapi.json", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"docpipe serve did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="needs the uitest extra")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def watched(context: Any, problems: list[str]) -> Any:
    """A page of ``context`` whose script errors and CSP refusals land in ``problems``."""
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "409" not in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return page


def sign_in(page: Any, base: str, name: str) -> None:
    """The first review page asks for the reviewer's name (and the token, once)."""
    page.goto(f"{base}/review")
    form = page.locator("#reviewer-form")
    expect(form).to_be_visible()
    form.locator("#reviewer-name").fill(name)
    form.locator("#reviewer-token").fill(TOKEN)
    form.get_by_role("button", name="Start reviewing").click()
    expect(page.locator("#reviewer-shown")).to_have_text(name)
    expect(form).to_be_hidden()


def pdf_tasks(tmp_path: Path, *names: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """A store where PDF_FLOW ran on the sample PDFs ``names``: each waits for review (its
    task by file name)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    plan = build_plan(json.loads(json.dumps(PDF_FLOW)), Registry(extra=[TOYS]))
    with Store(url) as store, Engine(store, workers=1) as engine:
        engine.run(plan, [str(SAMPLES / n) for n in names])
        tasks = {Path(t["document"]).name: t for t in store.reviews.tasks(status="waiting")}
    assert sorted(tasks) == sorted(names)
    return url, tasks


def wait_run(base: str, run_id: str, status: str = "succeeded", timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = httpx.get(f"{base}/api/runs/{run_id}").json()
        if run["status"] == status:
            return dict(run)
        assert time.monotonic() < deadline, f"run {run_id} is {run['status']}, not {status}"
        time.sleep(0.3)


def results(base: str, batch_id: str) -> dict[str, dict[str, str]]:
    reply = httpx.get(f"{base}/api/batches/{batch_id}/results.csv")
    assert reply.status_code == 200, reply.text
    return {Path(r["document"]).name: r for r in csv.DictReader(io.StringIO(reply.text))}


def test_a_low_confidence_pdf_is_reviewed_with_the_keyboard_and_its_run_completes(tmp_path, browser):
    """flows/idp.json with review_below=0.6 on real PDFs: the French letter's class scores
    0.39 and waits, the invoice does not. The reviewer sees its page drawn, its text, the
    proposal with its score and top-k, picks with the keys and Enter; the run goes on."""
    url = f"sqlite:///{tmp_path / 'idp.db'}"
    done = subprocess.run(
        [DOCPIPE, "run", str(ROOT / "flows" / "idp.json"), str(SAMPLES / "lettre_fr.pdf"),
         str(SAMPLES / "invoice.pdf"), "-p", "review_below=0.6", "--db", url, "-o", str(tmp_path / "out.csv")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stdout + done.stderr  # none failed, one waits
    server = Server(url, tmp_path)
    problems: list[str] = []
    try:
        server.start()
        base = server.base
        page = watched(browser.new_context(viewport={"width": 1400, "height": 1000}), problems)
        sign_in(page, base, "ann")
        expect(page.locator('.count[data-status="waiting"] b')).to_have_text("1")
        expect(page.locator('#review-by .count[data-flow="idp"] b')).to_have_text("1")
        expect(page.locator('#review-by .count[data-kind="choose"] b')).to_have_text("1")
        expect(page.locator("#review-oldest")).to_contain_text("oldest waiting")
        rows = page.locator("table.review tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("lettre_fr.pdf")
        expect(rows.first).to_contain_text("doc_class = letter (0.39)")
        page.screenshot(path=str(SHOTS / "review-queue.png"), full_page=True)

        page.locator("#review-start").click()
        expect(page.locator("#lease")).to_have_attribute("data-state", "mine")  # opening it claimed it
        expect(page.locator("#lease")).to_contain_text("Claimed by you (ann)")
        image = page.locator("#page-1 img")
        expect(image).to_have_attribute("loading", "lazy")
        image.scroll_into_view_if_needed()
        deadline = time.monotonic() + 30  # (wait_for_function evaluates a string: the CSP refuses it)
        while image.evaluate("img => img.naturalWidth") < 800:
            assert time.monotonic() < deadline, "the page's image did not load"
            time.sleep(0.1)
        expect(page.locator("#page-1 pre.review-text")).to_contain_text("Librairie Lefèvre")
        expect(page.locator("#proposal")).to_contain_text("score 0.39")
        expect(page.locator("#proposal ol.topk li")).to_have_count(11)  # idp ranks every label
        choices = page.locator("button.choice")
        expect(choices.nth(0)).to_have_class("choice on")  # the proposal is highlighted
        task_id = page.url.rsplit("/", 1)[-1]
        held = httpx.get(f"{base}/api/review/tasks/{task_id}").json()
        assert (held["status"], held["lease_owner"]) == ("claimed", "ann")
        page.keyboard.press("2")
        expect(choices.nth(1)).to_have_class("choice on")
        expect(choices.nth(0)).to_have_class("choice")
        page.screenshot(path=str(SHOTS / "review-task.png"), full_page=True)
        page.keyboard.press("1")
        expect(choices.nth(0)).to_have_class("choice on")
        page.keyboard.press("Enter")
        page.wait_for_url("**/review?done=*")  # the next task: none waits
        expect(page.locator("#review-done")).to_be_visible()
        expect(page.locator('.count[data-status="answered"] b')).to_have_text("1")

        task = httpx.get(f"{base}/api/review/tasks/{task_id}").json()
        assert (task["answer"], task["answered_by"]) == ({"doc_class": "letter"}, "ann")
        wait_run(base, task["flow_run_id"])
        rows_by_doc = results(base, task["batch_id"])
        letter = rows_by_doc["lettre_fr.pdf"]
        assert (letter["status"], letter["doc_class"]) == ("succeeded", "letter")
        assert letter["doc_class_reviewed_by"] == "ann"
        assert rows_by_doc["invoice.pdf"]["doc_class_reviewed_by"] == ""  # sure enough: nobody asked
        page.goto(f"{base}/review/{task_id}")  # an answered task is read-only and says who answered
        expect(page.locator("#answered-by")).to_have_text("ann")
        expect(page.locator("button.choice").first).to_be_disabled()
        cached = list((tmp_path / "blobs" / "rendered").iterdir())
        assert len(cached) == 1  # the page was rendered once, into the blob store
    finally:
        server.stop()
    assert problems == []


def test_two_reviewers_race_for_one_task(tmp_path, browser):
    url, tasks = pdf_tasks(tmp_path, "invoice.pdf", "lettre_fr.pdf")
    task = tasks["invoice.pdf"]
    server = Server(url, tmp_path)
    problems: list[str] = []
    try:
        server.start()
        base = server.base
        pages = {}
        for name in ("ann", "bob"):
            page = watched(browser.new_context(viewport={"width": 1300, "height": 900}), problems)
            sign_in(page, base, name)
            pages[name] = page
        for page in pages.values():  # both open the task at once
            page.goto(f"{base}/review/{task['id']}", wait_until="commit")
        states = {}
        for name, page in pages.items():  # what the page's claim got back
            expect(page.locator("#lease")).to_have_attribute("data-state", re.compile("^(mine|held|error)$"))
            states[name] = page.locator("#lease").get_attribute("data-state")
        assert sorted(states.values()) == ["held", "mine"], states
        winner = next(n for n, s in states.items() if s == "mine")
        loser = next(n for n, s in states.items() if s == "held")
        lost = pages[loser]
        expect(lost.locator("#lease .holder")).to_have_text(winner)
        expect(lost.locator("#lease")).to_contain_text("read-only")
        expect(lost.locator("button.choice").first).to_be_disabled()
        lost.screenshot(path=str(SHOTS / "review-held.png"), full_page=True)
        lost.keyboard.press("Enter")  # nothing happens on a read-only page

        won = pages[winner]
        won.get_by_role("button", name="invoice").click()
        won.wait_for_url("**/review/*")  # the next waiting task (lettre_fr.pdf)
        expect(won.locator("h1")).to_contain_text("lettre_fr.pdf")
        recorded = httpx.get(f"{base}/api/review/tasks/{task['id']}").json()
        assert (recorded["answered_by"], recorded["answer"]) == (winner, {"doc_class": "invoice"})
        run = wait_run(base, task["flow_run_id"])
        assert run["outputs"]["tag"] == f"invoice/{winner}"
        lost.reload()
        expect(lost.locator("#answered-by")).to_have_text(winner)
    finally:
        server.stop()
    assert problems == []


def test_kill_9_while_claimed_then_the_lease_expires_and_the_run_completes_once(tmp_path, browser):
    url, tasks = pdf_tasks(tmp_path, "invoice.pdf")
    task = tasks["invoice.pdf"]
    server = Server(url, tmp_path)
    problems: list[str] = []
    ann_problems: list[str] = []  # ann's page may be loading its page image at the kill
    lease = 25
    try:
        server.start()
        base = server.base
        ann = watched(browser.new_context(), ann_problems)
        sign_in(ann, base, "ann")
        ann.goto(f"{base}/review/{task['id']}?lease={lease}")
        expect(ann.locator("#lease")).to_have_attribute("data-state", "mine")

        server.kill9()  # while ann holds the task
        with Store(url) as store:
            held = store.reviews.get(task["id"])
        assert held is not None and (held["status"], held["lease_owner"]) == ("claimed", "ann")
        server.start()

        bob = watched(browser.new_context(), problems)
        sign_in(bob, base, "bob")
        bob.goto(f"{base}/review/{task['id']}")
        assert time.time() < held["lease_expires_at"] - 1, "the restart took longer than the lease"
        expect(bob.locator("#lease")).to_have_attribute("data-state", "held")
        expect(bob.locator("#lease .holder")).to_have_text("ann")
        expect(bob.locator("button.choice").first).to_be_disabled()

        time.sleep(max(0.0, held["lease_expires_at"] - time.time()) + 0.5)  # the lease runs out
        bob.reload()
        expect(bob.locator("#lease")).to_have_attribute("data-state", "mine")
        bob.keyboard.press("3")
        expect(bob.locator("button.choice").nth(2)).to_have_class("choice on")
        bob.keyboard.press("2")
        bob.keyboard.press("Enter")
        bob.wait_for_url("**/review?done=*")

        ann.get_by_role("button", name="letter").click()  # ann's page from before: refused
        expect(ann.locator("#answer-error")).to_contain_text("answered by bob")
        run = wait_run(base, task["flow_run_id"])
        assert run["outputs"]["tag"] == "invoice/bob"
        time.sleep(1)  # anything that would run it again would have started by now
        with Store(url) as store:
            record = store.get_run(task["flow_run_id"])
            answered = store.reviews.get(task["id"])
        assert record is not None and answered is not None
        steps = [(t["step"], t["status"]) for t in record["tasks"]]
        assert steps.count(("tag", "succeeded")) == 1 and steps.count(("check", "succeeded")) == 1
        assert [s for s in steps if s[0] == "tag"] == [("tag", "succeeded")]
        assert (answered["answered_by"], answered["answer"]) == ("bob", {"doc_class": "invoice"})
        rows = results(base, task["batch_id"])
        assert list(rows) == ["invoice.pdf"]
        assert (rows["invoice.pdf"]["doc_class"], rows["invoice.pdf"]["doc_class_reviewed_by"]) == ("invoice", "bob")
    finally:
        server.stop()
    assert problems == []
    assert [p for p in ann_problems if "net::ERR_CONNECTION_" not in p] == []  # reset or refused
