"""Fixtures for the replica suites: fake `dfx`/`icp` executables and tiny HTTP servers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# ---------------------------------------------------------------------- fake tools

FAKE_DFX = r"""#!/bin/sh
echo "dfx|$(pwd)|$*" >> "$FAKE_TOOL_LOG"
case "$1" in
  --version) echo "dfx 0.29.2" ;;
  start)
    echo "Running dfx start for version 0.29.2"
    if [ -n "$FAKE_START_SLEEP" ]; then
      /bin/sleep "$FAKE_START_SLEEP" &
      echo $! > "$FAKE_PIDFILE"
      wait
    fi
    if [ -n "$FAKE_BACKGROUND" ]; then
      # Like `dfx start --background`: leave a process running that holds our stdout.
      /bin/sleep 30 &
      echo $! > "$FAKE_PIDFILE"
    fi
    echo "Replica API running on 127.0.0.1:4943"
    exit ${FAKE_START_EXIT:-0} ;;
  stop) echo "Using the shared local network"; echo "Stopping dfx..." ;;
  ping) echo '{ "replica_health_status": "healthy" }' ;;
  deploy)
    echo "Deploying: $2"
    /bin/mkdir -p .dfx/local
    printf '{"%s":{"local":"bkyz2-fmaaa-aaaaa-qaaaq-cai"}}' "$2" > .dfx/local/canister_ids.json
    echo "Deployed canisters." ;;
  *) echo "error: unexpected argument '$1'" >&2; exit 2 ;;
esac
"""

FAKE_ICP = r"""#!/bin/sh
echo "icp|$(pwd)|$*" >> "$FAKE_TOOL_LOG"
case "$1" in
  --version) echo "icp 0.2.2" ;;
  network) echo "network $2 ok" ;;
  deploy) echo "deployed $2" ;;
  *) echo "error: unexpected argument '$1'" >&2; exit 2 ;;
esac
"""

BROKEN_VERSION = """#!/bin/sh
echo "it broke" >&2
exit 3
"""


@dataclass
class FakeTools:
    bin: Path
    log_file: Path
    pidfile: Path

    def install(self, name: str, script: str) -> Path:
        path = self.bin / name
        path.write_text(script)
        path.chmod(0o755)
        return path

    def calls(self) -> list[tuple[str, str, str]]:
        """(tool, cwd, arguments) per invocation, in order."""
        if not self.log_file.exists():
            return []
        return [
            tuple(line.split("|", 2))  # type: ignore[misc]
            for line in self.log_file.read_text().splitlines()
        ]


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    """An empty bin dir that is the whole PATH (so real tools never interfere)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = FakeTools(bin_dir, tmp_path / "tool-calls.log", tmp_path / "child.pid")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_TOOL_LOG", str(tools.log_file))
    monkeypatch.setenv("FAKE_PIDFILE", str(tools.pidfile))
    for var in ("FAKE_START_SLEEP", "FAKE_BACKGROUND", "FAKE_START_EXIT"):
        monkeypatch.delenv(var, raising=False)
    return tools


# ---------------------------------------------------------------------- HTTP servers


@dataclass
class Served:
    """One request a test server saw."""

    method: str
    path: str
    body: bytes


# A responder gets the request and returns (status, body), or None to drop the connection.
Responder = Callable[[Served], "tuple[int, bytes] | None"]


@dataclass
class TestServer:
    url: str
    requests: list[Served] = field(default_factory=list)
    responder: Responder = lambda r: (200, b"")
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def http_server() -> Iterator[TestServer]:
    """A local HTTP server on a random port whose answers a test scripts via `responder`."""
    state = TestServer(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            served = Served(self.command, self.path, body)
            with lock:
                state.requests.append(served)
            answer = state.responder(served)
            if answer is None:
                self.close_connection = True
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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()  # wake handlers that wait (timeout tests)
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
