"""The HTTP plumbing both sandbox servers share: recording, faults, streaming.

Each server is a stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with
keep-alive, like the real hosts, so clients exercise connection reuse.  A
server knows nothing about Topaz: it records the request, applies the faults
planned for it, asks its ``route`` function for a :class:`Reply` (handing it
the request's decisive fault, for faults about what an answer says) and
writes that reply, slicing large bodies instead of copying them.  A server
given a shaper (the storage host of a sandbox with a ``link``) holds each
answer for the link's latency and paces each piece of body through it.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._faults import Fault, FaultBook
from ._link import _Pacer, _Shaper

_CHUNK = 256 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    """One request as a sandbox server received it (for assertions in tests).

    ``delay`` is the injected latency it was held for and ``fault`` the kind
    of the fault that decided its answer (``None`` for a normal answer), so a
    test can check that faults applied without timing anything.
    """

    server: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    delay: float = 0.0
    fault: str | None = None


@dataclass
class Reply:
    """What a route answers: the body may be a zero-copy view of a stored object."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | memoryview = b""


def header(request: RecordedRequest, name: str) -> str | None:
    """A request header by case-insensitive name, as HTTP defines header names."""
    wanted = name.lower()
    return next((v for k, v in request.headers.items() if k.lower() == wanted), None)


Route = Callable[[RecordedRequest, Fault | None], Reply]
"""A server's handler: the request, and the fault that decides its answer, if any."""
ErrorReply = Callable[..., Reply]
"""``(status, message)`` → the server's error answer; the storage host's also
takes the XML ``Code`` and a ``dialect`` (see the ``storage_error`` fault)."""


class RequestLog:
    """Every request of both servers, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def add(self, item: RecordedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "TopazSandbox/1.0"
    # An idle keep-alive connection is closed after this many seconds.
    timeout = 30
    server: SandboxServer
    _pacer: _Pacer | None = None

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: the request log is the record, not stderr."""

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        plan = self.server.faults.plan(self.server.name, path, self.headers.get("Range"))
        request = RecordedRequest(self.server.name, self.command, path, query, headers,
                                  plan.delay, plan.fault.kind if plan.fault else None)
        self.server.log.add(request)
        self._discard_body()

        if plan.delay > 0:
            time.sleep(plan.delay)
        fault = plan.fault
        if fault is not None and fault.kind == "drop":
            self._drop()
            return
        if fault is not None and fault.kind == "status":
            reply = self.server.error_reply(int(fault.params["code"]),
                                            fault.params.get("message") or "")
            if fault.params.get("retry_after") is not None:
                reply.headers.append(("Retry-After", str(int(fault.params["retry_after"]))))
        elif fault is not None and fault.kind == "expire":
            reply = self.server.error_reply(403, "expired")
        elif fault is not None and fault.kind == "storage_error":
            params = fault.params
            reply = self.server.error_reply(int(params.get("code") or 403),
                                            params.get("message") or "", params.get("error"),
                                            dialect=params.get("dialect") or "s3")
        elif fault is not None and fault.kind == "redirect":
            reply = Reply(int(fault.params.get("code") or 302),
                          [("Location", str(fault.params["location"]))], b"")
        else:
            reply = self.server.route(request, fault)
        try:
            self._write(reply, fault)
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit():
            self.rfile.read(int(length))
        elif self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _write(self, reply: Reply, fault: Fault | None) -> None:
        omit: frozenset[str] = frozenset()
        if fault is not None and fault.kind == "omit_headers":
            omit = fault.params["headers"]
        body = memoryview(reply.body)
        limit = len(body)
        cut_by_close = fault is not None and fault.kind == "cut_by_close"
        if fault is not None and fault.kind in ("truncate", "cut_by_close"):
            limit = min(limit, max(0, int(fault.params["after_bytes"])))
        if cut_by_close:
            # No length and no chunks: only the end of the connection ends the
            # body, so closing it early looks exactly like a complete answer.
            omit = frozenset({"content-length", "transfer-encoding"})

        # A route that frames its body by chunks says so with Transfer-Encoding
        # (the "bare" storage profile); a HEAD then announces no length either.
        chunked = any(n.lower() == "transfer-encoding" and v.lower() == "chunked"
                      for n, v in reply.headers) and not cut_by_close
        shaper = self.server.shaper
        if shaper is not None:
            shaper.first_byte()
            if self._pacer is None:  # one per connection: keep-alive requests share it
                self._pacer = shaper.connection()
        self.send_response(reply.status)
        for name, value in reply.headers:
            if name.lower() not in omit:
                self.send_header(name, value)
        if chunked:
            pass
        elif "content-length" in omit:
            # No length to frame the body: the end of the connection ends it.
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()

        if fault is not None and fault.kind == "gather" and self.command != "HEAD":
            self.wfile.flush()
            if not fault.gather():
                self._drop()  # the others never came: fail this answer visibly
                return
        hang = fault is not None and fault.kind == "hang" and self.command != "HEAD"
        if hang and fault is not None:
            limit = min(limit, max(0, int(fault.params.get("after_bytes") or 0)))
        if self.command != "HEAD":
            for start in range(0, limit, _CHUNK):
                piece = body[start:min(start + _CHUNK, limit)]
                if self._pacer is not None:
                    self._pacer.pace(len(piece))
                if chunked:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
            if chunked and limit == len(body):
                self.wfile.write(b"0\r\n\r\n")
        if hang and fault is not None:
            self.wfile.flush()
            fault.hold()
            self._drop()
            return
        if limit < len(body) and self.command != "HEAD":
            self.wfile.flush()
            self._drop()


class SandboxServer(ThreadingHTTPServer):
    """A threading HTTP server that can be stopped with its connections."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], name: str, route: Route,
                 error_reply: ErrorReply, log: RequestLog, faults: FaultBook,
                 shaper: _Shaper | None = None) -> None:
        self.name = name
        self.shaper = shaper
        self.route = route
        self.error_reply = error_reply
        self.log = log
        self.faults = faults
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._conn_threads: list[threading.Thread] = []
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup, which can stall for seconds."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        with self._conn_lock:
            self._connections.add(request)
            self._conn_threads = [t for t in self._conn_threads if t.is_alive()]
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address),
                                  name=f"sandbox-{self.name}-conn", daemon=True)
        with self._conn_lock:
            self._conn_threads.append(thread)
        thread.start()

    def shutdown_request(self, request) -> None:  # type: ignore[no-untyped-def]
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        """A client hanging up mid-answer is normal here; anything else is printed."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, OSError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Wake every handler blocked on an idle keep-alive socket and wait for it."""
        with self._conn_lock:
            connections = list(self._connections)
            threads = list(self._conn_threads)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
