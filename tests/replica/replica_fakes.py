"""Test doubles for the replica suites: fake `dfx`/`icp` scripts, a scriptable HTTP server,
and the CBOR an IC replica answers with (hash-tree certificates without signatures)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from icp_agent.agent import to_request_id

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

    def calls(self) -> list[list[str]]:
        """[tool, cwd, arguments] per invocation, in order."""
        if not self.log_file.exists():
            return []
        return [line.split("|", 2) for line in self.log_file.read_text().splitlines()]


# ---------------------------------------------------------------------- HTTP server


@dataclass
class Served:
    """One request the test server saw."""

    method: str
    path: str
    body: bytes


#: Gets a request, returns (status, body), or None to drop the connection unanswered.
Responder = Callable[[Served], "tuple[int, bytes] | None"]


def _ok_empty(_: Served) -> tuple[int, bytes] | None:
    return 200, b""


@dataclass
class FakeServer:
    url: str
    requests: list[Served] = field(default_factory=list)
    responder: Responder = _ok_empty
    #: Set when the test ends: handlers that wait on it (timeout tests) finish.
    release: threading.Event = field(default_factory=threading.Event)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


# ---------------------------------------------------------------------- IC answers


def leaf(value: bytes) -> list[Any]:
    return [3, value]


def labeled(label: bytes, tree: list[Any]) -> list[Any]:
    return [2, label, tree]


def fork(left: list[Any], right: list[Any]) -> list[Any]:
    return [1, left, right]


def request_status_certificate(request_id: bytes, status: str, **fields: Any) -> bytes:
    """A certificate (unsigned) whose tree holds request_status/<id>/{status, …}."""
    entries = [labeled(b"status", leaf(status.encode()))]
    for name, value in fields.items():
        if isinstance(value, int):
            value = bytes([value])  # LEB128 for values < 128
        elif isinstance(value, str):
            value = value.encode()
        entries.append(labeled(name.encode(), leaf(value)))
    node = entries[0]
    for entry in entries[1:]:
        node = fork(node, entry)
    tree = labeled(b"request_status", labeled(request_id, node))
    return bytes(cbor2.dumps({"tree": tree, "signature": b"\x00" * 48}))


def empty_certificate() -> bytes:
    return bytes(cbor2.dumps({"tree": labeled(b"time", leaf(b"\x01")), "signature": b""}))


def envelope(body: bytes) -> dict[str, Any]:
    decoded = cbor2.loads(body)
    return {str(k): v for k, v in decoded.items()}


def content_of(body: bytes) -> dict[str, Any]:
    return {str(k): v for k, v in envelope(body)["content"].items()}


def request_id_of(body: bytes) -> bytes:
    return bytes(to_request_id(content_of(body)))


def cbor(value: Any) -> bytes:
    return bytes(cbor2.dumps(value))
