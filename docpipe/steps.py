"""Step paths: the one place that builds and parses the names task records carry.

A task record's ``step`` names where in the flow it ran:

* ``ocr`` — a top-level step;
* ``pages[3]`` — item 3 of the map step ``pages``;
* ``per_page/ocr`` — step ``ocr`` of the subflow (fork or switch case) ``per_page``;
* ``per_page/items[0]`` — an item of a map inside a subflow.

Step ids themselves may not hold ``/``, ``[`` or ``]`` (the flow schema says so), so a path
parses back without ambiguity.
"""

from __future__ import annotations

from typing import NamedTuple

SEP = "/"


class StepPath(NamedTuple):
    """A parsed step path: the subflow steps above, the step's id, and the index of a map item."""

    parents: tuple[str, ...]
    step: str
    item: int | None = None

    @property
    def top(self) -> str:
        """The top-level step this path belongs to."""
        return self.parents[0] if self.parents else self.step

    @property
    def is_item(self) -> bool:
        return self.item is not None

    @property
    def nested(self) -> bool:
        return bool(self.parents)

    @property
    def parent(self) -> str | None:
        """The path of the step this one belongs to: a map item's map step (``ocr`` for
        ``ocr[3]``), a nested step's subflow step (``sub`` for ``sub/x``); ``None`` at the top."""
        if self.item is not None:
            return step_path(child_prefix_of(self.parents), self.step)
        if self.parents:
            return step_path(child_prefix_of(self.parents[:-1]), self.parents[-1])
        return None

    def __str__(self) -> str:
        return step_path(child_prefix_of(self.parents), self.step, self.item)


def child_prefix(prefix: str, step_id: str) -> str:
    """The prefix of the steps of subflow ``step_id`` (itself under ``prefix``)."""
    return f"{prefix}{step_id}{SEP}"


def child_prefix_of(parents: tuple[str, ...] | list[str]) -> str:
    return "".join(f"{p}{SEP}" for p in parents)


def step_path(prefix: str, step_id: str, index: int | None = None) -> str:
    """The recorded name of step ``step_id`` under ``prefix`` (``""`` at the top), with the
    map item ``index`` when given (a negative index means the whole step)."""
    if index is None or index < 0:
        return f"{prefix}{step_id}"
    return f"{prefix}{step_id}[{index}]"


def parse(path: str) -> StepPath:
    """Split a recorded step name back into its parts; the inverse of :func:`step_path`."""
    *parents, last = path.split(SEP)
    index: int | None = None
    if last.endswith("]"):
        open_at = last.rfind("[")
        digits = last[open_at + 1:-1]
        if open_at > 0 and digits.isdigit():
            last, index = last[:open_at], int(digits)
    return StepPath(tuple(parents), last, index)
