"""The server's security model, in one place.

* Every request that changes something (start, retry, resume, upload) needs the
  token: ``Authorization: Bearer <token>``, the ``docpipe_token`` cookie (set by
  the login form, ``HttpOnly`` and ``SameSite=Strict``, so another site cannot
  post with it), or a ``token`` field in the submitted form. No token: 401; a
  wrong one: 403. Tokens are compared in constant time.
* Reads need the token too unless the server is bound to a loopback address.
* On loopback, requests must name a loopback host (``Host: 127.0.0.1:8765``,
  ``localhost``), so a web page cannot reach the server through DNS rebinding.
* A request body larger than the upload limit is refused with 413 before it is
  read in full.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from typing import Any

from fastapi import HTTPException, Request

COOKIE = "docpipe_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def given_token(request: Request, form_token: str | None = None) -> str | None:
    """The token a request carries: bearer header, then form field, then cookie."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if form_token:
        return form_token
    return request.cookies.get(COOKIE) or None


def token_ok(request: Request, token: str, form_token: str | None = None) -> bool:
    given = given_token(request, form_token)
    return given is not None and secrets.compare_digest(given.encode(), token.encode())


def check_token(request: Request, token: str, form_token: str | None = None) -> None:
    """Raise 401 (no token given) or 403 (a wrong one) unless the request carries ``token``."""
    given = given_token(request, form_token)
    if given is None:
        raise HTTPException(401, "this needs the server's token (Authorization: Bearer …)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(403, "wrong token")


class Guard:
    """The loopback Host check and the request-body limit, run around the whole application
    (outside Starlette's error handling, so an over-long body still gets its 413)."""

    def __init__(self, *, max_body: int, loopback: bool) -> None:
        self.max_body = max_body
        self.loopback = loopback

    async def __call__(self, app: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.loopback:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.lower() not in LOOPBACK_NAMES:
                return await _reply(send, 400, "this server only answers requests to localhost")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await _reply(send, 413, f"request body over the limit of {self.max_body} bytes")
        seen = 0
        started = False

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _reply(send, 413, f"request body over the limit of {self.max_body} bytes")


class _TooLarge(Exception):
    pass


async def _reply(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
