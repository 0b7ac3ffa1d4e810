"""Who controls an embedded canister: never anonymous by accident; changed only explicitly,
only by a controller."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
from icp_identity.identity import Identity
from icp_principal.principal import Principal

from gpt2_chat.backends.embedded.backend import EmbeddedBackend, NotAController
from gpt2_chat.identity import default_identity
from tests.embedded.test_runtime import WAT, decode

ALICE = Principal.self_authenticating(Identity(privkey="33" * 32).der_pubkey)
BOB = Principal.self_authenticating(Identity(privkey="44" * 32).der_pubkey)
ANONYMOUS = Principal.anonymous()


def open_backend(state: Path, caller: Principal) -> EmbeddedBackend:
    return EmbeddedBackend(state, caller, wasm=wasmtime.wat2wasm(WAT))


def is_controller(backend: EmbeddedBackend) -> bool:
    return decode(backend.query("state", b"").data)[4]


def test_anonymous_first_open_installs_the_state_dirs_own_identity(tmp_path: Path) -> None:
    backend = open_backend(tmp_path, ANONYMOUS)
    own = default_identity(tmp_path / "identity.pem").sender()
    assert backend.controllers() == [own] and own != ANONYMOUS
    assert not is_controller(backend)
    backend.close()
    reopened = open_backend(tmp_path, ALICE)  # a later caller does not take it over
    assert reopened.controllers() == [own] and not is_controller(reopened)
    reopened.close()


def test_the_first_named_caller_is_the_controller(tmp_path: Path) -> None:
    backend = open_backend(tmp_path, ALICE)
    assert backend.controllers() == [ALICE] and is_controller(backend)
    backend.close()


def test_only_a_controller_changes_the_controllers(tmp_path: Path) -> None:
    alice = open_backend(tmp_path, ALICE)
    for outsider in (BOB, ANONYMOUS):
        with pytest.raises(NotAController):
            alice.with_caller(outsider).set_controllers([outsider])
    alice.set_controllers([ALICE, BOB])
    assert is_controller(alice.with_caller(BOB))
    with pytest.raises(NotAController):
        alice.set_controllers([])
    alice.with_caller(BOB).set_controllers([BOB])
    assert not is_controller(alice)
    alice.close()
    assert open_backend(tmp_path, ALICE).controllers() == [BOB]  # kept on disk
