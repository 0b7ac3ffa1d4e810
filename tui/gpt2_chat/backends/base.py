"""What every backend offers: raw Candid calls to one canister (errors: `gpt2_chat.errors`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Reply:
    """A successful call: the Candid-encoded reply and, where the backend can measure it,
    the IC instructions the message used."""

    data: bytes
    instructions: int | None = None


class Backend(Protocol):
    #: How the backend is shown to the user, e.g. "local embedded runtime".
    description: str
    #: Whether independent update calls may run concurrently (several upload chunks in flight).
    parallel_updates: bool
    #: Whether updates run in DTS slices of 2B instructions, one per round (a replica); the
    #: embedded runtime runs a call at once and only reports the slices it would take.
    time_sliced: bool

    def query(self, method: str, arg: bytes) -> Reply: ...

    def update(self, method: str, arg: bytes) -> Reply: ...

    def close(self) -> None: ...
