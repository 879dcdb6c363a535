"""Who may use the web app, and what every answer carries: one ASGI middleware around the app.

In order, for every HTTP request:

1. **Host.** The ``Host`` header must name this server: an IP address, ``localhost``, this
   machine's name, or a name given in ``allowed_hosts`` (a reverse proxy's). A page of another
   site that points its own DNS name at 127.0.0.1 (DNS rebinding) sends its own name: 403.
2. **Token.** Where the app has one, every request (pages, static files, API, audio) must carry
   it: ``?token=``, ``Authorization: Bearer``, or the ``weighter_token`` cookie that the first
   request with ``?token=`` sets (HttpOnly, SameSite=Strict). Without it: 401 and no data. A
   page opened with ``?token=`` is redirected to itself without it, so the token does not stay
   in the address bar or the history.
3. **Writes** (any method but GET and HEAD): refused (403) by a read-only app; and refused
   (403) when the request names another origin (``Origin``, else ``Referer``) than its
   ``Host``, or when it is authorised by the cookie alone and names no origin: a browser always
   sends ``Origin`` with a script's POST, so a cookie-borne write without one is not from our
   pages.
4. **Headers** on every answer: a Content-Security-Policy with no inline script and
   ``frame-ancestors 'none'``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
   same-origin``, ``X-Frame-Options: DENY``.
5. **Access log**: one line per request on the ``weighter.serve.access`` logger (client,
   method, path without its query, status, milliseconds); never the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

COOKIE = "weighter_token"
ACCESS_LOG = logging.getLogger("weighter.serve.access")
READS = ("GET", "HEAD")
HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                                 b"media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                                 b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def new_token() -> str:
    """A random token for a server: 32 URL-safe characters (192 bits).

    Examples
    --------
    >>> len(new_token())
    32
    """
    return secrets.token_urlsafe(24)


def local_names() -> set[str]:
    """Host names that name this machine: ``localhost``, its host name and fully qualified name
    (lower case). IP addresses are always accepted (``host_allowed``)."""
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    return {n.lower().rstrip(".") for n in names if n}


def host_allowed(host_header: str, allowed: set[str]) -> bool:
    """Whether a ``Host`` header names this server: any IP literal (a DNS rebinding attack needs
    a name it controls), or a name in ``allowed``.

    Examples
    --------
    >>> host_allowed("127.0.0.1:8000", {"localhost"}), host_allowed("evil.example:8000", {"localhost"})
    (True, False)
    """
    name = urlsplit(f"//{host_header}").hostname or ""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name.lower().rstrip(".") in allowed


class Guard:
    """ASGI middleware: host check, token, write protection, security headers, access log
    (the module docstring says each).

    Parameters
    ----------
    app : ASGI app
    token : str or None
        The token every request must carry; None: none needed (loopback only, by the CLI).
    allowed_hosts : iterable of str
        Host names accepted besides IP addresses (``local_names()`` is added).
    read_only : bool
        Refuse every write (403).

    Examples
    --------
    >>> app = Guard(fastapi_app, token=new_token(), allowed_hosts=["calls.example.org"])  # doctest: +SKIP
    """

    def __init__(self, app, token: str | None, allowed_hosts=(), read_only: bool = False):
        self.app, self.token, self.read_only = app, token, read_only
        self.allowed = local_names() | {h.lower().rstrip(".") for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        set_cookie = False

        async def answer(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                extra = list(HEADERS)
                if set_cookie:
                    extra.append((b"set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()))
                message = message | {"headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            refusal = self._refusal(scope, headers, query)
            if refusal is not None:
                return await _refuse(answer, *refusal, api=scope["path"].startswith("/api/"))
            given = dict(query).get("token")
            set_cookie = self.token is not None and given is not None  # valid: _refusal let it through
            if set_cookie and scope["method"] in READS and not scope["path"].startswith(("/api/", "/static/")):
                rest = urlencode([(k, v) for k, v in query if k != "token"])  # a page: drop the token from the address
                return await _redirect(answer, quote(scope["path"]) + (f"?{rest}" if rest else ""))
            await self.app(scope, receive, answer)
        finally:
            client = (scope.get("client") or ("-", 0))[0]
            ACCESS_LOG.info('%s "%s %s" %d %.0f ms', client, scope["method"], scope["path"], status["code"],
                            (time.perf_counter() - started) * 1000)

    def _refusal(self, scope, headers: dict, query: list) -> tuple[int, str] | None:
        """(status, reason) for a request to refuse, or None."""
        host = headers.get("host", "")
        if not host_allowed(host, self.allowed):
            return 403, (f"host {host!r} is not a name of this server (add it with --allowed-host if it is); "
                         "refused against DNS rebinding")
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header carries no token
            cookie = SimpleCookie()
        from_cookie = cookie[COOKIE].value if COOKIE in cookie else None
        auth = headers.get("authorization", "")
        from_header = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        from_query = dict(query).get("token")
        valid = {how: self.token is not None and t is not None and hmac.compare_digest(t.encode(), self.token.encode())
                 for how, t in (("query", from_query), ("header", from_header), ("cookie", from_cookie))}
        if self.token is not None and not any(valid.values()):
            return 401, ("this server needs its token: open the address `weighter serve` printed "
                         "(it ends in ?token=...), or send Authorization: Bearer TOKEN")
        if scope["method"] not in READS:
            if self.read_only:
                return 403, "this server is read-only (weighter serve --read-only): nothing is written or uploaded"
            origin = headers.get("origin") or headers.get("referer")
            if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
                return 403, f"a write from another origin ({origin}) than this server ({host}): refused"
            if origin is None and self.token is not None and not (valid["query"] or valid["header"]):
                return 403, "a write authorised by the cookie alone must come from this server's pages (no Origin)"
        return None


async def _refuse(send, status: int, reason: str, api: bool) -> None:
    """A refusal: JSON ``{"error": reason}`` for the API, a one-line page otherwise."""
    if api:
        body, kind = json.dumps({"error": reason}).encode(), b"application/json"
    else:
        body, kind = f"<!doctype html><title>weighter</title><p>{_escape(reason)}</p>\n".encode(), b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0"),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b""})


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
