"""The one backend the app talks through, opened once and closed safely.

The embedded runtime allows one process per state dir, so the app opens a single backend
and shares it between the views. `GuardedBackend` makes closing it safe while workers may
still be calling: close waits for calls in flight, and later calls fail with a clear
BackendError instead of reaching a closed runtime.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from gpt2_chat.backends.base import Backend, Reply
from gpt2_chat.client.canister import Gpt2Canister
from gpt2_chat.errors import BackendError
from gpt2_chat.settings import Settings

from .fmt import short_path

#: How long closing waits for a call in flight (a long load_model call, say).
CLOSE_WAIT_S = 60.0


class ConnectionClosed(BackendError):
    """A call on a connection the app has already closed (settings changed or quitting)."""


class GuardedBackend:
    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.description = inner.description
        self.parallel_updates = inner.parallel_updates
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False

    def _enter(self) -> None:
        with self._cond:
            if self._closed:
                raise ConnectionClosed("the connection was closed (settings changed or quitting)")
            self._active += 1

    def _exit(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def query(self, method: str, arg: bytes) -> Reply:
        self._enter()
        try:
            return self.inner.query(method, arg)
        finally:
            self._exit()

    def update(self, method: str, arg: bytes) -> Reply:
        self._enter()
        try:
            return self.inner.update(method, arg)
        finally:
            self._exit()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.wait_for(lambda: self._active == 0, CLOSE_WAIT_S)
        self.inner.close()


@dataclass(eq=False)
class Connection:
    """An open backend and the settings it was opened with."""

    backend: GuardedBackend
    canister: Gpt2Canister
    settings: Settings

    @property
    def label(self) -> str:
        return describe(self.settings)

    def close(self) -> None:
        self.backend.close()


def describe(settings: Settings) -> str:
    """How the backend these settings select is shown to the user (short, one line)."""
    if settings.network == "embedded":
        return f"embedded runtime (not a replica) · {short_path(settings.resolved_state_dir())}"
    where = {"local": "local replica", "ic": "IC mainnet"}.get(settings.network, settings.network)
    return f"{where} · {settings.canister or 'gpt2_backend'}"


def open_connection(settings: Settings) -> Connection:
    """Opens the backend (slow: compiles the canister wasm on first use). Raises
    BackendError (or ValueError/OSError for unusable settings) with a user-facing message."""
    from gpt2_chat.connect import open_backend

    backend = GuardedBackend(open_backend(settings))
    try:
        canister = Gpt2Canister(backend)
    except ValueError:
        backend.close()
        raise
    return Connection(backend, canister, settings)
