"""Transport failures (transport.HttpFailure) as one-line typed errors that say what to do.

The HTTP interface answers some refusals with a status and plain text, no reject code; those
are told apart by their text here, and only here."""

from __future__ import annotations

import httpx

from gpt2_chat.backends.replica.errors import (
    NotAReplica,
    ReplicaBusy,
    ReplicaTimeout,
    ReplicaUnreachable,
    RequestExpired,
)
from gpt2_chat.backends.replica.rejects import missing_canister, one_line
from gpt2_chat.backends.replica.transport import HttpFailure
from gpt2_chat.errors import BackendError


def transport_error(
    e: HttpFailure,
    *,
    url: str,
    is_local: bool,
    canister_id: str,
    method: str,
    seconds: float,
    is_update: bool,
) -> BackendError:
    """`seconds`: the call's deadline; `is_update`: whether the call may run on regardless."""
    if e.kind == "closed":
        return BackendError("this replica connection is closed")
    if e.kind == "refused":
        if is_local and url.endswith(":4943"):
            return ReplicaUnreachable(
                f"cannot reach the local replica at {url}: is `dfx start` running?"
            )
        if is_local:
            return ReplicaUnreachable(
                f"cannot reach the local replica at {url}: is the local network running "
                "(`dfx start` or `icp network start -d`)?"
            )
        return ReplicaUnreachable(f"cannot reach {url}: connection refused")
    if e.kind == "connect":
        hint = "" if is_local else "; check the internet connection"
        return ReplicaUnreachable(f"cannot reach {url}: {e.detail}{hint}")
    if e.kind == "timeout":
        return ReplicaTimeout(
            f"{url} did not answer `{method}` within {seconds:g} s"
            + ("; the call may still complete on the canister" if is_update else "")
        )
    if e.kind == "network":
        return ReplicaUnreachable(f"the connection to {url} broke during `{method}`: {e.detail}")
    if e.kind == "too_large":
        return NotAReplica(f"{url} answered `{method}` with {e.detail}")
    status = e.status or 0
    text = body_text(e.body)
    lowered = text.lower()
    if "canister" in lowered and any(
        w in lowered for w in ("not found", "not_found", "does not exist")
    ):
        return missing_canister(canister_id, url)
    if status == 400 and "expiry" in lowered:
        return RequestExpired(
            f"{url} refused `{method}` because of its expiry time ({text}): "
            "check this computer's clock"
        )
    reason = httpx.codes.get_reason_phrase(status)
    detail = f": {text}" if text else ""
    if status in (429, 502, 503, 504):
        return ReplicaBusy(
            f"{url} is not ready or overloaded (HTTP {status} {reason}) for `{method}`"
            f"{detail}; try again shortly"
        )
    return BackendError(f"{url} answered `{method}` with HTTP {status} {reason}{detail}")


def body_text(body: bytes) -> str:
    """An error body as one line of text; empty when the body is binary."""
    text = body.decode("utf-8", "replace").strip()
    if "\ufffd" in text or any(not c.isprintable() and not c.isspace() for c in text):
        return ""
    return one_line(text, 200)
