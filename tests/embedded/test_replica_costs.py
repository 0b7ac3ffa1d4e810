"""System API charges against the replica's numbers (dfinity/ic
``rs/embedders/src/wasmtime_embedder/system_api_complexity.rs`` and ``linker.rs``).

Each test runs a method whose body makes one system API call before replying and subtracts
the same method without the call: what is left is the wasm instructions of the call site
(from the cost table) plus the charge.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from gpt2_chat.backends.embedded.cost_table import instruction_cost
from gpt2_chat.backends.embedded.runtime import EmbeddedCanister, Limits
from gpt2_chat.errors import BackendError, InstructionLimitExceeded

CALLER = b"\x01" * 10
CALL = instruction_cost("call")
CONST = instruction_cost("i32.const")
CONST64 = instruction_cost("i64.const")
DROP = instruction_cost("drop")

IMPORTS = """
  (import "ic0" "msg_reply" (func $msg_reply))
  (import "ic0" "msg_reply_data_append" (func $msg_reply_data_append (param i32 i32)))
  (import "ic0" "msg_arg_data_size" (func $msg_arg_data_size (result i32)))
  (import "ic0" "msg_arg_data_copy" (func $msg_arg_data_copy (param i32 i32 i32)))
  (import "ic0" "msg_caller_size" (func $msg_caller_size (result i32)))
  (import "ic0" "msg_caller_copy" (func $msg_caller_copy (param i32 i32 i32)))
  (import "ic0" "time" (func $time (result i64)))
  (import "ic0" "is_controller" (func $is_controller (param i32 i32) (result i32)))
  (import "ic0" "trap" (func $trap (param i32 i32)))
  (import "ic0" "debug_print" (func $debug_print (param i32 i32)))
  (import "ic0" "stable64_grow" (func $stable64_grow (param i64) (result i64)))
  (import "ic0" "stable64_read" (func $stable64_read (param i64 i64 i64)))
  (import "ic0" "stable64_write" (func $stable64_write (param i64 i64 i64)))
"""


def canister(tmp_path: Path, body: str, limits: Limits | None = None) -> EmbeddedCanister:
    """Methods `base` (reply) and `probe` (body, then reply); stable memory of 4 pages."""
    wat = f"""(module {IMPORTS}
      (memory (export "memory") 2)
      (func (export "canister_init") (drop (call $stable64_grow (i64.const 4))))
      (func (export "canister_update base") (call $msg_reply))
      (func (export "canister_update probe") {body} (call $msg_reply)))"""
    return EmbeddedCanister(wasmtime.wat2wasm(wat), tmp_path, b"\x00" * 10, [CALLER], limits=limits)


def charge(tmp_path: Path, body: str, call_site: int, arg: bytes = b"") -> int:
    c = canister(tmp_path, body)
    probe = c.update("probe", arg, CALLER).instructions
    base = c.update("base", arg, CALLER).instructions
    assert probe is not None and base is not None
    return probe - base - call_site


@pytest.mark.parametrize("n", [0, 7, 100])
def test_copies_cost_500_plus_a_byte(tmp_path: Path, n: int) -> None:
    body = f"(call $msg_arg_data_copy (i32.const 0) (i32.const 0) (i32.const {n}))"
    assert charge(tmp_path, body, CALL + 3 * CONST, bytes(n)) == 500 + n


def test_caller_copy_costs_500_plus_a_byte(tmp_path: Path) -> None:
    body = "(call $msg_caller_copy (i32.const 0) (i32.const 0) (i32.const 10))"
    assert charge(tmp_path, body, CALL + 3 * CONST) == 500 + 10


@pytest.mark.parametrize("name", ["msg_arg_data_size", "msg_caller_size", "time"])
def test_sizes_and_time_cost_500(tmp_path: Path, name: str) -> None:
    assert charge(tmp_path, f"(drop (call ${name}))", CALL + DROP) == 500


def test_reply_costs_500(tmp_path: Path) -> None:
    c = canister(tmp_path, "")
    # The method's entry block (1) + `call` + the reply's charge; `end` costs nothing.
    assert c.update("base", b"", CALLER).instructions == 1 + CALL + 500


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_reply_data_costs_50_per_byte(tmp_path: Path, n: int) -> None:
    body = f"(call $msg_reply_data_append (i32.const 0) (i32.const {n}))"
    assert charge(tmp_path, body, CALL + 2 * CONST) == 500 + 50 * n


@pytest.mark.parametrize("n", [0, 10, 29])
def test_is_controller_costs_1000_plus_a_byte(tmp_path: Path, n: int) -> None:
    body = f"(drop (call $is_controller (i32.const 0) (i32.const {n})))"
    assert charge(tmp_path, body, CALL + 2 * CONST + DROP) == 1000 + n


@pytest.mark.parametrize("n", [0, 1, 64])
def test_debug_print_pays_for_the_log(tmp_path: Path, n: int) -> None:
    body = f"(call $debug_print (i32.const 0) (i32.const {n}))"
    assert charge(tmp_path, body, CALL + 2 * CONST) == 100 + 53 * n


@pytest.mark.parametrize("n", [0, 5])
def test_trap_pays_500_and_for_the_log(tmp_path: Path, n: int) -> None:
    # A trap has no reply to read the count from: the limit that is just enough tells.
    body = f"(call $trap (i32.const 0) (i32.const {n}))"
    # The basic block is charged on entry, the unreached reply call included.
    entry = 1 + 2 * CALL + 2 * CONST
    expected = entry + 500 + 53 * n
    with pytest.raises(InstructionLimitExceeded):
        canister(tmp_path / "a", body, Limits(update=expected - 1)).update("probe", b"", CALLER)
    with pytest.raises(BackendError) as trapped:
        canister(tmp_path / "b", body, Limits(update=expected)).update("probe", b"", CALLER)
    assert not isinstance(trapped.value, InstructionLimitExceeded)


def test_stable_grow_costs_100(tmp_path: Path) -> None:
    body = "(drop (call $stable64_grow (i64.const 1)))"
    assert charge(tmp_path, body, CALL + CONST64 + DROP) == 100


@pytest.mark.parametrize("n", [1, 4096, 10_000])
def test_stable_read_costs_20_plus_a_byte(tmp_path: Path, n: int) -> None:
    body = f"(call $stable64_read (i64.const 0) (i64.const 0) (i64.const {n}))"
    assert charge(tmp_path, body, CALL + 3 * CONST64) == 20 + n


@pytest.mark.parametrize(
    ("writes", "pages"),
    [
        ([(0, 1)], 1),
        ([(4095, 2)], 2),  # straddles two 4 KiB pages
        ([(0, 8)] * 3, 1),  # the same page again: dirty already
        ([(0, 1), (8192, 1)], 2),
    ],
)
def test_stable_write_pays_per_newly_dirtied_page(
    tmp_path: Path, writes: list[tuple[int, int]], pages: int
) -> None:
    body = "".join(
        f"(call $stable64_write (i64.const {off}) (i64.const 0) (i64.const {n}))"
        for off, n in writes
    )
    call_sites = len(writes) * (CALL + 3 * CONST64)
    fixed = sum(20 + n for _, n in writes)
    assert charge(tmp_path, body, call_sites) == fixed + 1000 * pages


@pytest.mark.parametrize("call", ["stable64_read", "stable64_write"])
def test_stable_access_past_the_message_limit_traps(tmp_path: Path, call: str) -> None:
    limit = 2 * 4096
    # One page written first, then a call whose bytes take the message past the limit.
    first = "(call $stable64_write (i64.const 60000) (i64.const 0) (i64.const 1))"
    body = first + f"(call ${call} (i64.const 0) (i64.const 0) (i64.const {limit}))"
    c = canister(tmp_path, body, Limits(stable_update=limit))
    with pytest.raises(BackendError, match="stable memory"):
        c.update("probe", b"", CALLER)
    c.close()
    roomy = canister(tmp_path, body, Limits(stable_update=limit + 4096))
    roomy.update("probe", b"", CALLER)


def test_the_default_stable_limits_are_the_replicas() -> None:
    gib = 1024**3
    limits = Limits()
    assert (limits.stable_update, limits.stable_query, limits.stable_upgrade) == (
        2 * gib,
        gib,
        8 * gib,
    )


def test_install_pays_for_compiling_and_an_upgrade_pays_a_hundredth(tmp_path: Path) -> None:
    # Operators in the bodies: init 4 (i64.const, call, drop, end), base 2 (call, end),
    # probe 2 + the body's 3.
    body = "(drop (call $stable64_grow (i64.const 0)))"
    instructions = 4 + 2 + 2 + 3
    init_used = 1 + CONST64 + CALL + DROP + 100  # entry block, then stable64_grow's fee
    c = canister(tmp_path, body)
    assert c.install_instructions == 6_000 * instructions + init_used
    c.close()
    c = canister(tmp_path, body)  # the same module again: an upgrade, compiled before
    assert c.install_instructions == 6_000 * instructions // 100
    c.close()
    c = canister(tmp_path, "")  # a new module: compiled in full
    assert c.install_instructions == 6_000 * (instructions - 3)
    c.close()


def test_compiling_counts_against_the_install_limit(tmp_path: Path) -> None:
    compile_cost = 6_000 * (4 + 2 + 2)
    with pytest.raises(InstructionLimitExceeded):
        canister(tmp_path, "", Limits(upgrade=compile_cost))
    canister(tmp_path / "roomy", "", Limits(upgrade=compile_cost + 200))
