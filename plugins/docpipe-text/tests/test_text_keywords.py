"""``text.keywords``: keyword lists, matching rules, control IDs in a real-looking policy, scale."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import docpipe_text
import pymupdf
import pytest
from docpipe_text.keywords import Keywords, builtin_list_names, parse_keywords, read_builtin_list
from pydantic import ValidationError

from docpipe.blocks import Result
from docpipe.errors import BlockFailed
from docpipe.flow import Flow
from docpipe.plugins import Registry
from docpipe.testing import BlockContract, run_flow

SAMPLES = Path(__file__).resolve().parents[3] / "samples"
WRITES = set(Keywords.manifest.writes)
#: what an auditor finds in samples/security_policy.pdf, in output order
SECURITY_POLICY_IDS = [
    ("NIST SP 800-53", "AC-2"), ("NIST SP 800-53", "AC-2(3)"), ("NIST SP 800-53", "AU-6"),
    ("NIST SP 800-53", "SC-12"), ("NIST SP 800-53", "SC-28"), ("ISO/IEC 27001", "A.5.15"),
    ("SOC 2", "CC6.1"), ("SOC 2", "CC7.2"), ("CIS Controls", "CIS 6.4"),
]

POLICY = [
    """Information Security Policy, version 3.2 (ISO/IEC 27001:2022, SOC 2 Type II)

1. Access control. Access to production systems follows least privilege and is
granted through role-based access control. All administrators use multi-factor
authentication; privileged access is reviewed quarterly (AC-2, AC-2(1), A.5.15,
CC6.1). Login attempts are written to the audit log.""",
    """2. Cryptography. Customer data is protected by encryption at rest and encryption
in transit (TLS 1.2 or later). Key rotation is yearly (SC-12, SC-13; CIS Safeguard 3.11).

3. Incident response. The incident response plan is tested twice a year (IR-4; ISO 27001
5.24; CC7.3). Audit logs are kept for one year; the audit
log review is weekly.""",
]


def write_list(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def block() -> Keywords:
    return Keywords()


def find(block: Keywords, pages: list[Any], **params: Any) -> dict[str, Any]:
    (result,) = block.run([{"page_texts": pages}], Keywords.Params(**params))
    return ok(result)


def ok(result: Result) -> dict[str, Any]:
    assert isinstance(result, dict), f"expected a result, got {result!r}"
    assert set(result) == WRITES
    return result


class TestKeywordsContract(BlockContract):
    block = Keywords
    params = {"builtin_lists": ["security-controls"], "controls": True}
    inputs = [{"page_texts": POLICY}, {"page_texts": []}, {"page_texts": [""]}]


def test_manifest_and_registration() -> None:
    m = Keywords.manifest
    assert m.reads == {"page_texts": list[str]}
    assert m.writes == {"keywords": dict[str, int], "keyword_pages": dict[str, list[int]],
                        "control_ids": list[dict], "control_id_count": int}
    assert m.runtime == "thread"
    registry = Registry(entry_points=False, extra=[docpipe_text])
    assert registry.broken == []
    assert registry.get("text.keywords").cls is Keywords


def test_params_are_validated(tmp_path: Path) -> None:
    defaults = Keywords.Params().model_dump()
    assert defaults == {"keyword_files": [], "builtin_lists": ["security-controls"], "controls": True,
                        "frameworks": ["NIST SP 800-53", "ISO/IEC 27001", "SOC 2", "CIS Controls"]}
    with pytest.raises(ValidationError, match="unknown built-in keyword list"):
        Keywords.Params(builtin_lists=["nope"])
    with pytest.raises(ValidationError, match="keyword file"):
        Keywords.Params(keyword_files=[str(tmp_path / "missing.txt")])
    with pytest.raises(ValidationError):
        Keywords.Params(frameworks=["PCI DSS"])
    with pytest.raises(ValidationError):
        Keywords.Params(keyword_list=["x"])  # type: ignore[call-arg]
    assert "frameworks" in Keywords.params_schema()["properties"]


def test_builtin_list_is_real() -> None:
    assert "security-controls" in builtin_list_names()
    terms = parse_keywords(read_builtin_list("security-controls"))
    assert 90 <= len(terms) <= 150
    assert len({t.casefold() for t in terms}) == len(terms)
    for term in ("access control", "encryption", "multi-factor authentication", "incident response",
                 "audit log"):
        assert term in terms


def test_policy_document(block: Keywords) -> None:
    result = find(block, POLICY)
    # every keyword counts on its own: "role-based access control" also counts "access
    # control"; "audit\nlog review" is "audit log" and "log review"; "Audit logs" is neither
    assert result["keywords"] == {
        "access control": 2, "least privilege": 1, "privileged access": 1,
        "role-based access control": 1, "authentication": 1, "multi-factor authentication": 1,
        "encryption": 2, "encryption at rest": 1, "encryption in transit": 1, "key rotation": 1,
        "TLS": 1, "audit log": 2, "log review": 1, "incident response": 2,
        "incident response plan": 1, "security policy": 1, "information security policy": 1,
    }
    assert list(result["keywords"]) == list(result["keyword_pages"])  # list order, both
    assert result["keyword_pages"]["audit log"] == [1, 2]
    assert result["keyword_pages"]["encryption"] == [2]
    assert result["keyword_pages"]["access control"] == [1]
    by_id = {c["id"]: c for c in result["control_ids"]}
    assert set(by_id) == {"AC-2", "AC-2(1)", "SC-12", "SC-13", "IR-4", "A.5.15", "A.5.24", "CC6.1",
                          "CC7.3", "CIS 3.11"}
    assert by_id["A.5.24"] == {"id": "A.5.24", "framework": "ISO/IEC 27001", "count": 1, "pages": [2],
                               "occurrences": [{"page": 2, "text": "5.24", "context": "…ISO 27001 5.24; CC7.3)."
                                                " Audit logs are kept for one year;…"}]}
    assert result["control_id_count"] == 10
    # a bare 5.24 whose sentence does not name ISO 27001 is not an ISO control (the title does)
    pages = [POLICY[0], POLICY[1].replace("(IR-4; ISO 27001\n5.24; CC7.3)", "(IR-4, 5.24, CC7.3)")]
    assert "A.5.24" not in {c["id"] for c in find(block, pages)["control_ids"]}


def test_security_policy_sample(block: Keywords) -> None:
    """samples/security_policy.pdf through PyMuPDF: "CIS Safeguard 6.4" is CIS 6.4 and not also
    ISO 27001 A.6.4 (issue 12); every ID is quoted as the page writes it."""
    with pymupdf.open(SAMPLES / "security_policy.pdf") as doc:
        pages = [page.get_text() for page in doc]
    controls = find(block, pages)["control_ids"]
    assert [(c["framework"], c["id"]) for c in controls] == SECURITY_POLICY_IDS
    written = {c["id"]: c["occurrences"][0]["text"] for c in controls}
    assert written["CIS 6.4"] == "CIS Safeguard 6.4" and written["A.5.15"] == "A.5.15"
    assert all(c["count"] == 1 and c["pages"] == [1] for c in controls)


def test_whole_words_case_and_line_breaks(block: Keywords, tmp_path: Path) -> None:
    kw_file = write_list(tmp_path / "k.txt", "# a comment\n\nlog\n  data   retention \nC#\nStraße\nlog\nLOG\n")
    pages = ["Login to the catalog; the log, the LOG and the Log-file.",
             "DATA\nRETENTION and data-retention; written in C# (c#).",
             "STRASSE and straße, but not Straßenbahn"]
    result = find(block, pages, keyword_files=[kw_file], builtin_lists=[], controls=False)
    assert result["keywords"] == {"log": 3, "data retention": 1, "C#": 2, "Straße": 2}
    assert result["keyword_pages"] == {"log": [1], "data retention": [2], "C#": [2], "Straße": [3]}
    assert (result["control_ids"], result["control_id_count"]) == ([], 0)


def test_ligatures_and_no_break_spaces(block: Keywords) -> None:
    result = find(block, ["secure conﬁguration and data\u00a0classification"], controls=False)
    assert result["keywords"] == {"secure configuration": 1, "data classification": 1}


def test_one_keyword_never_overlaps_itself(block: Keywords, tmp_path: Path) -> None:
    kw_file = write_list(tmp_path / "k.txt", "la la\n")
    result = find(block, ["la la la la la"], keyword_files=[kw_file], builtin_lists=[])
    assert result["keywords"] == {"la la": 2}  # as re.findall counts it


def test_lists_are_merged_first_spelling_wins(block: Keywords, tmp_path: Path) -> None:
    first = write_list(tmp_path / "a.txt", "\ufeffZero Trust\nkubernetes\n")  # BOM is dropped
    second = write_list(tmp_path / "b.txt", "zero trust\nKubernetes\nhelm chart\n")
    text = ["zero trust with Kubernetes and a helm chart"]
    result = find(block, text, keyword_files=[first, second], builtin_lists=[])
    assert result["keywords"] == {"Zero Trust": 1, "kubernetes": 1, "helm chart": 1}
    # built-in lists come before keyword files
    result = find(block, text, keyword_files=[first, second], builtin_lists=["security-controls"])
    assert result["keywords"] == {"zero trust": 1, "kubernetes": 1, "helm chart": 1}


def test_empty_and_odd_input(block: Keywords) -> None:
    for pages in ([], [""], ["   "], [None], ["\x00\x01 binary \ufffd"]):
        result = find(block, pages)
        assert result == {"keywords": {}, "keyword_pages": {}, "control_ids": [], "control_id_count": 0}
    bad, good = block.run([{"page_texts": 7}, {"page_texts": ["encryption"]}], Keywords.Params())
    assert isinstance(bad, BlockFailed) and "got int" in str(bad)
    assert ok(good)["keywords"] == {"encryption": 1}


def test_samples_give_no_control_ids(block: Keywords) -> None:
    """Invoice numbers, sort codes, dates and amounts in the real samples are not control IDs."""
    for name in ("invoice.pdf", "report_de.pdf", "lettre_fr.pdf"):
        with pymupdf.open(SAMPLES / name) as doc:
            pages = [page.get_text() for page in doc]
        result = find(block, pages)
        assert result["control_ids"] == [], name


def test_five_megabytes_and_500_keywords(block: Keywords, tmp_path: Path) -> None:
    """Scale sanity check (no timing): every planted keyword is counted exactly, on the right
    pages, and the decoys glued into longer words are not."""
    rng = random.Random(5)
    keywords = [f"kw{i:03d}" if i % 2 else f"term{i:03d} phrase{i:03d}" for i in range(500)]
    kw_file = write_list(tmp_path / "many.txt", "\n".join(keywords))
    filler = [f"filler{i}" for i in range(300)]
    expected: dict[str, int] = {}
    where: dict[str, set[int]] = {}
    pages = []
    for number in range(1, 51):  # 50 pages of 100 KB
        words: list[str] = []
        size = 0
        while size < 100_000:
            roll = rng.random()
            if roll < 0.03:
                k = rng.choice(keywords)
                expected[k] = expected.get(k, 0) + 1
                where.setdefault(k, set()).add(number)
                word = k.replace(" ", "\n") if rng.random() < 0.3 else k.upper() if rng.random() < 0.3 else k
            elif roll < 0.04:
                word = "x" + rng.choice(keywords).replace(" ", "_") + "s"  # decoy
            else:
                word = rng.choice(filler)
            words.append(word)
            size += len(word) + 1
        pages.append(" ".join(words))
    assert sum(map(len, pages)) >= 5_000_000
    result = find(block, pages, keyword_files=[str(kw_file)], builtin_lists=[])
    assert result["keywords"] == expected
    assert result["keyword_pages"] == {k: sorted(v) for k, v in where.items()}
    assert result["control_ids"] == []


@pytest.mark.slow  # spawns pdf.text's process pool
def test_in_a_flow_after_pdf_text() -> None:
    flow = (Flow("text", "1", outputs=["language", "keywords", "control_id_count", "control_ids"])
            .step("pdf", "pdf.text")
            .expr("texts", "[p['text'] for p in pages]", output="page_texts")
            .step("language", "text.language")
            .step("keywords", "text.keywords"))
    result = run_flow(flow, [SAMPLES / "report_de.pdf", SAMPLES / "invoice.pdf", SAMPLES / "security_policy.pdf"])
    de, en, policy = result.results
    assert de.status == en.status == policy.status == "succeeded"
    assert (de.outputs["language"], en.outputs["language"]) == ("de", "en")
    assert en.outputs["control_id_count"] == 0
    # issue 12: no ISO 27001 A.6.4 read out of "CIS Safeguard 6.4"
    assert [(c["framework"], c["id"]) for c in policy.outputs["control_ids"]] == SECURITY_POLICY_IDS
    assert policy.outputs["control_id_count"] == len(SECURITY_POLICY_IDS)
