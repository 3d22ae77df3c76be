"""Hardening of the study web app (:mod:`bench.study.server`) against hostile or broken clients.

A study server is long-running and may be reachable from a network, so nothing a client does may stop it from
answering the other raters, fill its log, or let another web site act with a rater's token:

- foreign hosts: only requests whose ``Host`` is one the study is served on are answered
  (``TrustedHostMiddleware``, names from :func:`allowed_hosts`); a DNS-rebinding page has a foreign ``Host``;
- forged writes: a state-changing request whose ``Origin`` is not the served origin, or that a browser marks
  ``Sec-Fetch-Site: cross-site``, gets 403 (:class:`OriginGuard`);
- framing, sniffing, referrers: every answer carries security headers, the API ``no-store``
  (:class:`SecurityHeaders`);
- hang-ups: a client that hangs up mid-request costs one log line, and SIGPIPE is ignored while serving
  (:func:`ignore_sigpipe`), whatever the CLI set; any other unexpected error is one line (a few tracebacks)
  and a 500 (:class:`Shield`), never an exception reaching uvicorn;
- slow clients: a connection that does not finish its request headers within ``--request-timeout`` seconds
  is closed (:func:`protocol_class`; the body has its own deadline in :func:`bench.study.server.read_json`);
- connection floods: at most ``--max-connections`` connections are held at once, more are answered 503 and
  closed, and the file-descriptor limit is raised to allow them (:func:`raise_fd_limit`);
- JSON bombs: a body nested deeper than :data:`MAX_JSON_DEPTH` is refused before it is parsed
  (:func:`json_depth`), so a deep one cannot exhaust the parser's recursion.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import sys
import traceback
import urllib.parse
from typing import Iterable

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

MAX_JSON_DEPTH = 4  # a vote or a join is one flat object
REQUEST_TIMEOUT = 10.0  # seconds to send the request headers, and again the body
KEEP_ALIVE_TIMEOUT = 5  # seconds an idle keep-alive connection is kept
MAX_CONNECTIONS = 200  # connections held at once; more are answered 503 and closed
UNEXPECTED_TRACEBACKS = 3  # tracebacks logged for unexpected errors; after that one line each
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
]


class ClientGone(Exception):
    """The client hung up before its request was read."""


def json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})


def log_line(text: str) -> None:
    """One line on stderr (never raises: stderr itself may be a closed pipe)."""
    try:
        print(f"bench: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def describe(scope) -> str:
    client = scope.get("client")
    who = f" from {client[0]}" if client else ""
    return f"{scope.get('method', '?')} {scope.get('path', '?')[:80]}{who}"


_DISCONNECTS = (ClientDisconnect, ClientGone, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class Shield:
    """Outermost pure ASGI middleware: nothing a client does reaches uvicorn as an exception.

    A client that hung up (mid-body, mid-response) is one log line; any other unexpected error is one line too
    (with a traceback for the first :data:`UNEXPECTED_TRACEBACKS`, so a bug stays debuggable but a hostile
    client cannot flood the log) and a 500 when nothing was sent yet.
    """

    def __init__(self, app):
        self.app = app
        self.unexpected = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except _DISCONNECTS:
            log_line(f"note: client hung up during {describe(scope)}")
        except Exception as e:  # noqa: BLE001 -- the last line of defence of a long-running server
            self.unexpected += 1
            log_line(f"error: {type(e).__name__} in {describe(scope)}: {str(e)[:200]}")
            if self.unexpected <= UNEXPECTED_TRACEBACKS:
                with contextlib.suppress(OSError, ValueError):
                    traceback.print_exc(file=sys.stderr)
            if not started:
                with contextlib.suppress(Exception):
                    await json_error(500, "internal error")(scope, receive, send)


def _host_port(netloc: str) -> tuple[str, str | None]:
    """('host' lower-cased, brackets kept for IPv6; 'port' or None) of a Host header or an Origin's netloc."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        host, _, rest = netloc.partition("]")
        return host + "]", (rest[1:] if rest.startswith(":") and rest[1:] else None)
    host, sep, port = netloc.rpartition(":")
    if not sep or not port.isdigit():
        return netloc, None
    return host, port


class OriginGuard:
    """Pure ASGI middleware: a state-changing request (not GET/HEAD/OPTIONS) is refused with 403 when the browser
    says it comes from another site: an ``Origin`` other than the served origin (or ``null``), or
    ``Sec-Fetch-Site: cross-site``. Requests without ``Origin`` (curl, scripts) are not browser-forged."""

    SAFE = {"GET", "HEAD", "OPTIONS"}

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method", "GET") in self.SAFE:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin, host = headers.get("origin"), headers.get("host", "")
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return await json_error(403, "cross-site request refused")(scope, receive, send)
        if origin is not None and not self._same(origin, host):
            return await json_error(403, "request from another origin refused")(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def _same(origin: str, host: str) -> bool:
        try:
            u = urllib.parse.urlsplit(origin.strip())
        except ValueError:
            return False
        if u.scheme not in ("http", "https") or not u.netloc or u.path not in ("", "/"):
            return False
        o_host, o_port = _host_port(u.netloc)
        h_host, h_port = _host_port(host)
        if o_host != h_host:
            return False
        if h_port is None:  # e.g. behind a proxy on the default port: the host decides
            return True
        return (o_port or {"http": "80", "https": "443"}[u.scheme]) == h_port


class SecurityHeaders:
    """Pure ASGI middleware: security headers on every answer, ``no-store`` on the API."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        api = scope.get("path", "").startswith("/api/")

        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if api and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, wrapped)


def add_guards(app, allowed_hosts: Iterable[str]) -> None:
    """Wrap a Starlette ``app`` in the middleware above, answering only requests for ``allowed_hosts``."""
    # added last = outermost: Shield, the security headers (on refusals too), the Host check, the Origin check
    app.add_middleware(OriginGuard)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=sorted(set(allowed_hosts)), www_redirect=False)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Shield)


def json_depth(body: bytes | bytearray) -> int:
    """The deepest nesting of arrays/objects in a JSON text, by a scan that never recurses (strings skipped)."""
    depth = deepest = 0
    in_str = escaped = False
    for b in body:
        if in_str:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _bracket(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host.lower()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names a study served on ``host`` answers: the address itself; the loopback names when it is
    loopback or a wildcard; for a wildcard (``0.0.0.0``, ``::``) also this machine's names and addresses;
    plus ``extra`` (``--allow-host``, e.g. a DNS name or a proxy's host)."""
    out = {_bracket(host)}
    wildcard = host in ("", "0.0.0.0", "::")
    if wildcard or is_loopback(host):
        out.update(LOOPBACK_HOSTS)
    if wildcard:
        names = {socket.gethostname(), socket.getfqdn()}
        out.update(n.lower() for n in names if n)
        for n in names:
            with contextlib.suppress(OSError, UnicodeError):
                out.update(_bracket(a[4][0].split("%")[0]) for a in socket.getaddrinfo(n, None))
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.connect(("10.255.255.255", 1))  # no packet is sent: this picks the outgoing interface's address
            out.add(u.getsockname()[0])
    out.discard("")
    out.discard("0.0.0.0")
    out.discard("[::]")
    for h in extra:
        h = h.strip()
        if h:
            out.add(_bracket(h.strip("[]")) if h.startswith("[") else _bracket(h))
    return sorted(out)


def protocol_class(request_timeout: float, max_connections: int):
    """uvicorn's h11 protocol with a request-header deadline and a cap on connections.

    uvicorn times out only idle keep-alive connections (and any byte received disarms that timer), so a client
    that opens a connection and sends nothing, or trickles its headers, holds a file descriptor forever. Here a
    connection must complete each request's headers within ``request_timeout`` seconds of opening or of the
    previous answer, or it is closed; beyond ``max_connections`` open connections a new one gets 503 and is
    closed at once. (The body deadline is in :func:`bench.study.server.read_json`.)
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        _deadline = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(request_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self.connections.discard(self)
                with contextlib.suppress(Exception):
                    transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
                                    b"connection: close\r\ncontent-length: 19\r\n\r\nserver busy, retry\n")
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's headers are complete: its body has its own deadline
                self._disarm()

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._arm()
            super().on_response_complete()

    return GuardedH11


def uvicorn_config(app, request_timeout: float, max_connections: int):
    import uvicorn

    return uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, lifespan="on",
                          http=protocol_class(request_timeout, max_connections), ws="none",
                          timeout_keep_alive=KEEP_ALIVE_TIMEOUT, limit_concurrency=max_connections + 10,
                          h11_max_incomplete_event_size=16 * 1024)


def ignore_sigpipe() -> None:
    # The CLI restores SIGPIPE's default action (for `bench ... | head`); a server must instead get EPIPE as an
    # error on the one connection whose client hung up, never die of the signal.
    with contextlib.suppress(AttributeError, ValueError):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def raise_fd_limit() -> None:
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else
                                                        max(soft, 65536), hard))
