"""The embedded backend: the shipped canister wasm, run by the local embedded runtime."""

from __future__ import annotations

import copy
import gzip
from collections.abc import Callable
from pathlib import Path

from icp_principal.principal import Principal

from gpt2_chat.assets import asset_path
from gpt2_chat.backends.base import Reply
from gpt2_chat.backends.embedded.runtime import EmbeddedCanister, Limits
from gpt2_chat.errors import BackendError
from gpt2_chat.identity import default_identity

#: The id a first local canister gets; the embedded canister uses it too.
CANISTER_ID = "rrkah-fqaaa-aaaaa-aaaaq-cai"


def shipped_wasm() -> bytes:
    return gzip.decompress(asset_path("gpt2_backend.wasm.gz").read_bytes())


class NotAController(BackendError):
    """Only a controller may change the controllers."""


class EmbeddedBackend:
    """Calls go to an in-process canister whose state lives in `state_dir`.

    A new canister is installed with the caller as its controller (as `dfx deploy` makes
    the deploying identity one), unless the caller is anonymous: then with the state dir's
    own identity, so that opening a state dir anonymously never hands it to everyone.
    Later, the controllers change only through `set_controllers`.
    """

    parallel_updates = False

    time_sliced = False

    def __init__(
        self,
        state_dir: Path,
        caller: Principal,
        wasm: bytes | None = None,
        log: Callable[[str], None] | None = None,
        limits: Limits | None = None,
    ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        installer = caller
        if caller == Principal.anonymous():
            installer = default_identity(state_dir / "identity.pem").sender()
        self.caller = caller
        self.description = f"local embedded runtime (state in {state_dir})"
        self.canister = EmbeddedCanister(
            wasm if wasm is not None else shipped_wasm(),
            state_dir,
            Principal.from_str(CANISTER_ID).bytes,
            [installer.bytes],
            log=log,
            limits=limits,
        )

    def controllers(self) -> list[Principal]:
        return [Principal(c) for c in self.canister.controllers]

    def set_controllers(self, controllers: list[Principal]) -> None:
        """What `dfx canister update-settings` does: for controllers only, and never to an
        empty list (nobody could change it again)."""
        if self.caller.bytes not in self.canister.controllers:
            raise NotAController(
                f"{self.caller.to_str()} is not a controller of the embedded canister; "
                "only a controller can change the controllers"
            )
        if not controllers:
            raise NotAController("the canister must keep at least one controller")
        self.canister.set_controllers([p.bytes for p in controllers])

    def with_caller(self, caller: Principal) -> EmbeddedBackend:
        """The same canister, called as another principal."""
        view = copy.copy(self)
        view.caller = caller
        return view

    def query(self, method: str, arg: bytes) -> Reply:
        return self.canister.query(method, arg, self.caller.bytes)

    def update(self, method: str, arg: bytes) -> Reply:
        return self.canister.update(method, arg, self.caller.bytes)

    @property
    def closed(self) -> bool:
        return self.canister.closed

    def close(self) -> None:
        self.canister.close()
