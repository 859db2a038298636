"""What the server logs, to stderr through the stdlib ``logging`` module, on the ``docpipe``
logger (``docpipe serve`` configures it: :func:`configure`):

* ``docpipe.server.access``: one line per request — method, path with its query (values
  of secret-looking names such as ``token`` masked, and the server's token masked wherever
  it appears), status, milliseconds. Headers (``Authorization``, cookies) and bodies (form
  fields) are never logged.
* ``docpipe.server.jobs``: one line when a job is queued, starts and ends (job id, kind,
  flow, batch, documents, counts, seconds).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

access = logging.getLogger("docpipe.server.access")

#: query names whose values are never logged
SECRET_NAMES = re.compile(r"token|secret|pass|key|auth|cookie|session|credential|sig", re.IGNORECASE)
MASK = "***"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def shown_target(path: str, query: bytes | str, token: str = "") -> str:
    """``path?query`` as logged: secret-looking query values and the ``token`` masked."""
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    shown = quote(path, safe="/:@!$&'()*+,;=-._~")
    if text:
        pairs = parse_qsl(text, keep_blank_values=True)
        shown += "?" + urlencode([(k, MASK if SECRET_NAMES.search(k) else v) for k, v in pairs], safe="/*:,?")
    if token:
        for form in {token, quote(token, safe=""), quote(token)}:
            shown = shown.replace(form, MASK)
    return shown


class AccessLog:
    """ASGI middleware, outermost: one ``docpipe.server.access`` line per HTTP request, also
    for the ones refused before they reach the application (Host check, body limit)."""

    def __init__(self, token: str = "") -> None:
        self.token = token

    async def __call__(self, app: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # the application raised before it answered

        async def seen(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, seen)
        finally:
            if access.isEnabledFor(logging.INFO):
                access.info("%s %s %d %.1f ms", scope.get("method", "?"),
                            shown_target(scope.get("path", ""), scope.get("query_string", b""), self.token),
                            status, (time.perf_counter() - start) * 1000)


def configure(level: int | str = logging.INFO) -> None:
    """Send the ``docpipe`` logger's records at ``level`` and above to stderr, one line each
    (once: calling it again only changes the level)."""
    logger = logging.getLogger("docpipe")
    logger.setLevel(level if isinstance(level, int) else level.upper())
    if not any(getattr(h, "docpipe_serve", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.docpipe_serve = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
