"""Query replies are checked against the node signatures a replica puts on them, with the
subnet's node keys from a certified read_state of /subnet (query_signatures.py)."""

from __future__ import annotations

import time
from typing import Any

import cbor2
import pytest
from icp_principal.principal import Principal
from replica_fakes import (
    NODE,
    ROOT,
    FakeKey,
    FakeNode,
    FakeServer,
    Served,
    cbor,
    fork,
    labeled,
    leaf,
    query_reply,
    request_id_of,
    subnet_certificate,
)

from gpt2_chat.backends.replica import ReplicaBackend
from gpt2_chat.backends.replica.certificate import verify_certificate
from gpt2_chat.backends.replica.errors import CertificateInvalid
from gpt2_chat.backends.replica.query_signatures import node_keys

CANISTER_ID = "bkyz2-fmaaa-aaaaa-qaaaq-cai"
CANISTER = Principal.from_str(CANISTER_ID).bytes
ARG = b"DIDL\x00\x01\x7e\x01"
REPLY = b"DIDL\x00\x01\x71\x02hi"


def _backend(server: FakeServer) -> ReplicaBackend:
    backend = ReplicaBackend(server.url, CANISTER_ID, timeout=10, retries=0)
    backend.backoff_s = 0.01
    return backend


def _query_fails(server: FakeServer, match: str) -> None:
    backend = _backend(server)
    with pytest.raises(CertificateInvalid) as err:
        backend.query("model_info", ARG)
    assert str(err.value).startswith(
        f"the certificate {server.url} sent for `model_info` failed verification: "
    )
    assert match in str(err.value)
    backend.close()


def test_signed_replies_verify_and_the_node_keys_are_fetched_once(
    http_server: FakeServer,
) -> None:
    http_server.responder = lambda r: query_reply(r, REPLY)
    backend = _backend(http_server)
    assert backend.query("model_info", ARG).data == REPLY
    assert backend.query("model_info", ARG).data == REPLY
    assert len(http_server.subnet_requests) == 1
    (keys_request,) = http_server.subnet_requests
    assert keys_request.path == f"/api/v3/canister/{CANISTER_ID}/read_state"
    backend.close()


def test_a_reply_signed_by_a_stranger_is_refused_after_a_fresh_look(
    http_server: FakeServer,
) -> None:
    http_server.responder = lambda r: query_reply(r, REPLY, node=FakeNode(99))
    _query_fails(http_server, "a query reply signed by a node not in the subnet")
    assert len(http_server.subnet_requests) == 2  # the keys were fetched again once


def test_a_node_that_joined_the_subnet_is_found_with_fresh_keys(http_server: FakeServer) -> None:
    newcomer = FakeNode(42)
    subnets = iter([subnet_certificate((NODE,)), subnet_certificate((NODE, newcomer))])
    http_server.subnet = lambda r: (200, cbor({"certificate": next(subnets)}))
    http_server.responder = lambda r: query_reply(r, REPLY, node=newcomer)
    backend = _backend(http_server)
    assert backend.query("model_info", ARG).data == REPLY
    backend.close()


def _tampered(r: Served) -> tuple[int, bytes]:
    _, body = query_reply(r, b"DIDL\x00\x01\x71\x06honest")
    answer = {str(k): v for k, v in cbor2.loads(body).items()}
    answer["reply"] = {"arg": b"DIDL\x00\x01\x71\x06forged"}
    return 200, cbor(answer)


def test_a_changed_reply_is_refused(http_server: FakeServer) -> None:
    http_server.responder = _tampered
    _query_fails(http_server, "a query reply whose node signature does not verify")


def test_a_reply_for_another_request_is_refused(http_server: FakeServer) -> None:
    """A signature binds the reply to its request id: a replayed answer does not verify."""
    recorded: list[tuple[int, bytes]] = []

    def replay(r: Served) -> tuple[int, bytes]:
        if not recorded:
            recorded.append(query_reply(r, REPLY))
        return recorded[0]

    http_server.responder = replay
    backend = _backend(http_server)
    assert backend.query("model_info", ARG).data == REPLY
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        backend.query("model_info", ARG)
    backend.close()


def test_an_unsigned_reply_is_refused(http_server: FakeServer) -> None:
    http_server.responder = lambda r: (200, cbor({"status": "replied", "reply": {"arg": REPLY}}))
    _query_fails(http_server, "a query reply without node signatures")


def test_a_stale_signature_is_refused(http_server: FakeServer) -> None:
    def stale(r: Served) -> tuple[int, bytes]:
        fields = {"status": "replied", "reply": {"arg": REPLY}}
        signed = NODE.sign_reply(request_id_of(r.body), fields, time.time_ns() - 10 * 60 * 10**9)
        return 200, cbor(signed)

    http_server.responder = stale
    _query_fails(http_server, "signed more than 5 minutes away from this computer's clock")


def test_node_keys_signed_by_another_root_are_refused(http_server: FakeServer) -> None:
    impostor = FakeKey(0xBAD)
    tree = cbor2.loads(subnet_certificate())["tree"][1]  # the /subnet subtree, re-signed
    http_server.subnet = lambda r: (200, cbor({"certificate": impostor.certificate(tree)}))
    http_server.responder = lambda r: query_reply(r, REPLY)
    _query_fails(http_server, "the certificate's signature (the root key) does not verify")


def test_node_keys_of_a_subnet_without_the_canister_are_refused(http_server: FakeServer) -> None:
    elsewhere = (b"\x00" * 9 + b"\x01", b"\x00" * 9 + b"\x02")
    certificate = subnet_certificate(ranges=(elsewhere,))
    http_server.subnet = lambda r: (200, cbor({"certificate": certificate}))
    http_server.responder = lambda r: query_reply(r, REPLY)
    _query_fails(http_server, "the canister is not in the root subnet's canister ranges")


def test_a_delegated_subnet_s_node_keys_are_read_under_its_id() -> None:
    subnet_key, subnet_id = FakeKey(0xC0FFEE), b"\x09" * 29
    delegation = subnet_key.delegation(ROOT, subnet_id, [(CANISTER, CANISTER)])
    nodes: Any = labeled(NODE.id, labeled(b"public_key", leaf(NODE.public_der)))
    tree = labeled(b"subnet", labeled(subnet_id, fork(labeled(b"node", nodes), [0])))
    raw = subnet_key.certificate(tree, delegation=delegation)
    certificate = verify_certificate(raw, ROOT.public_der, CANISTER)
    assert certificate.subnet_id == subnet_id
    assert node_keys(certificate, ROOT.public_der, CANISTER) == {NODE.id: NODE.public_der[-32:]}
