"""IC rejections as typed, one-line errors that say what to do next.

A rejection carries a reject code (interface spec, "Reject codes": 1 SYS_FATAL,
2 SYS_TRANSIENT, 3 DESTINATION_INVALID, 4 CANISTER_REJECT, 5 CANISTER_ERROR, 6 SYS_UNKNOWN)
and, from current replicas, an error code `IC<nnnn>` whose number is the replica's
`ErrorCode` (dfinity/ic rs/types/types/src/user_error.rs): the first digit repeats the
reject code. Errors are chosen by these numbers; the message is only shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gpt2_chat.backends.replica.errors import (
    CanisterEmpty,
    CanisterNotFound,
    CanisterOutOfCycles,
    CanisterRejected,
    CanisterStopped,
    CanisterTrapped,
    MethodNotFound,
    ReplicaBusy,
)
from gpt2_chat.errors import BackendError, InstructionLimitExceeded

SYS_TRANSIENT = 2
DESTINATION_INVALID = 3
CANISTER_REJECT = 4

# ErrorCode numbers (user_error.rs).
CANISTER_NOT_FOUND = {301}
METHOD_NOT_FOUND = {302, 536}  # 302 before the code moved to the 5xx range
NO_WASM_MODULE = {304, 537}
OUT_OF_CYCLES = {207, 501, 530, 531, 532, 533, 534, 535}  # 53x: cannot pay for memory/compute
STOPPED = {508, 509}
TRAPPED = {502, 503}
#: CanisterInstructionLimitExceeded, and a query's whole call graph or time limit.
INSTRUCTION_LIMIT = {522, 526, 528}
#: Queue full, ingress history full, certified state not ready, rate limits: try later.
BUSY = {201, 204, 208, 209, 210}

_MAX_MESSAGE_CHARS = 300


class Rejected(Exception):
    """A rejection as the replica sent it."""

    def __init__(self, code: int, message: str, error_code: str | None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.error_code = error_code

    @property
    def number(self) -> int | None:
        """The ErrorCode number of `IC0503`, or None."""
        code = (self.error_code or "").upper()
        return int(code[2:]) if re.fullmatch(r"IC\d{4}", code) else None

    @property
    def busy(self) -> bool:
        return self.number in BUSY or (self.number is None and self.code == SYS_TRANSIENT)


def rejection(fields: Mapping[Any, Any]) -> Rejected:
    """A Rejected from a reject response or a certificate's request status."""
    return Rejected(
        _as_int(fields.get("reject_code")),
        as_text(fields.get("reject_message")) or "no message",
        as_text(fields.get("error_code")),
    )


def rejection_error(r: Rejected, method: str, canister_id: str, url: str) -> BackendError:
    number = r.number
    message = one_line(r.message)
    tag = f" [{r.error_code}]" if r.error_code else f" [reject code {r.code}]"
    if number in CANISTER_NOT_FOUND or (number is None and r.code == DESTINATION_INVALID):
        return missing_canister(canister_id, url)
    if number in METHOD_NOT_FOUND:
        return MethodNotFound(
            f"canister {canister_id} has no method `{method}`: is an older or different wasm "
            f"deployed? Redeploy gpt2_backend{tag}"
        )
    if number in NO_WASM_MODULE:
        return CanisterEmpty(
            f"canister {canister_id} is empty (no wasm installed): run "
            f"`dfx deploy gpt2_backend`{tag}"
        )
    if number in OUT_OF_CYCLES:
        return CanisterOutOfCycles(
            f"canister {canister_id} is out of cycles or frozen: top it up (`dfx canister "
            f"deposit-cycles <amount> {canister_id}`) and retry ({message}){tag}"
        )
    if number in INSTRUCTION_LIMIT:
        return InstructionLimitExceeded(
            f"`{method}` exceeded the IC's per-message instruction limit and was rolled "
            f"back: ask for less work per call (a smaller instruction budget or fewer "
            f"tokens per call){tag}"
        )
    if number in STOPPED:
        return CanisterStopped(
            f"canister {canister_id} is stopped or stopping: start it with "
            f"`dfx canister start {canister_id}`{tag}"
        )
    if r.busy:
        return ReplicaBusy(f"the replica is busy ({message}); try again shortly{tag}")
    if number in TRAPPED:
        return CanisterTrapped(f"the canister trapped in `{method}`: {message}{tag}")
    if r.code == CANISTER_REJECT:
        return CanisterRejected(f"the canister refused `{method}`: {message}{tag}")
    return BackendError(f"the replica rejected `{method}`: {message}{tag}")


def missing_canister(canister_id: str, url: str) -> CanisterNotFound:
    return CanisterNotFound(
        f"canister {canister_id} does not exist on {url}: deploy it "
        "(`dfx deploy gpt2_backend`) or check the canister id"
    )


def one_line(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
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


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray):
        # In a certificate the reject code is an unsigned LEB128 leaf.
        return sum((byte & 0x7F) << (7 * i) for i, byte in enumerate(value))
    return 0


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
