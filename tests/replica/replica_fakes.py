"""Test doubles for the replica suites: fake `dfx`/`icp` scripts, a scriptable HTTP server,
and the CBOR an IC replica answers with: hash-tree certificates signed with a BLS key made
for the tests (`ROOT`), served as the network's root key from /api/v2/status.

Where the answers come from (dfinity/ic, rs/http_endpoints/public/src/):
* `call/call_sync.rs` (v3/v4 sync call): 200 + CBOR {status: "replied", certificate} whose
  tree holds `time` and request_status/<id>; 202 + a plain-text reason when certification
  takes longer than `ingress_message_certificate_timeout_seconds` or the message cannot be
  tracked; v2 `call` (call_async.rs): 202 with an empty body.
* `read_state/canister.rs`: 200 + CBOR {certificate}.
* `query.rs`: 200 + CBOR {status: "replied", reply: {arg}} or {status: "rejected",
  reject_code, reject_message, error_code}.
* A submission the replica refuses before consensus: CBOR {status:
  "non_replicated_rejection", reject_code, reject_message, error_code}.
Reject codes and `IC<nnnn>` error codes: dfinity/ic rs/types/types/src/user_error.rs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from icp_agent.agent import to_request_id
from nacl.signing import SigningKey
from py_arkworks_bls12381 import G1Point, G2Point, Scalar

from gpt2_chat.backends.replica.certificate import BLS_DST, BLS_KEY_DER_PREFIX, root_hash
from gpt2_chat.backends.replica.query_signatures import (
    ED25519_DER_PREFIX,
    RESPONSE_DOMAIN,
    self_authenticating,
)

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


def _healthy_status(_: Served) -> tuple[int, bytes] | None:
    return 200, cbor({"replica_health_status": "healthy", "root_key": ROOT.public_der})


def _subnet_state(_: Served) -> tuple[int, bytes] | None:
    return 200, cbor({"certificate": subnet_certificate()})


@dataclass
class FakeServer:
    url: str
    #: Every request but GET /api/v2/status, which `status` answers (and `status_requests`
    #: records): the backend reads the root key from there before verifying a certificate.
    requests: list[Served] = field(default_factory=list)
    responder: Responder = _ok_empty
    status: Responder = _healthy_status
    status_requests: list[Served] = field(default_factory=list)
    #: read_state requests for /subnet (the node keys that sign query replies): answered by
    #: `subnet`, recorded in `subnet_requests`, not in `requests`.
    subnet: Responder = _subnet_state
    subnet_requests: list[Served] = field(default_factory=list)
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


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class FakeKey:
    """A BLS12-381 key pair signing certificates as a subnet does (min-sig, G1 signatures)."""

    def __init__(self, secret: int) -> None:
        self._secret = Scalar(secret)
        self.public_der = BLS_KEY_DER_PREFIX + bytes(
            (G2Point() * self._secret).to_compressed_bytes()
        )

    def sign(self, tree: list[Any]) -> bytes:
        message = b"\x0dic-state-root" + root_hash(tree)
        return bytes((G1Point.hash_to_curve(message, BLS_DST) * self._secret).to_compressed_bytes())

    def certificate(
        self,
        tree: list[Any],
        *,
        time_ns: int | None = None,
        delegation: dict[str, bytes] | None = None,
    ) -> bytes:
        """`tree` with `/time` added, signed; `delegation` as `delegation()` makes it."""
        now = time.time_ns() if time_ns is None else time_ns
        full = fork(tree, labeled(b"time", leaf(leb128(now))))
        fields: dict[str, Any] = {"tree": full, "signature": self.sign(full)}
        if delegation is not None:
            fields["delegation"] = delegation
        return cbor(fields)

    def delegation(
        self,
        root: FakeKey,
        subnet_id: bytes,
        ranges: list[tuple[bytes, bytes]],
        *,
        sharded: bool = False,
    ) -> dict[str, bytes]:
        """A delegation from `root` to this key for `ranges`: flat
        (/subnet/<id>/canister_ranges) or sharded (/canister_ranges/<id>/<lowest id>) as
        the v4 endpoints send it (dfinity/ic rs/http_endpoints/nns_delegation_manager)."""
        encoded = cbor([list(r) for r in ranges])
        subnet = labeled(b"public_key", leaf(self.public_der))
        if sharded:
            tree = fork(
                labeled(
                    b"canister_ranges", labeled(subnet_id, labeled(ranges[0][0], leaf(encoded)))
                ),
                labeled(b"subnet", labeled(subnet_id, subnet)),
            )
        else:
            subnet = fork(labeled(b"canister_ranges", leaf(encoded)), subnet)
            tree = labeled(b"subnet", labeled(subnet_id, subnet))
        return {"subnet_id": subnet_id, "certificate": root.certificate(tree)}


#: The fake network's root key: every fake certificate is signed with it by default.
ROOT = FakeKey(0x5EED)


class FakeNode:
    """A replica node: its Ed25519 key signs query replies (interface spec, "Query call")."""

    def __init__(self, seed: int) -> None:
        self._key = SigningKey(seed.to_bytes(32, "big"))
        self.public_der = ED25519_DER_PREFIX + bytes(self._key.verify_key)
        self.id = self_authenticating(self.public_der)

    def sign_reply(
        self, request_id: bytes, fields: dict[str, Any], time_ns: int | None = None
    ) -> dict[str, Any]:
        """`fields` (status and reply or rejection) with this node's signature added."""
        timestamp = time.time_ns() if time_ns is None else time_ns
        hashed = to_request_id({**fields, "timestamp": timestamp, "request_id": request_id})
        signature = self._key.sign(RESPONSE_DOMAIN + bytes(hashed)).signature
        return {
            **fields,
            "signatures": [{"timestamp": timestamp, "signature": signature, "identity": self.id}],
        }


#: The fake network's one node; its subnet is the root subnet (no delegation), as on a
#: local replica: the subnet id is the root key's self-authenticating principal.
NODE = FakeNode(7)
ROOT_SUBNET_ID = self_authenticating(ROOT.public_der)
ALL_CANISTERS = (b"\x00" * 10, b"\xff" * 10)


def subnet_certificate(
    nodes: tuple[FakeNode, ...] = (NODE,),
    ranges: tuple[tuple[bytes, bytes], ...] = (ALL_CANISTERS,),
) -> bytes:
    """The root-signed /subnet subtree of the root subnet: its canister ranges and node keys."""
    node_entries = [labeled(n.id, labeled(b"public_key", leaf(n.public_der))) for n in nodes]
    node_tree = node_entries[0]
    for entry in node_entries[1:]:
        node_tree = fork(node_tree, entry)
    subnet = fork(
        labeled(b"canister_ranges", leaf(cbor([list(r) for r in ranges]))),
        labeled(b"node", node_tree),
    )
    return ROOT.certificate(labeled(b"subnet", labeled(ROOT_SUBNET_ID, subnet)))


def query_reply(r: Served, reply: bytes, node: FakeNode = NODE) -> tuple[int, bytes]:
    """A signed `replied` answer to the query in `r`."""
    fields = {"status": "replied", "reply": {"arg": reply}}
    return 200, cbor(node.sign_reply(request_id_of(r.body), fields))


def query_rejection(
    r: Served, code: int, message: str, error_code: str, node: FakeNode = NODE
) -> tuple[int, bytes]:
    """A signed `rejected` answer to the query in `r`."""
    fields = {
        "status": "rejected",
        "reject_code": code,
        "reject_message": message,
        "error_code": error_code,
    }
    return 200, cbor(node.sign_reply(request_id_of(r.body), fields))


def is_subnet_read_state(r: Served) -> bool:
    return r.path.endswith("/read_state") and content_of(r.body).get("paths") == [[b"subnet"]]


def request_status_tree(request_id: bytes, status: str, **fields: Any) -> list[Any]:
    """request_status/<id>/{status, …}, as the replica certifies it."""
    entries = [labeled(b"status", leaf(status.encode()))]
    for name, value in fields.items():
        if isinstance(value, int):
            value = leb128(value)
        elif isinstance(value, str):
            value = value.encode()
        entries.append(labeled(name.encode(), leaf(value)))
    node = entries[0]
    for entry in entries[1:]:
        node = fork(node, entry)
    return labeled(b"request_status", labeled(request_id, node))


def request_status_certificate(request_id: bytes, status: str, **fields: Any) -> bytes:
    """A certificate signed by ROOT holding request_status/<id>/{status, …}."""
    return ROOT.certificate(request_status_tree(request_id, status, **fields))


def empty_certificate() -> bytes:
    """A read_state answer for a request the replica does not know: only `/time`."""
    return ROOT.certificate([0])


def envelope(body: bytes) -> dict[str, Any]:
    decoded = cbor2.loads(body)
    return {str(k): v for k, v in decoded.items()}


def content_of(body: bytes) -> dict[str, Any]:
    return {str(k): v for k, v in envelope(body)["content"].items()}


def request_id_of(body: bytes) -> bytes:
    return bytes(to_request_id(content_of(body)))


def cbor(value: Any) -> bytes:
    return bytes(cbor2.dumps(value))
