"""The webhook sink: one ``POST`` of a run's record as JSON per finished run.

``NAME=webhook:https://host/path``. Each request carries ``Content-Type: application/json``,
``Idempotency-Key: <run_id>`` (a retry repeats it: a receiver that has seen the key answers
2xx and does nothing) and, when configured, ``Authorization``. A 2xx answer is delivered; a
4xx other than 408 and 429 is an :class:`~docpipe.sinks.base.Undeliverable` error (dead at
once: the receiver refuses the record itself); any other status, a timeout or a connection
error is retried with backoff. Once the receiver cannot be reached, the rest of the call's
records are not tried (they are retried with it).

Options: ``timeout`` (seconds per request, default 10), ``headers`` (a table of extra
headers), ``authorization_env`` (the name of an environment variable holding the whole
``Authorization`` value, e.g. ``Bearer ...``: keeps the secret out of the config file) or
``authorization`` (the value itself).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from docpipe.sinks.base import Sink, SinkError, Undeliverable

#: client errors that say "later", not "never"
RETRY_STATUSES = frozenset({408, 429})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: a redirected POST would turn into a GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSink(Sink):
    """``NAME=webhook:URL``: POST each record as JSON (see the module docstring)."""

    kind = "webhook"

    def __init__(self, name: str, spec: str, options: dict[str, Any]) -> None:
        """Check the URL and options; read the ``Authorization`` variable now, so a missing
        one stops the server at start instead of failing every delivery."""
        super().__init__(name, spec, options)
        parts = urlsplit(spec)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SinkError(f"sink '{name}': webhook needs an http:// or https:// URL, not {spec!r}")
        self.url = spec
        self.timeout = float(self._option("timeout", 10.0, (int, float)))
        extra = self._option("headers", {}, dict)
        self.headers = {"Content-Type": "application/json", "User-Agent": "docpipe-sink",
                        **{str(k): str(v) for k, v in extra.items()}}
        env = self._option("authorization_env", None, str)
        auth = self._option("authorization", None, str)
        if env is not None:
            auth = os.environ.get(env)
            if not auth:
                raise SinkError(f"sink '{name}': the environment variable {env} (authorization_env) is not set")
        if auth:
            self.headers["Authorization"] = auth
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"WebhookSink({self.name!r}, {self.url!r})"

    def deliver(self, records: list[dict[str, Any]]) -> list[str | None]:
        """POST each record; stop trying once the receiver cannot be reached."""
        results: list[str | None] = []
        unreachable: str | None = None
        for record in records:
            if unreachable is not None:
                results.append(f"not tried: {unreachable}")
                continue
            error, reachable = self._post(record)
            results.append(error)
            if not reachable:
                unreachable = error
        return results

    def _post(self, record: dict[str, Any]) -> tuple[str | None, bool]:
        """One POST: (error text or None, whether the receiver answered at all)."""
        body = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={**self.headers, "Idempotency-Key": str(record["run_id"])})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", errors="replace").strip()
            text = f"HTTP {exc.code} from {self.url}" + (f": {detail}" if detail else "")
            permanent = 400 <= exc.code < 500 and exc.code not in RETRY_STATUSES
            return (Undeliverable(text) if permanent else text), True
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout
            reason = getattr(exc, "reason", exc)
            return f"cannot reach {self.url}: {reason}", False
        if 200 <= status < 300:
            return None, True
        return f"HTTP {status} from {self.url}", True
