"""``bench study serve``: the rating web app (Starlette, served by uvicorn).

Routes (everything under ``/api`` answers JSON and is never cached):

- ``GET  /``                 the single-page app (``static/index.html``; ``/static/app.js``, ``/static/app.css``)
- ``GET  /api/study``        public facts: title, rater groups, number of trials, whether the input can be shown
- ``POST /api/join``         ``{"group": "expert"}`` → ``{"token": ..., "rater": "r0001"}`` (201)
- ``GET  /api/state``        the rater's next trial: opaque trial id, candidate image URLs by display position
- ``POST /api/vote``         ``{"trial": ID, "choice": POSITION, "ms": DECISION_MS}`` → 201 and the next trial
- ``GET  /img/NAME``         an image of this study (only names listed in ``study.json``), with cache headers

The rater's token goes in ``Authorization: Bearer TOKEN`` (the page keeps it in localStorage and offers a resume
link ``/#t=TOKEN``; a URL fragment never reaches a server log or a Referer). Answers to bad requests, with
nothing stored: 401 missing or unknown token, 404 a trial not assigned to the rater, 409 a second vote on a
trial or a vote on a trial other than the one the server last showed the rater, 413 a body over
:data:`MAX_BODY` bytes, 415 a body that is not ``application/json``, 400 malformed or too deeply nested JSON,
408 a body not received within the request timeout, 422 a body of the wrong shape (unknown keys, wrong types,
a candidate position that does not exist), 403 a join beyond ``--max-raters``.

Hostile clients (foreign hosts, cross-origin writes, hang-ups, stalled requests, connection floods, JSON
bombs) are kept out by :mod:`bench.study.guard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import secrets
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .create import DB_FILE, IMG_DIR, load_study
from .guard import (MAX_CONNECTIONS, MAX_JSON_DEPTH, REQUEST_TIMEOUT, ClientGone, add_guards, allowed_hosts, describe,
                    ignore_sigpipe, is_loopback, json_depth, json_error, log_line, raise_fd_limit, uvicorn_config)
from .store import Store, VoteRejected, rater_label

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
MAX_BODY = 1024  # bytes; a vote is ~60
MAX_DECISION_MS = 24 * 3600 * 1000
TRIAL_RE = re.compile(r"^[0-9a-f]{16}$")
IMAGE_RE = re.compile(r"^[0-9a-f]{32}\.png$")
IMAGE_CACHE = "private, max-age=86400, immutable"


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object, bounded in size and strictly parsed, or an ApiError (400/413/415)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "send the body as application/json")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, "bad Content-Length")
        if int(length) > MAX_BODY:
            raise ApiError(413, f"body over {MAX_BODY} bytes")
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_BODY:
                raise ApiError(413, f"body over {MAX_BODY} bytes")

    timeout = getattr(request.app.state, "request_timeout", REQUEST_TIMEOUT)
    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise ClientGone() from None

    def no_constants(name: str):
        raise ValueError(f"{name} is not JSON")

    if json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "malformed JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "expected a JSON object")
    return doc


def _strict_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_keys(doc: dict[str, Any], required: set[str], optional: set[str] = frozenset()) -> None:
    unknown = set(doc) - required - optional
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:100]}")
    missing = required - set(doc)
    if missing:
        raise ApiError(422, f"missing field(s): {', '.join(sorted(missing))}")


class _BlindFileResponse(FileResponse):
    """A file without ``Last-Modified`` or a stat-based ETag: a file's time must not tell which run it came from."""

    def set_stat_headers(self, stat_result) -> None:
        self.headers["content-length"] = str(stat_result.st_size)


class StudyApp:
    """The study, its vote store, and the request handlers."""

    def __init__(self, name: str | Path, max_raters: int = 1000):
        self.path, self.doc = load_study(name)
        self.trials = {t["id"]: t for t in self.doc["trials"]}
        self.methods = [m["name"] for m in self.doc["methods"]]
        self.groups = list(self.doc["groups"])
        self.max_raters = int(max_raters)
        self.images = {f for t in self.doc["trials"] for f in list(t["files"].values()) + [t.get("input")] if f}
        self.img_dir = (self.path / IMG_DIR).resolve()
        self.store = Store(self.path / DB_FILE, int(self.doc["seed"]), list(self.trials), self.methods)
        self.index_html = (STATIC / "index.html").read_text(encoding="utf-8")

    # --- helpers ------------------------------------------------------------------------------------------
    async def rater(self, request: Request):
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing token: join the study first")
        if len(token) > 100:
            raise ApiError(401, "unknown token")
        row = await run_in_threadpool(self.store.rater, token)
        if row is None:
            raise ApiError(401, "unknown token")
        return row

    def trial_view(self, state: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"done": state["done"], "total": state["total"], "trial": None}
        if state["trial"] is not None:
            t = self.trials[state["trial"]]
            out["trial"] = {
                "id": t["id"], "number": state["position"] + 1,
                "candidates": [{"position": i, "key": i + 1, "url": f"/img/{t['files'][m]}"}
                               for i, m in enumerate(state["shown"])],
                "input": f"/img/{t['input']}" if t.get("input") else None,
            }
        return out

    # --- handlers --------------------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.index_html, headers={"cache-control": "no-cache"})

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return json_error(404, "not found")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"cache-control": "no-cache"})

    async def favicon(self, request: Request) -> Response:
        return Response(status_code=204, headers={"cache-control": "public, max-age=86400"})

    async def image(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not IMAGE_RE.match(name) or name not in self.images:
            return json_error(404, "no such image")
        path = (self.img_dir / name).resolve()
        if path.parent != self.img_dir or not path.is_file():
            return json_error(404, "no such image")
        etag = f'"{name[:32]}"'  # names are random and files never change
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"etag": etag, "cache-control": IMAGE_CACHE})
        return _BlindFileResponse(path, media_type="image/png", headers={"cache-control": IMAGE_CACHE, "etag": etag})

    async def study(self, request: Request) -> Response:
        return JSONResponse({"title": self.doc.get("title") or self.doc["name"], "groups": self.groups,
                             "trials": len(self.trials), "candidates": len(self.methods),
                             "with_input": bool(self.doc.get("with_input"))})

    async def join(self, request: Request) -> Response:
        doc = await read_json(request)
        _check_keys(doc, {"group"})
        group = doc["group"]
        if not isinstance(group, str) or group not in self.groups:
            raise ApiError(422, f"group must be one of {', '.join(self.groups)}")
        token = secrets.token_urlsafe(32)
        try:  # the limit is checked inside the join's transaction
            rid = await run_in_threadpool(self.store.join, token, group, self.max_raters)
        except VoteRejected as e:
            raise ApiError(e.status, e.message) from None
        return JSONResponse({"token": token, "rater": rater_label(rid), "group": group}, status_code=201)

    async def state(self, request: Request) -> Response:
        row = await self.rater(request)
        state = await run_in_threadpool(self.store.next_trial, int(row["id"]))
        return JSONResponse({"rater": rater_label(int(row["id"])), "group": row["grp"], **self.trial_view(state)})

    async def vote(self, request: Request) -> Response:
        row = await self.rater(request)
        doc = await read_json(request)
        _check_keys(doc, {"trial", "choice"}, {"ms"})
        trial, choice, ms = doc["trial"], doc["choice"], doc.get("ms")
        if not isinstance(trial, str) or not TRIAL_RE.match(trial):
            raise ApiError(422, "trial must be a trial id")
        if not _strict_int(choice):
            raise ApiError(422, "choice must be an integer position")
        if ms is not None and not (_strict_int(ms) and 0 <= ms <= MAX_DECISION_MS):
            raise ApiError(422, "ms must be a non-negative integer (milliseconds)")
        rid = int(row["id"])
        try:
            await run_in_threadpool(self.store.vote, rid, trial, choice, ms)
        except VoteRejected as e:
            raise ApiError(e.status, e.message) from None
        state = await run_in_threadpool(self.store.next_trial, rid)
        return JSONResponse({"ok": True, "next": {"rater": rater_label(rid), "group": row["grp"],
                                                  **self.trial_view(state)}}, status_code=201)


def _answer_errors(handler):
    """``handler`` with an :class:`ApiError` answered as its JSON error, and a client gone before its body
    logged and answered 400."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as e:
            return json_error(e.status, e.message)
        except ClientGone:
            log_line(f"note: client hung up during {describe(request.scope)} (before its body was read)")
            return json_error(400, "incomplete request")

    wrapped.__name__ = getattr(handler, "__name__", "handler")
    return wrapped


def build_app(name: str | Path, max_raters: int = 1000, allowed_hosts: Iterable[str] = ("127.0.0.1",
              "localhost", "[::1]"), request_timeout: float = REQUEST_TIMEOUT) -> Starlette:
    """The ASGI app for one study (``name``: a study name under ``<results>/studies`` or its folder), answering
    only requests whose ``Host`` is one of ``allowed_hosts`` (see :func:`bench.study.guard.allowed_hosts`)."""
    s = StudyApp(name, max_raters)
    routes = [
        Route("/", _answer_errors(s.index), methods=["GET"]),
        Route("/static/{name}", _answer_errors(s.static), methods=["GET"]),
        Route("/favicon.ico", _answer_errors(s.favicon), methods=["GET"]),
        Route("/img/{name}", _answer_errors(s.image), methods=["GET"]),
        Route("/api/study", _answer_errors(s.study), methods=["GET"]),
        Route("/api/join", _answer_errors(s.join), methods=["POST"]),
        Route("/api/state", _answer_errors(s.state), methods=["GET"]),
        Route("/api/vote", _answer_errors(s.vote), methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        s.store.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    add_guards(app, allowed_hosts)
    app.state.study = s
    app.state.request_timeout = float(request_timeout)
    return app


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        from ..errors import BenchError

        raise BenchError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(name: str | Path, host: str = "127.0.0.1", port: int = 8000, max_raters: int = 1000,
          allow_hosts: Iterable[str] = (), request_timeout: float = REQUEST_TIMEOUT,
          max_connections: int = MAX_CONNECTIONS) -> None:
    """Serve a study until interrupted; prints the URL (``--port 0`` picks a free port)."""
    import uvicorn

    if request_timeout <= 0:
        from ..errors import BenchError

        raise BenchError("--request-timeout must be positive (seconds)")
    if max_connections < 1:
        from ..errors import BenchError

        raise BenchError("--max-connections must be at least 1")
    ignore_sigpipe()
    raise_fd_limit()
    hosts = allowed_hosts(host, allow_hosts)
    app = build_app(name, max_raters, hosts, request_timeout)
    sock = _bind(host, port)
    if not is_loopback(host):
        print(f"bench: warning: serving on {host}, reachable from other machines, over plain HTTP; put it behind "
              "HTTPS before sharing tokens outside a trusted network", file=sys.stderr)
        print(f"bench: note: answering only requests for the host(s) {', '.join(hosts)}; add others with "
              "--allow-host NAME", file=sys.stderr)
    s = app.state.study
    print(f"serving study {s.doc['name']} ({len(s.trials)} trials, {len(s.methods)} candidates) at {_url(sock)} "
          f"-- Ctrl-C to stop", flush=True)
    uvicorn.Server(uvicorn_config(app, request_timeout, max_connections)).run(sockets=[sock])


@contextlib.contextmanager
def background(name: str | Path, host: str = "127.0.0.1", port: int = 0, max_raters: int = 1000,
               allow_hosts: Iterable[str] = (), request_timeout: float = REQUEST_TIMEOUT,
               max_connections: int = MAX_CONNECTIONS) -> Iterator[str]:
    """Run the app in a thread (tests, notebooks); yields its base URL and stops it on exit."""
    import time

    import uvicorn

    app = build_app(name, max_raters, allowed_hosts(host, allow_hosts), request_timeout)
    sock = _bind(host, port)
    server = uvicorn.Server(uvicorn_config(app, request_timeout, max_connections))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="study-server")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the study server did not start")
        time.sleep(0.02)
    try:
        yield _url(sock).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
