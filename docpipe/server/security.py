"""The server's security model, in one place.

* Every request that changes something (start, retry, resume, upload) needs the
  token: ``Authorization: Bearer <token>``, the ``docpipe_token`` cookie (set by
  the login form: ``HttpOnly``, ``SameSite=Strict``, holding a keyed hash of the
  token, not the token), or a ``token`` field in the submitted form. No token:
  401; a wrong one: 403. Tokens are compared in constant time.
* A request that changes something and comes from another origin's page
  (``Sec-Fetch-Site: cross-site/same-site``, or an ``Origin`` naming another
  host or port) is refused (403), whatever it carries: a page on another port
  of localhost is the same *site*, so SameSite alone would let it post.
* Reads need the token too unless the server is bound to a loopback address.
* On loopback, requests must name a loopback host (``Host: 127.0.0.1:8765``,
  ``localhost``), so a web page cannot reach the server through DNS rebinding.
* A request body larger than the upload limit is refused with 413 before it is
  read in full.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

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


def cookie_value(token: str) -> str:
    """What the login cookie holds: a keyed hash of the token, never the token itself (other
    servers on localhost receive this host's cookies: cookies are not scoped by port)."""
    return hmac.new(token.encode(), b"docpipe-serve-cookie", hashlib.sha256).hexdigest()


def _verdict(request: Request, token: str, form_token: str | None) -> bool | None:
    """``None`` when the request carries no credential, else whether it is right: the bearer
    header, then the form field (both the token), then the cookie (:func:`cookie_value`)."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return secrets.compare_digest(value.strip().encode(), token.encode())
    if form_token:
        return secrets.compare_digest(form_token.encode(), token.encode())
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return secrets.compare_digest(cookie.encode(), cookie_value(token).encode())
    return None


def token_ok(request: Request, token: str, form_token: str | None = None) -> bool:
    return _verdict(request, token, form_token) is True


def check_token(request: Request, token: str, form_token: str | None = None) -> None:
    """Raise 401 (no token given) or 403 (a wrong one) unless the request carries ``token``."""
    verdict = _verdict(request, token, form_token)
    if verdict is None:
        raise HTTPException(401, "this needs the server's token (Authorization: Bearer …)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not verdict:
        raise HTTPException(403, "wrong token")


def cross_site(method: str, headers: dict[str, str]) -> bool:
    """Whether a request that changes something comes from another origin's page: its
    ``Sec-Fetch-Site`` says so, or its ``Origin`` names another host (or port) than the
    ``Host`` it was sent to. SameSite cookies alone do not stop that: a page on another port of
    localhost is the same *site*."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


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
        if cross_site(scope.get("method", "GET"), headers):
            return await _reply(send, 403, "cross-origin request refused: changes must come from this "
                                           "server's own pages or an API client")
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
