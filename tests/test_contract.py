"""The block contract, applied to fixture and built-in blocks with docpipe.testing."""

from __future__ import annotations

from pathlib import Path

from docpipe_pdf import PdfText, TextStats  # type: ignore[import-not-found]
from support import ROOT, TOYS
from toys import Digest, Upper  # type: ignore[import-not-found]

from docpipe.flow import Flow
from docpipe.testing import BlockContract, run_flow

SAMPLES = ROOT / "samples"


class TestUpper(BlockContract):
    block = Upper
    inputs = [{"text": "a"}, {"text": ""}]


class TestDigest(BlockContract):
    block = Digest
    params = {"rounds": 3}
    inputs = [{"text": "a"}, {"text": "b"}]


class TestPdfText(BlockContract):
    block = PdfText
    inputs = [{"path": str(SAMPLES / "invoice.pdf")}, {"path": str(SAMPLES / "corrupt.pdf")}]


class TestTextStats(BlockContract):
    block = TextStats
    inputs = [{"text": "two words"}]


def test_run_flow_runs_real_files(tmp_path: Path):
    flow = Flow("t", outputs=["page_count", "word_count"]).step("text", "pdf.text") \
        .step("stats", "text.stats")
    result = run_flow(flow, [SAMPLES / "invoice.pdf", SAMPLES / "corrupt.pdf"], plugins=[TOYS])
    ok, bad = result.results
    assert ok.outputs["page_count"] == 2 and ok.outputs["word_count"] > 50
    assert bad.status == "failed" and bad.error_kind == "corrupt"
