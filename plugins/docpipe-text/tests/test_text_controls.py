"""Control-ID detection: tables of strings that must and must not give IDs, per framework, and
the rule that an ID counts only where the text names its framework. Precision on realistic and
real policy text: ``test_text_controls_real.py``."""

from __future__ import annotations

import pytest
from docpipe_text.controls import (
    CIS,
    CIS_SAFEGUARDS,
    FRAMEWORKS,
    ISO,
    ISO_2013,
    NIST,
    SOC2,
    find_controls,
    mentioned,
)
from docpipe_text.textnorm import flatten


def ids(text: str | list[str], framework: str | None = None) -> list[str]:
    pages = [text] if isinstance(text, str) else text
    found = find_controls([flatten(p) for p in pages])
    return [c["id"] for c in found if framework is None or c["framework"] == framework]


#: a page that names the four frameworks: explicit IDs (AC-2, A.5.15, CC6.1) count in a
#: document that names one; bare forms (5.15, A1.2) need the name in their own sentence
NAMED = "References: NIST SP 800-53 rev. 5, ISO/IEC 27001:2022, SOC 2, CIS Controls v8."

# each stands on the page after NAMED
POSITIVE = [
    # NIST SP 800-53
    (NIST, "Account management is implemented per AC-2.", ["AC-2"]),
    (NIST, "AC-2(1) automated system account management", ["AC-2(1)"]),
    (NIST, "AC-2 (1) with a space", ["AC-2(1)"]),
    (NIST, "zero-padded AC-02 and AC-02(04)", ["AC-2", "AC-2(4)"]),
    (NIST, "boundary protection (SC-7(3)), SI-4; PM-32 and SR-12", ["PM-32", "SC-7(3)", "SI-4", "SR-12"]),
    (NIST, "an en dash: AC\u20132, a hyphen: IA\u20102", ["AC-2", "IA-2"]),
    (NIST, "[AU-6(12)] and CA-9/CM-14", ["AU-6(12)", "CA-9", "CM-14"]),
    (NIST, "line ends with SC-51", ["SC-51"]),
    (NIST, "items of a control: AC-2c, SC-18c", ["AC-2", "SC-18"]),
    # ISO/IEC 27001 Annex A
    (ISO, "2013 control A.9.2.1 (user registration)", ["A.9.2.1"]),
    (ISO, "A.18.2.3 and A.12.4.1.", ["A.12.4.1", "A.18.2.3"]),
    (ISO, "2022 control A.5.15, no ISO mention needed on this page", ["A.5.15"]),
    (ISO, "A.8.34 is the last one", ["A.8.34"]),
    (ISO, "ISO/IEC 27001:2022 controls 5.15 and 8.34 apply.", ["A.5.15", "A.8.34"]),
    (ISO, "Per ISO 27001, see 5.1, 6.8 and 7.14", ["A.5.1", "A.6.8", "A.7.14"]),
    (ISO, "Annex A\ncontrol 5.37; also (8.1)", ["A.5.37", "A.8.1"]),
    (ISO, "ISO27001 statement of applicability: 5.15 access control", ["A.5.15"]),
    (ISO, "ISO/IEC 27001 controls 5.15, 5.16 and 5.18; NIST AC-2", ["A.5.15", "A.5.16", "A.5.18"]),
    (ISO, "ISO 27001, e.g. 5.15: an abbreviation ends no sentence", ["A.5.15"]),
    (ISO, "ISO 27001 (e.g. 5.15) and (cf. 5.16)", ["A.5.15", "A.5.16"]),
    (ISO, "Annex A.5.15 and clause A.8.2: the A. form is Annex A's", ["A.5.15", "A.8.2"]),
    (ISO, "Annex A controls 5.15 and 8.2: the phrase is ISO 27001's own", ["A.5.15", "A.8.2"]),
    # SOC 2
    (SOC2, "Logical access is covered by CC6.1.", ["CC6.1"]),
    (SOC2, "criteria CC1.1 through CC9.2", ["CC1.1", "CC9.2"]),
    (SOC2, "SOC 2 report: A1.2, C1.1, PI1.5 and P8.1", ["A1.2", "C1.1", "P8.1", "PI1.5"]),
    (SOC2, "Trust Services Criteria P6.7 and P3.2", ["P3.2", "P6.7"]),
    (SOC2, "CC6.1 and A1.2: a CC criterion opens the gate too", ["A1.2", "CC6.1"]),
    # CIS Controls
    (CIS, "CIS 4.1 secure configuration process", ["CIS 4.1"]),
    (CIS, "CIS Control 4 and CIS Safeguard 4.1", ["CIS 4", "CIS 4.1"]),
    (CIS, "CIS Controls 16.14 and CIS Critical Security Control 18", ["CIS 16.14", "CIS 18"]),
    (CIS, "CIS CSC 3, CIS control #7", ["CIS 3", "CIS 7"]),
]

# each negative stands after NAMED and, on its own page, after words that open its framework's
# gate for bare forms (checked by test_negatives_stand_behind_an_open_gate)
OPEN = {NIST: "", ISO: "Under ISO/IEC 27001 Annex A: ", SOC2: "SOC 2 criteria: ", CIS: ""}
NEGATIVE = [
    (NIST, "HVAC-2000 unit"),
    (NIST, "the HVAC-2 unit"),
    (NIST, "AC-2000 and AC-200 and AC-123"),
    (NIST, "lowercase ac-2 is not an ID"),
    (NIST, "XY-2, AB-1, NA-3: not families"),
    (NIST, "CA-90, AC-26, SC-52, AC-0: no such controls"),
    (NIST, "dated 2022-05-15"),
    (NIST, "part number X-AC-2 and AC-2-1, AC-2.1"),
    (NIST, "ACAC-2 and AC_2 and AC-2x"),
    (ISO, "version 5.15.2 was released"),
    (ISO, "kernel v5.15 and release 6.1"),
    (ISO, "on 2022-05-15 and 15.05.2022 and 5.5.2022"),
    (ISO, "5.38, 6.9, 7.15, 8.35, 9.1 and 4.1 are not 2022 controls"),
    (ISO, "prices: 5.15 €, €5.15, EUR 5.15, $6.5, 7.5%, 7.5 %"),
    (ISO, "at 8.30 am, 7.5 kg, 6.2 GB, 5.5x faster, 8.3 hours"),
    (ISO, "1,5.15 and -5.15 and +6.1 and 15.5 and 1.5.15"),
    (ISO, "A.19.1.1, A.9.5.1, A.9.2.7, A.5.38, A.4.1: no such controls"),
    (ISO, "appendix A.1.2.3 and A.2.1"),
    (ISO, "xA.5.15 and 1.A.5.15 and A.5.15.2"),
    (ISO, "Appendix A.6.1, section A.5.2 and table A.7.3 are parts of this document"),
    (ISO, "type set in 7.5 pt, margins of 8.2 mm, a review every 5.5 weeks"),
    (SOC2, "CC9.3, CC6.9, CC10.1 and CC0.1: no such criteria"),
    (SOC2, "ACC6.1 and CC6.1.2 and CC6.1x and cc6.1"),
    (SOC2, "P9.1 and PI2.1 and A2.1 and C3.1"),
    (CIS, "CIS 19 and CIS Control 20: v8 has 18 controls"),
    (CIS, "CIS 4.13 and CIS 1.6: no such safeguards"),
    (CIS, "CIS Benchmark 1.1.1 and CIS 1.1.1 are benchmark rules"),
    (CIS, "CIS Controls v8, CIS 2022 and CIS Control 0"),
    (CIS, "PRECIS 4.1 and cis 4.1"),
]

# no framework named anywhere: these look like IDs only in a document about audit frameworks
UNGATED_NEGATIVE = [
    (ISO, "The rate rose from 5.15 to 6.2 in 8.3 weeks."),
    (ISO, "Section 5.15 of the handbook"),
    (SOC2, "Print on A1.2 paper, then C1.1 and P1.1 of the project plan."),
    # explicit shapes that are something else outside audit documents
    (NIST, "Replaced the PE-3 valve and the SA-8 actuator; the PM-10 filter reads 7.2."),
    (NIST, "Account management is implemented per AC-2."),  # NIST is named nowhere
    (NIST, "Braga (PT-03) and Coimbra (PT-06): ISO 3166-2 region codes"),
    (ISO, "A.6.1 Choosing This License or Another License . . . 37"),  # an appendix section
    (ISO, "2022 control A.5.15"),
    (SOC2, "Logical access is covered by CC6.1."),
    (SOC2, "CC6.1 and A1.2"),
]


@pytest.mark.parametrize(("framework", "text", "expected"), POSITIVE)
def test_positive(framework: str, text: str, expected: list[str]) -> None:
    assert ids([NAMED, text], framework) == expected


@pytest.mark.parametrize(("framework", "text"), NEGATIVE)
def test_negative(framework: str, text: str) -> None:
    assert ids([NAMED, OPEN[framework] + text], framework) == []


def test_negatives_stand_behind_an_open_gate() -> None:
    assert ids([NAMED, OPEN[ISO] + "5.15"]) == ["A.5.15"]
    assert ids([NAMED, OPEN[SOC2] + "A1.2"]) == ["A1.2"]


@pytest.mark.parametrize(("framework", "text"), UNGATED_NEGATIVE)
def test_negative_without_mention(framework: str, text: str) -> None:
    assert ids(text, framework) == []


def test_cis_ids_name_their_framework() -> None:
    assert ids("Shared accounts are not allowed (CIS Safeguard 5.1).") == ["CIS 5.1"]


# the rule of issue 12: a bare number is an ISO 27001 control only where its own sentence
# names ISO 27001 right before it, and never inside another framework's ID
CONTEXT = [
    # security_policy.pdf: "CIS Safeguard 6.4" was also reported as A.6.4
    ("ISO/IEC 27001:2022 Annex A control A.5.15. Remote access uses MFA (CIS Safeguard 6.4).",
     ["A.5.15", "CIS 6.4"]),
    ("ISO/IEC 27001 controls 5.15 and 5.16 (CIS Safeguard 6.4)", ["A.5.15", "A.5.16", "CIS 6.4"]),
    ("ISO 27001 5.15; CIS 4.1 and 6.2 apply", ["A.5.15", "CIS 4.1"]),
    # the nearest reference before the number decides
    ("NIST SP 800-53 and ISO 27001: 5.15", ["A.5.15"]),
    ("ISO 27001 and NIST SP 800-53: 5.15", []),
    ("ISO 27001 controls 5.15 (AC-2) and 5.16", ["AC-2", "A.5.15"]),
    ("ISO 27001: section 5.15, page 6.2, version 7.5, requirement 8.3, 5.16 (clause 7.5)", []),
    ("PCI DSS requirement 8.3 and ISO 27001 control 8.5", ["A.8.5"]),
    ("ISO 27001 Annex A and ISO 9001 clause 7.5; GDPR Article 5.1", []),
    # a sentence ends the mention's reach; a number before the mention is not in it
    ("This policy follows ISO/IEC 27001:2022. Control 5.15 is implemented.", []),
    ("This policy follows ISO/IEC 27001:2022, whose control 5.15 is implemented.", ["A.5.15"]),
    ("Controls 5.15 and 8.34 of ISO 27001 apply.", []),
    # main-body clauses are not Annex A controls
    ("ISO/IEC 27001 clause 7.5 (documented information) and Annex A control 7.5", ["A.7.5"]),
    # a page that writes A.5.1 has no bare controls: 5.2 and 5.3 here are clauses
    ("ISO 27001 mapping: Information Security Policy | 5.2, 5.3 | A.5.1", ["A.5.1"]),
    # Annex A alone is any document's first annex (a real LaTeX template, test_text_controls_real.py)
    ("See Annex A for examples; set in 7.5 pt type, Annex A 6.2 lists the margins.", []),
]


@pytest.mark.parametrize(("text", "expected"), CONTEXT)
def test_bare_iso_numbers_need_iso_in_their_sentence(text: str, expected: list[str]) -> None:
    assert ids(text) == expected


def test_the_gate_is_local_not_document_wide() -> None:
    # before issue 12 the mention on page 1 opened the gate for every bare number of the document
    assert ids(["Scope: ISO/IEC 27001:2022", "nothing here", "Control 5.15 is implemented."]) == []
    assert ids(["SOC 2 Type II", "A1.2 availability"]) == []
    assert ids("SOC 2 Type II report: A1.2 availability") == ["A1.2"]
    assert ids("Print on A1.2 paper. The SOC 2 report covers CC6.1.") == ["CC6.1"]
    assert ids("Print on A1.2 paper. CC6.1 and A1.3 are tested.") == []  # no framework named
    assert ids(["SOC 2 Type II", "Print on A1.2 paper. CC6.1 and A1.3 are tested."]) == ["A1.3", "CC6.1"]


def test_mentions() -> None:
    assert mentioned(ISO, ["scope: iso/iec 27001:2013"]) and mentioned(ISO, ["ISO-27001"])
    assert mentioned(ISO, ["see annex a controls."])
    assert not mentioned(ISO, ["see annex a.", "iso 270011", "annex ab", "xiso 27001", "iso 27002"])
    assert mentioned(NIST, ["NIST SP 800-53"]) and mentioned(NIST, ["sp 800-171"])
    assert mentioned(NIST, ["FedRAMP moderate"]) and not mentioned(NIST, ["administration"])
    assert mentioned(SOC2, ["soc 2 type ii"]) and mentioned(SOC2, ["soc ii"])
    assert mentioned(SOC2, ["the trust services criteria"])
    assert not mentioned(SOC2, ["social 2", "soc 3 report", "asoc 2"])
    assert mentioned(CIS, ["CIS Controls v8"]) and mentioned(CIS, ["cis benchmark"])
    assert not mentioned(CIS, ["CIS", "CISO", "precis controls"])


def test_counts_pages_canonical_ids_and_order() -> None:
    pages = ["AC-2(1) and AC-2 (1) and SC-7", "CIS 4.1 and AC-02(1) and A.9.2.1", "CC6.1 AC-10 AC-2"]
    found = find_controls([flatten(p) for p in pages])
    assert [{k: v for k, v in c.items() if k != "occurrences"} for c in found] == [
        {"id": "AC-2", "framework": NIST, "count": 1, "pages": [3]},
        {"id": "AC-2(1)", "framework": NIST, "count": 3, "pages": [1, 2]},
        {"id": "AC-10", "framework": NIST, "count": 1, "pages": [3]},
        {"id": "SC-7", "framework": NIST, "count": 1, "pages": [1]},
        {"id": "A.9.2.1", "framework": ISO, "count": 1, "pages": [2]},
        {"id": "CC6.1", "framework": SOC2, "count": 1, "pages": [3]},
        {"id": "CIS 4.1", "framework": CIS, "count": 1, "pages": [2]},
    ]
    assert found[1]["occurrences"] == [
        {"page": 1, "text": "AC-2(1)", "context": "AC-2(1) and AC-2 (1) and SC-7"},
        {"page": 1, "text": "AC-2 (1)", "context": "AC-2(1) and AC-2 (1) and SC-7"},
        {"page": 2, "text": "AC-02(1)", "context": "CIS 4.1 and AC-02(1) and A.9.2.1"},
    ]  # the first three of its count


def test_occurrences_quote_the_id_as_written_and_its_framework() -> None:
    text = flatten(("Accounts are reviewed quarterly and approved by the owner of each system, under "
                    "ISO/IEC 27001:2022 Annex A controls 5.15 and 5.18 " + "and more words " * 10) * 2)
    (control, other) = find_controls([text])
    assert control["id"] == "A.5.15" and control["count"] == 2
    first = control["occurrences"][0]
    assert first == {"page": 1, "text": "5.15", "context": first["context"]}
    assert first["context"].startswith("…ISO/IEC 27001:2022 Annex A controls 5.15 and 5.18 and more")
    assert first["context"].endswith("…") and len(first["context"]) < 120
    assert other["occurrences"][0]["context"].startswith("…ISO/IEC 27001:2022 Annex A controls 5.15 and 5.18")


def test_frameworks_filter() -> None:
    text = [flatten("AC-2, A.5.15, CC6.1, CIS 4.1")]
    assert [c["framework"] for c in find_controls(text)] == list(FRAMEWORKS)
    assert [c["id"] for c in find_controls(text, [SOC2, CIS])] == ["CC6.1", "CIS 4.1"]
    assert find_controls(text, []) == []


def test_every_listed_number_is_found() -> None:
    """The tables are the whole numbering: every ID they allow is found, the next one is not."""
    iso_2013 = [f"A.{c}.{k}.{n}" for c, cats in ISO_2013.items()
                for k, count in enumerate(cats, start=1) for n in range(1, count + 1)]
    assert len(iso_2013) == 114
    assert ids([NAMED, " ".join(iso_2013)], ISO) == sorted(iso_2013, key=lambda i: tuple(map(int, i[2:].split("."))))
    cis = [f"CIS {c}.{n}" for c, count in CIS_SAFEGUARDS.items() for n in range(1, count + 1)]
    assert len(cis) == 153
    assert len(ids(" ".join(cis), CIS)) == 153
    too_far = " ".join(f"CIS {c}.{count + 1}" for c, count in CIS_SAFEGUARDS.items())
    assert ids(too_far, CIS) == []
