"""The engine over real files with the fixture blocks of tests/plugins/toys.py."""

from __future__ import annotations

import hashlib

from support import kill_one_worker

from docpipe.engine import Engine


def sha_rounds(text: str, rounds: int) -> str:
    h = text.encode()
    for _ in range(rounds):
        h = hashlib.sha256(h).digest()
    return h.hex()


def test_chain_of_inline_thread_and_process_steps(plan, docs):
    p = plan([
        {"id": "read", "block": "toy.read"},
        {"id": "up", "block": "toy.upper"},
        {"id": "words", "block": "toy.words"},
        {"id": "dig", "block": "toy.digest", "params": {"rounds": 50}},
        {"id": "long", "expr": "words > 2 and upper.startswith('HELLO')", "output": "long"},
    ], outputs=["upper", "words", "digest", "long"])
    paths = docs("hello big world", "hi", "hello there you all")
    with Engine(workers=2) as engine:
        result = engine.run(p, paths)
    assert [r.status for r in result.results] == ["succeeded"] * 3
    out = [r.outputs for r in result.results]
    assert [o["words"] for o in out] == [3, 1, 4]
    assert out[0]["upper"] == "HELLO BIG WORLD"
    assert [o["long"] for o in out] == [True, False, True]
    assert out[1]["digest"] == sha_rounds("hi", 50)


def test_batches_gather_ready_tasks_across_documents(plan, docs):
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "dig", "block": "toy.digest", "params": {"rounds": 2000}}],
             outputs=["digest", "digest_pid", "digest_batch"])
    paths = docs(*[f"document number {i}" for i in range(40)])
    with Engine(workers=2) as engine:
        result = engine.run(p, paths)
        pool_pids = set(engine.pools("toy.digest")[0].pids())
    assert result.counts == {"succeeded": 40, "failed": 0}
    sizes = [r.outputs["digest_batch"] for r in result.results]
    assert max(sizes) > 1, "no cross-document batch was formed"
    assert max(sizes) <= 8, "a batch exceeded the block's batch size"
    pids = {r.outputs["digest_pid"] for r in result.results}
    assert pids <= pool_pids and len(pids) <= 2  # setup once per worker, workers reused
    for i, r in enumerate(result.results):
        assert r.outputs["digest"] == sha_rounds(f"document number {i}", 2000)


def test_a_batch_that_raises_fails_only_the_bad_document(plan, docs):
    p = plan([{"id": "read", "block": "toy.read"}, {"id": "check", "block": "toy.fragile"}])
    paths = docs(*[("boom here" if i == 5 else f"fine {i}") for i in range(12)])
    with Engine(workers=2) as engine:
        result = engine.run(p, paths)
    failed = result.failed
    assert [f.document for f in failed] == [paths[5]]
    assert failed[0].error_kind == "block_error"
    assert "ValueError: boom found in batch" in failed[0].error
    assert "Traceback" in failed[0].traceback
    assert result.counts["succeeded"] == 11


def test_a_dead_worker_fails_only_its_task_and_is_replaced(plan, docs):
    p = plan([{"id": "read", "block": "toy.read"}, {"id": "crash", "block": "toy.crash"}],
             outputs=["survived"])
    texts = ["ok"] * 6 + ["segfault now"] + ["ok"] * 6
    paths = docs(*texts)
    with Engine(workers=2) as engine:
        result = engine.run(p, paths)
        pool = engine.pools("toy.crash")[0]
        assert pool.spawned == 3  # two workers plus the replacement
        # the restored pool keeps working
        again = engine.run(p, docs("ok again"))
    assert [f.document for f in result.failed] == [paths[6]]
    assert result.failed[0].error_kind == "worker_died"
    assert "exited with status 139" in result.failed[0].error
    assert all(r.outputs == {"survived": True} for r in result.results if r.status == "succeeded")
    assert again.counts == {"succeeded": 1, "failed": 0}


def test_setup_failure_is_a_clear_error_per_document(plan, docs):
    p = plan([{"id": "read", "block": "toy.read"}, {"id": "b", "block": "toy.broken_setup"}])
    with Engine(workers=1) as engine:
        result = engine.run(p, docs("a", "b"))
    assert len(result.failed) == 2
    for f in result.failed:
        assert "setup of block 'toy.broken_setup' failed" in f.error
        assert "/nonexistent/model" in f.error


def test_manifest_violation_and_typed_document_errors(plan, docs):
    p = plan([{"id": "read", "block": "toy.read"}, {"id": "lie", "block": "toy.liar"}])
    paths = docs("text", "")
    with Engine(workers=1) as engine:
        result = engine.run(p, paths)
    by_doc = {r.document: r for r in result.results}
    assert "broke its manifest" in by_doc[paths[0]].error
    assert by_doc[paths[0]].step == "lie"
    assert by_doc[paths[1]].error_kind == "corrupt"  # returned by toy.read: typed, not a crash
    assert by_doc[paths[1]].step == "read"


def test_map_gathers_in_order_and_switch_routes(plan, docs):
    p = plan([
        {"id": "read", "block": "toy.read"},
        {"id": "lens", "map": "lines", "as": "line", "block": "toy.linelen",
         "outputs": {"length": "lengths"}},
        {"id": "total", "expr": "sum(lengths)", "output": "total"},
        {"id": "route", "switch": "'many' if len(lines) > 2 else 'few'",
         "cases": {"many": [{"id": "m", "expr": "'MANY'", "output": "label"}],
                   "few": [{"id": "f", "expr": "'FEW'", "output": "label"}]}},
    ], outputs=["lengths", "total", "label"])
    paths = docs("a\nbb\nccc\ndddd", "xyz\n", "")
    with Engine(workers=2) as engine:
        result = engine.run(p, paths)
    r0, r1, r2 = result.results
    assert r0.outputs == {"lengths": [1, 2, 3, 4], "total": 10, "label": "MANY"}
    assert r1.outputs == {"lengths": [3], "total": 3, "label": "FEW"}
    assert r2.status == "failed" and r2.error_kind == "corrupt"


def test_when_skips_a_step_and_its_dependents(plan, docs):
    p = plan([
        {"id": "read", "block": "toy.read"},
        {"id": "words", "block": "toy.words"},
        {"id": "up", "block": "toy.upper", "when": "words > 1"},
        {"id": "shout", "expr": "upper + '!'", "output": "shout", "when": "upper is not None"},
    ], outputs=["words", "upper", "shout"])
    with Engine(workers=1) as engine:
        result = engine.run(p, docs("one two", "one"))
    assert result.results[0].outputs == {"words": 2, "upper": "ONE TWO", "shout": "ONE TWO!"}
    assert result.results[1].outputs == {"words": 1}
    assert result.results[1].status == "succeeded"


def test_max_in_flight_bounds_documents_but_all_complete(plan, docs):
    p = plan([{"id": "read", "block": "toy.read"}, {"id": "w", "block": "toy.words"}])
    with Engine(workers=2, max_in_flight=3) as engine:
        result = engine.run(p, docs(*[f"w {i}" for i in range(30)]))
    assert result.counts == {"succeeded": 30, "failed": 0}


def test_independent_steps_of_one_document_run_concurrently(plan, docs, tmp_path):
    from docpipe.store import Store

    p = plan([
        {"id": "read", "block": "toy.read"},
        {"id": "a", "block": "toy.sleep", "outputs": {"slept": "a"}},
        {"id": "b", "block": "toy.sleep", "outputs": {"slept": "b"}},
    ], outputs=["a", "b"])
    store = Store(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        with Engine(store, workers=2) as engine:
            engine.run(p, docs("warm up the pool"))  # spawn cost out of the picture
            result = engine.run(p, docs("x"))
        tasks = {t["step"]: t for t in store.get_run(result.results[0].run_id)["tasks"]}
    finally:
        store.close()
    a, b = tasks["a"], tasks["b"]
    assert a["worker"] != b["worker"]
    # both intervals overlap: neither waited for the other to finish
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


def test_killing_a_busy_worker_fails_only_its_document(plan, docs):
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "s", "block": "toy.sleep", "params": {"seconds": 1.0}}], outputs=["slept"])
    with Engine(workers=2) as engine:
        engine.run(p, docs("warm up"))  # start the pool
        pool = engine.pools("toy.sleep")[0]
        with kill_one_worker(pool) as victims:  # both workers are inside a 1 s call by then
            result = engine.run(p, docs(*[f"doc {i}" for i in range(4)]))
        assert pool.spawned == 3
        assert victims[0] not in pool.pids()
    assert len(result.failed) == 1
    assert result.failed[0].error_kind == "worker_died"
    assert "killed by signal 9" in result.failed[0].error
    assert result.counts["succeeded"] == 3
    assert victims[0] not in {r.outputs.get("slept") for r in result.results}


def test_secret_params_never_reach_the_records(tmp_path, registry, docs):
    import sqlite3

    from docpipe.planner import build_plan
    from docpipe.store import Store

    p = build_plan({"name": "t", "version": "1", "params": {"pdf_password": "s3cret!", "rounds": 2},
                    "steps": [{"id": "read", "block": "toy.read"}]}, registry)
    store = Store(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        with Engine(store) as engine:
            engine.run(p, docs("x"), argv=["docpipe", "run", "-p", "pdf_password=s3cret!"])
    finally:
        store.close()
    dump = "\n".join(sqlite3.connect(tmp_path / "d.db").iterdump())
    assert "s3cret!" not in dump
    assert '"rounds": 2' in dump or '"rounds":2' in dump


def test_a_result_that_cannot_be_received_fails_its_document_not_the_engine(plan, docs):
    p = plan([{"id": "read", "block": "toy.read"}, {"id": "u", "block": "toy.unreceivable"}])
    with Engine(workers=1) as engine:
        result = engine.run(p, docs("fine", "a trap", "fine again"))
    assert [r.status for r in result.results] == ["succeeded", "failed", "succeeded"]
    assert "could not be received" in result.results[1].error


def test_a_worker_past_its_memory_limit_fails_that_document_alone(plan, docs):
    """Issue 13.8: each worker's data segment is capped (DOCPIPE_WORKER_MEMORY_MB, default a
    quarter of the machine): a document that would take gigabytes fails as out_of_memory,
    its worker lives on, the others succeed."""
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "eat", "block": "toy.hog", "params": {"megabytes": 3000}}], outputs=["fed"])
    with Engine(workers=1, worker_memory_mb=600) as engine:
        result = engine.run(p, docs("fine", "a hog arrives", "fine too"))
        pool = engine.pools("toy.hog")[0]
        assert pool.spawned == 1  # the worker survived
    assert [r.status for r in result.results] == ["succeeded", "failed", "succeeded"]
    hog = result.results[1]
    assert (hog.error_kind, hog.step) == ("out_of_memory", "eat")
    assert "out of memory" in (hog.error or "") and "600 MiB" in (hog.error or "")


def test_pools_start_with_the_batch_sized_to_it(plan, docs):
    """Issue 14: the pools a flow needs start when its batch starts (models load while the
    first steps run); a step that can never run with these params gets none; an engine that
    runs one batch (the CLI) gives a pool no more workers than the batch has documents."""
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "later", "block": "toy.sleep", "params": {"seconds": 0}, "when": "len(text) > 10**6"},
              {"id": "never", "block": "toy.crash", "when": "params.model != None and len(text) > 0"}],
             params={"model": None}, outputs=["slept"])
    with Engine(workers=2, one_batch=True) as engine:
        result = engine.run(p, docs("one document"))
        assert result.counts == {"succeeded": 1, "failed": 0}
        (sleeper,) = engine.pools("toy.sleep")  # started with the batch, though no input came
        assert sleeper.capacity == 1 and sleeper.spawned == 1
        assert engine.pools("toy.crash") == []  # false by its params: never started
    with Engine(workers=2) as engine:  # an engine kept for many batches keeps full pools
        engine.run(p, docs("one document"))
        assert engine.pools("toy.sleep")[0].capacity == 2
