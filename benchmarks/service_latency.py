"""Latency of a warm server: one 1-page text PDF posted through the API and run through
flows/idp.json, against the cold CLI running the same file.

    python benchmarks/service_latency.py [--posts 50] [--file samples/security_policy.pdf] [--cold 3] [--json]

In one script, on one machine:

* ``warm``: a real ``docpipe serve`` (its own SQLite store in a temporary folder, the idp
  flow recorded there) is started and sent one warm-up post; then ``--posts`` posts, one
  after the other, each ``POST /api/flows/idp/runs?wait=60`` with the file, timed from
  the client's send to the reply carrying the run's outcome. Reported: p50, p95, min, max
  (seconds). Every run must have succeeded (checked).
* ``cold``: ``docpipe run flows/idp.json FILE`` (a fresh process: imports, pools, models),
  ``--cold`` times; its median and the ratio cold / warm p50.

Target (issue 17): warm p50 ≤ 1 s. The exit status does not depend on it (``target.met``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DOCPIPE = str(Path(sys.executable).with_name("docpipe"))
TOKEN = "bench-token-0123456789"
TARGET_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record_idp(url: str) -> None:
    from docpipe import service
    from docpipe.plugins import Registry
    from docpipe.store import Store

    with Store(url) as store:
        service.record_flow(store, service.plan_flow(str(ROOT / "flows" / "idp.json"), Registry()))


def post(client: httpx.Client, path: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    reply = client.post("/api/flows/idp/runs", params={"wait": 60},
                        files=[("files", (path.name, path.read_bytes(), "application/pdf"))],
                        headers={"Authorization": f"Bearer {TOKEN}"})
    seconds = time.perf_counter() - t0
    if reply.status_code != 202:
        raise SystemExit(f"post failed: {reply.status_code} {reply.text[:500]}")
    body = reply.json()
    statuses = [r.get("status") for r in body["runs"]]
    if statuses != ["succeeded"]:
        raise SystemExit(f"the run did not succeed: {json.dumps(body)[:1000]}")
    outputs = body["runs"][0].get("outputs") or {}
    if not outputs.get("doc_class") or not outputs.get("language"):
        raise SystemExit(f"the run has no class or language: {json.dumps(body)[:1000]}")
    return seconds, body


def warm(path: Path, posts: int, folder: Path) -> dict[str, Any]:
    url = f"sqlite:///{folder / 'serve.db'}"
    record_idp(url)
    port = free_port()
    log = open(folder / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([DOCPIPE, "serve", "--port", str(port), "--db", url, "--data-dir", str(folder / "data"),
                             "--log-level", "warning"],
                            env={**os.environ, "DOCPIPE_TOKEN": TOKEN}, stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("docpipe serve did not start:\n" + (folder / "serve.log").read_text())
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=120) as client:
            first, _ = post(client, path)  # pools start, models load
            times = [post(client, path)[0] for _ in range(posts)]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    times.sort()
    return {"posts": posts, "first_post_s": round(first, 3), "p50_s": round(statistics.median(times), 3),
            "p95_s": round(times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)], 3),
            "min_s": round(times[0], 3), "max_s": round(times[-1], 3)}


def cold(path: Path, repeat: int, folder: Path) -> dict[str, Any]:
    times = []
    for i in range(repeat):
        out = folder / f"cold{i}.csv"
        t0 = time.perf_counter()
        proc = subprocess.run([DOCPIPE, "run", str(ROOT / "flows" / "idp.json"), str(path), "--db",
                               f"sqlite:///{folder / f'cold{i}.db'}", "--out", str(out), "-q"],
                              capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"docpipe run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"runs": repeat, "median_s": round(statistics.median(times), 3), "all_s": [round(t, 3) for t in times]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=50)
    parser.add_argument("--file", default=str(ROOT / "samples" / "security_policy.pdf"))
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    path = Path(args.file).resolve()
    folder = Path(tempfile.mkdtemp(prefix="docpipe-latency-"))
    try:
        w = warm(path, args.posts, folder)
        c = cold(path, args.cold, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = {"file": path.name, "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()[0]},
              "warm": w, "cold_cli": c, "cold_over_warm_p50": round(c["median_s"] / w["p50_s"], 1),
              "target": {"p50_s": TARGET_S, "met": w["p50_s"] <= TARGET_S}}
    if not args.json:
        print(f"warm server: p50 {w['p50_s']} s, p95 {w['p95_s']} s over {w['posts']} posts "
              f"(first post {w['first_post_s']} s); cold CLI: {c['median_s']} s", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
