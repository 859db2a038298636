"""Write the sample documents in samples/ (described in docs/samples.md) with PyMuPDF.

Usage::

    python scripts/make_samples.py           # (re)write what changed
    python scripts/make_samples.py --check   # exit 1 if any sample is missing or stale

Deterministic: fixed metadata dates, no random document ID, fonts subset the same
way every time, so a re-run rewrites nothing. The one exception is
``encrypted.pdf``: MuPDF draws fresh random salts and IVs for AES on every
write, so that file is compared by its decrypted content and rewritten only when
that changed.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path

import pymupdf

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "docpipe"
OWNER_PASSWORD = "docpipe-owner"
MAX_TOTAL = 300_000  # bytes, all samples together

A4 = pymupdf.paper_rect("a4")
A5 = pymupdf.paper_rect("a5")
MARGIN = 56
SCAN_DPI = 150

CSS = """
body { font-family: sans-serif; font-size: 11pt; line-height: 1.35; }
h1 { font-size: 20pt; margin-bottom: 6pt; }
h2 { font-size: 13pt; margin-top: 12pt; }
td, th { padding: 3pt 6pt; border: 0.5pt solid #888; }
th { background-color: #ddd; text-align: left; }
.right { text-align: right; }
.small { font-size: 9pt; color: #444; }
"""

DATE = "D:20240315093000+01'00'"


def metadata(title: str, author: str, subject: str, keywords: str = "") -> dict[str, str]:
    return {
        "title": title,
        "author": author,
        "subject": subject,
        "keywords": keywords,
        "creator": "docpipe scripts/make_samples.py",
        "producer": "PyMuPDF",
        "creationDate": DATE,
        "modDate": DATE,
    }


# --- contents ------------------------------------------------------------------------

INVOICE_PAGE_1 = """
<h1>INVOICE</h1>
<p><b>Northwind Office Supplies Ltd</b><br>12 Harbour Street, Bristol BS1 4RN, United Kingdom<br>
VAT number GB 123 4567 89</p>
<p><b>Bill to:</b> Contoso Legal LLP, 44 Queen Square, Bath BA1 2HQ</p>
<p><b>Invoice number:</b> INV-2024-0042<br><b>Invoice date:</b> 15 March 2024<br>
<b>Due date:</b> 14 April 2024<br><b>Purchase order:</b> PO-7781</p>
<table>
<tr><th>Item</th><th>Description</th><th>Qty</th><th>Unit price</th><th>Amount</th></tr>
<tr><td>1</td><td>A4 copier paper, 80 g/m², box of 5 reams</td><td class="right">12</td>
<td class="right">£24.50</td><td class="right">£294.00</td></tr>
<tr><td>2</td><td>Black toner cartridge TN-2420</td><td class="right">4</td>
<td class="right">£61.25</td><td class="right">£245.00</td></tr>
<tr><td>3</td><td>Lever arch files, blue, pack of 10</td><td class="right">6</td>
<td class="right">£18.90</td><td class="right">£113.40</td></tr>
<tr><td>4</td><td>Desk delivery and installation</td><td class="right">1</td>
<td class="right">£45.00</td><td class="right">£45.00</td></tr>
</table>
<p class="small">Continued on page 2.</p>
"""

INVOICE_PAGE_2 = """
<h2>Invoice INV-2024-0042, page 2</h2>
<table>
<tr><td>Subtotal</td><td class="right">£697.40</td></tr>
<tr><td>VAT 20%</td><td class="right">£139.48</td></tr>
<tr><td><b>Total due</b></td><td class="right"><b>£836.88</b></td></tr>
</table>
<h2>Payment terms</h2>
<p>Payment is due within 30 days of the invoice date. Please pay by bank transfer to
Northwind Office Supplies Ltd, sort code 20-45-77, account number 83920145, quoting the
invoice number INV-2024-0042 as the payment reference.</p>
<p>Late payments may incur interest at 8% above the Bank of England base rate under the
Late Payment of Commercial Debts (Interest) Act 1998.</p>
<p>Thank you for your business.</p>
"""

REPORT_DE = """
<h1>Quartalsbericht Q1 2024</h1>
<p><b>Müller &amp; Söhne GmbH</b>, Königstraße 18, 70173 Stuttgart</p>
<h2>Übersicht</h2>
<p>Im ersten Quartal 2024 stieg der Umsatz gegenüber dem Vorjahreszeitraum um 7,4 % auf
12,8 Mio. €. Das größte Wachstum verzeichnete das Geschäftsfeld Präzisionswerkzeuge,
während die Nachfrage nach Messgeräten leicht zurückging.</p>
<h2>Ergebnis</h2>
<p>Das Betriebsergebnis (EBIT) betrug 1,1 Mio. €. Höhere Energiekosten wurden durch
Effizienzmaßnahmen in der Fertigung in Göppingen weitgehend ausgeglichen.</p>
<h2>Ausblick</h2>
<p>Für das Gesamtjahr erwarten wir ein Umsatzwachstum zwischen 5 % und 8 %. Die
Geschäftsführung bedankt sich bei allen Mitarbeiterinnen und Mitarbeitern für ihren
Einsatz.</p>
"""

LETTRE_FR = """
<p>Librairie Lefèvre &amp; Fils<br>27, rue de la Poterie<br>69002 Lyon</p>
<p class="right">Lyon, le 15 mars 2024</p>
<p><b>Objet : confirmation de votre commande n° 2024-118</b></p>
<p>Madame, Monsieur,</p>
<p>Nous avons bien reçu votre commande du 12 mars et vous en remercions. Les ouvrages
demandés, dont l’édition complète des œuvres de Molière, seront expédiés dès leur
réception à l’entrepôt, au plus tard le 22 mars.</p>
<p>Le montant total s’élève à 184,60 € TTC, frais de port compris. Vous trouverez la
facture correspondante jointe à ce courrier.</p>
<p>Nous vous prions d’agréer, Madame, Monsieur, l’expression de nos salutations
distinguées.</p>
<p>Élodie Lefèvre<br>Service clientèle</p>
"""

DELIVERY_NOTE = """
<h1>DELIVERY NOTE</h1>
<p><b>Northwind Office Supplies Ltd</b><br>12 Harbour Street, Bristol BS1 4RN</p>
<p><b>Delivery note number:</b> DN-2024-0107<br><b>Date:</b> 18 March 2024<br>
<b>Deliver to:</b> Contoso Legal LLP, 44 Queen Square, Bath BA1 2HQ</p>
<table>
<tr><th>Item</th><th>Description</th><th>Quantity</th></tr>
<tr><td>1</td><td>A4 copier paper, box of 5 reams</td><td class="right">12</td></tr>
<tr><td>2</td><td>Black toner cartridge TN-2420</td><td class="right">4</td></tr>
<tr><td>3</td><td>Lever arch files, pack of 10</td><td class="right">6</td></tr>
</table>
<p>Received in good condition by: ____________________</p>
"""

RECEIPT = """
<h1>RECEIPT</h1>
<p><b>Corner Café</b><br>3 Market Place, Oxford</p>
<p>Receipt 000731, 19 March 2024, 08:42</p>
<table>
<tr><td>Flat white</td><td class="right">£3.40</td></tr>
<tr><td>Croissant</td><td class="right">£2.60</td></tr>
<tr><td><b>Total</b></td><td class="right"><b>£6.00</b></td></tr>
</table>
<p>Paid by card. Thank you for your visit!</p>
"""

MEMO = """
<h1>Confidential memo</h1>
<p><b>To:</b> Board of directors<br><b>From:</b> Finance<br><b>Date:</b> 15 March 2024</p>
<p>The proposed acquisition of Fabrikam Components is to be discussed at the board meeting
on 2 April. Please do not forward this memo.</p>
"""

POLICY = """
<h1>Information Security Policy</h1>
<p><b>Document:</b> ISP-07, version 3.1 &nbsp; <b>Owner:</b> Chief Information Security Officer</p>
<h2>1. Access control</h2>
<p>Access to production systems follows role-based access control and the principle of least
privilege. Accounts are reviewed quarterly (NIST SP 800-53 AC-2, AC-2(3); ISO/IEC 27001:2022
Annex A control A.5.15). Multi-factor authentication is required for all remote access
(CIS Safeguard 6.4).</p>
<h2>2. Logging and monitoring</h2>
<p>Security events are written to a central audit log and retained for one year
(AU-6; SOC 2 CC7.2). Alerts go to the incident response team within 15 minutes.</p>
<h2>3. Encryption</h2>
<p>Data at rest is protected with encryption (AES-256); keys are rotated yearly under the key
management procedure (SC-12, SC-28; SOC 2 CC6.1).</p>
"""


# --- building ------------------------------------------------------------------------


def html_pdf(pages: list[str], meta: dict[str, str], paper: pymupdf.Rect = A4) -> pymupdf.Document:
    """A PDF with one page per HTML snippet (each must fit on its page)."""
    buf = io.BytesIO()
    writer = pymupdf.DocumentWriter(buf)
    box = paper + (MARGIN, MARGIN, -MARGIN, -MARGIN)
    for number, html in enumerate(pages, 1):
        story = pymupdf.Story(html=html, user_css=CSS)
        device = writer.begin_page(paper)
        more, _ = story.place(box)
        story.draw(device)
        writer.end_page()
        if more:
            raise SystemExit(f"make_samples: page {number} of {meta['title']!r} does not fit")
    writer.close()
    doc = pymupdf.open("pdf", buf.getvalue())
    doc.set_metadata(meta)
    doc.subset_fonts()
    return doc


def pdf_bytes(doc: pymupdf.Document, **kwargs: object) -> bytes:
    return doc.tobytes(garbage=4, deflate=True, no_new_id=True, **kwargs)


def scan(html: str, paper: pymupdf.Rect) -> pymupdf.Pixmap:
    """A greyscale 'scan' of a page of text: pixels only, no text layer."""
    page = html_pdf([html], metadata("scan", "", ""), paper)[0]
    return page.get_pixmap(dpi=SCAN_DPI, colorspace=pymupdf.csGRAY)


def image_pdf(pix: pymupdf.Pixmap, meta: dict[str, str]) -> bytes:
    """A PDF whose one page is ``pix`` as an image, the way a scanner writes one."""
    doc = pymupdf.open()
    page = doc.new_page(width=pix.width * 72 / SCAN_DPI, height=pix.height * 72 / SCAN_DPI)
    page.insert_image(page.rect, stream=pix.tobytes("png"))
    doc.set_metadata(meta)
    return pdf_bytes(doc)


def build() -> dict[str, bytes]:
    """Every sample file, by name."""
    invoice = pdf_bytes(
        html_pdf(
            [INVOICE_PAGE_1, INVOICE_PAGE_2],
            metadata(
                "Invoice INV-2024-0042",
                "Northwind Office Supplies Ltd",
                "Invoice",
                "invoice, office supplies",
            ),
        )
    )
    memo = html_pdf([MEMO], metadata("Confidential memo", "Finance", "Acquisition"))
    return {
        "invoice.pdf": invoice,
        "report_de.pdf": pdf_bytes(
            html_pdf(
                [REPORT_DE],
                metadata(
                    "Quartalsbericht Q1 2024", "Müller & Söhne GmbH", "Quartalsbericht", "Umsatz"
                ),
            )
        ),
        "lettre_fr.pdf": pdf_bytes(
            html_pdf(
                [LETTRE_FR],
                metadata("Confirmation de commande", "Librairie Lefèvre & Fils", "Commande"),
            )
        ),
        "scanned.pdf": image_pdf(
            scan(DELIVERY_NOTE, A4),
            metadata("Delivery note DN-2024-0107 (scanned)", "Scanner", "Delivery note"),
        ),
        "scan.png": scan(RECEIPT, A5).tobytes("png"),
        "security_policy.pdf": pdf_bytes(
            html_pdf([POLICY], metadata("Information Security Policy", "CISO office", "Policy"))
        ),
        "encrypted.pdf": pdf_bytes(
            memo,
            encryption=pymupdf.PDF_ENCRYPT_AES_256,
            user_pw=PASSWORD,
            owner_pw=OWNER_PASSWORD,
        ),
        # the first 40% of a valid PDF, as an interrupted download leaves it
        "corrupt.pdf": invoice[: len(invoice) * 4 // 10],
    }


def decrypted_content(data: bytes) -> object:
    """What an encrypted sample holds, comparable across writes (its bytes are not)."""
    with pymupdf.open("pdf", data) as doc:
        if not doc.needs_pass or not doc.authenticate(PASSWORD):
            return None
        return (
            doc.metadata,
            [page.get_text() for page in doc],
            [page.get_images() for page in doc],
        )


SAME: dict[str, Callable[[bytes, bytes], bool]] = {
    "encrypted.pdf": lambda old, new: decrypted_content(old) == decrypted_content(new),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "samples", help="folder to write")
    parser.add_argument("--check", action="store_true", help="change nothing, exit 1 if stale")
    args = parser.parse_args(argv)

    pymupdf.TOOLS.mupdf_display_warnings(False)
    files = build()
    total = sum(len(data) for data in files.values())
    if total > MAX_TOTAL:
        print(f"make_samples: samples total {total} bytes, over {MAX_TOTAL}", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, data in files.items():
        path = args.out / name
        old = path.read_bytes() if path.exists() else None
        same = SAME.get(name, bytes.__eq__)
        if old is not None and same(old, data):
            status = "unchanged"
        else:
            stale.append(name)
            status = "stale" if args.check else "written"
            if not args.check:
                path.write_bytes(data)
        print(f"{name:16} {len(data):>7} bytes  {status}")
    print(f"{'total':16} {total:>7} bytes")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
