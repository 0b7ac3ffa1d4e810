"""Shared fixtures: the real canister wasm in the embedded runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from icp_identity.identity import Identity
from icp_principal.principal import Principal

from gpt2_chat.backends.embedded.backend import EmbeddedBackend, shipped_wasm
from gpt2_chat.backends.embedded.runtime import Limits
from gpt2_chat.client.canister import Gpt2Canister
from tests.support import OpenCanister

# Its asserts explain themselves in failures; registered here because tests/embedded imports
# it before tests/faults/conftest.py is read.
pytest.register_assert_rewrite("tests.faults.support")


@pytest.fixture(autouse=True)
def saved_chats_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Saved chats go to a directory of the test's own, never the user's data dir (nor the
    test's working directory, whose listing some tests check)."""
    data = tmp_path_factory.mktemp("saved-chats")
    monkeypatch.setenv("GPT2_CHAT_DATA_DIR", str(data))
    return data


@pytest.fixture(scope="session")
def wasm() -> bytes:
    return shipped_wasm()


@pytest.fixture(scope="session")
def controller() -> Principal:
    return Principal.self_authenticating(Identity(privkey="11" * 32).der_pubkey)


@pytest.fixture(scope="session")
def stranger() -> Principal:
    return Principal.self_authenticating(Identity(privkey="22" * 32).der_pubkey)


@pytest.fixture
def open_canister(tmp_path: Path, wasm: bytes, controller: Principal) -> Iterator[OpenCanister]:
    """Opens the embedded canister in a fresh state dir (reopening it = an upgrade)."""
    backends: list[EmbeddedBackend] = []

    def open_(caller: Principal | None = None, limits: Limits | None = None) -> Gpt2Canister:
        """A new runtime, unless one is open: then the same canister as `caller`."""
        live = [b for b in backends if not b.closed]
        if live and limits is None:
            return Gpt2Canister(live[0].with_caller(caller or controller))
        backend = EmbeddedBackend(
            tmp_path / "state", caller or controller, wasm=wasm, limits=limits
        )
        backends.append(backend)
        return Gpt2Canister(backend)

    yield open_
    for b in backends:
        b.close()
