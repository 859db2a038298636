"""Large payloads: the content-addressed blob store and the store's offloading, on real files."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from docpipe.blobs import DEFAULT_THRESHOLD, BlobStore, blob_ref, is_blob_ref, offload, resolve
from docpipe.status import Status
from docpipe.store import RunFinished, RunStarted, Store, task_succeeded
from docpipe.store.schema import flow_runs, task_runs

SUCCEEDED = Status.SUCCEEDED

T0 = 1_700_000_000.0
MB_TEXT = "".join(f"line {i}: lorem ipsum dolor sit amet\n" for i in range(30_000))[: 1024 * 1024]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_blob_store_is_content_addressed_atomic_and_idempotent(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    assert not (tmp_path / "blobs").exists()  # created on first write
    data = os.urandom(100_000)
    digest = blobs.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert blobs.path(digest) == tmp_path / "blobs" / digest[:2] / digest[2:4] / digest
    assert blobs.get(digest) == data and digest in blobs
    mtime = blobs.path(digest).stat().st_mtime_ns
    assert blobs.put(data) == digest  # stored once
    assert blobs.path(digest).stat().st_mtime_ns == mtime

    # many threads storing the same and different bytes at once: one file each, no temp files left
    payloads = [os.urandom(50_000) for _ in range(4)]
    errors: list[BaseException] = []

    def put_all() -> None:
        try:
            for p in payloads:
                blobs.put(p)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=put_all) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_files(tmp_path / "blobs")) == 5
    assert all(blobs.get(hashlib.sha256(p).hexdigest()) == p for p in payloads)

    missing = "0" * 64
    assert missing not in blobs and "not-a-digest" not in blobs
    with pytest.raises(FileNotFoundError, match=f"blob {missing} is missing"):
        blobs.get(missing)
    with pytest.raises(ValueError, match="not a SHA-256"):
        blobs.path("../../etc/passwd")


def test_offload_and_resolve(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path, fsync=False)
    small = {"text": "short", "n": 3, "items": [1, 2], "none": None}
    assert offload(small, blobs, 100) == small and _files(tmp_path) == []

    value: dict[str, Any] = {
        "text": "x" * 400,  # over the threshold: a json blob
        "image": b"\x89PNG\x00\xff",  # bytes: always a blob
        "pages": [{"png": b"page-1"}, {"png": b"page-2"}],  # nested bytes, each its own blob
        "small": "kept",
        "numbers": list(range(10)),
    }
    stored = json.loads(json.dumps(offload(value, blobs, 300)))
    assert is_blob_ref(stored["text"]) and stored["text"]["type"] == "json"
    assert stored["text"]["size"] == len(json.dumps("x" * 400))
    assert stored["image"] == blob_ref(hashlib.sha256(b"\x89PNG\x00\xff").hexdigest(), 6, "bytes")
    assert all(is_blob_ref(page["png"]) for page in stored["pages"])
    assert (stored["small"], stored["numbers"]) == ("kept", list(range(10)))
    assert resolve(stored, blobs) == {**value, "pages": [{"png": b"page-1"}, {"png": b"page-2"}]}

    # a long list of refs is itself offloaded (as one json blob holding refs), and still resolves
    many = {"pages": [b"p%d" % i for i in range(50)]}
    stored_many = json.loads(json.dumps(offload(many, blobs, 100)))
    assert is_blob_ref(stored_many["pages"]) and stored_many["pages"]["type"] == "json"
    assert resolve(stored_many, blobs) == many

    # not a reference: other keys, or a mapping without all three
    assert not is_blob_ref({"$blob": "a" * 64, "size": 1, "type": "json", "extra": 1})
    assert not is_blob_ref({"$blob": "a" * 64, "size": 1})
    assert resolve({"$blob": "x", "note": "user data"}, blobs) == {"$blob": "x", "note": "user data"}


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(store_url, blob_dir=tmp_path / "blobs")
    yield s
    s.close()


def test_a_1mb_text_output_goes_to_the_blob_store(store: Store, tmp_path: Path) -> None:
    assert store.blob_threshold == DEFAULT_THRESHOLD == 64 * 1024
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 1, inputs=["big.pdf"])
    w = store.writer
    w.flow_run_started(RunStarted("r", batch_id, flow_id, "big.pdf", T0))
    pdf = b"%PDF-1.7\n" + os.urandom(2000)
    w.task_run(task_succeeded("r", "ocr", "ocr.tesseract", 1, T0, T0 + 1, "pid:1", {"text": MB_TEXT, "n_pages": 40}))
    w.task_run(task_succeeded("r", "load", "pdf.load", 1, T0, T0 + 1, "main", {"pdf": pdf}))
    w.flow_run_finished(RunFinished("r", SUCCEEDED, T0 + 2, outputs={"text": MB_TEXT, "n_pages": 40}))
    w.flush()

    # rows hold small references; the text is stored once although two rows refer to it
    with store.engine.connect() as conn:
        run_text = conn.execute(sa.select(flow_runs.c.outputs)).scalar_one()
        task_texts = conn.execute(sa.select(task_runs.c.outputs).order_by(task_runs.c.id)).scalars().all()
    assert len(run_text) < 300 and all(len(t) < 300 for t in task_texts)
    digest = hashlib.sha256(json.dumps(MB_TEXT).encode()).hexdigest()
    assert json.loads(run_text) == {"text": blob_ref(digest, len(json.dumps(MB_TEXT)), "json"), "n_pages": 40}
    assert _files(tmp_path / "blobs") == sorted([store.blobs.path(digest),
                                                 store.blobs.path(hashlib.sha256(pdf).hexdigest())])

    # every reader resolves references transparently
    run = store.get_run("r")
    assert run is not None
    assert run["outputs"] == {"text": MB_TEXT, "n_pages": 40}
    assert run["tasks"][0]["outputs"]["text"] == MB_TEXT
    assert run["tasks"][1]["outputs"] == {"pdf": pdf}
    (row,) = store.batch_outputs(batch_id)
    assert row["outputs"]["text"] == MB_TEXT
    steps = store.resume_state(batch_id)["big.pdf"]["steps"]
    assert steps == {"ocr": {"text": MB_TEXT, "n_pages": 40}, "load": {"pdf": pdf}}

    # ... unless a UI asks for the references, to link them
    linked = store.get_run("r", resolve_blobs=False)
    assert linked is not None
    ref = linked["outputs"]["text"]
    assert is_blob_ref(ref) and store.blobs.path(ref["$blob"]).read_text() == json.dumps(MB_TEXT)
    (raw,) = store.batch_outputs(batch_id, resolve_blobs=False)
    assert raw["outputs"]["text"] == ref


def test_blob_threshold_and_default_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCPIPE_BLOBS", raising=False)
    with Store(f"sqlite:///{tmp_path / 'db' / 'runs.db'}", blob_threshold=10) as store:
        assert store.blobs.root == tmp_path / "db" / "blobs"  # next to the SQLite file
        flow_id = store.put_flow("f", "1", "h", {})
        batch_id = store.start_batch(flow_id, {}, 1)
        store.writer.flow_run_started(RunStarted("r", batch_id, flow_id, "d.pdf", T0))
        store.writer.flow_run_finished(RunFinished("r", SUCCEEDED, T0 + 1, outputs={"short": "abc", "long": "a" * 20}))
        (row,) = store.batch_outputs(batch_id, resolve_blobs=False)
        assert row["outputs"]["short"] == "abc" and is_blob_ref(row["outputs"]["long"])
        assert store.batch_outputs(batch_id)[0]["outputs"] == {"short": "abc", "long": "a" * 20}
    assert len(_files(tmp_path / "db" / "blobs")) == 1

    monkeypatch.chdir(tmp_path)
    with Store("sqlite://") as memory:  # no file to sit next to (nor with PostgreSQL)
        assert memory.blobs.root == tmp_path / ".docpipe" / "blobs"
    monkeypatch.setenv("DOCPIPE_BLOBS", str(tmp_path / "shared-blobs"))
    with Store("sqlite://") as memory, Store(f"sqlite:///{tmp_path / 'db' / 'runs.db'}") as on_disk:
        assert memory.blobs.root == on_disk.blobs.root == tmp_path / "shared-blobs"
    assert not (tmp_path / ".docpipe").exists() and not (tmp_path / "shared-blobs").exists()  # nothing written
