"""System steps (fork/join, subflow) and the Python SDK."""

from __future__ import annotations

import json

import pytest
from conftest import TOYS, run_cli

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
