"""Precision of control IDs on policy-like and real text: every ID reported must be one an
auditor finds in the text as that framework's ID, and the ones an auditor would find are
listed so that recall is measured too.

Sources and licences of the texts:

* ``ACCESS_STANDARD``, ``ISMS_MANUAL``, ``MAPPING_TABLE``, ``SOC2_NOTES``, ``OTHER_FRAMEWORKS``,
  ``MAINTENANCE_REPORT``: written for these tests (Apache-2.0, as docpipe) after the way
  real policies, ISMS manuals, statements of applicability and control mappings cite
  controls; no text is copied from a standard.
* ``JACOW``: sentences of the JACoW conference paper template manual (Debian package
  texlive-publishers-doc, ``/usr/share/doc/texlive-doc/latex/jacow/JACoW_LaTeX_A4.pdf``),
  LPPL 1.3c.
* ``BOOKSHELF``: table-of-contents lines of the bookshelf manual, the LPPL's own sections
  (texlive-latex-extra-doc, ``latex/bookshelf/bookshelf.pdf``), LPPL 1.3.
* ``CYBER``: sentences of the manual of the cyber LaTeX package, which annotates documents
  about NIST SP 800-53 compliance (texlive-latex-extra-doc, ``latex/cyber/cyber.pdf``),
  MIT, (c) 2015 Jared Jennings.
* ``ISO_CODES``: a line of iso-codes' changelog (``/usr/share/doc/iso-codes/
  CHANGELOG-PRE-4.0.md.gz``), LGPL-2.1-or-later.

The real excerpts were found by running the detector over every document under
``/usr/share/doc`` of this machine (3,777 PDFs read with PyMuPDF, 12,874 other text files):
the rule before issue 12 reported 102 IDs in 17 PDFs and 34 in 6 text files, of which only
2 were right (cyber.pdf's SC-18, SC-18(5)); the rule now reports those 2 and nothing else.
On the texts below it reported 36 of the 41 IDs an auditor finds, and 31 that are not there
(precision 54%); now 34 of 41 and none that is not there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from docpipe_text.controls import CIS, ISO, NIST, SOC2, find_controls
from docpipe_text.textnorm import flatten


@dataclass
class Doc:
    name: str
    pages: list[str]
    #: what the detector must report: (framework, id)
    expected: set[tuple[str, str]]
    #: what an auditor finds too but the rule does not claim (recall, measured below)
    missed: set[tuple[str, str]] = field(default_factory=set)
    #: what the rule before issue 12 reported wrongly (documentation: none of it is reported now)
    was_wrong: set[tuple[str, str]] = field(default_factory=set)


ACCESS_STANDARD = Doc("access control standard", [
    """Access Control Standard ACS-02, version 5.2 (effective 2026-03-01)
1. Purpose and scope
This standard implements the access control requirements of ISO/IEC 27001:2022 and
supports our SOC 2 Type II report. It applies to all production systems listed in
section 5.3 of the asset register.
2. Account lifecycle
Accounts are requested through the service desk and approved by the system owner
(ISO/IEC 27001:2022 Annex A controls 5.15, 5.16 and 5.18; NIST SP 800-53 AC-2; SOC 2
CC6.2). Leavers lose access within 8.5 hours of their last shift. Shared accounts are
not allowed (CIS Safeguard 5.1 and CIS Safeguard 6.1).""",
    """3. Authentication
Multi-factor authentication protects every remote and administrative login (CIS
Safeguards 6.3 and 6.5; NIST IA-2(1); ISO 27001 control 8.5). Passwords follow NIST
SP 800-63B; the minimum length is 14 characters.
4. Privileged access
Privileged rights are granted for at most 7.5 days and reviewed every quarter under
ISO 27001 8.2 (privileged access rights). Break-glass use is logged (AU-2, AU-12) and
reported to the CISO within 1.5 hours.
5. Review
The access review procedure is described in Appendix A.6.1 of this standard. Review
evidence is kept for the SOC 2 criteria CC6.1, CC6.2 and CC6.3, and for availability
criterion A1.2. Table 6.4 lists the systems in scope.""",
], expected={
    (NIST, "AC-2"), (NIST, "IA-2(1)"), (NIST, "AU-2"), (NIST, "AU-12"),
    (ISO, "A.5.15"), (ISO, "A.5.16"), (ISO, "A.5.18"), (ISO, "A.8.5"), (ISO, "A.8.2"),
    (SOC2, "CC6.1"), (SOC2, "CC6.2"), (SOC2, "CC6.3"), (SOC2, "A1.2"),
    (CIS, "CIS 5.1"), (CIS, "CIS 6.1"), (CIS, "CIS 6.3"),
}, missed={(CIS, "CIS 6.5")},  # "CIS Safeguards 6.3 and 6.5": only the first number names CIS
   # "CIS Safeguard 5.1", "section 5.3", "CIS Safeguard 6.1", "6.3 and 6.5", "Table 6.4", "7.5 days"
   was_wrong={(ISO, "A.5.1"), (ISO, "A.5.3"), (ISO, "A.6.1"), (ISO, "A.6.3"), (ISO, "A.6.5"),
              (ISO, "A.6.4"), (ISO, "A.7.5")})

ISMS_MANUAL = Doc("ISMS manual: clauses are not Annex A controls", [
    """ISMS Manual, issue 4
The information security management system (ISMS) meets the requirements of ISO/IEC
27001:2022, clauses 4 to 10. Risks are assessed as required by clause 6.1.2 and treated
as required by clause 6.1.3; the statement of applicability lists every Annex A control
with its status. Documented information is controlled as set out in ISO 27001 clause 7.5,
and the internal audit programme follows clause 9.2. Competence (clause 7.2) and awareness
(clause 7.3) are recorded by HR.
Annex A control 5.1 (policies for information security) is met by this manual; controls
5.2 and 5.3 are met by the roles matrix. Physical entry (ISO/IEC 27001 Annex A 7.2) is
enforced by badge readers.""",
], expected={(ISO, "A.5.1"), (ISO, "A.5.2"), (ISO, "A.5.3"), (ISO, "A.7.2")},
   was_wrong={(ISO, "A.7.3"), (ISO, "A.7.5")})

# a control mapping table as PyMuPDF reads it: one cell a line, row after row
MAPPING_TABLE = Doc("mapping table, one cell a line", [
    """Control mapping (ISO/IEC 27001:2022, NIST SP 800-53 rev. 5, SOC 2, CIS Controls v8)
Area
ISO/IEC 27001:2022
NIST SP 800-53
SOC 2
CIS Controls v8
Access reviews
5.18
AC-2(3)
CC6.2
6.2
Remote access MFA
8.5
IA-2(1)
CC6.1
6.4
Logging
8.15
AU-6
CC7.2
8.2""",
], expected={(NIST, "AC-2(3)"), (NIST, "IA-2(1)"), (NIST, "AU-6"),
             (SOC2, "CC6.1"), (SOC2, "CC6.2"), (SOC2, "CC7.2")},
   # a cell's column is its header, which flattened text no longer shows: the bare numbers
   # of the ISO and CIS columns are not claimed (the rule before read the CIS ones as ISO)
   missed={(ISO, "A.5.18"), (ISO, "A.8.5"), (ISO, "A.8.15"), (CIS, "CIS 6.2"), (CIS, "CIS 6.4"),
           (CIS, "CIS 8.2")},
   was_wrong={(ISO, "A.6.2"), (ISO, "A.6.4"), (ISO, "A.8.2")})

SOC2_NOTES = Doc("SOC 2 notes and a floor plan", [
    """SOC 2 readiness notes. The auditor will test CC6.1 to CC6.8 and the availability
criteria A1.1 to A1.3. Capacity planning (A1.1) is owned by the SRE team.""",
    """Facilities. Floor plans are printed on A1 paper; drawing C1.1 shows the server room
and P1.1 of the fit-out plan covers cabling.""",
], expected={(SOC2, "CC6.1"), (SOC2, "CC6.8"), (SOC2, "A1.1"), (SOC2, "A1.3")},
   was_wrong={(SOC2, "C1.1"), (SOC2, "P1.1")})

OTHER_FRAMEWORKS = Doc("other frameworks' numbers", [
    """Payment card data is in scope of PCI DSS v4.0: requirement 8.3 (strong authentication)
and requirement 8.4 (MFA) apply to the cardholder data environment; ISO 27001 control
8.5 covers the same ground. GDPR Article 5.1 and HIPAA 164.312 do not apply. The ISO 9001
quality manual, clause 7.5, governs document control. Backups follow ISO 22301 clause 8.4.""",
], expected={(ISO, "A.8.5")},
   was_wrong={(ISO, "A.8.3"), (ISO, "A.8.4"), (ISO, "A.5.1"), (ISO, "A.7.5")})

MAINTENANCE_REPORT = Doc("a maintenance report: no framework named", [
    """Maintenance report, plant room 2
Replaced the PE-3 pressure valve and the SA-8 actuator; the PM-10 dust filter reads
7.2 µg/m³. Spare parts were shipped to Coimbra (PT-06) and Braga (PT-03). See Appendix
A.6.1 for the wiring diagram and section 5.15 for torque values. Controller firmware is
at 8.2; kernel 5.15.""",
], expected=set(),
   was_wrong={(NIST, "PE-3"), (NIST, "SA-8"), (NIST, "PM-10"), (NIST, "PT-6"), (NIST, "PT-3"),
              (ISO, "A.6.1")})

JACOW = Doc("JACoW template manual (LPPL 1.3c)", [
    """Manuscripts should have:
• Either A4 (21.0 cm × 29.7 cm; 8.27 in × 11.69 in) or US
letter size (21.6 cm × 27.9 cm; 8.5 in × 11.0 in) paper.""",
    """the secondary affiliation may be indi-
cated with a superscript, as shown in the author listing of
this paper. See ANNEX A for further examples.""",
    """The Word template uses the
Liberation Mono TrueType font (size 8 pt), or Lucida Sans
Typewriter font (size 7.5 pt) in earlier Word versions where
the Liberation Mono font may not be available.""",
], expected=set(), was_wrong={(ISO, "A.8.27"), (ISO, "A.8.5"), (ISO, "A.7.5")})

BOOKSHELF = Doc("bookshelf manual: the LPPL's sections (LPPL 1.3)", [
    """A.6 Whether and How to Distribute Works under This License 37
A.6.1 Choosing This License or Another License . . . . . . 37
A.6.2 A Recommendation on Modification Without Distribution . . . 38
A.6.3 How to Use This License . . . . . . . . . . . . . . . . . 38""",
], expected=set(), was_wrong={(ISO, "A.6.1"), (ISO, "A.6.2"), (ISO, "A.6.3")})

CYBER = Doc("cyber package manual (MIT)", [
    """For example, U.S. National Institute of Standards and Technology (NIST) Special
Publication (SP) 800-53 sets out security controls for U.S. Federal agency information
systems, one of which is AC-2c, “[The organization] establishes conditions for group and
role membership.” You may wish to write a document that says, “We comply with AC-2c, and
here’s how.” This package is for you.""",
    """Example: \\documents{secctrl}{SC-18} We use only JavaScript, which is Category I mobile
code according to DoD guidelines.
\\notapplicable{secctrl}{SC-18(5)} We do not use mobile code at all.
secctrl Security Controls, laid out in NIST SP 800-53, e.g. SC-18c.""",
], expected={(NIST, "AC-2"), (NIST, "SC-18"), (NIST, "SC-18(5)")})

ISO_CODES = Doc("iso-codes changelog (LGPL-2.1+)", [
    """- Correct name of KR-{43,45,47}, KP-{PYO,NAJ}, MN-{051,059,064,064},
  FR-{35,36}, AL-DR, PT-06, BF-TUI, BR-BA, GT-SO, GW-QU, GW-TO, HT-NE, IQ-BA,""",
], expected=set(), was_wrong={(NIST, "PT-6")})

DOCS = [ACCESS_STANDARD, ISMS_MANUAL, MAPPING_TABLE, SOC2_NOTES, OTHER_FRAMEWORKS, MAINTENANCE_REPORT,
        JACOW, BOOKSHELF, CYBER, ISO_CODES]

#: how a framework is named, for the check that a reported ID's framework is named in its document
NAMES = {NIST: r"NIST|SP 800-53", ISO: r"ISO(/IEC)? ?27001|Annex A control", SOC2: r"SOC 2|[Tt]rust services criteria",
         CIS: r"CIS"}


def found(doc: Doc) -> list[dict[str, object]]:
    return find_controls([flatten(p) for p in doc.pages])


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_reports_exactly_what_an_auditor_finds(doc: Doc) -> None:
    reported = {(c["framework"], c["id"]) for c in found(doc)}
    assert reported == doc.expected  # no false positive, and the expected recall
    assert not reported & doc.missed and not doc.expected & doc.missed
    assert not reported & doc.was_wrong - doc.expected


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_occurrence_is_in_the_text_with_its_framework(doc: Doc) -> None:
    pages = [flatten(p) for p in doc.pages]
    for control in found(doc):
        framework = str(control["framework"])
        assert any(re.search(NAMES[framework], p) for p in pages), control
        for occurrence in control["occurrences"]:  # type: ignore[attr-defined]
            page, text, context = pages[occurrence["page"] - 1], occurrence["text"], occurrence["context"]
            assert text in context and context.strip("…") in page
            numbers = [int(n) for n in re.findall(r"\d+", str(control["id"]))]
            assert [int(n) for n in re.findall(r"\d+", text)] == numbers, (text, control["id"])
            if framework == ISO and not text.startswith("A."):  # a bare number: ISO 27001 just before
                assert re.search(NAMES[ISO] + "|Annex A", context.split(text)[0]), occurrence


def test_precision_and_recall_over_the_corpus() -> None:
    reported = {(d.name, fw, cid) for d in DOCS for fw, cid in ((c["framework"], c["id"]) for c in found(d))}
    true = {(d.name, fw, cid) for d in DOCS for fw, cid in d.expected | d.missed}
    before = {(d.name, fw, cid) for d in DOCS for fw, cid in d.was_wrong - d.expected}
    assert reported <= true  # precision 1.0
    assert (len(reported), len(true)) == (34, 41)  # recall 83%; the misses are listed per document
    # the rule before issue 12 found 36 of the 41 and 31 IDs that are not in the text: precision 54%
    assert len(before) == 31
