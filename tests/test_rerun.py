"""Rerun from a step and runs diff (issue 18): `docpipe runs rerun RUN_ID --from STEP` runs
that step and its dependents again as a new attempt of the run, keeping the earlier one and
the outputs of the steps before it; `docpipe runs diff` shows what changed."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, TOYS, run_cli

from docpipe.store import Store


def toy_flow(folder: Path) -> Path:
    path = folder / "flow.json"
    path.write_text(json.dumps({
        "name": "digests", "version": "1", "outputs": ["upper", "words", "digest", "short"],
        "params": {"rounds": 10},
        "steps": [{"id": "read", "block": "toy.read"},
                  {"id": "up", "block": "toy.upper"},
                  {"id": "dig", "block": "toy.digest", "params": {"rounds": "${params.rounds}"}},
                  {"id": "short", "expr": "digest[:8]", "output": "short"},
                  {"id": "words", "block": "toy.words"}]}))
    return path


def tasks_of(store: Store, run_id: str) -> dict[str, list[dict[str, Any]]]:
    run = store.get_run(run_id, resolve_blobs=False)
    assert run is not None
    found: dict[str, list[dict[str, Any]]] = {}
    for t in run["tasks"]:
        found.setdefault(t["step"], []).append(t)
    return found


def first_run(db: str, folder: Path, *extra: str) -> str:
    doc = folder / "a.txt"
    doc.write_text("alpha beta gamma")
    done = run_cli("run", str(toy_flow(folder)), str(doc), "--plugin", TOYS, "--db", db, "-q", *extra)
    assert done.returncode == 0, done.stderr
    with Store(db) as store:
        return str(store.list_runs()[0]["id"])


def test_rerun_from_a_step_runs_it_and_its_dependents_only(tmp_path, store_url):
    run_id = first_run(store_url, tmp_path)
    rerun = run_cli("runs", "rerun", run_id[:10], "--from", "dig", "-p", "rounds=3", "--plugin", TOYS,
                    "--db", store_url, "-q")
    assert rerun.returncode == 0, rerun.stderr
    assert f"rerun of {run_id} from step dig (runs again: dig, short; 3 task records kept)" in rerun.stderr
    with Store(store_url) as store:
        new = next(r for r in store.list_runs() if r["id"] != run_id)
        assert new["id"] in rerun.stderr and new["status"] == "succeeded" and new["attempt"] == 2
        assert new["batch_id"] != store.get_run(run_id)["batch_id"]
        assert store.batch(new["batch_id"])["params"] == {"rounds": 3}  # recorded with the new batch
        before, after = tasks_of(store, run_id), tasks_of(store, new["id"])
        assert set(before) == set(after) == {"read", "up", "dig", "short", "words"}
        for step in ("read", "up", "words"):  # copies: no new block call
            assert [t["started_at"] for t in after[step]] == [t["started_at"] for t in before[step]]
            assert after[step][0]["outputs"] == before[step][0]["outputs"]
        for step in ("dig", "short"):
            assert len(after[step]) == 1 and after[step][0]["started_at"] > before["words"][0]["finished_at"]
        assert after["dig"][0]["outputs"]["digest"] != before["dig"][0]["outputs"]["digest"]
        assert len(store.get_run(run_id)["tasks"]) == 5  # the earlier attempt is kept as it was
        old, now = store.get_run(run_id)["outputs"], store.get_run(new["id"])["outputs"]
    # the diff: printed by the rerun, and by `runs diff` (as text and JSON), exit 0
    assert f"digest: {old['digest'][:60]}… (64 characters) -> " in rerun.stdout
    assert f"short: {old['short']} -> {now['short']}" in rerun.stdout
    diff = run_cli("runs", "diff", run_id, new["id"], "--db", store_url)
    assert diff.returncode == 0, diff.stderr
    assert f"B: run {new['id']}" in diff.stdout and f"rerun of {run_id}" in diff.stdout
    assert "outputs: 2 differ" in diff.stdout and "steps: 2 differ" in diff.stdout
    assert "  dig: succeeded" in diff.stdout and "  read:" not in diff.stdout
    as_json = json.loads(run_cli("runs", "diff", run_id, new["id"], "--db", store_url, "--json").stdout)
    assert as_json["same"] is False and as_json["b"]["rerun_of"] == run_id
    assert {c["key"] for c in as_json["outputs"]} == {"digest", "short"}
    changed = next(c for c in as_json["outputs"] if c["key"] == "digest")
    assert changed["a"].startswith(old["digest"][:60]) and changed["a"].endswith("(64 characters)")
    assert [s["step"] for s in as_json["steps"]] == ["dig", "short"]


def test_a_rerun_with_the_same_params_differs_in_nothing(tmp_path):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run_id = first_run(db, tmp_path)
    rerun = run_cli("runs", "rerun", run_id, "--from", "short", "--plugin", TOYS, "--db", db, "-q")
    assert rerun.returncode == 0, rerun.stderr
    assert "no difference: the same outputs from every step" in rerun.stdout
    with Store(db) as store:
        new = next(r for r in store.list_runs() if r["id"] != run_id)
    same = run_cli("runs", "diff", new["id"], run_id, "--db", db, "--json")
    assert same.returncode == 0 and json.loads(same.stdout)["same"] is True


def test_rerun_refuses_an_unknown_step_run_or_a_missing_document(tmp_path):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run_id = first_run(db, tmp_path)
    bad = run_cli("runs", "rerun", run_id, "--from", "digg", "--plugin", TOYS, "--db", db, "-q")
    assert bad.returncode == 2
    assert "flow digests has no step 'digg'; its steps: read, up, dig, short, words" in bad.stderr
    assert "--from" in bad.stderr
    gone = run_cli("runs", "rerun", "ffff", "--from", "dig", "--plugin", TOYS, "--db", db, "-q")
    assert gone.returncode == 2 and "no run ffff" in gone.stderr
    assert run_cli("runs", "diff", run_id, "ffff", "--db", db).returncode == 2
    (tmp_path / "a.txt").unlink()
    missing = run_cli("runs", "rerun", run_id, "--from", "dig", "--plugin", TOYS, "--db", db, "-q")
    assert missing.returncode == 2 and "is not there any more" in missing.stderr
    with Store(db) as store:
        assert len(store.list_batches()) == 1  # nothing was started


def test_secret_params_must_be_given_again(tmp_path):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    flow = toy_flow(tmp_path)
    definition = json.loads(flow.read_text())
    definition["params"]["api_token"] = None
    flow.write_text(json.dumps(definition))
    doc = tmp_path / "a.txt"
    doc.write_text("alpha")
    first = run_cli("run", str(flow), str(doc), "--plugin", TOYS, "--db", db, "-q", "-p", "api_token=s3cret")
    assert first.returncode == 0, first.stderr
    with Store(db) as store:
        run_id = str(store.list_runs()[0]["id"])
    refused = run_cli("runs", "rerun", run_id, "--from", "dig", "--plugin", TOYS, "--db", db, "-q")
    assert refused.returncode == 2 and "api_token" in refused.stderr
    given = run_cli("runs", "rerun", run_id, "--from", "dig", "--plugin", TOYS, "--db", db, "-q",
                    "-p", "api_token=s3cret")
    assert given.returncode == 0, given.stderr
    with Store(db) as store:
        assert all(b["params"]["api_token"] == "***" for b in store.list_batches())


@pytest.mark.slow
def test_idp_rerun_from_classify_keeps_the_earlier_steps(tmp_path):
    """The real idp flow over two real PDFs; rerun one from `classify` with a review threshold:
    classify runs again and check_type now waits; every earlier step is a copy."""
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for name in ("report_de.pdf", "security_policy.pdf"):
        shutil.copy(ROOT / "samples" / name, tmp_path / name)
    first = run_cli("run", str(ROOT / "flows" / "idp.json"), str(tmp_path / "report_de.pdf"),
                    str(tmp_path / "security_policy.pdf"), "--db", db, "-q", timeout=600)
    assert first.returncode == 0, first.stderr
    with Store(db) as store:
        run_id = next(r["id"] for r in store.list_runs() if r["document"].endswith("security_policy.pdf"))
    rerun = run_cli("runs", "rerun", run_id, "--from", "classify", "-p", "review_below=0.99", "--db", db, "-q",
                    timeout=600)
    assert rerun.returncode == 4, rerun.stderr  # waits for a review now
    assert "(runs again: classify, check_type; " in rerun.stderr
    with Store(db) as store:
        new = next(r for r in store.list_runs() if r["id"] != run_id and r["document"].endswith("policy.pdf"))
        before, after = tasks_of(store, run_id), tasks_of(store, new["id"])
        for step in ("decrypt", "text", "merge", "language", "keywords", "entities"):
            assert [t["started_at"] for t in after[step]] == [t["started_at"] for t in before[step]], step
            assert after[step] == before[step], step  # the same records, outputs included
        assert after["classify"][0]["started_at"] > before["entities"][0]["finished_at"]
        assert after["classify"][0]["outputs"]["doc_class"] == before["classify"][0]["outputs"]["doc_class"]
        assert (before["check_type"][0]["status"], after["check_type"][-1]["status"]) == ("skipped", "waiting")
        assert store.batch(new["batch_id"])["params"]["review_below"] == 0.99
    assert "status: succeeded -> waiting" in rerun.stdout and "check_type: skipped -> waiting" in rerun.stdout
    diff = run_cli("runs", "diff", run_id, new["id"], "--db", db)
    assert diff.returncode == 0 and "check_type: skipped -> waiting" in diff.stdout


TOKEN = "test-token-0123456789"


def test_the_run_page_reruns_from_a_step_and_shows_the_diff(tmp_path):
    from fastapi.testclient import TestClient

    from docpipe.server import create_app

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run_id = first_run(db, tmp_path)
    app = create_app(db, tmp_path / "data", TOKEN, plugins=(TOYS,))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        page = c.get(f"/runs/{run_id}").text
        assert f'action="/runs/{run_id}/rerun"' in page and "<option>dig</option>" in page
        assert c.post(f"/api/runs/{run_id}/rerun", json={"step": "dig"}).status_code == 401
        unknown = c.post(f"/api/runs/{run_id}/rerun", json={"step": "nope"},
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert unknown.status_code == 404 and "its steps: read, up, dig, short, words" in unknown.json()["detail"]
        reply = c.post(f"/api/runs/{run_id}/rerun", json={"step": "dig", "params": {"rounds": 4}},
                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert reply.status_code == 202, reply.text
        made = reply.json()
        assert made["again"] == ["dig", "short"] and made["copied"] == 3 and made["rerun_of"] == run_id
        deadline = time.monotonic() + 120
        while c.get(made["url"]).json()["active"]:
            assert time.monotonic() < deadline, "the rerun's job did not end"
            time.sleep(0.1)
        new = made["run_id"]
        assert c.get(f"/api/runs/{new}").json()["status"] == "succeeded"
        diff = c.get(f"/api/runs/{run_id}/diff/{new}").json()
        assert {o["key"] for o in diff["outputs"]} == {"digest", "short"} and diff["b"]["rerun_of"] == run_id
        shown = c.get(f"/runs/{run_id}/diff/{new}").text
        assert 'id="diff-step-dig"' in shown and 'id="diff-step-read"' not in shown and "digest" in shown
        assert f'href="/runs/{run_id}/diff/{new}"' in c.get(f"/runs/{new}").text  # the link to the diff
        assert f'href="/runs/{run_id}/diff/{new}"' in c.get(f"/runs/{run_id}").text  # and from the earlier run
        form = c.post(f"/runs/{run_id}/rerun", data={"token": TOKEN, "step": "short", "params": ""},
                      follow_redirects=False)
        assert form.status_code == 303 and form.headers["location"].startswith("/runs/")
        assert c.get(f"/runs/{run_id}/diff/ffff").status_code == 404


def test_a_rerun_interrupted_before_it_ran_is_finished_by_resume(tmp_path):
    """prepare_rerun writes the new batch, its running run and the copies; the process may die
    before the resume that carries it out: `docpipe resume NEW_BATCH` finishes it."""
    from docpipe.plugins import Registry
    from docpipe.service.rerun import diff_runs, prepare_rerun

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run_id = first_run(db, tmp_path)
    with Store(db) as store:
        rerun = prepare_rerun(store, run_id, "words", Registry(extra=(TOYS,)))
        assert (rerun.again, rerun.copied) == (["words"], 4)
        assert store.get_run(rerun.run_id)["status"] == "running"
    resumed = run_cli("resume", rerun.batch_id, "--plugin", TOYS, "--db", db, "-q")
    assert resumed.returncode == 0, resumed.stderr
    with Store(db) as store:
        assert store.get_run(rerun.run_id)["status"] == "succeeded"
        assert diff_runs(store, run_id, rerun.run_id).same
        assert [t["step"] for t in store.get_run(rerun.run_id)["tasks"]].count("words") == 1
