"""The embedded backend: the shipped canister wasm, run by the local embedded runtime."""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from pathlib import Path

from icp_principal.principal import Principal

from gpt2_chat.assets import asset_path
from gpt2_chat.backends.base import Reply
from gpt2_chat.backends.embedded.runtime import EmbeddedCanister, Limits

#: The id a first local canister gets; the embedded canister uses it too.
CANISTER_ID = "rrkah-fqaaa-aaaaa-aaaaq-cai"


def shipped_wasm() -> bytes:
    return gzip.decompress(asset_path("gpt2_backend.wasm.gz").read_bytes())


class EmbeddedBackend:
    """Calls go to an in-process canister whose state lives in `state_dir`.

    The principal that first opens a state dir becomes the canister's controller (as
    `dfx deploy` makes the deploying identity a controller); later callers are checked
    against it.
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
        controllers_file = state_dir / "controllers.json"
        if not controllers_file.exists():
            controllers_file.write_text(json.dumps([caller.to_str()]) + "\n")
        controllers = [
            Principal.from_str(p).bytes for p in json.loads(controllers_file.read_text())
        ]
        self.caller = caller
        self.description = f"local embedded runtime (state in {state_dir})"
        self.canister = EmbeddedCanister(
            wasm if wasm is not None else shipped_wasm(),
            state_dir,
            Principal.from_str(CANISTER_ID).bytes,
            controllers,
            log=log,
            limits=limits,
        )

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
