"""ReplicaBackend's call flow against servers that behave as a real replica does when a call
is slow (202 with a text reason, then read_state), and as broken or hostile servers do (a
reply dripped a byte at a time, no reply at all): one deadline per call, whatever happens."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from icp_principal.principal import Principal
from replica_fakes import (
    ROOT,
    FakeKey,
    FakeServer,
    Served,
    cbor,
    content_of,
    empty_certificate,
    query_rejection,
    query_reply,
    request_id_of,
    request_status_certificate,
    request_status_tree,
)

from gpt2_chat.backends.replica import ReplicaBackend, envelopes
from gpt2_chat.backends.replica.certificate import MAINNET_ROOT_KEY
from gpt2_chat.backends.replica.errors import (
    CertificateInvalid,
    NotAReplica,
    ReplicaBusy,
    RequestExpired,
)
from gpt2_chat.backends.replica.transport import Deadline
from gpt2_chat.errors import BackendError

CANISTER_ID = "bkyz2-fmaaa-aaaaa-qaaaq-cai"
ARG = b"DIDL\x00\x01\x7e\x01"
REPLY = b"DIDL\x00\x01\x71\x02hi"

#: dfinity/ic rs/http_endpoints/public/src/call/call_sync.rs: the 202 bodies of the sync
#: call endpoint (certification timeout; the same message sent again while it runs; message
#: not trackable; no certified state yet).
ACCEPTED_REASONS = [
    b"Message did not complete execution and certification within the replica defined timeout.",
    b"Duplicate request. Message is already being tracked and executed.",
    b"Could not track the ingress message. Please try /read_state for the status.",
    b"Certified state is not available. Please try /read_state.",
]


def _route(server: FakeServer, **handlers: Callable[[Served], tuple[int, bytes] | None]) -> None:
    def respond(r: Served) -> tuple[int, bytes] | None:
        handler = handlers.get(r.path.rsplit("/", 1)[-1])
        return (404, b"no such endpoint") if handler is None else handler(r)

    server.responder = respond


def _backend(server: FakeServer, **kwargs: float) -> ReplicaBackend:
    backend = ReplicaBackend(server.url, CANISTER_ID, timeout=kwargs.pop("timeout", 10), **kwargs)  # type: ignore[arg-type]
    backend.backoff_s = 0.01
    return backend


# ---------------------------------------------------------------------- long calls


@pytest.mark.parametrize("reason", ACCEPTED_REASONS)
def test_a_202_with_a_text_reason_is_polled(http_server: FakeServer, reason: bytes) -> None:
    """The sync call gives up waiting after ingress_message_certificate_timeout_seconds and
    answers 202 + text; the call goes on in the canister and its reply must be fetched."""
    polls: list[bytes] = []

    def read_state(r: Served) -> tuple[int, bytes]:
        request_id = content_of(r.body)["paths"][0][1]
        polls.append(request_id)
        status = "processing" if len(polls) < 2 else "replied"
        return 200, cbor(
            {"certificate": request_status_certificate(request_id, status, reply=REPLY)}
        )

    call_ids: list[bytes] = []

    def call(r: Served) -> tuple[int, bytes]:
        call_ids.append(request_id_of(r.body))
        return 202, reason

    _route(http_server, call=call, read_state=read_state)
    backend = _backend(http_server)
    assert backend.update("generate", ARG).data == REPLY
    assert len(call_ids) == 1  # not resent
    assert polls == [call_ids[0]] * 2  # the same request id, until it replied
    backend.close()


def test_a_resent_call_the_replica_is_running_is_polled(http_server: FakeServer) -> None:
    """The connection drops after the call arrived; the same envelope sent again gets the
    duplicate-request 202 and the reply comes from read_state."""
    calls: list[bytes] = []

    def call(r: Served) -> tuple[int, bytes] | None:
        calls.append(r.body)
        return None if len(calls) == 1 else (202, ACCEPTED_REASONS[1])

    def read_state(r: Served) -> tuple[int, bytes]:
        if len(calls) < 2:  # asked before the resend: not known yet
            return 200, cbor({"certificate": empty_certificate()})
        rid = content_of(r.body)["paths"][0][1]
        return 200, cbor({"certificate": request_status_certificate(rid, "replied", reply=REPLY)})

    _route(http_server, call=call, read_state=read_state)
    backend = _backend(http_server)
    assert backend.update("generate", ARG).data == REPLY
    assert len(calls) == 2 and calls[0] == calls[1]
    backend.close()


def test_a_long_call_that_is_rejected_reports_the_rejection(http_server: FakeServer) -> None:
    def read_state(r: Served) -> tuple[int, bytes]:
        request_id = content_of(r.body)["paths"][0][1]
        cert = request_status_certificate(
            request_id,
            "rejected",
            reject_code=5,
            error_code="IC0503",
            reject_message="Error from Canister bkyz2: Canister called `ic0.trap` with "
            "message: 'session 3 is at position 12, not 10'",
        )
        return 200, cbor({"certificate": cert})

    _route(http_server, call=lambda r: (202, ACCEPTED_REASONS[0]), read_state=read_state)
    backend = _backend(http_server)
    with pytest.raises(BackendError, match="trapped in `generate`: .*not 10' \\[IC0503\\]"):
        backend.update("generate", ARG)
    backend.close()


# ---------------------------------------------------------------------- one deadline


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection `handle` serves; stops at teardown."""

    def __init__(self, handle: Callable[[socket.socket, threading.Event], None]) -> None:
        self.stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._handle = handle
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                _read_request(conn)
                self._handle(conn, self.stop)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self._thread.join(2)
        self._listener.close()


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)


def _drip(data: bytes, every_s: float, stop: threading.Event, conn: socket.socket) -> None:
    for i in range(len(data)):
        if stop.wait(every_s):
            return
        conn.sendall(data[i : i + 1])


def _drip_body(conn: socket.socket, stop: threading.Event) -> None:
    """200 with a 100,000-byte body, then one byte every 0.2 s (40 bytes at most: bounded)."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/cbor\r\nContent-Length: 100000\r\n\r\n"
    )
    _drip(b"\xa1" * 40, 0.2, stop, conn)


def _drip_headers(conn: socket.socket, stop: threading.Event) -> None:
    """The status line and headers themselves, a byte every 0.2 s."""
    _drip(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 40, 0.2, stop, conn)


def _never_answer(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(10)


@pytest.fixture
def raw_server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    server = RawServer(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("raw_server", [_drip_body, _drip_headers, _never_answer], indirect=True)
@pytest.mark.parametrize("call", ["query", "update", "status"])
def test_no_server_behaviour_extends_the_deadline(raw_server: RawServer, call: str) -> None:
    backend = ReplicaBackend(raw_server.url, CANISTER_ID, timeout=1.0, retries=3)
    backend.backoff_s = 0.01
    started = time.monotonic()
    with pytest.raises(BackendError) as err:
        if call == "status":
            backend.status()
        else:
            getattr(backend, call)("model_info", ARG)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"{call} took {elapsed:.1f} s with a 1 s deadline"
    assert "did not answer `" in str(err.value) and "within 1 s" in str(err.value)
    backend.close()


# ---------------------------------------------------------------------- verified replies


def _sync_reply(certificate: Callable[[bytes], bytes]) -> Callable[[Served], tuple[int, bytes]]:
    return lambda r: (
        200,
        cbor({"status": "replied", "certificate": certificate(request_id_of(r.body))}),
    )


def test_a_reply_signed_by_another_key_is_refused(http_server: FakeServer) -> None:
    impostor = FakeKey(0xBAD)
    _route(
        http_server,
        call=_sync_reply(
            lambda rid: impostor.certificate(request_status_tree(rid, "replied", reply=REPLY))
        ),
    )
    backend = _backend(http_server)
    with pytest.raises(CertificateInvalid) as err:
        backend.update("generate", ARG)
    assert str(err.value) == (
        f"the certificate {http_server.url} sent for `generate` failed verification: "
        "the certificate's signature (the root key) does not verify"
    )
    backend.close()


def test_a_polled_status_signed_by_another_key_is_refused(http_server: FakeServer) -> None:
    impostor = FakeKey(0xBAD)

    def read_state(r: Served) -> tuple[int, bytes]:
        rid = content_of(r.body)["paths"][0][1]
        tree = request_status_tree(rid, "replied", reply=REPLY)
        return 200, cbor({"certificate": impostor.certificate(tree)})

    _route(http_server, call=lambda r: (202, ACCEPTED_REASONS[0]), read_state=read_state)
    backend = _backend(http_server)
    with pytest.raises(CertificateInvalid, match="does not verify"):
        backend.update("generate", ARG)
    backend.close()


def test_a_delegated_reply_verifies_and_the_root_key_is_fetched_once(
    http_server: FakeServer,
) -> None:
    subnet = FakeKey(0xC0FFEE)
    canister = Principal.from_str(CANISTER_ID).bytes
    delegation = subnet.delegation(ROOT, b"\x07" * 29, [(canister, canister)], sharded=True)
    _route(
        http_server,
        call=_sync_reply(
            lambda rid: subnet.certificate(
                request_status_tree(rid, "replied", reply=REPLY), delegation=delegation
            )
        ),
    )
    backend = _backend(http_server)
    assert backend.update("generate", ARG).data == REPLY
    assert backend.update("generate", ARG).data == REPLY
    assert len(http_server.status_requests) == 1
    backend.close()


def test_a_stale_reply_is_refused(http_server: FakeServer) -> None:
    an_hour_ago = time.time_ns() - 3600 * 10**9
    _route(
        http_server,
        call=_sync_reply(
            lambda rid: ROOT.certificate(
                request_status_tree(rid, "replied", reply=REPLY), time_ns=an_hour_ago
            )
        ),
    )
    backend = _backend(http_server)
    with pytest.raises(CertificateInvalid, match="60 minutes behind this computer's clock"):
        backend.update("generate", ARG)
    backend.close()


def test_mainnet_uses_its_built_in_root_key() -> None:
    backend = ReplicaBackend("ic", CANISTER_ID)
    deadline = Deadline.after(0.001)
    time.sleep(0.002)  # any request would now fail: the key must need none
    assert backend._root_key_der(deadline) == MAINNET_ROOT_KEY
    backend.close()


def test_a_status_without_a_root_key_is_not_a_replica(http_server: FakeServer) -> None:
    http_server.status = lambda r: (200, cbor({"replica_health_status": "healthy"}))
    _route(
        http_server,
        call=_sync_reply(
            lambda rid: ROOT.certificate(request_status_tree(rid, "replied", reply=REPLY))
        ),
    )
    backend = _backend(http_server)
    with pytest.raises(NotAReplica, match="a status without the network's root key"):
        backend.update("generate", ARG)
    backend.close()


# ---------------------------------------------------------------------- busy, expired


def _busy(r: Served) -> tuple[int, bytes]:
    # The call endpoint says `non_replicated_rejection`, the query endpoint `rejected` (signed).
    message = "Canister bkyz2 has no more space in its ingress queue"
    if r.path.endswith("/query"):
        return query_rejection(r, 2, message, "IC0201")
    return 200, cbor(
        {
            "status": "non_replicated_rejection",
            "reject_code": 2,
            "reject_message": message,
            "error_code": "IC0201",
        }
    )


def test_a_busy_replica_is_retried_with_a_new_message(http_server: FakeServer) -> None:
    answers = iter([_busy, _busy])
    call_ids: list[bytes] = []

    def call(r: Served) -> tuple[int, bytes]:
        call_ids.append(request_id_of(r.body))
        answer = next(answers, None)
        if answer is not None:
            return answer(r)
        return _sync_reply(
            lambda rid: ROOT.certificate(request_status_tree(rid, "replied", reply=REPLY))
        )(r)

    _route(http_server, call=call)
    backend = _backend(http_server, retries=2)
    assert backend.update("generate", ARG).data == REPLY
    assert len(call_ids) == 3 and len(set(call_ids)) == 3  # fresh nonce each time
    backend.close()


def test_a_replica_that_stays_busy_is_reported_after_the_retries(http_server: FakeServer) -> None:
    _route(http_server, call=_busy, query=_busy)
    backend = _backend(http_server, retries=2)
    for call in (backend.update, backend.query):
        http_server.requests.clear()
        with pytest.raises(ReplicaBusy, match="the replica is busy .*ingress queue.*\\[IC0201\\]"):
            call("generate", ARG)
        assert len(http_server.requests) == 3
    backend.close()


def test_a_replicated_busy_rejection_is_retried(http_server: FakeServer) -> None:
    """A message the subnet refused after consensus (its ingress history says rejected
    with IC0201) never ran: sent again as a new message."""
    attempts: list[int] = []

    def call(r: Served) -> tuple[int, bytes]:
        attempts.append(1)
        rid = request_id_of(r.body)
        if len(attempts) == 1:
            tree = request_status_tree(
                rid, "rejected", reject_code=2, reject_message="queue full", error_code="IC0201"
            )
        else:
            tree = request_status_tree(rid, "replied", reply=REPLY)
        return 200, cbor({"status": "replied", "certificate": ROOT.certificate(tree)})

    _route(http_server, call=call)
    backend = _backend(http_server)
    assert backend.update("generate", ARG).data == REPLY
    assert len(attempts) == 2
    backend.close()


def test_a_call_the_replica_forgot_after_its_expiry(
    http_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envelopes, "INGRESS_EXPIRY_S", 0)
    _route(
        http_server,
        call=lambda r: (202, ACCEPTED_REASONS[0]),
        read_state=lambda r: (200, cbor({"certificate": empty_certificate()})),
    )
    backend = _backend(http_server)
    with pytest.raises(RequestExpired, match="its expiry passed before it ran"):
        backend.update("generate", ARG)
    backend.close()


def test_a_discarded_reply_reads_as_expired(http_server: FakeServer) -> None:
    _route(
        http_server,
        call=_sync_reply(lambda rid: ROOT.certificate(request_status_tree(rid, "done"))),
    )
    backend = _backend(http_server)
    with pytest.raises(RequestExpired, match="already discarded its reply"):
        backend.update("generate", ARG)
    backend.close()


def test_only_a_stranger_is_suspected_of_being_the_wrong_url(http_server: FakeServer) -> None:
    """Garbage from an endpoint that has answered like a replica is its fault, not the URL's."""
    answers = iter([lambda r: query_reply(r, REPLY)])
    http_server.responder = lambda r: next(answers, lambda _: (200, b"<html>bad gateway</html>"))(r)
    backend = _backend(http_server)
    assert backend.query("model_info", ARG).data == REPLY
    with pytest.raises(NotAReplica) as err:
        backend.query("model_info", ARG)
    assert "did not answer `model_info` like an IC replica" in str(err.value)
    assert "right URL" not in str(err.value)
    backend.close()


def test_an_expiry_refusal_names_the_clock(http_server: FakeServer) -> None:
    http_server.responder = lambda r: (
        400,
        b"Invalid request expiry: Specified ingress_expiry not within expected range",
    )
    backend = _backend(http_server, retries=0)
    with pytest.raises(RequestExpired, match="check this computer's clock"):
        backend.update("generate", ARG)
    backend.close()
