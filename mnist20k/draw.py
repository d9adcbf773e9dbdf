"""`mnist20k draw`: a page to draw digits on, served from this machine, and the one endpoint it asks.

The standard library's HTTP server is enough for one person's page on localhost. It serves exactly two
things: the page (GET /) and a prediction (POST /predict, a PNG of at most MAX_BODY bytes, answered in
JSON). Nothing is read from or written to disk after start-up. A drawing goes through `predict`'s own
reading of an image, so it gets the answer the same picture saved as a file gets.

It answers only requests addressed to it by name: a page elsewhere on the web can point its own host name
at 127.0.0.1 (DNS rebinding) and so reach a local server, but the browser then sends that page's name as
Host, which is refused here, as local notebook servers do. A prediction posted from another origin is
refused too.
"""

from __future__ import annotations

import errno
import io
import json
import re
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import torch
from torch import nn

from mnist20k.errors import Mnist20kError
from mnist20k.files import reason

MAX_BODY = 1_000_000  # bytes: a drawing's PNG is a few kB; a photo does not belong here
PNG = b"\x89PNG\r\n\x1a\n"
LOCAL = ("127.0.0.1", "localhost", "::1")
ANY = ("0.0.0.0", "::", "")  # every address of the machine: its names are not known here


def page() -> bytes:
    return resources.files("mnist20k").joinpath("draw.html").read_bytes()


def answer(model: nn.Module, device: torch.device, png: bytes) -> dict:
    """The digit, the ten probabilities and the 28x28 image the network saw, for one PNG."""
    from mnist20k.predict import probabilities, read_digit

    seen = read_digit(io.BytesIO(png), name="the drawing")
    probs = probabilities(model, seen[None].to(device))[0].tolist()
    return {
        "digit": max(range(10), key=probs.__getitem__),
        "probabilities": probs,
        "image": [[round(v, 4) for v in row] for row in seen.tolist()],
    }


class Handler(BaseHTTPRequestHandler):
    server: DrawServer
    server_version = "mnist20k-draw"
    timeout = 10  # seconds an idle connection (a browser's speculative one) may hold a thread, and so the exit

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        if self._refused():
            return
        if self.path not in ("/", "/index.html"):
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found: this server has the page (/) and /predict"})
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.server.page)

    def do_POST(self) -> None:  # noqa: N802
        self.close_connection = True  # a refused body is never read, so the connection cannot be reused
        if self._refused():
            return
        if self.path != "/predict":
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found: POST a PNG to /predict"})
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers['Host']}":
            return self._json(
                HTTPStatus.FORBIDDEN, {"error": f"a page of another origin ({origin:.100}) may not post here"}
            )
        length = self.headers.get("Content-Length")
        if length is None:
            return self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "send the PNG with a Content-Length"})
        if not re.fullmatch(r"[0-9]{1,9}", length):  # int() would take "-1", "+5" and "1_0"
            return self._json(HTTPStatus.BAD_REQUEST, {"error": f"Content-Length {length[:20]!r} is not a byte count"})
        if int(length) > MAX_BODY:
            return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"over {MAX_BODY:,} bytes"})
        self.close_connection = False
        body = self.rfile.read(int(length))
        if not body.startswith(PNG):
            return self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "not a PNG"})
        try:
            with self.server.lock:
                result = answer(self.server.model, self.server.device, body)
        except Mnist20kError as e:  # a blank or broken picture
            return self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(e)})
        self._json(HTTPStatus.OK, result)

    def _refused(self) -> bool:
        """Answer 403 to a request addressed to a name this server does not go by (see the module's note)."""
        names = self.server.names
        host = self.headers.get("Host")
        if names is None or host in names:
            return False
        self.close_connection = True
        self._json(HTTPStatus.FORBIDDEN, {"error": f"this server answers to {names[0]}, not to {str(host):.100}"})
        return True

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, "application/json", json.dumps(payload).encode())

    def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # one line per request is noise in a terminal
        pass


class DrawServer(ThreadingHTTPServer):
    """The page's server: the network, the page's bytes, and a lock so that one prediction runs at a time."""

    # Handler threads are joined when the server closes: a thread still alive while the interpreter exits
    # can abort it ("terminate called without an active exception") instead of exiting 0.
    daemon_threads = False

    def __init__(self, model: nn.Module, device: torch.device, host: str = "127.0.0.1", port: int = 8020):
        import threading

        self.model, self.device, self.page = model.eval(), device, page()
        self.lock = threading.Lock()
        try:
            super().__init__((host, port), Handler)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise Mnist20kError(f"port {port} is in use on {host}: pick another with --port") from None
            raise Mnist20kError(f"cannot serve on {host}:{port}: {reason(e)}") from None
        self.names = host_names(host, self.server_address[1])

    def handle_error(self, request, client_address) -> None:
        """A client gone mid-request (a closed tab resets its connection) is no fault of the server's and is not
        reported; anything else gets socketserver's report."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def host_names(host: str, port: int) -> tuple[str, ...] | None:
    """The Host values a request to this server carries: the address served, with its port, and on this
    machine alone its other loopback names too; None (any) when serving on every address of the machine."""
    if host in ANY:
        return None
    names = (host, *(name for name in LOCAL if name != host)) if host in LOCAL else (host,)
    return tuple(f"[{name}]:{port}" if ":" in name else f"{name}:{port}" for name in names)
