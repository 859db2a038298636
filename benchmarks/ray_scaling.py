"""Ray vs local pools on one machine: the classify flow, the OCR flow and a no-op flow.

    python benchmarks/ray_scaling.py [--docs N] [--tokens T] [--pages P] [--dpi D]
        [--noop-docs M] [--workers W] [--repeat R] [--json]

Everything runs in one process, on one machine, against one local Ray cluster that this
script starts (``RayExecutor()``: all cores, 127.0.0.1 only, its own temp dir). For each
workload a warm engine with the local process pools (``Engine(store, workers=W)``) and a
warm engine on Ray (``Engine(store, workers=W, executor=ray)``: W actors per block) run the
same inputs; pools and actors are started and set up by an untimed warm-up run first.
Timed runs alternate local, Ray, local, Ray ... (``--repeat`` rounds); the best is reported.
Every run records its flow and task runs in a SQLite store, as the CLI does.

* ``classify``: the flow of ``classify_throughput.py`` (an inline read step, then
  ``hf.classify`` on models/doctype) over N texts of ``--tokens`` tokens: docs/s.
* ``ocr``: ``plugins/docpipe-ocr/flows/ocr.json`` over one scanned PDF of P pages, the way
  ``ocr_throughput.py`` builds it: pages/s.
* ``noop``: the 10-step chain of ``engine_overhead.py`` with its no-op block made a
  ``process`` block (batches of up to 32): per-task overhead of the pool path, local and
  Ray, in microseconds (wall time / tasks). ``inline_recorded_us_per_task`` is
  ``engine_overhead.py``'s own figure (inline steps: the driver's loop and store writes),
  measured here too: the ceiling of one driver.

``ratio`` = Ray / local (docs/s, pages/s); the target is >= 0.85 on one machine. Checks
(exit status 1 when one fails): every document succeeded, OCR text holds every page's
marker in order, and Ray's classify labels agree with the local run's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import classify_throughput as ct  # noqa: E402
import engine_overhead as eo  # noqa: E402
import ocr_throughput as ot  # noqa: E402

import docpipe  # noqa: E402
from docpipe.blocks import Block, Manifest, State  # noqa: E402
from docpipe.engine import Engine  # noqa: E402
from docpipe.planner import Plan, build_plan  # noqa: E402
from docpipe.plugins import Registry  # noqa: E402
from docpipe.store import Store  # noqa: E402

TARGET = 0.85


class CheckFailed(Exception):
    """A measurement produced wrong results; its figures must not be trusted."""


class PoolNoOp(Block):
    """``engine_overhead``'s no-op, run in a worker pool (local processes or Ray actors)."""

    manifest = Manifest(name="bench.noop", version="1.0", reads={"value": str},
                        writes={"out": str}, runtime="process", batch=32, batch_wait=0.002)

    def run(self, batch: list[State], params: Any) -> list[Any]:
        return [{"out": item["value"]} for item in batch]


class PoolNoOpPlugin:
    @docpipe.hookimpl
    def register_blocks(self, register: Callable[[type[Block]], None]) -> None:
        register(PoolNoOp)


def noop_plan() -> Plan:
    return build_plan(eo.flow_definition(), Registry(entry_points=False, extra=[PoolNoOpPlugin()]))


class Pair:
    """A warm local engine and a warm Ray engine over the same plan, each with its store."""

    def __init__(self, plan: Plan, inputs: list[str], warm: list[str], workers: int, ray: Any,
                 tmp: Path, tag: str, check: Callable[[Any, list[str], str], Any]) -> None:
        self.plan, self.inputs, self.check = plan, inputs, check
        self.stores = {k: Store(f"sqlite:///{tmp / f'{tag}-{k}.db'}") for k in ("local", "ray")}
        self.engines = {"local": Engine(self.stores["local"], workers=workers),
                        "ray": Engine(self.stores["ray"], workers=workers, executor=ray)}
        self.cold: dict[str, float] = {}
        self.seconds: dict[str, list[float]] = {"local": [], "ray": []}
        self.outputs: dict[str, Any] = {}
        for name, engine in self.engines.items():
            t0 = time.perf_counter()
            check(engine.run(plan, warm), warm, f"{tag} {name} warm-up")
            self.cold[name] = round(time.perf_counter() - t0, 2)

    def round(self) -> None:
        for name, engine in self.engines.items():
            t0 = time.perf_counter()
            result = engine.run(self.plan, self.inputs)
            self.seconds[name].append(time.perf_counter() - t0)
            self.outputs[name] = self.check(result, self.inputs, name)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        for store in self.stores.values():
            store.close()


def classify_check(result: Any, inputs: list[str], what: str) -> list[str]:
    try:
        return ct.DocpipeRunner.check(result, inputs)  # labels, in input order
    except ct.CheckFailed as exc:
        raise CheckFailed(f"classify {what}: {exc}") from exc


def ocr_check(pages: int) -> Callable[[Any, list[str], str], None]:
    def check(result: Any, inputs: list[str], what: str) -> None:
        try:  # the warm-up PDF has one page
            ot.check_docpipe(result, 1 if "warm-up" in what else pages, f"ocr {what}")
        except ot.CheckFailed as exc:
            raise CheckFailed(str(exc)) from exc
    return check


def noop_check(result: Any, inputs: list[str], what: str) -> None:
    try:
        eo.check_results(result, inputs, f"noop {what}")
    except eo.CheckFailed as exc:
        raise CheckFailed(str(exc)) from exc


def rates(pair: Pair, units: int, unit: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("local", "ray"):
        best = min(pair.seconds[name])
        out[name] = {f"{unit}_per_s": round(units / best, 2), "seconds": round(best, 3),
                     "all_seconds": [round(s, 3) for s in pair.seconds[name]],
                     "cold_start_s": pair.cold[name]}
    out["ratio"] = round(out["ray"][f"{unit}_per_s"] / out["local"][f"{unit}_per_s"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=64, help="classify: documents")
    ap.add_argument("--tokens", type=int, default=128, help="classify: tokens per document")
    ap.add_argument("--pages", type=int, default=8, help="OCR: pages of the scanned PDF")
    ap.add_argument("--dpi", type=int, default=200, help="OCR: scan and OCR resolution")
    ap.add_argument("--noop-docs", type=int, default=300, help="no-op: flow runs (x10 tasks)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="workers per pool, local processes or Ray actors (default: cores)")
    ap.add_argument("--repeat", type=int, default=2, help="timed rounds (best reported)")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args(argv)
    for name in ("docs", "tokens", "pages", "dpi", "noop_docs", "workers", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    model = ct.ROOT / "models" / "doctype"
    if not (model / "config.json").is_file():
        print(f"ray_scaling: no model at {model}; run `make models`", file=sys.stderr)
        return 2

    def say(msg: str) -> None:
        if not args.json:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    from docpipe.executors.ray import RayExecutor

    report: dict[str, Any] = {"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform(), "docpipe": docpipe.__version__,
                                          "load_average_before": [round(x, 2) for x in os.getloadavg()]},
                              "workers": args.workers, "repeat": args.repeat, "target": TARGET}
    pairs: list[Pair] = []
    try:
        with tempfile.TemporaryDirectory(prefix="docpipe-ray-bench-") as tmpdir, RayExecutor() as ray:
            import ray as ray_module

            report["machine"]["ray"] = ray_module.__version__
            tmp = Path(tmpdir)
            # --- inputs ---------------------------------------------------------------
            say(f"classify: {args.docs} texts of {args.tokens} tokens ...")
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(model, local_files_only=True)
            (tmp / "docs").mkdir()
            files = []
            for i, text in enumerate(ct.make_texts(args.docs, args.tokens, tok)):
                path = tmp / "docs" / f"{i:05d}.txt"
                path.write_text(text, encoding="utf-8")
                files.append(str(path))
            say(f"ocr: a scanned PDF of {args.pages} pages at {args.dpi} dpi ...")
            pdf, warm_pdf = tmp / "scanned.pdf", tmp / "warm.pdf"
            ot.make_scanned_pdf(pdf, args.pages, args.dpi)
            ot.make_scanned_pdf(warm_pdf, 1, 100)
            # --- engines (warm) -------------------------------------------------------
            params = {"max_tokens": args.tokens, "precision": "fp32", "device": "cpu", "model": str(model)}
            say("starting the engines (local pools, Ray actors) with warm-up runs ...")
            classify = Pair(ct.make_plan(params), files, files[: 4 * args.workers], args.workers, ray,
                            tmp, "classify", classify_check)
            pairs.append(classify)
            from docpipe.planner import plan_file

            ocr = Pair(plan_file(ot.FLOW, Registry(), params={"dpi": args.dpi}), [str(pdf)],
                       [str(warm_pdf)], args.workers, ray, tmp, "ocr", ocr_check(args.pages))
            pairs.append(ocr)
            noop_docs = eo.documents(args.noop_docs)
            noop = Pair(noop_plan(), noop_docs, eo.documents(4 * args.workers, "warm"), args.workers, ray,
                        tmp, "noop", noop_check)
            pairs.append(noop)
            # --- timed rounds ---------------------------------------------------------
            for rnd in range(args.repeat):
                for name, pair in (("classify", classify), ("ocr", ocr), ("noop", noop)):
                    say(f"round {rnd + 1}/{args.repeat}: {name} local, ray ...")
                    pair.round()
            agree = sum(a == b for a, b in zip(classify.outputs["local"], classify.outputs["ray"],
                                               strict=True)) / args.docs
            if agree < 0.95:
                raise CheckFailed(f"classify: Ray's labels agree with local on only {agree:.3f}")
            report["classify"] = {"docs": args.docs, "tokens": args.tokens,
                                  **rates(classify, args.docs, "docs"), "label_agreement": agree}
            report["ocr"] = {"pages": args.pages, "dpi": args.dpi, **rates(ocr, args.pages, "pages"),
                             "docs_per_s": {k: round(1 / min(ocr.seconds[k]), 3) for k in ("local", "ray")}}
            tasks = args.noop_docs * eo.STEPS
            report["noop"] = {"flow_runs": args.noop_docs, "tasks": tasks,
                              **{k: {"us_per_task": round(min(noop.seconds[k]) / tasks * 1e6, 1),
                                     "all_seconds": [round(s, 3) for s in noop.seconds[k]]}
                                 for k in ("local", "ray")}}
            report["noop"]["ray_extra_us_per_task"] = round(
                report["noop"]["ray"]["us_per_task"] - report["noop"]["local"]["us_per_task"], 1)
            for pair in pairs:
                pair.close()
            pairs.clear()
            say("inline chain, recorded (engine_overhead.py's figure) ...")
            inline = eo.bench_docpipe(eo.make_plan(), 2000, args.repeat, tmp, recorded=True)
            report["noop"]["inline_recorded_us_per_task"] = inline["us_per_task"]
    except CheckFailed as exc:
        print(f"ray_scaling: check failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for pair in pairs:
            pair.close()
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["target_met"] = {k: report[k]["ratio"] >= TARGET for k in ("classify", "ocr")}
    print(json.dumps(report, indent=None if args.json else 2))
    if not args.json:
        c, o, n = report["classify"], report["ocr"], report["noop"]
        print(f"classify docs/s: local {c['local']['docs_per_s']}, ray {c['ray']['docs_per_s']} "
              f"(ratio {c['ratio']}); ocr pages/s: local {o['local']['pages_per_s']}, ray "
              f"{o['ray']['pages_per_s']} (ratio {o['ratio']}); pool path per task: local "
              f"{n['local']['us_per_task']} us, ray {n['ray']['us_per_task']} us; inline recorded "
              f"{n['inline_recorded_us_per_task']} us", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
