"""The live view's direct channel: a keystroke answered without Streamlit's rerun loop.

Through Streamlit, a keystroke is a component value sent over Streamlit's websocket, a rerun of the
page's fragment, a delta back, React's rendering of the page and a ``postMessage`` into the frame; on
the 2-core machine that round trip cost more than the answer itself (bench/README.md: "back" 35-175 ms,
and React's work delays the frame that shows the draw). Here the frame posts the message by ``fetch``
to a small HTTP server in the app's process, which calls the answer its page registered for the session
(the same computation the fragment makes) and returns the colours at once.

One server per process, started on first use, on the address Streamlit serves on (127.0.0.1 unless
told otherwise) and a free port; a thread per connection, each closed after 5 s of silence. A session is known by a
random token (:func:`register`), so a request can only reach a session whose page gave it the token.
Where the frame cannot reach it (a proxy, https, another host's firewall), it sends its messages
through Streamlit as before. ``RELVIZ_LIVE_CHANNEL=off`` turns it off (the bench's comparison).

Wire format: POST ``/live/<token>`` with the frame's message as JSON (``text/plain``: no CORS
preflight); the answer is 4 bytes (little-endian length L), L bytes of JSON (``table``, ``legend``,
``note``, ``reply``) and one colour index byte per point shown."""

from __future__ import annotations

import json
import os
import secrets
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# an answer: the message (dict) -> (JSON-able dict, one colour index byte per point)
Answer = Callable[[dict], tuple[dict, bytes]]
MAX_SESSIONS = 64  # the oldest registration goes first; a page run registers its session again
MAX_BODY = 1 << 20  # a message is the query text and a few numbers


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    timeout = 5  # s: a connection that sends nothing (or less than it announced) is closed, never waited on

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # no line per keystroke in the app's log

    def _send(self, status: int, body: bytes, kind: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Access-Control-Allow-Origin", "*")  # the token, not the origin, admits a request
        self.end_headers()
        self.wfile.write(body)

    def do_OPTIONS(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "POST")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        token = self.path.removeprefix("/live/")
        answer = self.server.answers.get(token) if self.path.startswith("/live/") else None
        if answer is None:
            return self._send(404, b"unknown session", "text/plain")
        length = self.headers.get("Content-Length") or "0"
        length = int(length) if length.isascii() and length.isdecimal() else 0
        if not 0 < length <= MAX_BODY:
            return self._send(400, b"expected a message of at most 1 MiB", "text/plain")
        try:
            message = json.loads(self.rfile.read(length))
        except ValueError as e:  # json's own error (UnicodeDecodeError too)
            return self._send(400, f"bad message: {e}".encode(), "text/plain")
        if not isinstance(message, dict):
            return self._send(400, b"bad message: not a JSON object", "text/plain")
        try:
            meta, colors = answer(message)
            head = json.dumps(meta).encode()
        except Exception as e:  # noqa: BLE001 (said to the frame, which sends its next message through Streamlit)
            return self._send(500, f"{type(e).__name__}: {e}".encode(), "text/plain")
        self._send(200, struct.pack("<I", len(head)) + head + colors)


class _Server(ThreadingHTTPServer):
    """A thread per connection (daemon threads): one slow or idle client never holds up another."""

    daemon_threads = True

    def __init__(self, host: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET  # "::1", "::" as the app's host
        super().__init__((host, 0), _Handler)
        self.answers: OrderedDict[str, Answer] = OrderedDict()


_server: _Server | None = None
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("RELVIZ_LIVE_CHANNEL", "on").lower() not in ("off", "0", "no")


def _running(host: str) -> _Server:
    global _server
    with _lock:
        if _server is None:
            _server = _Server(host)
            threading.Thread(target=_server.serve_forever, name="relviz-live-channel", daemon=True).start()
        return _server


def new_token() -> str:
    """A session's token: 144 random bits, URL-safe."""
    return secrets.token_urlsafe(18)


def register(token: str, answer: Answer, host: str = "127.0.0.1") -> dict | None:
    """Route the messages posted for ``token`` to ``answer`` (replacing what the session registered
    before); returns the frame's ``channel`` argument (``{port, path}``: the frame uses its own page's
    host name), or None when the channel is off."""
    if not enabled():
        return None
    try:
        server = _running(host)
    except OSError:  # an address this machine cannot bind: the page's messages go through Streamlit
        return None
    with _lock:
        server.answers.pop(token, None)
        server.answers[token] = answer
        while len(server.answers) > MAX_SESSIONS:
            server.answers.popitem(last=False)
    return {"port": server.server_address[1], "path": f"/live/{token}"}


def decode(body: bytes) -> tuple[dict, bytes]:
    """The (JSON part, colour bytes) of an answer as the server sends it (what the frame's code reads)."""
    (length,) = struct.unpack_from("<I", body)
    return json.loads(body[4:4 + length]), body[4 + length:]
