"""System steps (fork/join, subflow) and the Python SDK."""

from __future__ import annotations

import json

import pytest
from support import TOYS, run_cli

from docpipe.engine import Engine
from docpipe.errors import FlowError
from docpipe.flow import Flow, load_definition, step
from docpipe.planner import build_plan, plan_file


def test_fork_branches_and_join(plan, docs):
    p = plan([
        {"id": "read", "block": "toy.read"},
        {"id": "branches", "fork": [
            [{"id": "up", "block": "toy.upper"}, {"id": "shout", "expr": "upper + '!'",
                                                  "output": "shout"}],
            [{"id": "w", "block": "toy.words"}],
        ]},
        {"id": "j", "join": ["shout", "w"]},
        {"id": "done", "expr": "'joined'", "output": "done", "after": ["j"]},
    ], outputs=["shout", "words", "done"])
    node = {n.id: n for n in p.nodes}
    assert node["done"].deps == {node["j"].idx}
    assert node["j"].deps == {node["shout"].idx, node["w"].idx}
    with Engine(workers=1) as engine:
        result = engine.run(p, docs("a b"))
    assert result.results[0].outputs == {"shout": "A B!", "words": 2, "done": "joined"}


def test_subflow_runs_inside_the_parent_with_renames(tmp_path, registry, docs):
    (tmp_path / "sub.json").write_text(json.dumps({
        "name": "sub", "version": "1", "outputs": ["upper", "words"],
        "steps": [{"id": "up", "block": "toy.upper"}, {"id": "w", "block": "toy.words"}]}))
    (tmp_path / "main.json").write_text(json.dumps({
        "name": "main", "version": "1", "outputs": ["loud", "words"],
        "steps": [{"id": "read", "block": "toy.read"},
                  {"id": "inner", "subflow": "sub.json", "outputs": {"upper": "loud"}}]}))
    p = plan_file(tmp_path / "main.json", registry)
    with Engine(workers=1) as engine:
        result = engine.run(p, docs("x y z"))
    assert result.results[0].outputs == {"loud": "X Y Z", "words": 3}


def test_subflow_errors_are_reported_on_the_parent_step(tmp_path, registry):
    (tmp_path / "sub.json").write_text(json.dumps({
        "name": "sub", "version": "1", "steps": [{"id": "x", "block": "no.such"}]}))
    (tmp_path / "main.json").write_text(json.dumps({
        "name": "main", "version": "1",
        "steps": [{"id": "read", "block": "toy.read"}, {"id": "inner", "subflow": "sub.json"}]}))
    with pytest.raises(FlowError) as info:
        plan_file(tmp_path / "main.json", registry)
    assert info.value.issues[0].step == "inner"
    assert "no.such" in info.value.issues[0].message


def test_sdk_builds_the_same_json_and_round_trips(tmp_path, registry):
    flow = (Flow("sdk", "2.0", description="built in code", params={"rounds": 10},
                 outputs=["digest", "size"])
            .step("read", "toy.read")
            .step("dig", "toy.digest", params={"rounds": "${params.rounds}"})
            .map("lens", "lines", "toy.linelen", as_="line")
            .switch("route", "len(lines) > 1",
                    cases={"true": [step("many", "toy.words")]},
                    default=[])
            .expr("size", "'big' if len(text) > 5 else 'small'", output="size"))
    path = tmp_path / "sdk.json"
    flow.save(path)
    assert Flow.load(path).to_dict() == flow.to_dict()
    assert load_definition(path) == json.loads(flow.to_json())
    p = build_plan(flow.to_dict(), registry, params={"rounds": 3})
    assert p.node("dig").params.rounds == 3
    proc = run_cli("validate", str(path), "--plugin", TOYS)
    assert proc.returncode == 0, proc.stderr


def test_sdk_rejects_what_the_schema_rejects():
    with pytest.raises(FlowError):
        Flow.from_dict({"name": "x", "version": "1", "steps": [{"id": "a"}]})


@pytest.mark.parametrize("target", ["/dev/zero", "pipe.json", "folder", "../outside/secret.json",
                                    "link.json", "not-a-flow.json"])
def test_subflow_paths_are_confined_to_regular_flow_files(tmp_path, target):
    """Issue 13.5: a subflow resolves only under the flow's folder (symlinks followed), must be
    a regular file of a bounded size, and a JSON file that is not a flow is never echoed."""
    import os

    main = tmp_path / "flows"
    main.mkdir()
    (tmp_path / "outside").mkdir()
    secret = {"name": "x", "version": "1", "steps": "hunter2-SECRET"}
    (tmp_path / "outside" / "secret.json").write_text(json.dumps(secret))
    (main / "link.json").symlink_to(tmp_path / "outside" / "secret.json")
    (main / "not-a-flow.json").write_text(json.dumps({"api_key": "hunter2-SECRET"}))
    os.mkfifo(main / "pipe.json")
    (main / "folder").mkdir()
    flow = main / "main.json"
    flow.write_text(json.dumps({"name": "main", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"}, {"id": "inner", "subflow": target}]}))
    proc = run_cli("validate", str(flow), "--plugin", TOYS, timeout=30)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "step 'inner'" in proc.stderr and "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout


def test_subflow_folders_can_be_allowed(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "sub.json").write_text(json.dumps({
        "name": "sub", "version": "1", "outputs": ["upper"], "steps": [{"id": "up", "block": "toy.upper"}]}))
    main = tmp_path / "flows"
    main.mkdir()
    (main / "main.json").write_text(json.dumps({"name": "main", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"}, {"id": "inner", "subflow": "../shared/sub.json"}]}))
    refused = run_cli("validate", str(main / "main.json"), "--plugin", TOYS)
    assert refused.returncode == 2 and "outside the flow's folder" in refused.stderr
    allowed = run_cli("validate", str(main / "main.json"), "--plugin", TOYS,
                      env={"DOCPIPE_SUBFLOW_DIRS": str(shared)})
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize("name", ["/dev/zero", "fifo"])
def test_a_flow_file_that_is_not_a_regular_file_is_refused(tmp_path, name):
    import os

    path = name
    if name == "fifo":
        os.mkfifo(tmp_path / "fifo")
        path = str(tmp_path / "fifo")
    with pytest.raises(FlowError, match="not a regular file"):
        load_definition(path)
