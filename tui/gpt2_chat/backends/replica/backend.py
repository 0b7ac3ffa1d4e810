"""A real IC HTTP endpoint (a local dfx/icp network or mainnet) as a `Backend`.

Built on icp-py-core's primitives (identities, principals, request signing) but not on its
`Agent` flows: those Candid-decode every reply, and this backend hands raw Candid bytes to
`client/canister.py`. The protocol (IC interface specification, "HTTPS interface"):

* query:  POST /api/v3/canister/<id>/query                       (v2 on replicas without v3)
* update: POST /api/v4/canister/<id>/call (v3, v2 fallbacks), a synchronous call that answers
  200 with a certificate holding the outcome, or 202 when the replica stops waiting
  (dfinity/ic rs/http_endpoints/public/src/call/call_sync.rs: a plain-text reason after
  `ingress_message_certificate_timeout_seconds`, 10 s by default, or when it cannot track
  the message; v2 always answers 202 with an empty body). Any 202 means "poll":
  POST /api/v3/canister/<id>/read_state for request_status/<request id> until the outcome.

Every certificate the outcome is read from is verified (certificate.py) against mainnet's
built-in root key, or, for any other URL, the key the endpoint's /api/v2/status reports;
every query reply's node signatures against the subnet's certified node keys
(query_signatures.py).

Each call has one deadline (`timeout`) for everything in it: submission, retries, polling,
and every byte of every reply (transport.py). Every request carries a random nonce, so two
identical calls are two messages, never one. Replies carry no instruction count
(`Reply.instructions` is None): gpt2_backend reports its instructions inside its replies.

icp-py-core is untyped; everything it hands back is narrowed at the call site.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import cbor2
from icp_identity.identity import Identity
from icp_principal.principal import Principal

from gpt2_chat.backends.base import Reply
from gpt2_chat.backends.replica.certificate import (
    MAINNET_ROOT_KEY,
    VerifiedCertificate,
    verify_certificate,
)
from gpt2_chat.backends.replica.envelopes import (
    call_content,
    read_state_envelope,
    signed,
)
from gpt2_chat.backends.replica.errors import (
    CertificateInvalid,
    NotAReplica,
    RequestExpired,
)
from gpt2_chat.backends.replica.failures import body_text, transport_error
from gpt2_chat.backends.replica.query_signatures import (
    SUBNET_PATH,
    node_keys,
    verify_query_reply,
)
from gpt2_chat.backends.replica.rejects import (
    Rejected,
    as_text,
    one_line,
    rejection,
    rejection_error,
)
from gpt2_chat.backends.replica.transport import Deadline, HttpFailure, Transport
from gpt2_chat.canister_ids import is_principal_text
from gpt2_chat.errors import BackendError
from gpt2_chat.identity import load_identity
from gpt2_chat.network import is_local_host, parse_network, url_host

#: The status endpoint (health, root key) answers at once or not at all.
_STATUS_TIMEOUT_S = 15.0
#: How long fetched node keys are used before they are fetched again (as agent-js does).
_NODE_KEYS_TTL_S = 5 * 60.0

T = TypeVar("T")


class _BadResponse(Exception):
    """The endpoint answered, but not with an IC response."""


@dataclass(frozen=True)
class _Endpoint:
    """One endpoint kind with its API versions, newest first."""

    kind: str
    versions: tuple[str, ...]


_QUERY = _Endpoint("query", ("v3", "v2"))
_CALL = _Endpoint("call", ("v4", "v3", "v2"))
_READ_STATE = _Endpoint("read_state", ("v3", "v2"))


class ReplicaBackend:
    """Raw Candid calls to one canister on a replica.

    network: `local` (http://127.0.0.1:4943), `ic` (https://icp-api.io) or a URL.
    identity: an icp-py-core Identity, `anonymous`/None, a PEM path or a dfx identity name.
    timeout: seconds one call may take in all (submission, polling, retries, reading).
    retries: extra attempts after a transient failure (dropped connection, HTTP 429/5xx, a
    busy replica). A refused connection is not retried: nothing is listening.
    """

    parallel_updates = True

    time_sliced = True

    #: First pause between attempts (doubling, at most 2 s, never past the deadline).
    backoff_s = 0.25

    def __init__(
        self,
        network: str,
        canister_id: str,
        identity: str | Identity | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 2,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        parsed = parse_network(network)
        if parsed.url is None:
            raise BackendError("the embedded runtime is not a replica: give a replica's network")
        self.url = parsed.url
        if not is_principal_text(canister_id):
            raise BackendError(f"`{canister_id}` is not a canister id (principal text)")
        self.canister_id = canister_id
        self._canister_bytes: bytes = Principal.from_str(canister_id).bytes
        self.identity = load_identity(identity)
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.is_local = is_local_host(url_host(self.url))
        self.is_mainnet = parsed.dfx_network == "ic"
        if self.is_local:
            where = "local replica"
        elif self.is_mainnet:
            where = "mainnet"
        else:
            where = "replica"
        self.description = f"{where} ({self.url}, canister {_short_id(canister_id)})"
        # Local endpoints must not go through an HTTP proxy from the environment.
        self._transport = Transport(trust_env=not self.is_local)
        # API version per endpoint kind; moves to an older one when a replica 404s a newer.
        self._version: dict[str, str] = {}
        self._root_key: bytes | None = MAINNET_ROOT_KEY if self.is_mainnet else None
        self._root_key_lock = threading.Lock()
        # The subnet's node keys, for query signatures: (monotonic time fetched, keys).
        self._node_keys_cache: tuple[float, dict[bytes, bytes]] | None = None
        self._node_keys_lock = threading.Lock()
        # Whether this endpoint has answered like an IC replica yet (for error hints).
        self._answered = False

    # ------------------------------------------------------------------ public API

    @property
    def principal(self) -> str:
        """The caller's principal as text (`2vxsx-fae` when anonymous)."""
        return str(self.identity.sender().to_str())

    def query(self, method: str, arg: bytes) -> Reply:
        deadline = Deadline.after(self.timeout)
        content = call_content(self.identity, self._canister_bytes, "query", method, arg)
        envelope, request_id = signed(self.identity, content)
        try:
            return Reply(
                self._retrying(
                    lambda: self._query_once(envelope, request_id, deadline),
                    deadline,
                    transport=True,
                )
            )
        except Exception as e:
            raise self._user_error(e, method, "query") from e

    def update(self, method: str, arg: bytes) -> Reply:
        deadline = Deadline.after(self.timeout)
        try:
            return Reply(
                self._retrying(
                    lambda: self._update_once(method, arg, deadline), deadline, transport=False
                )
            )
        except Exception as e:
            raise self._user_error(e, method, "update") from e

    def status(self) -> dict[str, Any]:
        """The endpoint's /api/v2/status (impl_version, replica_health_status, root_key …)."""
        try:
            return self._status(Deadline.after(min(self.timeout, _STATUS_TIMEOUT_S)))
        except Exception as e:
            raise self._user_error(e, "status", "status") from e

    def close(self) -> None:
        self._transport.close()

    # ------------------------------------------------------------------ calls

    def _retrying(self, attempt_fn: Callable[[], T], deadline: Deadline, *, transport: bool) -> T:
        """attempt_fn until it succeeds, fails for good, or runs out of attempts or time.
        Busy rejections are retried; transport failures only when `transport` (updates
        retry those inside, where they can ask whether the message got through)."""
        attempt = 0
        while True:
            try:
                return attempt_fn()
            except (HttpFailure, Rejected) as e:
                retryable = (transport and e.transient) if isinstance(e, HttpFailure) else e.busy
                if not retryable or attempt >= self.retries or deadline.remaining() <= 0:
                    raise
                attempt += 1
                self._sleep_backoff(attempt, deadline)

    def _query_once(self, envelope: bytes, request_id: bytes, deadline: Deadline) -> bytes:
        response = self._cbor_post(_QUERY, envelope, deadline)
        self._verify_query(response, request_id, deadline)
        status = as_text(response.get("status"))
        if status == "replied":
            reply = response.get("reply")
            data = reply.get("arg") if isinstance(reply, Mapping) else None
            if not isinstance(data, bytes | bytearray):
                raise _BadResponse("a query reply without its `arg`")
            return bytes(data)
        if status == "rejected":
            raise rejection(response)
        raise _BadResponse(f"unknown query status {status!r}")

    def _update_once(self, method: str, arg: bytes, deadline: Deadline) -> bytes:
        # Signed afresh per attempt: a busy replica rejects a message, and the same request
        # id would only fetch that rejection again. gpt2_backend's updates are idempotent
        # (offset-checked chunks, position-checked prefill/generate), so a new message
        # cannot apply twice.
        content = call_content(self.identity, self._canister_bytes, "call", method, arg)
        envelope, request_id = signed(self.identity, content)
        return self._call_and_wait(envelope, request_id, content["ingress_expiry"], deadline)

    def _call_and_wait(
        self, envelope: bytes, request_id: bytes, expiry_ns: int, deadline: Deadline
    ) -> bytes:
        attempt = 0
        while True:
            try:
                status, body = self._post(_CALL, envelope, deadline)
                break
            except HttpFailure as e:
                if not e.transient or attempt >= self.retries or deadline.remaining() <= 0:
                    raise
                attempt += 1
                # The call may have arrived before the connection failed: if the replica
                # knows the request, wait for it instead of sending it again.
                if self._request_status_quietly(request_id, deadline) is not None:
                    return self._poll(request_id, expiry_ns, deadline)
                # The same signed message again: the IC executes one request id at most once.
                self._sleep_backoff(attempt, deadline)
        if status == 202:
            # Accepted, not finished (any body: empty from v2, a text reason from v3/v4).
            self._answered = True
            return self._poll(request_id, expiry_ns, deadline)
        response = self._decode_response(status, body)
        kind = as_text(response.get("status"))
        if kind == "replied":
            certificate = self._verified(response.get("certificate"), deadline)
            return self._outcome(certificate, request_id, expiry_ns, deadline)
        if kind == "non_replicated_rejection":
            raise rejection(response)
        raise _BadResponse(f"unknown call status {kind!r}")

    def _outcome(
        self,
        certificate: VerifiedCertificate,
        request_id: bytes,
        expiry_ns: int,
        deadline: Deadline,
    ) -> bytes:
        status = as_text(certificate.lookup(b"request_status", request_id, b"status"))
        if status == "replied":
            reply = certificate.lookup(b"request_status", request_id, b"reply")
            if reply is None:
                raise _BadResponse("a certificate that says `replied` without the reply")
            return reply
        if status == "rejected":
            fields = {
                name: certificate.lookup(b"request_status", request_id, name.encode())
                for name in ("reject_code", "reject_message", "error_code")
            }
            raise rejection(fields)
        if status == "done":
            raise RequestExpired(
                "the call completed, but the replica already discarded its reply (status "
                "`done`, past the message's expiry): read the state back with a query"
            )
        return self._poll(request_id, expiry_ns, deadline)

    def _request_status_quietly(
        self, request_id: bytes, deadline: Deadline
    ) -> tuple[str, VerifiedCertificate] | None:
        """(status, certificate) when the replica knows the request; None when it does not
        or cannot say right now."""
        try:
            return self._request_status(request_id, deadline)
        except (HttpFailure, _BadResponse, Rejected):
            return None

    def _request_status(
        self, request_id: bytes, deadline: Deadline
    ) -> tuple[str, VerifiedCertificate] | None:
        status, body = self._post(
            _READ_STATE,
            read_state_envelope(self.identity, [b"request_status", request_id]),
            deadline,
        )
        response = self._decode_response(status, body)
        certificate = self._verified(response.get("certificate"), deadline)
        value = as_text(certificate.lookup(b"request_status", request_id, b"status"))
        return None if value is None else (value, certificate)

    def _poll(self, request_id: bytes, expiry_ns: int, deadline: Deadline) -> bytes:
        delay = 0.1
        while True:
            try:
                known = self._request_status(request_id, deadline)
            except HttpFailure as e:
                # read_state only reads: keep asking through transient failures.
                if not e.transient:
                    raise
                known = None
            if known is not None and known[0] in ("replied", "rejected", "done"):
                return self._outcome(known[1], request_id, expiry_ns, deadline)
            if known is None and time.time_ns() > expiry_ns:
                raise RequestExpired(
                    "the replica no longer knows the call: its expiry passed before it ran"
                )
            remaining = deadline.remaining()
            if remaining <= 0:
                raise HttpFailure("timeout", "no reply while polling")
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 1.0)

    # ------------------------------------------------------------------ certificates

    def _verified(self, raw: Any, deadline: Deadline) -> VerifiedCertificate:
        if not isinstance(raw, bytes | bytearray):
            raise _BadResponse("a response without a certificate")
        return verify_certificate(bytes(raw), self._root_key_der(deadline), self._canister_bytes)

    def _verify_query(
        self, response: Mapping[Any, Any], request_id: bytes, deadline: Deadline
    ) -> None:
        try:
            verify_query_reply(response, request_id, self._node_keys(deadline, fresh=False))
        except CertificateInvalid:
            # A subnet's nodes change now and then: check once more with its current keys.
            verify_query_reply(response, request_id, self._node_keys(deadline, fresh=True))

    def _node_keys(self, deadline: Deadline, *, fresh: bool) -> dict[bytes, bytes]:
        with self._node_keys_lock:
            cached = self._node_keys_cache
            if cached is not None and not fresh and time.monotonic() - cached[0] < _NODE_KEYS_TTL_S:
                return cached[1]
        envelope = read_state_envelope(self.identity, SUBNET_PATH)
        response = self._decode_response(*self._post(_READ_STATE, envelope, deadline))
        certificate = self._verified(response.get("certificate"), deadline)
        keys = node_keys(certificate, self._root_key_der(deadline), self._canister_bytes)
        with self._node_keys_lock:
            self._node_keys_cache = (time.monotonic(), keys)
        return keys

    def _root_key_der(self, deadline: Deadline) -> bytes:
        """Mainnet's built-in key; any other network's from its /api/v2/status (the only
        source there is: a local replica makes a new key each time it starts)."""
        with self._root_key_lock:
            if self._root_key is None:
                key = self._status(deadline.cut(_STATUS_TIMEOUT_S)).get("root_key")
                if not isinstance(key, bytes | bytearray):
                    raise _BadResponse("a status without the network's root key")
                self._root_key = bytes(key)
            return self._root_key

    def _status(self, deadline: Deadline) -> dict[str, Any]:
        status, body = self._transport.request("GET", f"{self.url}/api/v2/status", None, deadline)
        if status != 200:
            raise HttpFailure("http", f"HTTP {status}", status, body)
        decoded = _decode_cbor(body)
        self._answered = True
        return {str(k): v for k, v in decoded.items()}

    # ------------------------------------------------------------------ requests

    def _sleep_backoff(self, attempt: int, deadline: Deadline) -> None:
        pause = min(self.backoff_s * 2 ** (attempt - 1), 2.0, deadline.remaining())
        time.sleep(max(0.0, pause))

    def _cbor_post(self, endpoint: _Endpoint, envelope: bytes, deadline: Deadline) -> Any:
        status, body = self._post(endpoint, envelope, deadline)
        return self._decode_response(status, body)

    def _decode_response(self, status: int, body: bytes) -> Mapping[Any, Any]:
        if status == 200:
            decoded = _decode_cbor(body)
            self._answered = True
            return decoded
        # Replicas answer some refusals with an error status and a CBOR reject body.
        try:
            refusal: Mapping[Any, Any] | None = _decode_cbor(body)
        except _BadResponse:
            refusal = None
        if refusal is not None and "reject_code" in refusal:
            raise rejection(refusal)
        raise HttpFailure("http", f"HTTP {status}", status, body)

    def _post(self, endpoint: _Endpoint, envelope: bytes, deadline: Deadline) -> tuple[int, bytes]:
        version = self._version.get(endpoint.kind, endpoint.versions[0])
        while True:
            url = f"{self.url}/api/{version}/canister/{self.canister_id}/{endpoint.kind}"
            status, body = self._transport.request("POST", url, envelope, deadline)
            older = endpoint.versions.index(version) + 1
            # A 404 for a whole API version means an older replica: use the previous version
            # (same envelope format) and remember it.
            if status == 404 and older < len(endpoint.versions) and not _mentions_canister(body):
                version = endpoint.versions[older]
                self._version[endpoint.kind] = version
                continue
            return status, body

    # ------------------------------------------------------------------ messages

    def _user_error(self, e: Exception, method: str, kind: str) -> BackendError:
        if isinstance(e, CertificateInvalid):
            return CertificateInvalid(
                f"the certificate {self.url} sent for `{method}` failed verification: {e}"
            )
        if isinstance(e, BackendError):
            return e
        if isinstance(e, Rejected):
            return rejection_error(e, method, self.canister_id, self.url)
        if isinstance(e, HttpFailure):
            return transport_error(
                e,
                url=self.url,
                is_local=self.is_local,
                canister_id=self.canister_id,
                method=method,
                seconds=min(self.timeout, _STATUS_TIMEOUT_S) if kind == "status" else self.timeout,
                is_update=kind == "update",
            )
        if isinstance(e, _BadResponse):
            # Only an endpoint that never answered like a replica may be the wrong URL.
            hint = "" if self._answered else ": is this the right URL?"
            return NotAReplica(
                f"{self.url} did not answer `{method}` like an IC replica ({e}){hint}"
            )
        return BackendError(f"`{method}` on {self.url} failed: {one_line(str(e)) or type(e)}")


def _decode_cbor(body: bytes) -> Mapping[Any, Any]:
    try:
        decoded = cbor2.loads(body)
    except Exception as e:  # cbor2 errors are not ValueErrors
        preview = body_text(body[:200])
        raise _BadResponse(
            f"not CBOR: {preview!r}" if preview else "an empty or binary non-CBOR body"
        ) from e
    if not isinstance(decoded, Mapping):
        raise _BadResponse(f"CBOR {type(decoded).__name__} where a map was expected")
    return decoded


def _mentions_canister(body: bytes) -> bool:
    return b"anister" in body[:2000]


def _short_id(canister_id: str) -> str:
    head, _, rest = canister_id.partition("-")
    return f"{head}-…" if rest else canister_id
