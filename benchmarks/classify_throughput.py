"""Classifier throughput: docpipe end to end vs the bare model vs a naive per-document loop.

    python benchmarks/classify_throughput.py [--docs N] [--tokens 128 512] [--precision fp32 int8]
        [--device cpu|cuda] [--model DIR] [--layouts 1x2 2x1] [--repeat R] [--json]

For every (tokens, precision) setting, on the same model, documents and precision:

* (a) ``docpipe``: ``Engine(Store(sqlite file), workers=W)`` runs a two-step flow over N
  text files: an inline step reads the file into ``full_text``, ``hf.classify`` (process
  pool, ``setup()`` once per worker, cross-document batches of 32) classifies it; every
  flow run and task run is recorded. Timed: ``engine.run`` of a warm engine (pools spawned
  and models loaded by an untimed warm-up run, reported as ``cold_start_s``). Measured per
  worker layout ``WxT`` (W workers x T threads each; the engine gives each worker
  cores // W threads).
* (b) ``bare``: the model alone in this process with all cores: tokenize + forward, in the
  best of the batch sizes tried (``batch_sweep``), no engine. The limit.
* (c) ``naive``: a ``transformers`` text-classification pipeline called once per document.

Documents are labelled texts of ``models/data/doctype.jsonl`` strung together until each
has more than ``tokens`` tokens, so every document is cut to exactly ``tokens`` tokens.
Ratios: ``a_b`` = docpipe docs/s / bare docs/s (target >= 0.90 at every setting), ``a_c``
= docpipe / naive, both with the best layout. ``docpipe.busy`` is the share of the wall
time the workers spent inside ``run`` calls (from the task records): near 1 with a low
``a_b`` means the block is slower than the bare loop; well below 1 means the engine kept
the workers waiting. ``engine_cpu_ms_per_doc`` is the CPU time of the engine's own process
(loop, inline read step, record writer) per document: CPU the workers cannot use.
Measurements are interleaved across ``--repeat`` rounds; best and median are reported.
Checks (exit status 1 when one fails): every document succeeded and docpipe's labels
agree with the bare model's on at least 95% of the documents.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import docpipe  # noqa: E402
from docpipe.blocks import Block, Manifest, State  # noqa: E402
from docpipe.engine import SUCCEEDED, Engine  # noqa: E402
from docpipe.planner import Plan, build_plan  # noqa: E402
from docpipe.plugins import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "models" / "data" / "doctype.jsonl"
TARGET_A_B = 0.90
BATCH_SWEEP = (8, 16, 32, 64)


class CheckFailed(Exception):
    """A measurement produced wrong results; its figures must not be trusted."""


class ReadText(Block):
    """Reads a UTF-8 text file: ``path`` in, ``full_text`` out (inline, in the engine)."""

    manifest = Manifest(name="bench.read_text", version="1.0", reads={"path": str},
                        writes={"full_text": str}, runtime="inline")

    def run(self, batch: list[State], params: Any) -> list[Any]:
        return [{"full_text": Path(s["path"]).read_text(encoding="utf-8")} for s in batch]


class BenchPlugin:
    @docpipe.hookimpl
    def register_blocks(self, register: Callable[[type[Block]], None]) -> None:
        register(ReadText)


def make_plan(params: dict[str, Any]) -> Plan:
    flow = {"name": "bench-classify", "version": "1", "outputs": ["doc_class"],
            "steps": [{"id": "read", "block": "bench.read_text"},
                      {"id": "classify", "block": "hf.classify", "params": params}]}
    return build_plan(flow, Registry(extra=[BenchPlugin()]))


def make_texts(n: int, tokens: int, tokenizer: Any) -> list[str]:
    """``n`` different documents of a little more than ``tokens`` tokens each."""
    rows = [json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines()]
    texts = []
    for i in range(n):
        parts, j = [], i
        while len(tokenizer(" ".join(parts))["input_ids"]) <= tokens + 8:
            parts.append(rows[j % len(rows)])
            j += 7
        texts.append(" ".join(parts))
    return texts


def load(model_dir: Path, precision: str, device: str) -> tuple[Any, Any]:
    from docpipe_hf.runtime import prepare
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
    return tok, prepare(model, precision, device)


def bare(tok: Any, model: Any, texts: list[str], tokens: int, batch: int, device: str,
         ) -> tuple[float, list[int]]:
    """Seconds for tokenize + forward over ``texts`` in batches of ``batch``; label ids."""
    import torch

    labels: list[int] = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], truncation=True, max_length=tokens, padding=True,
                      return_tensors="pt").to(device)
            labels += model(**enc).logits.argmax(-1).tolist()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, labels


def naive(tok: Any, model: Any, texts: list[str], tokens: int, device: str) -> float:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=model, tokenizer=tok, device=device)
    pipe(texts[0], truncation=True, max_length=tokens)  # warm-up
    t0 = time.perf_counter()
    for text in texts:
        pipe(text, truncation=True, max_length=tokens)
    return time.perf_counter() - t0


def busy_share(db: Path, batch_id: str, wall: float, workers: int) -> tuple[float, float]:
    """(share of wall x workers spent inside classify calls, seconds inside calls)."""
    con = sqlite3.connect(db)
    try:
        calls = con.execute(
            "SELECT DISTINCT t.worker, t.started_at, t.finished_at FROM task_runs t "
            "JOIN flow_runs f ON f.id = t.flow_run_id WHERE f.batch_id = ? AND t.step = 'classify'",
            (batch_id,)).fetchall()
    finally:
        con.close()
    inside = sum(f - s for _, s, f in calls)
    return inside / (wall * workers), inside


class DocpipeRunner:
    """A warm engine (one per layout) and its document files."""

    def __init__(self, plan: Plan, workers: int, files: list[str], tmp: Path, tag: str) -> None:
        from docpipe.store import Store

        self.workers, self.files, self.plan = workers, files, plan
        self.db = tmp / f"{tag}.db"
        self.store = Store("sqlite:///" + str(self.db))
        self.engine = Engine(self.store, workers=workers)
        t0 = time.perf_counter()
        self.check(self.engine.run(plan, files[: 4 * workers]), files[: 4 * workers])
        self.cold_start = time.perf_counter() - t0

    @staticmethod
    def check(result: Any, files: list[str]) -> list[str]:
        if result.counts.get(SUCCEEDED) != len(files):
            bad = result.failed[0] if result.failed else None
            raise CheckFailed(f"docpipe: {result.counts} for {len(files)} documents"
                              + (f"; first failure: {bad.step}: {bad.error}" if bad else ""))
        return [r.outputs["doc_class"] for r in result.results]

    def measure(self) -> tuple[float, list[str], float, float]:
        """(wall seconds, labels, workers' busy share, CPU seconds of this process: the
        engine loop, the inline read step and the record writer)."""
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        result = self.engine.run(self.plan, self.files)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        labels = self.check(result, self.files)
        busy, _ = busy_share(self.db, result.batch_id, wall, self.workers)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return wall, labels, busy, cpu

    def close(self) -> None:
        self.engine.close()
        self.store.close()


def figures(n: int, seconds: list[float]) -> dict[str, Any]:
    best, median = min(seconds), statistics.median(seconds)
    return {"docs": n, "docs_per_s": round(n / best, 2), "median_docs_per_s": round(n / median, 2),
            "all_seconds": [round(s, 3) for s in seconds]}


def setting(model_dir: Path, tokens: int, precision: str, device: str, n: int, n_naive: int,
            layouts: list[tuple[int, int]], repeat: int, tmp: Path, say: Callable[[str], None],
            ) -> dict[str, Any]:
    import torch

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    tok, model = load(model_dir, precision, device)
    id2label = model.config.id2label
    texts = make_texts(n, tokens, tok)
    folder = tmp / f"docs-{tokens}"
    folder.mkdir(exist_ok=True)
    files = []
    for i, text in enumerate(texts):
        (folder / f"{i:05d}.txt").write_text(text, encoding="utf-8")
        files.append(str(folder / f"{i:05d}.txt"))
    say(f"[{tokens} tokens, {precision}] bare-model batch sweep ...")
    sweep_texts = texts[: min(n, 128)]
    bare(tok, model, sweep_texts, tokens, 16, device)  # warm-up: a full pass
    sweep = {b: round(len(sweep_texts) / bare(tok, model, sweep_texts, tokens, b, device)[0], 2)
             for b in BATCH_SWEEP}
    best_batch = max(sweep, key=sweep.__getitem__)
    params = {"max_tokens": tokens, "precision": precision, "device": device,
              "model": str(model_dir)}
    plan = make_plan(params)
    runners = {}
    for w, t in layouts:
        say(f"[{tokens} tokens, {precision}] starting docpipe {w}x{t} (spawn + load) ...")
        runners[f"{w}x{t}"] = DocpipeRunner(plan, w, files, tmp, f"{tokens}-{precision}-{w}x{t}")
    times: dict[str, list[float]] = {"bare": [], "naive": [], **{k: [] for k in runners}}
    busy: dict[str, list[float]] = {k: [] for k in runners}
    engine_cpu: dict[str, list[float]] = {k: [] for k in runners}
    agreement: dict[str, float] = {}
    try:
        for rnd in range(repeat):
            say(f"[{tokens} tokens, {precision}] round {rnd + 1}/{repeat}: bare, docpipe, naive ...")
            seconds, ids = bare(tok, model, texts, tokens, best_batch, device)
            times["bare"].append(seconds)
            expected = [id2label[i] for i in ids]
            for name, runner in runners.items():
                wall, labels, share, cpu = runner.measure()
                times[name].append(wall)
                busy[name].append(round(share, 3))
                engine_cpu[name].append(cpu)
                agreement[name] = sum(a == b for a, b in zip(labels, expected, strict=True)) / n
                if agreement[name] < 0.95:
                    raise CheckFailed(f"docpipe {name} agrees with the bare model on only "
                                      f"{agreement[name]:.3f} of the documents")
            times["naive"].append(naive(tok, model, texts[:n_naive], tokens, device))
    finally:
        for runner in runners.values():
            runner.close()
    out: dict[str, Any] = {"tokens": tokens, "precision": precision, "device": device,
                           "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    out["bare"] = {**figures(n, times["bare"]), "batch": best_batch, "batch_sweep": sweep}
    out["naive"] = figures(n_naive, times["naive"])
    out["docpipe"] = {name: {**figures(n, times[name]), "workers": r.workers,
                             "threads_per_worker": r.engine.threads_per_worker,
                             "cold_start_s": round(r.cold_start, 2), "busy": busy[name],
                             "engine_cpu_ms_per_doc": round(1000 * min(engine_cpu[name]) / n, 2),
                             "agreement_with_bare": round(agreement[name], 4)}
                      for name, r in runners.items()}
    best = max(out["docpipe"], key=lambda k: out["docpipe"][k]["docs_per_s"])
    a = out["docpipe"][best]["docs_per_s"]
    out["best_layout"] = best
    out["a_b"] = round(a / out["bare"]["docs_per_s"], 3)
    out["a_c"] = round(a / out["naive"]["docs_per_s"], 3)
    out["a_b_by_layout"] = {k: round(v["docs_per_s"] / out["bare"]["docs_per_s"], 3)
                            for k, v in out["docpipe"].items()}
    out["target_met"] = out["a_b"] >= TARGET_A_B
    return out


def machine() -> dict[str, Any]:
    import torch
    import transformers

    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "docpipe": docpipe.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def summary(report: dict[str, Any]) -> str:
    lines = [f"classify throughput, docs/s ({report['machine']['cores']} cores, "
             f"{report['model']['name']}, {report['docs']} docs)"]
    for s in report["settings"]:
        layouts = "  ".join(f"{k} {v['docs_per_s']:.1f} (busy {max(v['busy']):.2f})"
                            for k, v in s["docpipe"].items())
        lines.append(f"  {s['tokens']:>4} tok {s['precision']:<5} bare {s['bare']['docs_per_s']:>6.1f} "
                     f"(batch {s['bare']['batch']})  naive {s['naive']['docs_per_s']:>6.1f}  "
                     f"docpipe {layouts}  a/b {s['a_b']:.2f}  a/c {s['a_c']:.2f}")
    lines.append(f"  target a/b >= {TARGET_A_B} at every setting: "
                 + ("MET" if report["target"]["met"] else "MISSED"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=256, help="documents per measurement")
    ap.add_argument("--naive-docs", type=int, default=None, help="documents for the naive loop")
    ap.add_argument("--tokens", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--precision", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8", "bf16"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "doctype",
                    help="a sequence-classification folder (default: models/doctype)")
    ap.add_argument("--layouts", nargs="+", default=None,
                    help="docpipe worker layouts WxT (default: 1xC and Cx1 on CPU, 1xC on CUDA)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    default = [f"1x{cores}"] + ([f"{cores}x1"] if args.device == "cpu" and cores > 1 else [])
    layouts = [tuple(int(x) for x in spec.split("x")) for spec in (args.layouts or default)]
    if any(w * t > cores or len((w, t)) != 2 for w, t in layouts):
        ap.error(f"layouts must be WxT with W x T <= {cores} cores")
    if not (args.model / "config.json").is_file():
        print(f"classify_throughput: no model at {args.model}; run `make models`", file=sys.stderr)
        return 1

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
    report: dict[str, Any] = {"machine": machine(), "docs": args.docs,
                              "model": {"name": args.model.name, "path": str(args.model)},
                              "settings": []}
    try:
        with tempfile.TemporaryDirectory(prefix="docpipe-bench-classify-") as d:
            for tokens in args.tokens:
                for precision in args.precision:
                    # the engine gives each worker cores // W threads; W x T above is a label
                    report["settings"].append(setting(
                        args.model, tokens, precision, args.device, args.docs,
                        args.naive_docs or args.docs, [(w, t) for w, t in layouts],
                        args.repeat, Path(d), say))
    except CheckFailed as exc:
        print(f"classify_throughput: CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    report["target"] = {"a_b_min": TARGET_A_B,
                        "met": all(s["target_met"] for s in report["settings"])}
    print(json.dumps(report, indent=2))
    say(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
