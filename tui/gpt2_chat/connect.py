"""Opening a connection: the backend the settings select, with the canister client on it.

The one place that loads the identity, finds the canister id and pairs a backend with a
`Gpt2Canister`; the CLI and the app both open connections here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from icp_principal.principal import Principal

from gpt2_chat.backends.base import Backend, Reply
from gpt2_chat.client.canister import Gpt2Canister
from gpt2_chat.errors import BackendError
from gpt2_chat.identity import default_identity, dfx_selected_identity, load_identity
from gpt2_chat.network import Network, parse_network
from gpt2_chat.settings import Settings

#: How long closing waits for a call in flight (a long load_model call, say).
CLOSE_WAIT_S = 60.0
DEFAULT_CANISTER_NAME = "gpt2_backend"


class ConnectionClosed(BackendError):
    """A call on a connection already closed (settings changed or quitting)."""


class NoDfxProject(BackendError):
    """A canister name to look up, and no dfx project to look it up in."""


class GuardedBackend:
    """A backend that is safe to close while other threads may still be calling: close
    waits for calls in flight, and later calls raise ConnectionClosed instead of reaching
    a closed runtime."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.description = inner.description
        self.parallel_updates = inner.parallel_updates
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False

    def _call(self, call: Callable[[str, bytes], Reply], method: str, arg: bytes) -> Reply:
        with self._cond:
            if self._closed:
                raise ConnectionClosed("the connection was closed (settings changed or quitting)")
            self._active += 1
        try:
            return call(method, arg)
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def query(self, method: str, arg: bytes) -> Reply:
        return self._call(self.inner.query, method, arg)

    def update(self, method: str, arg: bytes) -> Reply:
        return self._call(self.inner.update, method, arg)

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
    """An open backend, the canister client on it, and the settings it was opened with."""

    backend: GuardedBackend
    canister: Gpt2Canister
    settings: Settings
    network: Network

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dfx_project_dir(settings: Settings) -> Path | None:
    """The dfx project, found as dfx finds it: the configured one, else the nearest
    directory holding dfx.json from the current directory upward."""
    if settings.project_dir:
        return Path(settings.project_dir).expanduser()
    here = Path.cwd().resolve()
    return next((d for d in (here, *here.parents) if (d / "dfx.json").is_file()), None)


def canister_id(settings: Settings, network: Network) -> str:
    """The canister's id: the setting when it is one, else the name looked up in the dfx
    project's files for the network's dfx network (mainnet ids for mainnet URLs)."""
    from gpt2_chat.backends.replica import resolve_canister_id

    name = settings.canister or DEFAULT_CANISTER_NAME
    if is_principal_text(name):
        return name
    project = dfx_project_dir(settings)
    if project is None:
        raise NoDfxProject(
            f"canister `{name}` is a name, and there is no dfx.json in {Path.cwd()} or above "
            "to look its id up in: pass the canister id, run from the dfx project, or set "
            "its directory (--project-dir)"
        )
    assert network.dfx_network is not None
    return resolve_canister_id(name, project, network.dfx_network)


def is_principal_text(text: str) -> bool:
    try:
        Principal.from_str(text)
    except (ValueError, TypeError):
        return False
    return True


def open_backend(settings: Settings) -> Backend:
    """The raw backend the settings select (slow for the embedded runtime: it compiles the
    canister wasm on first use). Raises UserError subclasses with a user-facing message."""
    network = parse_network(settings.network)
    if network.embedded:
        from gpt2_chat.backends.embedded.backend import EmbeddedBackend

        state_dir = settings.resolved_state_dir()
        identity = (
            load_identity(settings.identity)
            if settings.identity
            else default_identity(state_dir / "identity.pem")
        )
        return EmbeddedBackend(state_dir, identity.sender())
    from gpt2_chat.backends.replica import ReplicaBackend

    cid = canister_id(settings, network)
    identity = load_identity(settings.identity or dfx_selected_identity())
    assert network.url is not None
    return ReplicaBackend(network.url, cid, identity)


def open_connection(settings: Settings) -> Connection:
    """The backend the settings select with the canister client on it."""
    network = parse_network(settings.network)
    backend = GuardedBackend(open_backend(settings))
    try:
        canister = Gpt2Canister(backend)
    except BaseException:
        backend.close()
        raise
    return Connection(backend, canister, settings, network)
