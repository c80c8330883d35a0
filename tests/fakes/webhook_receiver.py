"""A loopback webhook receiver: records every request and answers as told.

    with WebhookReceiver() as receiver:
        receiver.respond(500, 500, 200)   # the next answers, in order; then the default
        receiver.default = 410
        receiver.url                       # http://127.0.0.1:<port>/hook
        receiver.requests                  # [Received(path, headers, body), ...]

An answer "timeout" holds the connection open for `timeout_seconds` before answering 200, so
a client with a shorter timeout gives up. An answer "drip" sends a 200 a byte every
`drip_seconds`: each read is quick, the answer is not (a client whose timeout bounds each read
waits for all of it); "drip_body" sends the 200 and its headers at once, then its body so.
An answer (status, {header: value}) adds those headers, e.g. (429, {"Retry-After": "30"}).
With `echo` set, an answer's body quotes the request's body (as a receiver's validation error
often does: "invalid payload: {...}").
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.common import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    def __init__(self, *, default: int | str = 200, timeout_seconds: float = 2.0, drip_seconds: float = 0.1):
        self.default = default
        self.echo = False
        self.timeout_seconds = timeout_seconds
        self.drip_seconds = drip_seconds
        self.requests: list[Received] = []
        self._answers: deque[int | str] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def respond(self, *answers: int | str | tuple[int, dict[str, str]]) -> None:
        with self._lock:
            self._answers.extend(answers)

    def _next_answer(self) -> int | str:
        with self._lock:
            return self._answers.popleft() if self._answers else self.default

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                answer = receiver._next_answer()
                if answer == "timeout":
                    receiver._released.wait(receiver.timeout_seconds)
                    answer = 200
                if answer == "drip":
                    self._drip(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                    return
                if answer == "drip_body":
                    body = b'{"ok": true, "padding": "' + b"x" * 60 + b'"}'
                    self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
                    self.wfile.flush()
                    self._drip(body)
                    return
                answer, extra = answer if isinstance(answer, tuple) else (answer, {})
                payload = b'{"ok": true}' if 200 <= int(answer) < 300 else b'{"error": "nope"}'
                if receiver.echo:
                    payload = b"invalid payload: " + body
                try:
                    self.send_response(int(answer))
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): that is the point of a "timeout" answer

            def _drip(self, raw: bytes) -> None:
                try:
                    for n in range(len(raw)):
                        if receiver._released.wait(receiver.drip_seconds):
                            return
                        self.wfile.write(raw[n : n + 1])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up

            def log_message(self, *args):
                pass

        return Handler

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
