"""A real IC HTTP endpoint (a local dfx/icp network or mainnet) as a `Backend`.

Built on icp-py-core's primitives (identities, principals, request signing, certificate
lookups) but not on its `Agent` flows: `Agent.query_raw`/`update_raw` Candid-decode every
reply, and this backend must hand raw Candid bytes to `client/canister.py`. The protocol
flow is small, so it lives here where its timeouts, retries and errors are under our control:

* query:  POST /api/v3/canister/<id>/query                      (v2 on replicas without v3)
* update: POST /api/v4/canister/<id>/call, a synchronous call that usually answers with a
  certificate holding the reply; on 202 "accepted" poll
  POST /api/v3/canister/<id>/read_state for request_status/<request id>  (v3, v2 fallbacks)

Every request carries a random nonce, so two identical calls are two messages, never one.
Certificates are not verified (BLS verification needs `blst`, which is not installable here):
replies are trusted as the endpoint sends them, as with `verify_certificate=False` in
icp-py-core. Replicas do not report instructions, so `Reply.instructions` is None.

icp-py-core is untyped; everything it hands back is narrowed at the call site.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cbor2
import httpx
from icp_agent.agent import sign_request, to_request_id
from icp_certificate.certificate import Certificate
from icp_identity.identity import Identity
from icp_principal.principal import Principal

from gpt2_chat.backends.base import Reply
from gpt2_chat.errors import BackendError, InstructionLimitExceeded
from gpt2_chat.identity import load_identity

LOCAL_URL = "http://127.0.0.1:4943"
MAINNET_URL = "https://icp-api.io"
NETWORK_ALIASES = {"local": LOCAL_URL, "ic": MAINNET_URL, "mainnet": MAINNET_URL}
DEFAULT_CANISTER_NAME = "gpt2_backend"

#: Hosts of mainnet API boundary nodes (for naming the network and finding canister ids).
_MAINNET_HOSTS = {"icp-api.io", "ic0.app", "icp0.io"}
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"}

#: The IC accepts ingress_expiry up to 5 minutes ahead; stay well inside it.
_INGRESS_EXPIRY_S = 4 * 60
_CONNECT_TIMEOUT_S = 10.0
_MAX_MESSAGE_CHARS = 300


# ---------------------------------------------------------------------- networks


def resolve_network_url(network: str) -> str:
    """`local`, `ic` (alias `mainnet`) or an http(s) URL -> the endpoint URL."""
    if network in NETWORK_ALIASES:
        return NETWORK_ALIASES[network]
    if network.startswith(("http://", "https://")):
        if not urlsplit(network).hostname:
            raise BackendError(f"`{network}` is not a usable replica URL")
        return network.rstrip("/")
    raise BackendError(f"unknown network `{network}`: use local, ic or an http(s):// URL")


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_local_url(url: str) -> bool:
    host = _host(url)
    return host in _LOOPBACK_HOSTS or host.endswith(".localhost")


def is_mainnet_url(url: str) -> bool:
    host = _host(url)
    return host in _MAINNET_HOSTS or any(host.endswith("." + h) for h in _MAINNET_HOSTS)


def _short_id(canister_id: str) -> str:
    head, _, rest = canister_id.partition("-")
    return f"{head}-…" if rest else canister_id


# ---------------------------------------------------------------------- canister ids


def _is_principal_text(text: str) -> bool:
    try:
        Principal.from_str(text)
    except (ValueError, TypeError):
        return False
    return True


def resolve_canister_id(
    name_or_id: str | None, project_root: Path | str, network: str = "local"
) -> str:
    """A principal text is returned as is; a name (default `gpt2_backend`) is looked up in
    the files dfx writes: `<root>/canister_ids.json` for `ic`, `<root>/.dfx/<network>/
    canister_ids.json` for local networks (icp-cli's id mappings are read as a fallback)."""
    name = name_or_id or DEFAULT_CANISTER_NAME
    if _is_principal_text(name):
        return name
    root = Path(project_root)
    if network.startswith(("http://", "https://")):
        url = network.rstrip("/")
        if is_mainnet_url(url):
            network = "ic"
        elif is_local_url(url):
            network = "local"
        else:
            raise BackendError(
                f"cannot look up canister `{name}` for {url}: pass its canister id instead"
            )
    if network == "mainnet":
        network = "ic"
    if network == "ic":
        dfx_files = [root / "canister_ids.json"]
    else:
        dfx_files = [root / ".dfx" / network / "canister_ids.json", root / "canister_ids.json"]
    icp_files = [
        root / ".icp" / "data" / "mappings" / f"{network}.ids.json",
        root / ".icp" / "cache" / "mappings" / f"{network}.ids.json",
    ]
    for path in dfx_files + icp_files:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise BackendError(f"cannot read canister ids from {path}: {e}") from e
        entry = data.get(name) if isinstance(data, dict) else None
        # dfx: {"name": {"<network>": "<id>"}}; icp-cli: {"name": "<id>"}.
        found = entry.get(network) if isinstance(entry, dict) else entry
        if isinstance(found, str) and _is_principal_text(found):
            return found
    searched = ", ".join(str(p) for p in dfx_files)
    raise BackendError(
        f"no canister id for `{name}` on network `{network}` (searched {searched}): "
        f"deploy it first (`dfx deploy {name}`) or pass the canister id"
    )


# ---------------------------------------------------------------------- errors


class _HttpFailure(Exception):
    """A request got no usable HTTP answer, or an HTTP error status.

    kind: "refused" (nothing listens), "connect" (DNS, routing, TLS), "timeout",
    "network" (connection dropped mid-request), "http" (an error status)."""

    def __init__(self, kind: str, detail: str, status: int | None = None, body: bytes = b""):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.body = body

    @property
    def transient(self) -> bool:
        if self.kind in ("timeout", "network", "connect"):
            return True
        return self.kind == "http" and self.status in (429, 500, 502, 503, 504)


class _Rejected(Exception):
    def __init__(self, code: int, message: str, error_code: str | None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.error_code = error_code


class _BadResponse(Exception):
    """The endpoint answered, but not with an IC response."""


def _one_line(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    # Replica messages carry advice paragraphs and backtraces; the user gets the first part.
    for marker in (
        "\nConsider gracefully",
        "Consider gracefully handling",
        "See documentation:",
        "Canister Backtrace:",
    ):
        cut = text.find(marker)
        if cut > 0:
            text = text[:cut]
    text = " ".join(text.split()).rstrip(" .")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _body_text(body: bytes) -> str:
    """An error body as one line of text; empty when the body is binary."""
    text = body.decode("utf-8", "replace").strip()
    if "\ufffd" in text or any(not c.isprintable() and not c.isspace() for c in text):
        return ""
    return _one_line(text, 200)


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray):
        return int.from_bytes(value, "big")
    return 0


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _rejection(fields: Mapping[Any, Any]) -> _Rejected:
    return _Rejected(
        _as_int(fields.get("reject_code")),
        _as_text(fields.get("reject_message")) or "no message",
        _as_text(fields.get("error_code")),
    )


# ---------------------------------------------------------------------- the backend


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
    timeout: seconds one call may take in all (submission, polling and retries).
    retries: extra attempts after a transport failure (timeout, dropped connection, HTTP
    429/5xx). A refused connection is not retried: nothing is listening.
    """

    parallel_updates = True

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
        self.url = resolve_network_url(network)
        if not _is_principal_text(canister_id):
            raise BackendError(f"`{canister_id}` is not a canister id (principal text)")
        self.canister_id = canister_id
        self._canister_bytes: bytes = Principal.from_str(canister_id).bytes
        self.identity = load_identity(identity)
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.is_local = is_local_url(self.url)
        if self.is_local:
            where = "local replica"
        elif is_mainnet_url(self.url):
            where = "mainnet"
        else:
            where = "replica"
        self.description = f"{where} ({self.url}, canister {_short_id(canister_id)})"
        # Local endpoints must not go through an HTTP proxy from the environment.
        self._trust_env = not self.is_local
        # Idle keep-alive clients; a request borrows one, so concurrent calls (parallel
        # upload chunks, short-lived UI worker threads) share as many as run at once.
        self._idle: list[httpx.Client] = []
        self._clients_lock = threading.Lock()
        # API version per endpoint kind; moves to an older one when a replica 404s a newer.
        self._version: dict[str, str] = {}
        self._closed = False

    # ------------------------------------------------------------------ public API

    @property
    def principal(self) -> str:
        """The caller's principal as text (`2vxsx-fae` when anonymous)."""
        return str(self.identity.sender().to_str())

    def query(self, method: str, arg: bytes) -> Reply:
        deadline = time.monotonic() + self.timeout
        envelope, _ = self._sign(self._content("query", method, arg))
        try:
            response = self._with_retries(
                lambda: self._cbor_post(_QUERY, envelope, deadline), deadline
            )
            status = _as_text(response.get("status"))
            if status == "replied":
                reply = response.get("reply")
                data = reply.get("arg") if isinstance(reply, Mapping) else None
                if not isinstance(data, bytes | bytearray):
                    raise _BadResponse("a query reply without its `arg`")
                return Reply(bytes(data))
            if status == "rejected":
                raise _rejection(response)
            raise _BadResponse(f"unknown query status {status!r}")
        except Exception as e:
            raise self._user_error(e, method) from e

    def update(self, method: str, arg: bytes) -> Reply:
        deadline = time.monotonic() + self.timeout
        envelope, request_id = self._sign(self._content("call", method, arg))
        try:
            return Reply(self._call_and_wait(envelope, request_id, deadline))
        except Exception as e:
            raise self._user_error(e, method) from e

    def status(self) -> dict[str, Any]:
        """The endpoint's /api/v2/status (impl_version, replica_health_status, root_key …)."""
        deadline = time.monotonic() + min(self.timeout, 15.0)
        try:
            status, body = self._http("GET", f"{self.url}/api/v2/status", None, deadline)
            if status != 200:
                raise _HttpFailure("http", f"HTTP {status}", status, body)
            decoded = _decode_cbor(body)
        except Exception as e:
            raise self._user_error(e, "status") from e
        return {str(k): v for k, v in decoded.items()}

    def close(self) -> None:
        with self._clients_lock:
            self._closed = True
            clients, self._idle = self._idle, []
        for client in clients:
            client.close()

    # ------------------------------------------------------------------ requests

    def _content(self, request_type: str, method: str, arg: bytes) -> dict[str, Any]:
        return {
            "request_type": request_type,
            "sender": self.identity.sender().bytes,
            "canister_id": self._canister_bytes,
            "method_name": method,
            "arg": bytes(arg),
            "ingress_expiry": time.time_ns() + _INGRESS_EXPIRY_S * 1_000_000_000,
            # A fresh nonce makes every call its own message: the IC deduplicates messages
            # with equal request ids, which would merge two identical generate calls.
            "nonce": os.urandom(16),
        }

    def _sign(self, content: dict[str, Any]) -> tuple[bytes, bytes]:
        """The CBOR envelope and the request id."""
        if getattr(self.identity, "anonymous", False):
            # icp-py-core would send null sender_pubkey/sender_sig; the spec says omit them.
            return cbor2.dumps({"content": content}), bytes(to_request_id(content))
        request_id, envelope = sign_request(content, self.identity)
        return bytes(envelope), bytes(request_id)

    def _read_state_envelope(self, request_id: bytes) -> bytes:
        content = {
            "request_type": "read_state",
            "sender": self.identity.sender().bytes,
            "paths": [[b"request_status", request_id]],
            "ingress_expiry": time.time_ns() + _INGRESS_EXPIRY_S * 1_000_000_000,
        }
        return self._sign(content)[0]

    def _call_and_wait(self, envelope: bytes, request_id: bytes, deadline: float) -> bytes:
        attempt = 0
        while True:
            try:
                status, body = self._post(_CALL, envelope, deadline)
                break
            except _HttpFailure as e:
                if not e.transient or attempt >= self.retries or time.monotonic() >= deadline:
                    raise
                attempt += 1
                # The call may have arrived before the connection failed: if the replica
                # knows the request, wait for it instead of sending it again.
                if self._request_status_quietly(request_id, deadline) is not None:
                    return self._poll(request_id, deadline)
                # Resubmitting is safe twice over: it is the *same* signed message (same
                # request id, so the IC executes it at most once), and gpt2_backend's update
                # methods are idempotent by design (offset-checked chunks, position-checked
                # prefill/generate), so even a fresh message could not apply twice.
                self._sleep_backoff(attempt, deadline)
        if status == 202 and not body.strip():
            return self._poll(request_id, deadline)  # v2 call: accepted, no body
        response = self._decode_response(status, body)
        kind = _as_text(response.get("status"))
        if kind == "replied":
            certificate = self._certificate(response.get("certificate"))
            return self._outcome(certificate, request_id, deadline)
        if kind == "accepted":
            return self._poll(request_id, deadline)
        if kind in ("non_replicated_rejection", "rejected"):
            raise _rejection(response)
        raise _BadResponse(f"unknown call status {kind!r}")

    def _outcome(self, certificate: Certificate, request_id: bytes, deadline: float) -> bytes:
        status = _as_text(certificate.lookup_request_status(request_id))
        if status == "replied":
            reply = certificate.lookup_reply(request_id)
            if reply is None:
                raise _BadResponse("a certificate that says `replied` without the reply")
            return bytes(reply)
        if status == "rejected":
            raise _rejection(certificate.lookup_request_rejection(request_id))
        if status == "done":
            raise BackendError(
                "the replica already discarded this call's reply (status `done`); "
                "read the state back with a query"
            )
        return self._poll(request_id, deadline)

    def _request_status_quietly(
        self, request_id: bytes, deadline: float
    ) -> tuple[str, Certificate] | None:
        """(status, certificate) when the replica knows the request; None when it does not
        or cannot say right now."""
        try:
            return self._request_status(request_id, deadline)
        except (_HttpFailure, _BadResponse):
            return None

    def _request_status(self, request_id: bytes, deadline: float) -> tuple[str, Certificate] | None:
        status, body = self._post(_READ_STATE, self._read_state_envelope(request_id), deadline)
        response = self._decode_response(status, body)
        certificate = self._certificate(response.get("certificate"))
        value = _as_text(certificate.lookup_request_status(request_id))
        return None if value is None else (value, certificate)

    def _poll(self, request_id: bytes, deadline: float) -> bytes:
        delay = 0.1
        while True:
            try:
                known = self._request_status(request_id, deadline)
            except _HttpFailure as e:
                # read_state only reads: keep asking through transient failures.
                if not e.transient:
                    raise
                known = None
            if known is not None and known[0] in ("replied", "rejected", "done"):
                return self._outcome(known[1], request_id, deadline)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _HttpFailure("timeout", "no reply while polling")
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 1.0)

    def _certificate(self, raw: Any) -> Certificate:
        if not isinstance(raw, bytes | bytearray):
            raise _BadResponse("a response without a certificate")
        decoded = _decode_cbor(bytes(raw))
        try:
            return Certificate(dict(decoded))
        except ValueError as e:
            raise _BadResponse(f"a malformed certificate ({e})") from e

    # ------------------------------------------------------------------ transport

    def _with_retries(self, attempt_fn: Any, deadline: float) -> Mapping[Any, Any]:
        attempt = 0
        while True:
            try:
                result: Mapping[Any, Any] = attempt_fn()
                return result
            except _HttpFailure as e:
                if not e.transient or attempt >= self.retries or time.monotonic() >= deadline:
                    raise
                attempt += 1
                self._sleep_backoff(attempt, deadline)

    #: First pause between attempts (doubling, at most 2 s, never past the deadline).
    backoff_s = 0.25

    def _sleep_backoff(self, attempt: int, deadline: float) -> None:
        pause = min(self.backoff_s * 2 ** (attempt - 1), 2.0, deadline - time.monotonic())
        time.sleep(max(0.0, pause))

    def _cbor_post(self, endpoint: _Endpoint, envelope: bytes, deadline: float) -> Any:
        status, body = self._post(endpoint, envelope, deadline)
        return self._decode_response(status, body)

    def _decode_response(self, status: int, body: bytes) -> Mapping[Any, Any]:
        if status in (200, 202):
            return _decode_cbor(body)
        # Replicas answer some refusals with an error status and a CBOR reject body.
        try:
            decoded = _decode_cbor(body)
        except _BadResponse:
            decoded = None
        if decoded is not None and "reject_code" in decoded:
            raise _rejection(decoded)
        raise _HttpFailure("http", f"HTTP {status}", status, body)

    def _post(self, endpoint: _Endpoint, envelope: bytes, deadline: float) -> tuple[int, bytes]:
        version = self._version.get(endpoint.kind, endpoint.versions[0])
        while True:
            url = f"{self.url}/api/{version}/canister/{self.canister_id}/{endpoint.kind}"
            status, body = self._http("POST", url, envelope, deadline)
            older = endpoint.versions.index(version) + 1
            # A 404 for a whole API version means an older replica: use the previous version
            # (same envelope format) and remember it.
            if status == 404 and older < len(endpoint.versions) and not _mentions_canister(body):
                version = endpoint.versions[older]
                self._version[endpoint.kind] = version
                continue
            return status, body

    def _borrow(self) -> httpx.Client:
        with self._clients_lock:
            if self._closed:
                raise BackendError("this replica connection is closed")
            if self._idle:
                return self._idle.pop()
        return httpx.Client(trust_env=self._trust_env, follow_redirects=False)

    def _give_back(self, client: httpx.Client) -> None:
        with self._clients_lock:
            if not self._closed and len(self._idle) < 8:
                self._idle.append(client)
                return
        client.close()

    def _http(
        self, verb: str, url: str, content: bytes | None, deadline: float
    ) -> tuple[int, bytes]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _HttpFailure("timeout", "out of time")
        timeout = httpx.Timeout(remaining, connect=min(remaining, _CONNECT_TIMEOUT_S))
        headers = {"Content-Type": "application/cbor"} if content is not None else {}
        client = self._borrow()
        try:
            response = client.request(verb, url, content=content, headers=headers, timeout=timeout)
        except httpx.TimeoutException as e:
            raise _HttpFailure("timeout", str(e) or type(e).__name__) from e
        except httpx.ConnectError as e:
            kind = "refused" if _is_refused(e) else "connect"
            raise _HttpFailure(kind, _reason(e)) from e
        except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
            raise _HttpFailure("network", _reason(e)) from e
        except httpx.HTTPError as e:
            raise _HttpFailure("connect", _reason(e)) from e
        finally:
            self._give_back(client)
        return response.status_code, response.content

    # ------------------------------------------------------------------ messages

    def _user_error(self, e: Exception, method: str) -> BackendError:
        if isinstance(e, BackendError):
            return e
        if isinstance(e, _Rejected):
            return self._rejection_error(e, method)
        if isinstance(e, _HttpFailure):
            return self._transport_error(e, method)
        if isinstance(e, _BadResponse):
            return BackendError(
                f"{self.url} did not answer `{method}` like an IC replica ({e}): "
                "is this the right URL?"
            )
        return BackendError(f"`{method}` on {self.url} failed: {_one_line(str(e)) or type(e)}")

    def _transport_error(self, e: _HttpFailure, method: str) -> BackendError:
        url = self.url
        if e.kind == "refused":
            if self.is_local and url.endswith(":4943"):
                return BackendError(
                    f"cannot reach the local replica at {url}: is `dfx start` running?"
                )
            if self.is_local:
                return BackendError(
                    f"cannot reach the local replica at {url}: is the local network running "
                    "(`dfx start` or `icp network start -d`)?"
                )
            return BackendError(f"cannot reach {url}: connection refused")
        if e.kind == "connect":
            hint = "" if self.is_local else "; check the internet connection"
            return BackendError(f"cannot reach {url}: {e.detail}{hint}")
        if e.kind == "timeout":
            return BackendError(
                f"{url} did not answer `{method}` within {self.timeout:g} s"
                + ("" if method == "status" else "; the call may still complete")
            )
        if e.kind == "network":
            return BackendError(f"the connection to {url} broke during `{method}`: {e.detail}")
        status = e.status or 0
        text = _body_text(e.body)
        lowered = text.lower()
        if "canister" in lowered and any(
            w in lowered for w in ("not found", "not_found", "does not exist")
        ):
            return self._missing_canister()
        if status == 400 and "expiry" in lowered:
            return BackendError(
                f"{url} refused `{method}` because of its expiry time ({text}): "
                "check this computer's clock"
            )
        reason = httpx.codes.get_reason_phrase(status)
        detail = f": {text}" if text else ""
        if status in (502, 503, 504):
            return BackendError(
                f"{url} is not ready or overloaded (HTTP {status} {reason}) for `{method}`"
                f"{detail}; try again shortly"
            )
        return BackendError(f"{url} answered `{method}` with HTTP {status} {reason}{detail}")

    def _missing_canister(self) -> BackendError:
        return BackendError(
            f"canister {self.canister_id} does not exist on {self.url}: deploy it "
            "(`dfx deploy gpt2_backend`) or check the canister id"
        )

    def _rejection_error(self, r: _Rejected, method: str) -> BackendError:
        code = (r.error_code or "").upper()
        number = int(code[2:]) if re.fullmatch(r"IC\d{4}", code) else None
        message = _one_line(r.message)
        lowered = message.lower()
        cid = self.canister_id
        tag = f" [{r.error_code}]" if r.error_code else f" [reject code {r.code}]"
        if number == 301 or (r.code == 3 and "not found" in lowered and "method" not in lowered):
            return self._missing_canister()
        if (
            number in (302, 536)
            or "has no update method" in lowered
            or ("has no query method" in lowered)
        ):
            return BackendError(
                f"canister {cid} has no method `{method}`: is an older or different wasm "
                f"deployed? Redeploy gpt2_backend{tag}"
            )
        if number == 537 or "no wasm module" in lowered or "wasm module not found" in lowered:
            return BackendError(
                f"canister {cid} is empty (no wasm installed): run `dfx deploy gpt2_backend`{tag}"
            )
        if (
            number == 207
            or (number is not None and 530 <= number <= 535)
            or ("out of cycles" in lowered)
        ):
            return BackendError(
                f"canister {cid} is out of cycles: top it up (e.g. `dfx canister "
                f"deposit-cycles`) and retry ({message}){tag}"
            )
        if number == 522 or "instruction limit" in lowered:
            return InstructionLimitExceeded(
                f"`{method}` exceeded the IC's per-message instruction limit and was rolled "
                f"back: ask for less work per call{tag}"
            )
        if number in (508, 509) or "is stopped" in lowered or "is stopping" in lowered:
            return BackendError(
                f"canister {cid} is stopped: start it with `dfx canister start gpt2_backend`{tag}"
            )
        if r.code == 2:
            return BackendError(f"the replica is busy ({message}); try again shortly{tag}")
        if r.code == 4:
            return BackendError(f"the canister refused `{method}`: {message}{tag}")
        if number in (502, 503) or "trap" in lowered:
            return BackendError(f"the canister trapped in `{method}`: {message}{tag}")
        return BackendError(f"the replica rejected `{method}`: {message}{tag}")


def _decode_cbor(body: bytes) -> Mapping[Any, Any]:
    try:
        decoded = cbor2.loads(body)
    except Exception as e:  # cbor2 errors are not ValueErrors
        preview = _body_text(body[:200])
        raise _BadResponse(
            f"not CBOR: {preview!r}" if preview else "an empty or binary non-CBOR body"
        ) from e
    if not isinstance(decoded, Mapping):
        raise _BadResponse(f"CBOR {type(decoded).__name__} where a map was expected")
    return decoded


def _mentions_canister(body: bytes) -> bool:
    return b"anister" in body[:2000]


def _is_refused(e: httpx.ConnectError) -> bool:
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return True
        cause = cause.__cause__ or cause.__context__
    text = str(e).lower()
    return "refused" in text or "errno 111" in text or "errno 61" in text


def _reason(e: Exception) -> str:
    text = str(e).strip()
    if (
        "Name or service not known" in text
        or "nodename nor servname" in text
        or ("getaddrinfo" in text.lower())
    ):
        return f"name lookup failed ({text})"
    return _one_line(text, 200) or type(e).__name__
