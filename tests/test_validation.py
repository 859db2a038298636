"""`docpipe validate` (and every run) rejects bad flows before touching a document."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel
from support import ROOT, TOYS, run_cli, write_flow

import docpipe
from docpipe.blocks import Block, ExistingDir, ExistingFile, Manifest
from docpipe.errors import FlowError
from docpipe.flow import FLOW_SCHEMA
from docpipe.planner import build_plan
from docpipe.plugins import Registry

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


# --- issue 14: mistakes caught before they cost a run ----------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_unknown_flow_param_is_an_error_with_a_suggestion(tmp_path, command):
    flow = write_flow(tmp_path / "f.json", [READ], params={"min_chars": 8, "dpi": 300})
    (tmp_path / "a.txt").write_text("words")
    inputs = [str(tmp_path / "a.txt"), "--db", f"sqlite:///{tmp_path / 'd.db'}"] if command == "run" else []
    proc = run_cli(command, str(flow), *inputs, "--plugin", TOYS, "-p", "min_char=20")
    assert proc.returncode == 2, proc.stderr
    assert "key 'params.min_char': the flow has no param 'min_char'; did you mean 'min_chars'?" in proc.stderr
    assert "its params: dpi, min_chars" in proc.stderr
    assert not (tmp_path / "d.db").exists()
    assert run_cli(command, str(flow), *inputs, "--plugin", TOYS, "-p", "min_chars=20").returncode == 0


def test_a_misspelt_block_is_the_root_cause_and_its_knock_on_issues_are_left_out(registry):
    steps = [READ, {"id": "up", "block": "toy.uper"},
             {"id": "shout", "expr": "upper + '!'", "output": "shouted"},
             {"id": "other", "expr": "nothing + 1", "output": "n"}]  # independent: kept
    with pytest.raises(FlowError) as info:
        build_plan({"name": "t", "version": "1", "outputs": ["upper", "n"], "steps": steps}, registry)
    issues = info.value.issues
    assert issues[0].step == "up" and issues[0].message.startswith(
        "unknown block 'toy.uper'; did you mean 'toy.upper'?")
    assert "2 issues that follow from it are not shown" in issues[0].message
    assert [(i.step, i.key) for i in issues[1:]] == [("other", "nothing")]


def test_an_unknown_block_without_suggestion_marks_what_may_follow_from_it(registry):
    steps = [READ, {"id": "x", "block": "no.such"},
             {"id": "shout", "expr": "upper + '!'", "output": "shouted"},
             {"id": "dig", "block": "toy.digest", "params": {"rounds": "many"}}]
    with pytest.raises(FlowError) as info:
        build_plan({"name": "t", "version": "1", "steps": steps}, registry)
    first, second, last = info.value.issues
    assert (first.step, first.message[:24]) == ("x", "unknown block 'no.such' ")
    assert second.step == "dig"  # independent issues before the maybe-consequences
    assert last.step == "shout" and "perhaps because step 'x' names an unknown block" in last.message


def test_a_misspelt_step_param_gets_a_suggestion(tmp_path):
    flow = write_flow(tmp_path / "f.json", [READ, {"id": "dig", "block": "toy.digest",
                                                   "params": {"rouns": 3}}])
    proc = run_cli("validate", str(flow), "--plugin", TOYS)
    assert proc.returncode == 2
    assert "step 'dig', key 'rouns': block 'toy.digest' has no param 'rouns'; did you mean 'rounds'?" \
        in " ".join(proc.stderr.split())
    assert proc.stderr.count("rouns") == 2  # once, not again as pydantic's 'extra inputs'


def test_a_flow_param_of_the_wrong_type_names_the_param_the_value_and_the_type(tmp_path):
    flow = write_flow(tmp_path / "f.json", [READ, {"id": "dig", "block": "toy.digest",
                                                   "params": {"rounds": "${params.rounds}"}}],
                      params={"rounds": 1})
    proc = run_cli("validate", str(flow), "--plugin", TOYS, "-p", "rounds=high")
    assert proc.returncode == 2
    assert ("step 'dig', key 'rounds': flow param params.rounds = 'high' does not fit param 'rounds' "
            "of block 'toy.digest'") in " ".join(proc.stderr.split())
    assert "expected int" in proc.stderr
    direct = write_flow(tmp_path / "g.json", [READ, {"id": "dig", "block": "toy.digest",
                                                     "params": {"rounds": [1]}}])
    proc = run_cli("validate", str(direct), "--plugin", TOYS)
    assert "(got [1]; expected int)" in proc.stderr


class Uses(Block):
    manifest = Manifest(name="t.uses", version="1", reads={"path": str}, writes={"n": int})

    class Params(BaseModel):
        model: ExistingDir | None = None  # None: the block's default
        words: ExistingFile = "words.txt"


class UsesPlugin:
    @docpipe.hookimpl
    def register_blocks(self, register):
        register(Uses)


def test_params_that_name_folders_and_files_are_checked_when_the_flow_is_planned(tmp_path):
    reg = Registry(entry_points=False, extra=[UsesPlugin()])
    (tmp_path / "words.txt").write_text("a")
    definition = {"name": "t", "version": "1", "params": {"model": None},
                  "steps": [{"id": "u", "block": "t.uses",
                             "params": {"model": "${params.model}", "words": str(tmp_path / "words.txt")}}]}
    assert build_plan(definition, reg).node("u").params.model is None
    assert build_plan(definition, reg, params={"model": str(tmp_path)}).node("u").params.model
    with pytest.raises(FlowError) as info:
        build_plan(definition, reg, params={"model": str(tmp_path / "nope")})
    (issue,) = info.value.issues
    assert (issue.step, issue.key) == ("u", "model")
    assert f"params.model = '{tmp_path / 'nope'}'" in issue.message
    assert f"folder {tmp_path / 'nope'} does not exist" in issue.message
    with pytest.raises(FlowError, match="is a folder, not a file"):
        build_plan({**definition, "steps": [{"id": "u", "block": "t.uses",
                                              "params": {"words": str(tmp_path)}}]}, reg)
    schema = Uses.params_schema()["properties"]
    assert schema["words"]["x-docpipe-path"] == "existing_file"


def test_validate_refuses_a_translation_model_folder_that_does_not_exist(tmp_path):

    proc = run_cli("validate", str(ROOT / "flows" / "idp.json"), "-p",
                   f"translation_model={tmp_path / 'x'}")
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())
    assert "step 'translate', key 'model'" in text and f"folder {tmp_path / 'x'} does not exist" in text
