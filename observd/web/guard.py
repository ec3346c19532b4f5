"""The page's guard, in front of every route: read-only, and only for those who hold the token.

- A method other than GET or HEAD gets 405: the page never changes anything.
- With a token, a request must carry it: `Authorization: Bearer TOKEN`, `?token=TOKEN` (kept
  in a cookie then, so the page's links and its polling carry it), or that cookie; else 401.
  Tokens are compared in constant time (`hmac.compare_digest`).
- Without a token the server listens on loopback only (`server.check_exposure`), and a request
  that names another host is refused (403): a web site cannot reach the page through DNS
  rebinding, i.e. by pointing a name of its own at 127.0.0.1.
- Every response says not to sniff its type, not to be framed, and not to pass its address on
  (the token may be in it); scripts, styles and images come from the page itself only.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import quote, unquote

from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observd.web.server import is_loopback

__all__ = ["COOKIE", "Guard"]

COOKIE = "observd_token"
READ_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


class Guard:
    """ASGI middleware; `token=None` serves everyone who reaches the loopback address."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        query = QueryParams(scope.get("query_string", b""))
        refusal = self._refusal(scope["method"], headers, query)
        if refusal is not None:
            await _secured(refusal)(scope, receive, send)
            return
        remember = query.get("token") if self.token is not None and self._matches(query.get("token")) else None
        await self.app(scope, receive, _with_headers(send, remember=remember))

    def _refusal(self, method: str, headers: Headers, query: QueryParams) -> PlainTextResponse | None:
        if method not in READ_METHODS:
            return PlainTextResponse("observd's page is read-only: GET and HEAD only\n", 405, {"Allow": "GET, HEAD"})
        if self.token is None:
            host = headers.get("host", "")
            if host and not is_loopback(_hostname(host)):
                return PlainTextResponse(f"this page answers to localhost only, not to {host}\n", 403)
            return None
        bearer = headers.get("authorization", "")
        offered = (
            bearer[7:].strip() if bearer[:7].lower() == "bearer " else None,
            query.get("token"),
            _cookie(headers, COOKIE),
        )
        if any(self._matches(candidate) for candidate in offered):
            return None
        return PlainTextResponse(
            "a token is needed: open the page once with ?token=TOKEN, or send Authorization: Bearer TOKEN\n",
            401,
            {"WWW-Authenticate": 'Bearer realm="observd"'},
        )

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token)


def _with_headers(send: Send, *, remember: str | None) -> Send:
    """`send`, adding the security headers (and the token's cookie when it came in the query)."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                headers.setdefault(name, value)
            if remember:
                headers.append(
                    "Set-Cookie",
                    f"{COOKIE}={quote(remember, safe='')}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000",
                )
        await send(message)

    return wrapped


def _secured(response: PlainTextResponse) -> ASGIApp:
    response.headers.update(SECURITY_HEADERS)
    return response


def _hostname(host: str) -> str:
    """'localhost:8750' -> 'localhost'; '[::1]:8750' -> '::1'."""
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _cookie(headers: Headers, name: str) -> str | None:
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("cookie", ""))
    except CookieError:  # a malformed Cookie header carries no token
        return None
    return unquote(cookies[name].value) if name in cookies else None
