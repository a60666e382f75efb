"""HTTP test doubles on 127.0.0.1 (no internet): a STAC API that replays recorded real responses,
a SAS token endpoint, and a static file server with HTTP range support.

* :class:`RecordedStacApi` serves a landing page and answers ``POST /search`` with the recorded
  responses of ``../shared/data/stac/api_responses/*.json`` (real Planetary Computer and Earth
  Search searches), the recorded API root rewritten to the double's own URL so ``next`` links
  come back here. A request matches a recorded one when it carries every key of the recorded
  body with the same value (extra keys such as ``limit`` are allowed). ``faults`` are answered
  first, one per request: (status, headers, delay) to play 429s, 503s and slow answers.
  ``delay_s`` delays every answer; ``body_delay_s`` sends the headers, then waits that long
  before the body (a slow body: a request is in flight until its body is sent).
* :class:`FileServer` serves a folder with ``Range`` support (what GDAL's /vsicurl/ needs), can
  require a query parameter (a fake SAS signature) and answer SAS tokens under ``/sas/``.

Every request is recorded (time, method, path, query, body) so tests can assert on what the
client actually sent and when.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    """One request a double received."""

    t: float
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class Fault:
    """An answer played instead of the normal one: status, headers, and a delay before it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: str = '{"code": "fault", "description": "played by the test double"}'


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and closed its socket is expected in the tests


class _Double:
    """Shared plumbing: a threaded server, the request log, faults, in-flight counting."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.delay_s = 0.0
        self.body_delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def running(self) -> Iterator[_Double]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            # the last byte of a body leaves in its own write (see _send): no Nagle delay on it
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                double._dispatch(self, "GET")

            def do_POST(self) -> None:
                double._dispatch(self, "POST")

            def do_HEAD(self) -> None:
                double._dispatch(self, "HEAD")

        self._server = _Server(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        with self._lock:
            self.seen.append(
                Seen(time.monotonic(), method, parts.path, parse_qs(parts.query), body)
            )
            fault = self.faults.pop(0) if self.faults else None
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        h.counted_in = True  # type: ignore[attr-defined]
        try:
            delay = fault.delay_s if fault else self.delay_s
            if delay:
                time.sleep(delay)
            if fault is not None:
                self._send(h, fault.status, fault.body.encode(), "application/json", fault.headers)
            else:
                self.answer(h, method, parts.path, parse_qs(parts.query), body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self._done(h)

    def _done(self, h: BaseHTTPRequestHandler) -> None:
        """Count the request of ``h`` out of flight (once)."""
        if getattr(h, "counted_in", False):
            h.counted_in = False  # type: ignore[attr-defined]
            with self._lock:
                self.in_flight -= 1

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer: status, headers, then the body (``body_delay_s`` after the headers).

        The request leaves the in-flight count just before the last byte the client waits for
        is sent. Once the client has the whole answer it may send its next request at once,
        before this thread runs again; counted out after the last byte, this request would
        overlap that next one here although it no longer does at the client. Counted out
        before it, the count never exceeds what the client really has in flight.
        """
        body = data if h.command != "HEAD" else b""
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if not body:
            self._done(h)  # the headers are the whole answer
        h.end_headers()  # the headers leave now (unbuffered): the client may act on them
        if not body:
            return
        if self.body_delay_s:
            time.sleep(self.body_delay_s)
        h.wfile.write(body[:-1])
        self._done(h)
        h.wfile.write(body[-1:])

    def answer(
        self,
        h: BaseHTTPRequestHandler,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
    ) -> None:
        raise NotImplementedError


CONFORMS_TO = (
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
)


class RecordedStacApi(_Double):
    """A STAC API test double that replays recorded search responses (see the module doc).

    Args:
        recording: a ``{"interactions": [{"request", "response"}]}`` file.
        conforms_to: the landing page's ``conformsTo``.
        extra_items: features served by a search that matches no recording (dicts).
    """

    def __init__(
        self,
        recording: Path | None = None,
        *,
        conforms_to: tuple[str, ...] = CONFORMS_TO,
        extra_items: list[dict[str, Any]] | None = None,
        root_path: str = "/api/stac/v1",
    ) -> None:
        super().__init__()
        self.conforms_to = conforms_to
        self.interactions: list[dict[str, Any]] = []
        self.recorded_root = ""
        self.root_path = root_path
        if recording is not None:
            data = json.loads(recording.read_text())
            self.interactions = data["interactions"]
            first = urlsplit(self.interactions[0]["request"]["uri"])
            self.root_path = first.path.rsplit("/search", 1)[0]
            self.recorded_root = f"{first.scheme}://{first.netloc}{self.root_path}"
        self.extra_items = extra_items

    @property
    def url(self) -> str:
        """The API root URL."""
        return f"{self.origin}{self.root_path}"

    def _rewrite(self, payload: Any) -> bytes:
        text = json.dumps(payload)
        if self.recorded_root:
            text = text.replace(self.recorded_root, self.url)
        return text.encode()

    def landing(self) -> dict[str, Any]:
        return {
            "type": "Catalog",
            "id": "recorded-stac-api",
            "description": "test double replaying recorded STAC API responses",
            "stac_version": "1.0.0",
            "conformsTo": list(self.conforms_to),
            "links": [
                {"rel": "self", "href": self.url, "type": "application/json"},
                {"rel": "root", "href": self.url, "type": "application/json"},
                {
                    "rel": "search",
                    "href": f"{self.url}/search",
                    "type": "application/geo+json",
                    "method": "POST",
                },
            ],
        }

    def answer(
        self,
        h: BaseHTTPRequestHandler,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
    ) -> None:
        if method == "GET" and path.rstrip("/") == self.root_path.rstrip("/"):
            self._send(h, 200, json.dumps(self.landing()).encode(), "application/json")
            return
        if method == "POST" and path == f"{self.root_path}/search":
            matches = [
                inter
                for inter in self.interactions
                if isinstance(body, dict)
                and all(body.get(k) == v for k, v in inter["request"]["body"].items())
            ]
            if matches:  # the most specific recording (a next-page body holds the first's keys)
                resp = max(matches, key=lambda i: len(i["request"]["body"]))["response"]
                self._send(h, resp["status"], self._rewrite(resp["json"]), "application/geo+json")
                return
            if self.extra_items is not None:
                wanted = set(body.get("collections") or []) if isinstance(body, dict) else set()
                feats = [f for f in self.extra_items if not wanted or f.get("collection") in wanted]
                page = {"type": "FeatureCollection", "features": feats, "links": []}
                self._send(h, 200, json.dumps(page).encode(), "application/geo+json")
                return
        msg = {"code": "NotFound", "description": f"no recorded answer for {method} {path}"}
        self._send(h, 404, json.dumps(msg).encode(), "application/json")


class FileServer(_Double):
    """Serves ``root`` with HTTP range support; optionally requires ``require`` in the query.

    ``GET /sas/<account>/<container>`` answers a SAS token ``token`` valid ``token_ttl_s``.
    """

    def __init__(
        self,
        root: Path,
        *,
        require: tuple[str, str] | None = None,
        token: str = "",
        token_ttl_s: float = 3600.0,
        deny: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.root = root
        self.require = require
        self.token = token
        self.token_ttl_s = token_ttl_s
        self.deny = deny

    def answer(
        self,
        h: BaseHTTPRequestHandler,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
    ) -> None:
        if path.startswith("/sas/"):
            expiry = datetime.now(UTC) + timedelta(seconds=self.token_ttl_s)
            payload = {"msft:expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"), "token": self.token}
            self._send(h, 200, json.dumps(payload).encode(), "application/json")
            return
        if self.require is not None:
            key, value = self.require
            if query.get(key) != [value]:
                self._send(h, 403, b"signature required", "text/plain")
                return
        if any(path.endswith(d) for d in self.deny):
            self._send(h, 403, b"denied by the test double", "text/plain")
            return
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_file() or self.root.resolve() not in target.parents:
            self._send(h, 404, b"not found", "text/plain")
            return
        data = target.read_bytes()
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[6:].split(",")[0].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(int(last), len(data) - 1) if first and last else len(data) - 1
            chunk = data[start : end + 1]
            headers = {
                "Content-Range": f"bytes {start}-{end}/{len(data)}",
                "Accept-Ranges": "bytes",
            }
            self._send(h, 206, chunk, "image/tiff", headers)
            return
        self._send(h, 200, data, "image/tiff", {"Accept-Ranges": "bytes"})
