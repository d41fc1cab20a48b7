"""A real HTTP server on a free loopback port for the outbound-integration tests: it records every request and
answers what the test's ``respond`` function says (status, body, headers; or sleeps past the client's timeout)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"code":0}'
    headers: dict[str, str] = field(default_factory=dict)
    sleep_s: float = 0.0  # wait this long before answering (past the client's timeout: a timeout)


Respond = Callable[[Seen, int], Reply]  # (request, its 0-based index) -> reply


class Receiver:
    def __init__(self, respond: Respond, port: int = 0) -> None:
        self.respond = respond
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                req = Seen(parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()},
                           body, time.time())
                with receiver._lock:
                    index = len(receiver.seen)
                    receiver.seen.append(req)
                reply = receiver.respond(req, index)
                if reply.sleep_s:
                    time.sleep(reply.sleep_s)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def wait_for(self, n: int, timeout_s: float = 10.0) -> bool:
        """Whether ``n`` requests arrived before ``timeout_s`` (for tests of worker threads)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.seen) >= n:
                return True
            time.sleep(0.01)
        return len(self.seen) >= n


@contextmanager
def receiving(respond: Respond, port: int = 0) -> Iterator[Receiver]:
    """A running :class:`Receiver` (on ``port``, or a free one) until the block ends."""
    r = Receiver(respond, port)
    r._thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
