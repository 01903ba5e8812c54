"""A real HTTP server on 127.0.0.1 for tests: serves a folder, with Range and misbehaviours.

``serve_directory(folder)`` yields the base URL (``http://127.0.0.1:<port>/``); use
:class:`DirectoryServer` directly when a test needs the requests it received::

    with DirectoryServer(archives, drop_after=1000, drop_times=1) as server:
        fetch(server.url + "images.tar", dest, ...)
    assert server.requests[1].range == "bytes=1000-"

Misbehaviours, each switched on by an option:
- ``drop_after=N, drop_times=K``: the first K GET responses with a body are cut after N
  bytes of that body (the socket is closed mid-body, Content-Length announced the full size),
  like a connection lost during a download.
- ``ignore_range=True``: ``Range`` headers are ignored; every GET answers 200 with the whole file.
- ``status=403`` (or any code): every request gets that error status.
- ``throttle=S``: sleep S seconds after each 64 KiB block of a body (a slow link, so a test
  can kill the client mid-file).

``free_port()`` / ``free_ports(n)``: ports on 127.0.0.1 nothing listens on (for a server a
test starts, or to get "connection refused").
"""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    range: str | None


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up (or a connection this server cut on purpose) is not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class DirectoryServer:
    """Threaded HTTP server for one folder (context manager; ``url`` ends with ``/``)."""

    def __init__(self, directory: Path | str, *, drop_after: int | None = None,
                 drop_times: int = 1, ignore_range: bool = False,
                 status: int | None = None, throttle: float = 0.0) -> None:
        self.directory = Path(directory)
        self.throttle = throttle
        self.drop_after = drop_after
        self.drop_times = drop_times if drop_after is not None else 0
        self.ignore_range = ignore_range
        self.status = status
        self.requests: list[Recorded] = []
        self.drops = 0
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def paths(self, method: str = "GET") -> list[str]:
        """Request paths received with ``method``, in order."""
        return [r.path for r in self.requests if r.method == method]

    def start(self) -> DirectoryServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DirectoryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, range_header))

    def _take_drop(self) -> bool:
        """Whether this response is one of the first ``drop_times`` to be cut."""
        with self._lock:
            if self.drops < self.drop_times:
                self.drops += 1
                return True
            return False

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep test output clean

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                range_header = self.headers.get("Range")
                server._record(self.command, path, range_header)
                if server.status is not None:
                    self._error(server.status)
                    return
                file = (server.directory / path.lstrip("/")).resolve()
                if server.directory.resolve() not in file.parents or not file.is_file():
                    self._error(404)
                    return
                size = file.stat().st_size
                start, end = 0, size - 1
                status = 200
                if range_header and not server.ignore_range:
                    match = _RANGE.match(range_header.strip())
                    if match is None:
                        self._error(400)
                        return
                    start = int(match.group(1))
                    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                length = end - start + 1
                self.send_response(status)
                self.send_header("Content-Type", "application/x-tar")
                self.send_header("Content-Length", str(length))
                self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if not body:
                    return
                limit = length
                drop = server.drop_after is not None and server._take_drop()
                if drop:
                    limit = min(length, server.drop_after)
                with open(file, "rb") as f:
                    f.seek(start)
                    sent = 0
                    while sent < limit:
                        block = f.read(min(_CHUNK, limit - sent))
                        if not block:
                            break
                        self.wfile.write(block)
                        sent += len(block)
                        if server.throttle:
                            time.sleep(server.throttle)
                if drop:
                    self._cut()

            def _cut(self) -> None:
                """Close the socket mid-body: the client sees fewer bytes than announced."""
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _error(self, code: int) -> None:
                body = f"error {code}\n".encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler


@contextlib.contextmanager
def serve_directory(directory: Path | str, **options: object) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 for the duration of the block; yield its base URL.

    ``options`` are :class:`DirectoryServer`'s (``drop_after``, ``drop_times``,
    ``ignore_range``, ``status``, ``throttle``).
    """
    with DirectoryServer(directory, **options) as server:  # type: ignore[arg-type]
        yield server.url


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports on 127.0.0.1 that nothing listens on (bound together, released).

    Also a port to connect to for "connection refused"; a server started on it must bind it
    soon (another process could take it in between).
    """
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    """One port from :func:`free_ports`."""
    return free_ports(1)[0]
