"""The embedded runtime's IC semantics, on a tiny hand-written canister."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import wasmtime

from gpt2_chat.backends.embedded.runtime import EmbeddedCanister, Limits
from gpt2_chat.backends.embedded.stable_memory import StateInUse
from gpt2_chat.errors import BackendError, InstructionLimitExceeded

CONTROLLER = b"\x01" * 10
OTHER = b"\x02" * 10

# Every update bumps a heap word, a mutable global and a stable-memory word, then replies
# with all three; the variants trap or spin after bumping.
WAT = r"""
(module
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "trap" (func $trap (param i32 i32)))
  (import "ic0" "stable64_grow" (func $grow (param i64) (result i64)))
  (import "ic0" "stable64_write" (func $swrite (param i64 i64 i64)))
  (import "ic0" "stable64_read" (func $sread (param i64 i64 i64)))
  (import "ic0" "performance_counter" (func $perf (param i32) (result i64)))
  (import "ic0" "is_controller" (func $is_controller (param i32 i32) (result i32)))
  (import "ic0" "msg_caller_size" (func $caller_size (result i32)))
  (import "ic0" "msg_caller_copy" (func $caller_copy (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 0))
  (data (i32.const 100) "boom")
  (func (export "canister_init") (drop (call $grow (i64.const 1))))
  (func $bump
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (call $swrite (i64.const 0) (i64.const 0) (i64.const 4)))
  (func $state
    (call $sread (i64.const 4) (i64.const 0) (i64.const 4))
    (i32.store (i32.const 8) (global.get $g))
    (i64.store (i32.const 16) (call $perf (i32.const 0)))
    (call $caller_copy (i32.const 40) (i32.const 0) (call $caller_size))
    (i32.store (i32.const 24) (call $is_controller (i32.const 40) (call $caller_size)))
    (call $append (i32.const 0) (i32.const 28))
    (call $reply))
  (func (export "canister_update bump") (call $bump) (call $state))
  (func (export "canister_update bump_then_trap") (call $bump) (call $trap (i32.const 100) (i32.const 4)))
  (func (export "canister_update bump_then_spin") (call $bump) (loop $l (br $l)))
  (func (export "canister_query bump_query") (call $bump) (call $state))
  (func (export "canister_query state") (call $state))
  (func (export "canister_update no_reply"))
)
"""


def decode(reply: bytes) -> tuple[int, int, int, int, bool]:
    heap, stable, glob = struct.unpack_from("<3i", reply, 0)
    (perf,) = struct.unpack_from("<q", reply, 16)
    (controller,) = struct.unpack_from("<i", reply, 24)
    return heap, stable, glob, perf, bool(controller)


@pytest.fixture
def wasm() -> bytes:
    return wasmtime.wat2wasm(WAT)


def open_canister(wasm: bytes, state: Path, limits: Limits | None = None) -> EmbeddedCanister:
    return EmbeddedCanister(wasm, state, b"\x00" * 10, [CONTROLLER], limits=limits)


def test_update_commits_and_reports_instructions(wasm: bytes, tmp_path: Path) -> None:
    c = open_canister(wasm, tmp_path)
    reply = c.update("bump", b"", CONTROLLER)
    heap, stable, glob, perf, is_controller = decode(reply.data)
    assert (heap, stable, glob, is_controller) == (1, 1, 1, True)
    assert reply.instructions is not None and 0 < perf < reply.instructions
    assert decode(c.query("state", b"", OTHER).data)[:3] == (1, 1, 1)
    assert decode(c.query("state", b"", OTHER).data)[4] is False


def test_a_trap_rolls_back_heap_globals_and_stable_memory(wasm: bytes, tmp_path: Path) -> None:
    c = open_canister(wasm, tmp_path)
    c.update("bump", b"", CONTROLLER)
    with pytest.raises(BackendError, match="trapped in bump_then_trap: boom"):
        c.update("bump_then_trap", b"", CONTROLLER)
    assert decode(c.query("state", b"", CONTROLLER).data)[:3] == (1, 1, 1)


def test_query_changes_are_discarded(wasm: bytes, tmp_path: Path) -> None:
    c = open_canister(wasm, tmp_path)
    assert decode(c.query("bump_query", b"", CONTROLLER).data)[:3] == (1, 1, 1)
    assert decode(c.query("state", b"", CONTROLLER).data)[:3] == (0, 0, 0)


def test_instruction_limit_stops_a_runaway_message(wasm: bytes, tmp_path: Path) -> None:
    c = open_canister(wasm, tmp_path, Limits(update=5_000_000))
    with pytest.raises(InstructionLimitExceeded, match="limit of 5,000,000"):
        c.update("bump_then_spin", b"", CONTROLLER)
    assert decode(c.query("state", b"", CONTROLLER).data)[:3] == (0, 0, 0)


def test_a_method_must_reply_and_must_exist(wasm: bytes, tmp_path: Path) -> None:
    c = open_canister(wasm, tmp_path)
    with pytest.raises(BackendError, match="without replying"):
        c.update("no_reply", b"", CONTROLLER)
    with pytest.raises(BackendError, match="no update method 'missing'"):
        c.update("missing", b"", CONTROLLER)


def test_restart_keeps_stable_memory_and_resets_the_heap(wasm: bytes, tmp_path: Path) -> None:
    c = open_canister(wasm, tmp_path)
    c.update("bump", b"", CONTROLLER)
    c.update("bump", b"", CONTROLLER)
    with pytest.raises(StateInUse):
        open_canister(wasm, tmp_path)
    c.close()
    c = open_canister(wasm, tmp_path)  # an upgrade: canister_init does not run again
    assert decode(c.query("state", b"", CONTROLLER).data)[:3] == (0, 2, 0)
    c.close()
