"""The dispatcher: drains the store's outbox (``store.outbox``) into the sinks.

One daemon thread per sink, so a webhook that is down never holds up a file. Each round a
thread leases up to ``batch`` due pending deliveries of its sink
(``store.outbox.claim``), reads their runs' records from the store in one query
(:func:`~docpipe.sinks.records.run_records`), hands them to ``sink.deliver`` in one call and
records each outcome: ``delivered``, or ``failed`` with the next attempt after
``backoff[attempts]`` seconds (the last step repeats), or dead once ``max_attempts`` were
made or the sink called the error :class:`~docpipe.sinks.base.Undeliverable`. Each failure
is logged once per attempt, naming the sink and the run.

Everything the dispatcher knows is in the store: a sink that was down gets every result
once it is back, after a restart of the server too, and several servers' dispatchers share
one outbox (a lease keeps a delivery to one of them; an expired one is given out again, so a
sink may see a run twice and dedupes on its run id).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from docpipe.sinks.base import Sink, SinkError, Undeliverable
from docpipe.sinks.records import run_records
from docpipe.status import Status

log = logging.getLogger(__name__)

#: the longest error text kept in ``deliveries.last_error``
MAX_ERROR = 2000


class Dispatcher:
    """Delivers finished runs to ``sinks`` (by name, as :func:`docpipe.sinks.make_sinks` makes
    them) from ``store``'s outbox, as ``owner`` (unique per server: it names the leases).

    ``lease_s``: how long a claimed delivery stays this dispatcher's (longer than a
    ``deliver`` call of ``batch`` records can take); ``backoff``: seconds before the 1st,
    2nd, ... retry (the last repeats); ``max_attempts``: attempts before a delivery is dead;
    ``poll_s``: how often an idle thread looks for due deliveries without being woken.
    The dispatcher owns the sinks: :meth:`stop` closes them.
    """

    def __init__(self, store: Any, sinks: Mapping[str, Sink], *, owner: str, lease_s: float = 60.0,
                 batch: int = 50, backoff: Sequence[float] = (1, 2, 5, 15, 60, 300), max_attempts: int = 20,
                 poll_s: float = 1.0) -> None:
        if batch < 1 or lease_s <= 0 or max_attempts < 1 or poll_s <= 0:
            raise SinkError(f"dispatcher: batch and max_attempts must be >= 1 and lease_s, poll_s > 0 (got batch="
                            f"{batch}, max_attempts={max_attempts}, lease_s={lease_s}, poll_s={poll_s})")
        if not backoff or any(b < 0 for b in backoff):
            raise SinkError(f"dispatcher: backoff must be one or more delays >= 0 seconds, not {list(backoff)}")
        self.store, self.sinks, self.owner = store, dict(sinks), owner
        self.lease_s, self.batch, self.max_attempts, self.poll_s = lease_s, batch, max_attempts, poll_s
        self.backoff = tuple(float(b) for b in backoff)
        #: per sink: deliveries recorded delivered, failed attempts, deliveries given up
        self.counts: dict[str, dict[str, int]] = {n: {"delivered": 0, "failed": 0, "dead": 0} for n in self.sinks}
        self._stop = threading.Event()
        self._wake = {name: threading.Event() for name in self.sinks}
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"Dispatcher({self.owner!r}, sinks={sorted(self.sinks)})"

    # --- lifetime ------------------------------------------------------------------------

    def start(self) -> None:
        """Start one daemon thread per sink."""
        if self._threads:
            raise RuntimeError(f"{self!r} is already started")
        for name in self.sinks:
            thread = threading.Thread(target=self._loop, args=(name,), name=f"docpipe-sink-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads (a delivery in flight finishes first, up to ``timeout``), then close
        the sinks. What was not delivered stays pending in the store for the next start."""
        self._stop.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout)
        for name, sink in self.sinks.items():
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - one sink's close must not keep the others open
                log.exception("sink %s: close failed", name)

    def wake(self, sink: str | None = None) -> None:
        """Look for deliveries now (of ``sink``, else of every sink): a finished run was enqueued."""
        for name, event in self._wake.items():
            if sink is None or name == sink:
                event.set()

    def drain(self, timeout: float) -> bool:
        """Wait until this dispatcher's sinks have no pending delivery (each was delivered or
        given up), for at most ``timeout`` seconds; whether they got there. Delivers in the
        caller's thread when the dispatcher is not started (tests, one-off runs)."""
        deadline = time.monotonic() + timeout
        self.wake()
        while True:
            if not self._threads:
                self.run_once()
            if not self.pending():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def pending(self) -> int:
        """Pending deliveries (due or not) to this dispatcher's sinks, by every server."""
        backlog = self.store.outbox.backlog()
        return sum(backlog.get(name, 0) for name in self.sinks)

    # --- rounds --------------------------------------------------------------------------

    def run_once(self) -> int:
        """One round for every sink in the caller's thread; how many deliveries it handled."""
        return sum(self._round(name) for name in self.sinks)

    def _loop(self, name: str) -> None:
        wake = self._wake[name]
        while not self._stop.is_set():
            wake.clear()
            try:
                handled = self._round(name)
            except Exception:  # noqa: BLE001 - the store was unreachable: try again later
                log.exception("sink %s: outbox round failed", name)
                handled = 0
            if handled < self.batch:
                wake.wait(self.poll_s)

    def _round(self, name: str) -> int:
        """Claim, read, deliver and record one batch of ``name``'s deliveries."""
        rows = self.store.outbox.claim(self.owner, limit=self.batch, lease_s=self.lease_s, sinks=[name])
        if not rows:
            return 0
        records = run_records(self.store, [row["run_id"] for row in rows])
        errors: dict[int, str] = {}
        ready = []
        for row in rows:
            record = records.get(row["run_id"])
            if record is None or record["status"] == Status.RUNNING:
                # its job's finish is recorded, its run's end may still be in another server's writer
                errors[row["id"]] = f"run {row['run_id']} is not recorded finished in the store yet"
            else:
                ready.append((row, record))
        if ready:
            results = self._deliver(name, [record for _, record in ready])
            for (row, _), error in zip(ready, results, strict=True):
                if error is not None:
                    errors[row["id"]] = error
        done = [row["id"] for row in rows if row["id"] not in errors]
        if done:
            self.store.outbox.delivered(done, self.owner)
            self.counts[name]["delivered"] += len(done)
        for row in rows:
            if row["id"] in errors:
                self._failed(name, row, errors[row["id"]])
        return len(rows)

    def _deliver(self, name: str, records: list[dict[str, Any]]) -> list[str | None]:
        """``sink.deliver(records)``; a raise or a wrong answer fails every record."""
        try:
            results = self.sinks[name].deliver(records)
            if not isinstance(results, list) or len(results) != len(records):
                raise SinkError(f"deliver() returned {results!r} for {len(records)} records; it must return one "
                                "None or error text per record")
        except Exception as exc:  # noqa: BLE001 - a sink's failure is the deliveries' error, retried
            return [f"{type(exc).__name__}: {exc}"] * len(records)
        return [None if r is None else r if isinstance(r, str) else str(r) for r in results]

    def _failed(self, name: str, row: Mapping[str, Any], error: str) -> None:
        """Record a failed attempt of delivery ``row``: retried after its backoff, or dead."""
        attempt = int(row["attempts"]) + 1
        dead = isinstance(error, Undeliverable) or attempt >= self.max_attempts
        delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
        self.store.outbox.failed(row["id"], self.owner, error[:MAX_ERROR], None if dead else time.time() + delay)
        self.counts[name]["dead" if dead else "failed"] += 1
        then = "given up" if dead else f"next attempt in {delay:g} s"
        log.warning("sink %s: run %s not delivered (attempt %d of %d, %s): %s", name, row["run_id"], attempt,
                    self.max_attempts, then, error)
