"""The review queue with many waiting runs (issue 16, "Figures to report"); not a test.

1. Makes N waiting runs (default 1,000) with a real ``docpipe run`` of a small flow with a
   review step (``pdf.text`` over hard links of ``samples/invoice.pdf``, an ``expr``
   classifier that is never sure, a ``choose`` review, a step after it that reads the
   answer) into a fresh SQLite store.
2. Engine memory while they wait: the peak RSS (``VmHWM``, polled from ``/proc``) of the
   ``docpipe run`` process for 10, 100 and N waiting runs, against the same flow without
   the review step (same N, every run succeeds): the baseline.
3. Starts a real ``docpipe serve`` (127.0.0.1, a free port, a token) over the N-run store and
   over the 10-run store (the baseline), and times the queue page ``/review``, a task page
   ``/review/{id}`` and ``GET /api/review/tasks`` (median and p95 of ``--requests``
   requests each, after 3 untimed ones). The time is from sending the request to having the
   whole response with httpx: it includes the local HTTP hop, measured alone with
   ``GET /api/jobs`` (an empty list).
4. On the warm server (after one untimed answer), answers ``--answers`` tasks one by one
   through ``POST /api/review/tasks/{id}/answer`` and polls ``GET /api/runs/{id}`` (every
   10 ms) until the run is ``succeeded``: the time from the answer to the run's completion.

    python benchmarks/review_queue.py [--runs 1000] [--requests 30] [--answers 10] [--json]

JSON on stdout, a table on stderr. Exits 1 when a check fails (a run that does not wait, a
page that is not 200, a run that does not complete with the answer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DOCPIPE = str(Path(sys.executable).parent / "docpipe")
SAMPLE = ROOT / "samples" / "invoice.pdf"
TOKEN = "review-queue-bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

#: the shape of tests/ui/test_review_browser.py's PDF_FLOW
REVIEW_FLOW: dict[str, Any] = {
    "name": "review-bench", "version": "1", "outputs": ["doc_class", "doc_class_reviewed_by", "tag"],
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
#: the baseline: the same flow without the review step (every run succeeds)
PLAIN_FLOW: dict[str, Any] = {
    "name": "review-bench-plain", "version": "1", "outputs": ["doc_class", "tag"],
    "steps": [s for s in REVIEW_FLOW["steps"] if s["id"] not in ("check", "tag")]
    + [{"id": "tag", "expr": "doc_class + '/none'", "output": "tag"}],
}


class Failed(Exception):
    pass


def check(ok: bool, message: str) -> None:
    if not ok:
        raise Failed(message)


def stats(seconds: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, max(0, round(0.95 * len(ms)) - 1))]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2), "p95_ms": round(p95, 2),
            "min_ms": round(ms[0], 2), "max_ms": round(ms[-1], 2)}


def inputs(folder: Path, n: int) -> Path:
    """``n`` hard links (copies where links fail) of the sample invoice."""
    folder.mkdir(parents=True)
    for i in range(n):
        target = folder / f"doc{i:05d}.pdf"
        try:
            os.link(SAMPLE, target)
        except OSError:
            shutil.copyfile(SAMPLE, target)
    return folder


def vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def vm_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def docpipe_run(flow: Path, folder: Path, db: str, tmp: Path) -> dict[str, Any]:
    """A real ``docpipe run`` (1 worker a pool): its exit status, seconds and peak RSS
    (``VmHWM`` of the ``docpipe run`` process, polled every 5 ms: monotonic, so the last read
    before it exits is its peak up to its last few ms)."""
    log = tmp / f"run-{os.getpid()}-{time.monotonic_ns()}.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([DOCPIPE, "run", str(flow), str(folder), "--db", db, "-q", "-w", "1"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, vm_hwm_kib(proc.pid) or 0)
            time.sleep(0.005)
    seconds = time.perf_counter() - t0
    return {"rc": proc.returncode, "seconds": round(seconds, 2), "peak_rss_mib": round(peak / 1024, 1),
            "log": log.read_text()}


def counts(db_file: Path) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(db_file) as con:
        runs = dict(con.execute("SELECT status, count(*) FROM flow_runs GROUP BY status").fetchall())
        try:
            tasks = dict(con.execute("SELECT status, count(*) FROM review_tasks GROUP BY status").fetchall())
        except sqlite3.OperationalError:
            tasks = {}
    return {**{f"runs_{k}": v for k, v in runs.items()}, **{f"tasks_{k}": v for k, v in tasks.items()}}


def resume_state_ms(db: str, repeat: int = 5) -> dict[str, Any]:
    """In this process: what each continue of the batch reads first, ``Store.resume_state``
    (every run of the batch with the outputs of its succeeded steps), median ms and size."""
    from docpipe.store import Store

    with Store(db) as store:
        batch_id = store.reviews.tasks(status="waiting", limit=1)[0]["batch_id"]
        took = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            state = store.resume_state(batch_id)
            took.append(time.perf_counter() - t0)
    return {"median_ms": round(statistics.median(took) * 1000, 2), "runs": len(state),
            "json_bytes": len(json.dumps(state))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(db: str, tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``docpipe serve`` on a free loopback port; stopped on leaving."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / f"serve-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([DOCPIPE, "serve", "--port", str(port), "--db", db, "--data-dir", str(tmp / "data"),
                                 "--workers", "1", "--log-level", "warning"],
                                env={**os.environ, "DOCPIPE_TOKEN": TOKEN}, stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/api/jobs", headers=AUTH, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"docpipe serve did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def time_get(client: httpx.Client, paths: list[str], repeat: int, expect: str | None = None) -> dict[str, Any]:
    """GET each of ``paths`` in turn (``repeat`` times in all), after 3 untimed ones."""
    for i in range(3):
        client.get(paths[i % len(paths)])
    took = []
    size = 0
    for i in range(repeat):
        t0 = time.perf_counter()
        reply = client.get(paths[i % len(paths)])
        body = reply.content
        took.append(time.perf_counter() - t0)
        check(reply.status_code == 200, f"GET {paths[i % len(paths)]}: {reply.status_code} {reply.text[:300]}")
        if expect is not None:
            check(expect in reply.text, f"GET {paths[i % len(paths)]}: {expect!r} is not in the page")
        size = len(body)
    return {**stats(took), "bytes": size}


def wait_run(client: httpx.Client, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed"):
            return dict(run)
        check(time.monotonic() < deadline, f"run {run_id} is still {run['status']} after {timeout} s")
        time.sleep(0.01)


def answer_and_wait(client: httpx.Client, task: dict[str, Any]) -> tuple[float, float]:
    """Answer ``task``; seconds to the answer's reply and to its run's completion."""
    t0 = time.perf_counter()
    reply = client.post(f"/api/review/tasks/{task['id']}/answer", json={"reviewer": "bench", "answer": "invoice"})
    t_reply = time.perf_counter() - t0
    check(reply.status_code == 200 and reply.json()["answered"], f"answer: {reply.status_code} {reply.text[:300]}")
    run = wait_run(client, task["flow_run_id"])
    t_done = time.perf_counter() - t0
    check(run["status"] == "succeeded", f"run {task['flow_run_id']} {run['status']}")
    check(run["outputs"].get("tag") == "invoice/bench", f"run {task['flow_run_id']}: tag {run['outputs'].get('tag')}")
    return t_reply, t_done


def serve_figures(db: str, tmp: Path, requests: int, answers: int) -> dict[str, Any]:
    """Page load times over a store of waiting runs, then answer → completion."""
    out: dict[str, Any] = {}
    with serving(db, tmp) as (base, proc), httpx.Client(base_url=base, headers=AUTH, timeout=120) as client:
        listed = client.get("/api/review/tasks", params={"limit": 1000}).json()
        tasks = listed["tasks"]
        check(len(tasks) >= 2, f"only {len(tasks)} waiting tasks listed")
        pages = [f"/review/{t['id']}" for t in tasks[:requests]]
        out["hop_api_jobs"] = time_get(client, ["/api/jobs"], requests)
        out["queue_page"] = time_get(client, ["/review"], requests, expect="table")
        out["task_page"] = time_get(client, pages, requests, expect="Which type?")
        out["api_review_tasks"] = time_get(client, ["/api/review/tasks"], requests)
        out["server_rss_mib_after_pages"] = round((vm_rss_kib(proc.pid) or 0) / 1024, 1)
        # answers: from the newest tasks backwards (the pages above opened the oldest ones)
        todo = list(reversed(tasks))[:answers + 1]
        cold_reply, cold_done = answer_and_wait(client, todo[0])
        out["answer_cold_s"] = {"reply_ms": round(cold_reply * 1000, 1), "done_ms": round(cold_done * 1000, 1)}
        replies, done = [], []
        for task in todo[1:]:
            r, d = answer_and_wait(client, task)
            replies.append(r)
            done.append(d)
        out["answer_reply"] = stats(replies)
        out["answer_to_succeeded"] = stats(done)
        out["server_peak_rss_mib"] = round((vm_hwm_kib(proc.pid) or 0) / 1024, 1)
        left = client.get("/api/review/tasks", params={"limit": 1}).json()["counts"]
        out["tasks_after"] = left
    return out


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="waiting runs (default 1000)")
    parser.add_argument("--small", type=int, nargs="+", default=[10, 100],
                        help="smaller counts for the memory figure (default 10 100); the first is the baseline store")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page (default 30)")
    parser.add_argument("--answers", type=int, default=10, help="timed answers (default 10; one more untimed)")
    parser.add_argument("--json", action="store_true", help="only the JSON")
    args = parser.parse_args()
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    sizes = sorted(set(args.small) | {args.runs})
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform()},
                              "loadavg_start": loadavg(), "runs": args.runs}
    try:
        with tempfile.TemporaryDirectory(prefix="review-queue-") as name:
            tmp = Path(name)
            flows = {}
            for key, flow in (("review", REVIEW_FLOW), ("plain", PLAIN_FLOW)):
                flows[key] = tmp / f"{key}.json"
                flows[key].write_text(json.dumps(flow))
            memory: dict[str, dict[int, Any]] = {"review": {}, "plain": {}}
            stores: dict[int, str] = {}
            for n in sizes:
                folder = inputs(tmp / f"in-{n}", n)
                for key in ("plain", "review"):  # interleaved: the same load for both
                    db_file = tmp / f"{key}-{n}.db"
                    db = f"sqlite:///{db_file}"
                    made = docpipe_run(flows[key], folder, db, tmp)
                    got = counts(db_file)
                    if key == "review":
                        check(made["rc"] == 4, f"review flow, {n} runs: exit {made['rc']}, not 4\n{made['log']}")
                        check(got.get("runs_waiting") == n and got.get("tasks_waiting") == n,
                              f"review flow, {n} runs: {got}")
                        stores[n] = db
                        made["resume_state"] = resume_state_ms(db)
                    else:
                        check(made["rc"] == 0, f"plain flow, {n} runs: exit {made['rc']}\n{made['log']}")
                        check(got.get("runs_succeeded") == n, f"plain flow, {n} runs: {got}")
                    made.pop("log")
                    memory[key][n] = {**made, **got}
                    say(f"{key:>6} flow, {n:>5} runs: {made['seconds']:6.2f} s, "
                        f"docpipe run peak RSS {made['peak_rss_mib']} MiB")
            small, large = sizes[0], sizes[-1]
            report["memory"] = memory
            report["memory_ratio_largest_to_smallest"] = {
                key: round(memory[key][large]["peak_rss_mib"] / memory[key][small]["peak_rss_mib"], 3)
                for key in memory}
            report["memory_review_over_plain"] = {
                n: round(memory["review"][n]["peak_rss_mib"] / memory["plain"][n]["peak_rss_mib"], 3) for n in sizes}
            report["loadavg_serve"] = loadavg()
            serve: dict[int, Any] = {}
            for n in sizes:
                say(f"serving {n} waiting runs ...")
                serve[n] = serve_figures(stores[n], tmp, args.requests, min(args.answers, n - 1))
            report["serve"] = serve
            report["serve_ratio_largest_to_smallest"] = {
                key: round(serve[large][key]["median_ms"] / serve[small][key]["median_ms"], 2)
                for key in ("queue_page", "task_page", "api_review_tasks", "answer_to_succeeded")}
            report["loadavg_end"] = loadavg()
    except Failed as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    if not args.json:
        table(report, sizes)
    return 0


def table(report: dict[str, Any], sizes: list[int]) -> None:
    p = print
    err = sys.stderr
    p(f"\nload average: start {report['loadavg_start']}, serve {report['loadavg_serve']}, "
      f"end {report['loadavg_end']}", file=err)
    p("\n| waiting runs | review flow: s | review: peak RSS MiB | no review: s | no review: peak RSS MiB |", file=err)
    p("| ---: | ---: | ---: | ---: | ---: |", file=err)
    for n in sizes:
        r, b = report["memory"]["review"][n], report["memory"]["plain"][n]
        p(f"| {n:,} | {r['seconds']} | {r['peak_rss_mib']} | {b['seconds']} | {b['peak_rss_mib']} |", file=err)
    for n in sizes:
        p(f"{n:,} waiting: Store.resume_state of the batch {report['memory']['review'][n]['resume_state']}", file=err)
    p(f"ratio {sizes[-1]} / {sizes[0]}: {report['memory_ratio_largest_to_smallest']}", file=err)
    small, large = min(report["serve"]), max(report["serve"])
    p("\n| request | " + " | ".join(f"{n:,} waiting: median ms | p95" for n in sizes)
      + f" | ratio {large:,} / {small:,} |", file=err)
    p("| --- |" + " ---: | ---: |" * len(sizes) + " ---: |", file=err)
    for key in ("hop_api_jobs", "queue_page", "task_page", "api_review_tasks", "answer_reply", "answer_to_succeeded"):
        cells = " | ".join(f"{report['serve'][n][key]['median_ms']} | {report['serve'][n][key]['p95_ms']}"
                           for n in sizes)
        ratio = report["serve"][large][key]["median_ms"] / report["serve"][small][key]["median_ms"]
        p(f"| {key} | {cells} | {ratio:.2f} |", file=err)
    for n in sizes:
        s = report["serve"][n]
        p(f"{n} waiting: first (cold) answer {s['answer_cold_s']}, server RSS after pages "
          f"{s['server_rss_mib_after_pages']} MiB, peak {s['server_peak_rss_mib']} MiB, tasks after {s['tasks_after']}",
          file=err)


if __name__ == "__main__":
    sys.exit(main())
