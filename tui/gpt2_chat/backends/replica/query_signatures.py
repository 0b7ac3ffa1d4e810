"""Query replies, verified: a query is answered by one node, which signs its reply.

As the interface specification ("Query call", "Node signatures") defines it and agent-js
implements it (dfinity/agent-js packages/agent/src/agent/http/index.ts
`#verifyQueryResponse`, packages/agent/src/canisterStatus/index.ts `fetchNodeKeys`):

* each entry of the reply's `signatures` is an Ed25519 signature by node `identity` over
  `\\x0bic-response` ‖ the representation-independent hash of {status, reply (or
  reject_code, reject_message, error_code), timestamp, request_id};
* the node keys come from a certified read_state of `/subnet`: the subnet is the one the
  certificate's delegation names, or, without one, the root subnet, whose id is the
  self-authenticating principal of the root key; the canister must be in its ranges;
  `/subnet/<id>/node/<node id>/public_key` holds each node's DER-encoded key;
* a signature's timestamp must be within MAX_CLOCK_SKEW_S of this computer's clock.

A reply without signatures is refused: every current replica signs its query replies.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from icp_agent.agent import to_request_id
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from gpt2_chat.backends.replica.certificate import (
    MAX_CLOCK_SKEW_S,
    VerifiedCertificate,
    in_canister_ranges,
    labeled_children,
    lookup,
)
from gpt2_chat.backends.replica.errors import CertificateInvalid

ED25519_DER_PREFIX = bytes.fromhex("302a300506032b6570032100")
RESPONSE_DOMAIN = b"\x0bic-response"

#: The read_state path whose certificate holds the subnet's node keys.
SUBNET_PATH = [b"subnet"]


def self_authenticating(der_key: bytes) -> bytes:
    """The principal of a DER-encoded public key (interface spec, "Principals")."""
    return hashlib.sha224(der_key).digest() + b"\x02"


def node_keys(
    certificate: VerifiedCertificate, root_key_der: bytes, canister_id: bytes
) -> dict[bytes, bytes]:
    """Node id -> raw Ed25519 key of the canister's subnet, from a verified certificate of
    SUBNET_PATH."""
    subnet_id = certificate.subnet_id or self_authenticating(root_key_der)
    if certificate.subnet_id is None and not in_canister_ranges(
        certificate.tree, subnet_id, canister_id
    ):
        raise CertificateInvalid("the canister is not in the root subnet's canister ranges")
    keys: dict[bytes, bytes] = {}
    for node_id, node in labeled_children(certificate.tree, [b"subnet", subnet_id, b"node"]):
        der = lookup(node, [b"public_key"])
        if der is None or len(der) != 44 or not der.startswith(ED25519_DER_PREFIX):
            raise CertificateInvalid("a node key that is not a DER-encoded Ed25519 key")
        keys[node_id] = der[len(ED25519_DER_PREFIX) :]
    if not keys:
        raise CertificateInvalid("a subnet certificate without node keys")
    return keys


def verify_query_reply(
    response: Mapping[Any, Any],
    request_id: bytes,
    keys: dict[bytes, bytes],
    now_ns: int | None = None,
) -> None:
    """Raises CertificateInvalid unless every signature on the reply is a known node's."""
    signatures = response.get("signatures")
    if not isinstance(signatures, list | tuple) or not signatures:
        raise CertificateInvalid("a query reply without node signatures")
    now = time.time_ns() if now_ns is None else now_ns
    for entry in signatures:
        if not isinstance(entry, Mapping):
            raise CertificateInvalid("a malformed query signature")
        timestamp, signature, node = (entry.get(k) for k in ("timestamp", "signature", "identity"))
        if not (
            isinstance(timestamp, int)
            and isinstance(signature, bytes | bytearray)
            and isinstance(node, bytes | bytearray)
        ):
            raise CertificateInvalid("a malformed query signature")
        key = keys.get(bytes(node))
        if key is None:
            raise CertificateInvalid("a query reply signed by a node not in the subnet")
        message = RESPONSE_DOMAIN + _reply_hash(response, timestamp, request_id)
        try:
            VerifyKey(key).verify(message, bytes(signature))
        except (BadSignatureError, ValueError) as e:
            raise CertificateInvalid("a query reply whose node signature does not verify") from e
        if abs(timestamp - now) > MAX_CLOCK_SKEW_S * 10**9:
            raise CertificateInvalid(
                "a query reply signed more than 5 minutes away from this computer's clock"
            )


def _reply_hash(response: Mapping[Any, Any], timestamp: int, request_id: bytes) -> bytes:
    status = response.get("status")
    fields: dict[str, Any] = {"status": status, "timestamp": timestamp, "request_id": request_id}
    if status == "replied":
        reply = response.get("reply")
        if not isinstance(reply, Mapping):
            raise CertificateInvalid("a query reply without its reply")
        fields["reply"] = {str(k): v for k, v in reply.items()}
    else:
        for name in ("reject_code", "reject_message", "error_code"):
            if name in response:
                fields[name] = response[name]
    return bytes(to_request_id(fields))
