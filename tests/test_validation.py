"""`docpipe validate` (and every run) rejects bad flows before touching a document."""

from __future__ import annotations

import json

import pytest
from conftest import TOYS, run_cli, write_flow

from docpipe.errors import FlowError
from docpipe.flow import FLOW_SCHEMA
from docpipe.planner import build_plan

READ = {"id": "read", "block": "toy.read"}

CASES = {
    "schema": (
        [READ, {"id": "bad", "block": "toy.upper", "colour": "red"}],
        ["step 'bad'", "colour"],
    ),
    "not exactly one kind": (
        [READ, {"id": "both", "block": "toy.upper", "expr": "1", "output": "x"}],
        ["step 'both'", "exactly one of"],
    ),
    "unknown block": (
        [READ, {"id": "ocr", "block": "no.such"}],
        ["step 'ocr'", "unknown block 'no.such'"],
    ),
    "bad params": (
        [READ, {"id": "dig", "block": "toy.digest", "params": {"rounds": "many"}}],
        ["step 'dig'", "key 'rounds'", "bad param"],
    ),
    "unknown param": (
        [READ, {"id": "dig", "block": "toy.digest", "params": {"roundz": 3}}],
        ["step 'dig'", "key 'roundz'"],
    ),
    "missing flow param": (
        [READ, {"id": "dig", "block": "toy.digest", "params": {"rounds": "${params.n}"}}],
        ["step 'dig'", "key 'n'", "flow param"],
    ),
    "read nobody writes": (
        [{"id": "up", "block": "toy.upper"}],
        ["step 'up'", "key 'text'", "no step writes"],
    ),
    "expression reads nobody writes": (
        [READ, {"id": "e", "expr": "txt + 'x'", "output": "y"}],
        ["step 'e'", "key 'txt'", "no step writes"],
    ),
    "two writers": (
        [READ, {"id": "a", "block": "toy.upper"},
         {"id": "b", "expr": "text", "output": "upper"}],
        ["key 'upper'", "also written by step"],
    ),
    "cycle": (
        [READ, {"id": "a", "block": "toy.upper", "inputs": {"text": "shout"}},
         {"id": "b", "expr": "upper + '!'", "output": "shout"}],
        ["cycle:", "a", "b"],
    ),
    "type mismatch": (
        [READ, {"id": "w", "block": "toy.words"},
         {"id": "up", "block": "toy.upper", "inputs": {"text": "words"}}],
        ["step 'up'", "key 'words'", "written as int"],
    ),
    "rename of unknown key": (
        [READ, {"id": "up", "block": "toy.upper", "inputs": {"txt": "text"}}],
        ["step 'up'", "key 'txt'"],
    ),
    "bad expression": (
        [READ, {"id": "e", "expr": "text +", "output": "y"}],
        ["step 'e'", "cannot parse"],
    ),
    "after unknown step": (
        [READ, {"id": "up", "block": "toy.upper", "after": ["nope"]}],
        ["step 'up'", "'nope'"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_names_step_and_key_and_exits_2(case, tmp_path):
    steps, expected = CASES[case]
    flow = write_flow(tmp_path / "flow.json", steps)
    proc = run_cli("validate", str(flow), "--plugin", TOYS)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for text in expected:
        assert text in proc.stderr, f"{text!r} not in:\n{proc.stderr}"


def test_run_refuses_an_invalid_flow_before_touching_documents(tmp_path):
    flow = write_flow(tmp_path / "flow.json", [{"id": "up", "block": "toy.upper"}])
    db = tmp_path / "d.db"
    proc = run_cli("run", str(flow), str(tmp_path), "--plugin", TOYS, "--db", f"sqlite:///{db}")
    assert proc.returncode == 2
    assert "step 'up'" in proc.stderr
    assert not db.exists()


def test_every_issue_is_reported_at_once(registry):
    with pytest.raises(FlowError) as info:
        build_plan({"name": "t", "version": "1", "steps": [
            {"id": "a", "block": "no.such"}, {"id": "b", "block": "toy.upper"}]}, registry)
    assert {i.step for i in info.value.issues} == {"a", "b"}


def test_valid_flow_passes_and_switch_cases_may_share_keys(tmp_path):
    flow = write_flow(tmp_path / "flow.json", [
        READ,
        {"id": "route", "switch": "len(text) > 3",
         "cases": {"true": [{"id": "l", "expr": "'long'", "output": "size"}],
                   "false": [{"id": "s", "expr": "'short'", "output": "size"}]}},
    ], outputs=["size"])
    proc = run_cli("validate", str(flow), "--plugin", TOYS)
    assert proc.returncode == 0, proc.stderr
    assert "is valid" in proc.stdout


def test_schema_command_publishes_the_schema():
    proc = run_cli("schema")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == FLOW_SCHEMA


def test_secret_params_are_masked_but_where_a_secret_lives_is_not() -> None:
    from docpipe.flow import redact_params

    given = {"pdf_password": "hunter2", "api_key": "k", "token": None, "min_chars": 8,
             "pdf_passwords_file": "/etc/team/passwords.txt", "password_env": "MY_PW"}
    assert redact_params(given) == {
        "pdf_password": "***", "api_key": "***", "token": None, "min_chars": 8,
        # a path or a variable name is kept, so a resume or retry needs it not again
        "pdf_passwords_file": "/etc/team/passwords.txt", "password_env": "MY_PW"}


@pytest.mark.parametrize("when", ["-" * 3000 + "1", "not " * 50000 + "1", "1+" * 100000 + "1"])
def test_deeply_nested_expressions_are_flow_issues(tmp_path, when):
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read", "when": when}])
    proc = run_cli("validate", str(flow), "--plugin", TOYS)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "step 'read'" in proc.stderr and "Traceback" not in proc.stderr
