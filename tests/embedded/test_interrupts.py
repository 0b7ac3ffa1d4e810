"""Ctrl-C during a message: never inside the guest; the message commits or rolls back first.

The canister's `debug_print` goes to a log callback that sends SIGINT to this process, so
the signal arrives at a known point inside a message (inside a host call, where a
KeyboardInterrupt used to escape through wasmtime's trampoline and skip the rollback).
"""

from __future__ import annotations

import os
import signal
import struct
import time
from pathlib import Path

import pytest
import wasmtime

from gpt2_chat.backends.embedded.runtime import EmbeddedCanister

CALLER = b"\x01" * 10

# `step` bumps a heap word, a global and a stable-memory word, prints (the log callback sends
# SIGINT), then replies with the three; `step_then_spin` prints after bumping and never ends.
WAT = r"""
(module
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "debug_print" (func $print (param i32 i32)))
  (import "ic0" "stable64_grow" (func $grow (param i64) (result i64)))
  (import "ic0" "stable64_write" (func $swrite (param i64 i64 i64)))
  (import "ic0" "stable64_read" (func $sread (param i64 i64 i64)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 0))
  (data (i32.const 100) "tick")
  (func (export "canister_init") (drop (call $grow (i64.const 1))))
  (func $bump
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (call $swrite (i64.const 0) (i64.const 0) (i64.const 4)))
  (func (export "canister_query state")
    (call $sread (i64.const 4) (i64.const 0) (i64.const 4))
    (i32.store (i32.const 8) (global.get $g))
    (call $append (i32.const 0) (i32.const 12))
    (call $reply))
  (func (export "canister_update step")
    (call $bump)
    (call $print (i32.const 100) (i32.const 4))
    (call $append (i32.const 0) (i32.const 4))
    (call $reply))
  (func (export "canister_update step_then_spin")
    (call $bump)
    (call $print (i32.const 100) (i32.const 4))
    (loop $l (br $l)))
)
"""


def open_canister(tmp_path: Path, interrupts_per_print: list[int]) -> EmbeddedCanister:
    def log(_line: str) -> None:
        for _ in range(interrupts_per_print[0]):
            os.kill(os.getpid(), signal.SIGINT)

    return EmbeddedCanister(wasmtime.wat2wasm(WAT), tmp_path, b"\x00" * 10, [CALLER], log=log)


def state(c: EmbeddedCanister) -> tuple[int, int, int]:
    heap, stable, glob = struct.unpack("<3i", c.query("state", b"", CALLER).data)
    return heap, stable, glob


def test_one_ctrl_c_is_raised_after_the_message_commits(tmp_path: Path) -> None:
    sigints = [1]
    c = open_canister(tmp_path, sigints)
    with pytest.raises(KeyboardInterrupt):
        c.update("step", b"", CALLER)
    sigints[0] = 0
    assert state(c) == (1, 1, 1)
    c.close()
    reopened = open_canister(tmp_path, sigints)  # a fresh heap; stable memory was committed
    assert state(reopened)[1] == 1


def test_a_second_ctrl_c_stops_the_guest_and_rolls_back(tmp_path: Path) -> None:
    sigints = [2]
    c = open_canister(tmp_path, sigints)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        c.update("step_then_spin", b"", CALLER)  # spins for 40B instructions otherwise
    assert time.monotonic() - started < 5
    sigints[0] = 0
    assert state(c) == (0, 0, 0)
    c.update("step", b"", CALLER)
    assert state(c) == (1, 1, 1)


def test_the_previous_sigint_handler_is_back_after_a_message(tmp_path: Path) -> None:
    c = open_canister(tmp_path, [0])
    c.update("step", b"", CALLER)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.set_wakeup_fd(-1) == -1


def test_any_exception_in_a_host_call_rolls_the_message_back(tmp_path: Path) -> None:
    class HostBug(Exception):
        pass

    def log(_line: str) -> None:
        raise HostBug

    c = EmbeddedCanister(wasmtime.wat2wasm(WAT), tmp_path, b"\x00" * 10, [CALLER], log=log)
    with pytest.raises(HostBug):
        c.update("step", b"", CALLER)
    assert state(c) == (0, 0, 0)
