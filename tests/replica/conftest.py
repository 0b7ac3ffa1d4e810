"""Fixtures for the replica suites: fake `dfx`/`icp` on PATH and a local HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from replica_fakes import FakeServer, FakeTools, Served, is_subnet_read_state


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    """An empty bin dir that is the whole PATH, so real tools never interfere; tests
    install the fakes they need (scripts use absolute paths for everything else)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = FakeTools(bin_dir, tmp_path / "tool-calls.log", tmp_path / "child.pid")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_TOOL_LOG", str(tools.log_file))
    monkeypatch.setenv("FAKE_PIDFILE", str(tools.pidfile))
    for var in ("FAKE_START_SLEEP", "FAKE_BACKGROUND", "FAKE_START_EXIT"):
        monkeypatch.delenv(var, raising=False)
    return tools


@pytest.fixture
def http_server() -> Iterator[FakeServer]:
    """A local HTTP server on a random port; the test scripts its answers (`responder`)."""
    state = FakeServer(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            served = Served(self.command, self.path, body)
            if (self.command, self.path) == ("GET", "/api/v2/status"):
                log, respond = state.status_requests, state.status
            elif is_subnet_read_state(served):
                log, respond = state.subnet_requests, state.subnet
            else:
                log, respond = state.requests, state.responder
            with lock:
                log.append(served)
            answer = respond(served)
            if answer is None:
                self.close_connection = True  # hang up without an answer
                return
            status, payload = answer
            self.send_response(status)
            self.send_header("Content-Type", "application/cbor")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
