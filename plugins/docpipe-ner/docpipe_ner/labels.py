"""Entity labels: one label set for both backends, and the decoding of BIO tags.

``hf.ner`` writes six labels whichever model found the entity:

========  =====================================================================
label     model labels mapped to it
========  =====================================================================
PERSON    PERSON (spaCy/OntoNotes), PER (CoNLL-style token-classification models)
ORG       ORG
LOC       GPE (countries, cities, states), LOC (mountains, rivers, regions)
DATE      DATE
MONEY     MONEY
MISC      MISC, NORP, FAC, EVENT, PRODUCT, WORK_OF_ART, LAW, LANGUAGE, and any
          other label a custom model has that is not listed here
========  =====================================================================

Numeric and time-of-day types (CARDINAL, ORDINAL, QUANTITY, PERCENT, TIME) are not
named entities and are dropped. The model label is matched case-insensitively, after
its BIO prefix (``B-``, ``I-``, ``E-``, ``S-``, ``L-``, ``U-``) has been removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Label = Literal["PERSON", "ORG", "LOC", "DATE", "MONEY", "MISC"]
#: every label the block writes, in the order ``entity_counts`` lists them
LABELS: tuple[Label, ...] = ("PERSON", "ORG", "LOC", "DATE", "MONEY", "MISC")

#: model label (upper case) -> the block's label; ``None`` drops the entity
LABEL_MAP: dict[str, Label | None] = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "ORG": "ORG",
    "GPE": "LOC",
    "LOC": "LOC",
    "DATE": "DATE",
    "MONEY": "MONEY",
    "MISC": "MISC",
    "NORP": "MISC",
    "FAC": "MISC",
    "EVENT": "MISC",
    "PRODUCT": "MISC",
    "WORK_OF_ART": "MISC",
    "LAW": "MISC",
    "LANGUAGE": "MISC",
    "CARDINAL": None,
    "ORDINAL": None,
    "QUANTITY": None,
    "PERCENT": None,
    "TIME": None,
}

_PREFIXES = frozenset("BIESLU")


def normalise(label: str) -> Label | None:
    """The block's label for a model's entity type (no BIO prefix); ``None`` = not kept."""
    key = label.strip().upper()
    return LABEL_MAP[key] if key in LABEL_MAP else "MISC"


def parse_tag(tag: str) -> tuple[str, str]:
    """A token-classification tag as ``(prefix, type)``: ``"B-PER"`` -> ``("B", "PER")``,
    ``"O"`` -> ``("O", "")``, a tag without prefix (``"PER"``) -> ``("I", "PER")``, the way
    transformers' own pipeline reads it."""
    if tag.upper() == "O" or not tag:
        return "O", ""
    head, sep, rest = tag.partition("-")
    if sep and len(head) == 1 and head.upper() in _PREFIXES and rest:
        return head.upper(), rest
    return "I", tag


def decode_tags(tags: Sequence[tuple[str, str]]) -> list[tuple[int, int, str]]:
    """Entity spans ``(first, last, type)`` (inclusive indices) from per-word parsed tags.

    Lenient like most BIO decoders: an ``I-`` after ``O`` or after another type starts an
    entity; ``B-``/``S-``/``U-`` always start one; ``E-``/``L-``/``S-``/``U-`` end it.
    """
    spans: list[tuple[int, int, str]] = []
    first, kind = -1, ""
    for i, (prefix, typ) in enumerate(tags):
        if prefix == "O":
            if kind:
                spans.append((first, i - 1, kind))
            first, kind = -1, ""
            continue
        if not kind or typ != kind or prefix in ("B", "S", "U"):
            if kind:
                spans.append((first, i - 1, kind))
            first, kind = i, typ
        if prefix in ("E", "L", "S", "U"):
            spans.append((first, i, kind))
            first, kind = -1, ""
    if kind:
        spans.append((first, len(tags) - 1, kind))
    return spans
