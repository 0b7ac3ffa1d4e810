"""ReplicaBackend offline: networks, canister ids, identities, the IC HTTP protocol against a
scripted local server, and how failures read. No real replica is involved."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import ecdsa
import pytest
from ecdsa.curves import Ed25519, NIST256p, SECP256k1
from icp_identity.identity import Identity
from replica_fakes import (
    FakeServer,
    Served,
    cbor,
    content_of,
    empty_certificate,
    envelope,
    query_rejection,
    query_reply,
    request_id_of,
    request_status_certificate,
)

from gpt2_chat.backends.base import Reply
from gpt2_chat.backends.replica import ReplicaBackend
from gpt2_chat.backends.replica.errors import (
    CanisterEmpty,
    CanisterNotFound,
    CanisterOutOfCycles,
    CanisterRejected,
    CanisterStopped,
    CanisterTrapped,
    MethodNotFound,
)
from gpt2_chat.canister_ids import resolve_canister_id
from gpt2_chat.errors import BackendError, InstructionLimitExceeded
from gpt2_chat.identity import IdentityError, identity_from_pem, load_identity

CANISTER_ID = "bkyz2-fmaaa-aaaaa-qaaaq-cai"
ARG = b"DIDL\x00\x01\x7e\x01"
REPLY = b"DIDL\x00\x01\x71\x02hi"


# ---------------------------------------------------------------------- networks


def test_descriptions() -> None:
    local = ReplicaBackend("local", CANISTER_ID)
    assert local.description == "local replica (http://127.0.0.1:4943, canister bkyz2-…)"
    assert local.parallel_updates is True
    assert local.principal == "2vxsx-fae"  # anonymous without an identity
    mainnet = ReplicaBackend("ic", CANISTER_ID)
    assert mainnet.description == "mainnet (https://icp-api.io, canister bkyz2-…)"
    other = ReplicaBackend("https://example.org", CANISTER_ID)
    assert other.description.startswith("replica (https://example.org")
    for backend in (local, mainnet, other):
        backend.close()


def test_rejects_a_bad_canister_id() -> None:
    with pytest.raises(BackendError, match="`gpt2_backend` is not a canister id"):
        ReplicaBackend("local", "gpt2_backend")


# ---------------------------------------------------------------------- canister ids


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_canister_id_resolution(tmp_path: Path) -> None:
    assert resolve_canister_id(CANISTER_ID, tmp_path, "local") == CANISTER_ID
    local_id, ic_id = "be2us-64aaa-aaaaa-qaabq-cai", "rrkah-fqaaa-aaaaa-aaaaq-cai"
    _write(tmp_path / ".dfx" / "local" / "canister_ids.json", {"gpt2_backend": {"local": local_id}})
    _write(tmp_path / "canister_ids.json", {"gpt2_backend": {"ic": ic_id}})
    assert resolve_canister_id(None, tmp_path, "local") == local_id
    assert resolve_canister_id("gpt2_backend", tmp_path, "ic") == ic_id


def test_canister_id_missing_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as err:
        resolve_canister_id("gpt2_backend", tmp_path, "local")
    message = str(err.value)
    assert str(tmp_path / ".dfx" / "local" / "canister_ids.json") in message
    assert str(tmp_path / "canister_ids.json") in message
    assert "dfx deploy gpt2_backend" in message
    with pytest.raises(BackendError, match=r"searched .*canister_ids.json"):
        resolve_canister_id("other", tmp_path, "ic")


def test_canister_id_file_broken(tmp_path: Path) -> None:
    path = tmp_path / ".dfx" / "local" / "canister_ids.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(BackendError, match="cannot read canister ids from"):
        resolve_canister_id("gpt2_backend", tmp_path, "local")


def test_canister_id_from_icp_cli_mapping(tmp_path: Path) -> None:
    _write(tmp_path / ".icp" / "data" / "mappings" / "ic.ids.json", {"gpt2_backend": CANISTER_ID})
    assert resolve_canister_id("gpt2_backend", tmp_path, "ic") == CANISTER_ID


# ---------------------------------------------------------------------- identities


def _pem(label: str, der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


def _self_authenticating(der_pubkey: bytes) -> bytes:
    return hashlib.sha224(der_pubkey).digest() + b"\x02"


ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def test_ed25519_pems_as_dfx_writes_them() -> None:
    key = ecdsa.SigningKey.generate(curve=Ed25519)
    seed, public = key.to_string(), key.get_verifying_key().to_string()
    expected = _self_authenticating(ED25519_SPKI_PREFIX + public)
    v1 = _pem("PRIVATE KEY", bytes.fromhex("302e020100300506032b657004220420") + seed)
    # dfx writes PKCS#8 v2, with the public key attached.
    v2 = _pem(
        "PRIVATE KEY",
        bytes.fromhex("3053020101300506032b657004220420")
        + seed
        + bytes.fromhex("a123032100")
        + public,
    )
    # Early dfx wrote version 0 with the public key attached, which strict parsers refuse.
    v0_with_key = _pem(
        "PRIVATE KEY",
        bytes.fromhex("3053020100300506032b657004220420")
        + seed
        + bytes.fromhex("a123032100")
        + public,
    )
    for pem in (v1, v2, v0_with_key):
        identity = identity_from_pem(pem)
        assert identity.key_type == "ed25519"
        assert identity.sender().bytes == expected


def test_secp256k1_and_p256_pems() -> None:
    k1 = ecdsa.SigningKey.generate(curve=SECP256k1)
    params = "-----BEGIN EC PARAMETERS-----\nBgUrgQQACg==\n-----END EC PARAMETERS-----\n"
    for pem in (k1.to_pem().decode(), params + k1.to_pem().decode()):
        identity = identity_from_pem(pem)
        assert identity.key_type == "secp256k1"
        assert identity.sender().bytes == _self_authenticating(k1.get_verifying_key().to_der())
    p256 = ecdsa.SigningKey.generate(curve=NIST256p)
    assert identity_from_pem(p256.to_pem().decode()).key_type == "p256"


def test_unusable_pems() -> None:
    with pytest.raises(IdentityError, match="not a PEM file"):
        identity_from_pem("hello")
    with pytest.raises(IdentityError, match="encrypted"):
        identity_from_pem(_pem("ENCRYPTED PRIVATE KEY", b"\x30\x00"))
    with pytest.raises(IdentityError, match="not an Ed25519, secp256k1 or P-256 private key"):
        identity_from_pem(_pem("PRIVATE KEY", b"\x30\x03\x02\x01\x00"))


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DFX_CONFIG_ROOT", raising=False)
    return home


def _dfx_identity(root: Path, name: str, pem: str | None) -> Path:
    folder = root / ".config" / "dfx" / "identity" / name
    folder.mkdir(parents=True)
    if pem is not None:
        (folder / "identity.pem").write_text(pem)
    return folder


def test_dfx_identity_names(
    fake_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ecdsa.SigningKey.generate(curve=SECP256k1)
    _dfx_identity(fake_home, "default", key.to_pem().decode())
    expected = _self_authenticating(key.get_verifying_key().to_der())
    assert load_identity("default").sender().bytes == expected
    # The same identity by path, and through the backend constructor.
    path = fake_home / ".config" / "dfx" / "identity" / "default" / "identity.pem"
    assert load_identity(str(path)).sender().bytes == expected
    backend = ReplicaBackend("local", CANISTER_ID, "default")
    assert backend.identity.sender().bytes == expected
    backend.close()
    # An Identity object passes through; anonymous and None are anonymous.
    ident = Identity()
    assert load_identity(ident) is ident
    assert load_identity("anonymous").sender().to_str() == "2vxsx-fae"
    assert load_identity(None).sender().to_str() == "2vxsx-fae"
    # DFX_CONFIG_ROOT moves the identity store, as it does for dfx.
    other = tmp_path / "dfxroot"
    _dfx_identity(other, "ci", key.to_pem().decode())
    monkeypatch.setenv("DFX_CONFIG_ROOT", str(other))
    assert load_identity("ci").sender().bytes == expected


def test_dfx_identity_problems(fake_home: Path) -> None:
    with pytest.raises(
        IdentityError,
        match=r"no dfx identity named `alice` \(looked for .*"
        r"identity/alice/identity.pem\)",
    ):
        load_identity("alice")
    folder = _dfx_identity(fake_home, "locked", None)
    (folder / "identity.pem.encrypted").write_bytes(b"\x00")
    with pytest.raises(IdentityError, match="password-protected.*dfx identity export locked"):
        load_identity("locked")
    folder = _dfx_identity(fake_home, "keyring", None)
    (folder / "identity.json").write_text('{"keyring_identity_suffix": "keyring"}')
    with pytest.raises(IdentityError, match="system keyring"):
        load_identity("keyring")
    _dfx_identity(fake_home, "junk", "not a key")
    with pytest.raises(IdentityError, match=r"dfx identity `junk` \(.*\): not a PEM file"):
        load_identity("junk")
    with pytest.raises(IdentityError, match="cannot read identity file"):
        load_identity(str(fake_home / "missing.pem"))


# ---------------------------------------------------------------------- a scripted replica


def _backend(server: FakeServer, **kw: Any) -> ReplicaBackend:
    kw.setdefault("timeout", 5.0)
    backend = ReplicaBackend(server.url, CANISTER_ID, kw.pop("identity", None), **kw)
    backend.backoff_s = 0.02  # keep retry tests fast
    return backend


def _replica(
    server: FakeServer,
    *,
    query: Any = None,
    call: Any = None,
    read_state: Any = None,
) -> None:
    """Route by endpoint kind; each handler gets the request and returns (status, body)."""

    def respond(r: Served) -> tuple[int, bytes] | None:
        handler = {"query": query, "call": call, "read_state": read_state}.get(
            r.path.rsplit("/", 1)[-1]
        )
        if handler is None:
            return 404, b"no such endpoint"
        result: tuple[int, bytes] | None = handler(r)
        return result

    server.responder = respond


def _replied(r: Served) -> tuple[int, bytes]:
    return query_reply(r, REPLY)


def test_query_returns_the_raw_reply(http_server: FakeServer) -> None:
    _replica(http_server, query=_replied)
    backend = _backend(http_server)
    reply = backend.query("model_info", ARG)
    assert reply == Reply(REPLY, None)  # raw Candid, not decoded; no instruction count
    (request,) = http_server.requests
    assert request.path == f"/api/v3/canister/{CANISTER_ID}/query"
    content = content_of(request.body)
    assert content["request_type"] == "query"
    assert content["method_name"] == "model_info" and content["arg"] == ARG
    assert content["sender"] == b"\x04"  # anonymous
    assert len(content["nonce"]) == 16
    assert content["ingress_expiry"] > time.time_ns()
    # Anonymous envelopes carry no key or signature fields at all.
    assert set(envelope(request.body)) == {"content"}
    backend.close()


def test_signed_envelopes_verify(http_server: FakeServer) -> None:
    key = ecdsa.SigningKey.generate(curve=Ed25519)
    identity = Identity(privkey=key.to_string().hex(), type="ed25519")
    _replica(http_server, query=_replied)
    backend = _backend(http_server, identity=identity)
    backend.query("model_info", ARG)
    body = http_server.requests[0].body
    env = envelope(body)
    assert env["sender_pubkey"] == ED25519_SPKI_PREFIX + key.get_verifying_key().to_string()
    message = b"\x0aic-request" + request_id_of(body)
    assert key.get_verifying_key().verify(env["sender_sig"], message)
    assert content_of(body)["sender"] == identity.sender().bytes
    backend.close()


def test_update_sync_reply(http_server: FakeServer) -> None:
    def call(r: Served) -> tuple[int, bytes]:
        cert = request_status_certificate(request_id_of(r.body), "replied", reply=REPLY)
        return 200, cbor({"status": "replied", "certificate": cert})

    _replica(http_server, call=call)
    backend = _backend(http_server)
    assert backend.update("generate", ARG) == Reply(REPLY)
    assert backend.update("generate", ARG) == Reply(REPLY)
    first, second = http_server.requests
    assert first.path == f"/api/v4/canister/{CANISTER_ID}/call"
    # Identical calls are distinct messages (fresh nonces), never deduplicated into one.
    assert request_id_of(first.body) != request_id_of(second.body)
    assert content_of(first.body)["request_type"] == "call"
    backend.close()


def test_update_accepted_then_polled(http_server: FakeServer) -> None:
    polls: list[int] = []

    def read_state(r: Served) -> tuple[int, bytes]:
        content = content_of(r.body)
        assert content["request_type"] == "read_state"
        request_id = content["paths"][0][1]
        polls.append(1)
        status = "processing" if len(polls) < 3 else "replied"
        cert = request_status_certificate(request_id, status, reply=REPLY)
        return 200, cbor({"certificate": cert})

    _replica(http_server, call=lambda r: (202, cbor({"status": "accepted"})), read_state=read_state)
    backend = _backend(http_server)
    assert backend.update("upload_chunk", ARG).data == REPLY
    assert len(polls) == 3
    assert http_server.paths()[1] == f"/api/v3/canister/{CANISTER_ID}/read_state"
    backend.close()


def test_older_replica_api_versions(http_server: FakeServer) -> None:
    """A replica without /api/v4 call or /api/v3 endpoints gets v2 (202 + empty body)."""

    def respond(r: Served) -> tuple[int, bytes]:
        if "/api/v2/" not in r.path:
            return 404, b"Not Found"
        if r.path.endswith("/call"):
            return 202, b""
        if r.path.endswith("/query"):
            return _replied(r)
        request_id = content_of(r.body)["paths"][0][1]
        return 200, cbor(
            {"certificate": request_status_certificate(request_id, "replied", reply=REPLY)}
        )

    http_server.responder = respond
    backend = _backend(http_server)
    assert backend.update("generate", ARG).data == REPLY
    assert backend.query("model_info", ARG).data == REPLY
    versions = [p.split("/")[2] for p in http_server.paths()]
    assert versions == ["v4", "v3", "v2", "v3", "v2", "v3", "v2"]
    # Remembered: the next calls go straight to v2.
    http_server.requests.clear()
    backend.update("generate", ARG)
    assert [p.split("/")[2] for p in http_server.paths()] == ["v2", "v2"]
    backend.close()


def test_update_retry_resends_the_same_message(http_server: FakeServer) -> None:
    calls: list[bytes] = []

    def call(r: Served) -> tuple[int, bytes] | None:
        calls.append(r.body)
        if len(calls) == 1:
            return None  # connection dropped before an answer
        cert = request_status_certificate(request_id_of(r.body), "replied", reply=REPLY)
        return 200, cbor({"status": "replied", "certificate": cert})

    # The replica does not know the request after the drop, so it is sent again.
    _replica(
        http_server,
        call=call,
        read_state=lambda r: (200, cbor({"certificate": empty_certificate()})),
    )
    backend = _backend(http_server)
    assert backend.update("generate", ARG).data == REPLY
    assert len(calls) == 2 and calls[0] == calls[1]  # byte-identical: same request id
    backend.close()


def test_update_retry_waits_for_a_call_that_got_through(http_server: FakeServer) -> None:
    calls: list[bytes] = []

    def call(r: Served) -> None:
        calls.append(r.body)
        return None  # the call arrives, the answer is lost

    def read_state(r: Served) -> tuple[int, bytes]:
        request_id = content_of(r.body)["paths"][0][1]
        return 200, cbor(
            {"certificate": request_status_certificate(request_id, "replied", reply=REPLY)}
        )

    _replica(http_server, call=call, read_state=read_state)
    backend = _backend(http_server)
    assert backend.update("generate", ARG).data == REPLY
    assert len(calls) == 1  # known to the replica: polled, not resent
    backend.close()


def test_parallel_updates(http_server: FakeServer) -> None:
    def call(r: Served) -> tuple[int, bytes]:
        cert = request_status_certificate(
            request_id_of(r.body), "replied", reply=content_of(r.body)["arg"]
        )
        return 200, cbor({"status": "replied", "certificate": cert})

    _replica(http_server, call=call)
    backend = _backend(http_server)
    results: dict[int, bytes] = {}

    def worker(i: int) -> None:
        results[i] = backend.update("upload_chunk", bytes([i]) * 10).data

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: bytes([i]) * 10 for i in range(6)}
    backend.close()


# ---------------------------------------------------------------------- rejections


def _rejected(code: int, message: str, error_code: str) -> Any:
    return lambda r: query_rejection(r, code, message, error_code)


# Messages as current replicas word them; codes from dfinity/ic rs/types/types/src/user_error.rs.
@pytest.mark.parametrize(
    ("code", "message", "error_code", "error_type", "expected"),
    [
        (
            3,
            "Canister bkyz2-fmaaa-aaaaa-qaaaq-cai not found",
            "IC0301",
            CanisterNotFound,
            f"canister {CANISTER_ID} does not exist on",
        ),
        (
            5,
            "Canister has no query method 'model_inf'.",
            "IC0536",
            MethodNotFound,
            f"canister {CANISTER_ID} has no method `model_info`",
        ),
        (
            5,
            "Attempted to execute a message, but the canister contains no Wasm module.",
            "IC0537",
            CanisterEmpty,
            "is empty (no wasm installed): run `dfx deploy gpt2_backend`",
        ),
        (
            2,
            "Canister bkyz2 is out of cycles: please top up the canister with at least "
            "1_000_000 additional cycles",
            "IC0207",
            CanisterOutOfCycles,
            "is out of cycles or frozen: top it up (`dfx canister deposit-cycles",
        ),
        (
            5,
            "Canister bkyz2 is stopped and therefore does not have a CallContextManager",
            "IC0508",
            CanisterStopped,
            f"is stopped or stopping: start it with `dfx canister start {CANISTER_ID}`",
        ),
        (
            5,
            "Canister bkyz2 is stopping",
            "IC0509",
            CanisterStopped,
            "is stopped or stopping",
        ),
        (
            5,
            "Error from Canister bkyz2: Canister called `ic0.trap` with message: 'boom'.\n"
            "Consider gracefully handling failures from this canister. See documentation: "
            "http://internetcomputer.org/docs/x",
            "IC0503",
            CanisterTrapped,
            "the canister trapped in `model_info`: Error from Canister bkyz2: Canister "
            "called `ic0.trap` with message: 'boom' [IC0503]",
        ),
        (
            4,
            "only controllers may upload",
            "IC0406",
            CanisterRejected,
            "the canister refused `model_info`: only controllers may upload [IC0406]",
        ),
        (
            5,
            "Canister exceeded the limit of 5000000000 instructions for single message execution.",
            "IC0522",
            InstructionLimitExceeded,
            "`model_info` exceeded the IC's per-message instruction limit",
        ),
        (
            5,
            "Query call graph exceeded the total instruction limit",
            "IC0526",
            InstructionLimitExceeded,
            "per-message instruction limit",
        ),
    ],
)
def test_query_rejections_read_clearly(
    http_server: FakeServer,
    code: int,
    message: str,
    error_code: str,
    error_type: type[BackendError],
    expected: str,
) -> None:
    _replica(http_server, query=_rejected(code, message, error_code))
    backend = _backend(http_server)
    with pytest.raises(error_type) as err:
        backend.query("model_info", ARG)
    assert expected in str(err.value)
    assert "\n" not in str(err.value) and "See documentation" not in str(err.value)
    assert len(http_server.requests) == 1  # none of these is worth a retry
    backend.close()


def test_instruction_limit_in_certificate(http_server: FakeServer) -> None:
    def call(r: Served) -> tuple[int, bytes]:
        cert = request_status_certificate(
            request_id_of(r.body),
            "rejected",
            reject_code=5,
            error_code="IC0522",
            reject_message="Canister exceeded the limit of 40000000000 instructions for "
            "single message execution.",
        )
        return 200, cbor({"status": "replied", "certificate": cert})

    _replica(http_server, call=call)
    backend = _backend(http_server)
    with pytest.raises(InstructionLimitExceeded, match="per-message instruction limit"):
        backend.update("generate", ARG)
    backend.close()


def test_non_replicated_rejection(http_server: FakeServer) -> None:
    _replica(
        http_server,
        call=lambda r: (
            200,
            cbor(
                {
                    "status": "non_replicated_rejection",
                    "reject_code": 3,
                    "reject_message": "Canister x not found",
                    "error_code": "IC0301",
                }
            ),
        ),
    )
    backend = _backend(http_server)
    with pytest.raises(BackendError, match="does not exist on .*deploy it"):
        backend.update("generate", ARG)
    backend.close()


def test_http_error_with_a_cbor_reject_body(http_server: FakeServer) -> None:
    _replica(
        http_server,
        call=lambda r: (
            400,
            cbor({"reject_code": 5, "error_code": "IC0207", "reject_message": "out of cycles"}),
        ),
    )
    backend = _backend(http_server)
    with pytest.raises(BackendError, match="is out of cycles"):
        backend.update("generate", ARG)
    backend.close()


# ---------------------------------------------------------------------- transport failures


def test_closed_port_fails_fast(closed_port: int) -> None:
    backend = ReplicaBackend(f"http://127.0.0.1:{closed_port}", CANISTER_ID, timeout=30)
    for call in (backend.query, backend.update):
        t0 = time.monotonic()
        with pytest.raises(BackendError) as err:
            call("model_info", ARG)
        assert time.monotonic() - t0 < 2  # refused is final: no retries, no waiting
        assert str(err.value).startswith(
            f"cannot reach the local replica at http://127.0.0.1:{closed_port}: is the local "
            "network running"
        )
    backend.close()


def test_closed_default_port_names_dfx_start() -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 4943)) == 0:
            pytest.skip("something listens on 127.0.0.1:4943")
    backend = ReplicaBackend("local", CANISTER_ID)
    with pytest.raises(BackendError) as err:
        backend.query("model_info", ARG)
    assert str(err.value) == (
        "cannot reach the local replica at http://127.0.0.1:4943: is `dfx start` running?"
    )
    backend.close()


def test_http_500_is_retried_then_reported(http_server: FakeServer) -> None:
    http_server.responder = lambda r: (500, b"internal error: the replica fell over\n")
    backend = _backend(http_server, retries=2)
    with pytest.raises(BackendError) as err:
        backend.query("model_info", ARG)
    assert str(err.value) == (
        f"{http_server.url} answered `model_info` with HTTP 500 Internal Server Error: "
        "internal error: the replica fell over"
    )
    assert len(http_server.requests) == 3
    backend.close()


def test_transient_503_then_success(http_server: FakeServer) -> None:
    answers = iter([(503, b"starting"), (503, b"starting")])
    http_server.responder = lambda r: next(answers, None) or _replied(r)
    backend = _backend(http_server, retries=2)
    assert backend.query("model_info", ARG).data == REPLY
    assert len(http_server.requests) == 3
    backend.close()


def test_503_reads_as_not_ready(http_server: FakeServer) -> None:
    http_server.responder = lambda r: (503, b"Replica is unhealthy: WaitingForCertifiedState")
    backend = _backend(http_server, retries=0)
    with pytest.raises(BackendError, match=r"not ready or overloaded \(HTTP 503"):
        backend.query("model_info", ARG)
    backend.close()


def test_garbage_is_not_an_ic_replica(http_server: FakeServer) -> None:
    http_server.responder = lambda r: (200, b"<html>welcome to nginx</html>")
    backend = _backend(http_server)
    for call in (backend.query, backend.update):
        with pytest.raises(BackendError) as err:
            call("model_info", ARG)
        message = str(err.value)
        assert f"{http_server.url} did not answer `model_info` like an IC replica" in message
        assert "is this the right URL?" in message
    http_server.responder = lambda r: (200, cbor([1, 2, 3]))
    with pytest.raises(BackendError, match="CBOR list where a map was expected"):
        backend.query("model_info", ARG)
    backend.close()


def test_timeout_is_honoured(http_server: FakeServer) -> None:
    def slow(r: Served) -> tuple[int, bytes]:
        http_server.release.wait(10)
        return _replied(r)

    http_server.responder = slow
    backend = _backend(http_server, timeout=0.5, retries=3)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        backend.query("model_info", ARG)
    elapsed = time.monotonic() - t0
    assert 0.4 < elapsed < 2.5  # retries share the one deadline
    assert str(err.value) == (f"{http_server.url} did not answer `model_info` within 0.5 s")
    backend.close()


def test_polling_stops_at_the_deadline(http_server: FakeServer) -> None:
    def read_state(r: Served) -> tuple[int, bytes]:
        request_id = content_of(r.body)["paths"][0][1]
        return 200, cbor({"certificate": request_status_certificate(request_id, "processing")})

    _replica(http_server, call=lambda r: (202, cbor({"status": "accepted"})), read_state=read_state)
    backend = _backend(http_server, timeout=0.8)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="did not answer `generate` within 0.8 s"):
        backend.update("generate", ARG)
    assert time.monotonic() - t0 < 2.5
    backend.close()


def test_status_endpoint(http_server: FakeServer) -> None:
    http_server.status = lambda r: (
        200,
        cbor({"impl_version": "0.9.0", "replica_health_status": "healthy"}),
    )
    backend = _backend(http_server)
    assert backend.status()["replica_health_status"] == "healthy"
    assert [r.path for r in http_server.status_requests] == ["/api/v2/status"]
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.query("model_info", ARG)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            b"error: canister_not_found\ndetails: The specified canister does not exist.",
            f"canister {CANISTER_ID} does not exist on",
        ),
        (
            400,
            b"Invalid request expiry: Specified ingress_expiry not within expected range",
            "because of its expiry time",
        ),
        (403, b"\x00\x01\xff binary", "answered `model_info` with HTTP 403 Forbidden"),
    ],
)
def test_http_errors_read_clearly(
    http_server: FakeServer, status: int, body: bytes, expected: str
) -> None:
    http_server.responder = lambda r: (status, body)
    backend = _backend(http_server, retries=0)
    with pytest.raises(BackendError) as err:
        backend.query("model_info", ARG)
    assert expected in str(err.value) and "\n" not in str(err.value)
    backend.close()
