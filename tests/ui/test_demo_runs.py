"""`docpipe serve` after the demo: the IDP flow's runs, the corrupt sample with its traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import ROOT, run_cli

from docpipe.server import create_app


@pytest.mark.slow
def test_the_demo_flows_failed_corrupt_pdf_shows_its_error_and_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    docs = [str(ROOT / "samples" / n) for n in ("corrupt.pdf", "invoice.pdf")]
    proc = run_cli("run", str(ROOT / "flows" / "idp.json"), *docs, "--db", url, "-q",
                   env={"DOCPIPE_PDF_PASSWORD": "docpipe"}, timeout=600)
    assert proc.returncode == 1, proc.stderr  # the corrupt sample fails, by design
    app = create_app(url, tmp_path / "data", "t0ken-for-the-demo-test")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        runs = {Path(r["document"]).name: r for r in c.get("/api/runs").json()["runs"]}
        assert (runs["corrupt.pdf"]["status"], runs["invoice.pdf"]["status"]) == ("failed", "succeeded")
        failed = c.get(f"/api/runs/{runs['corrupt.pdf']['id']}").json()
        # qpdf cannot open it, PyMuPDF can: pdf.decrypt hands it on, pdf.text finds its pages gone
        text = next(t for t in failed["tasks"] if t["step"] == "text")
        assert text["error_kind"] == "corrupt"
        assert "in the worker:" in text["traceback"] and "text.py" in text["traceback"]
        page = c.get(f"/runs/{runs['corrupt.pdf']['id']}").text
        assert "probably truncated" in page and "in the worker:" in page and "read_document" in page
        listing = c.get("/runs", params={"flow": "idp"}).text
        assert "corrupt.pdf" in listing and "invoice.pdf" in listing
