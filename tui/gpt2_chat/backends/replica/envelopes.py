"""The messages sent to a replica: request contents, signed CBOR envelopes, request ids
(IC interface specification, "Authentication" and "Request ids")."""

from __future__ import annotations

import os
import time
from typing import Any

import cbor2
from icp_agent.agent import sign_request, to_request_id
from icp_identity.identity import Identity

#: The IC accepts ingress_expiry up to 5 minutes ahead; stay well inside it.
INGRESS_EXPIRY_S = 4 * 60


def expiry_ns() -> int:
    return time.time_ns() + INGRESS_EXPIRY_S * 1_000_000_000


def call_content(
    identity: Identity, canister_id: bytes, request_type: str, method: str, arg: bytes
) -> dict[str, Any]:
    """A `call` or `query` request's content."""
    return {
        "request_type": request_type,
        "sender": identity.sender().bytes,
        "canister_id": canister_id,
        "method_name": method,
        "arg": bytes(arg),
        "ingress_expiry": expiry_ns(),
        # A fresh nonce makes every call its own message: the IC deduplicates messages
        # with equal request ids, which would merge two identical generate calls.
        "nonce": os.urandom(16),
    }


def signed(identity: Identity, content: dict[str, Any]) -> tuple[bytes, bytes]:
    """The CBOR envelope of `content` and its request id."""
    if getattr(identity, "anonymous", False):
        # icp-py-core would send null sender_pubkey/sender_sig; the spec says omit them.
        return cbor2.dumps({"content": content}), bytes(to_request_id(content))
    request_id, envelope = sign_request(content, identity)
    return bytes(envelope), bytes(request_id)


def read_state_envelope(identity: Identity, path: list[bytes]) -> bytes:
    """A read_state envelope asking for one path of the state tree."""
    content = {
        "request_type": "read_state",
        "sender": identity.sender().bytes,
        "paths": [path],
        "ingress_expiry": expiry_ns(),
    }
    return signed(identity, content)[0]
