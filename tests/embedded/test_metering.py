"""IC-style metering injected by gpt2_chat.backends.embedded.metering, run under wasmtime.

Expected counts are derived by hand from the replica's cost table (see the module docstring):
a basic block is charged at its start with the summed cost of its instructions, including the
one that ends it; the function-entry block starts at 1; `block`/`loop`/`else`/`end` cost 0.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from gpt2_chat.backends.embedded.cost_table import INSTRUCTIONS, instruction_cost
from gpt2_chat.backends.embedded.metering import (
    CANISTER_START_EXPORT,
    COUNTER_GLOBAL_EXPORT,
    OUT_OF_INSTRUCTIONS_IMPORT,
    instrument,
)
from gpt2_chat.backends.embedded.wasm_binary import (
    MeteringError,
    decode_sleb,
    decode_uleb,
    encode_sleb,
    encode_uleb,
)

REPO = Path(__file__).resolve().parents[2]
BIG = 10**12


class OutOfInstructions(Exception):
    pass


def _raise_ooi() -> None:
    raise OutOfInstructions


class Metered:
    """An instrumented module instance with its counter."""

    def __init__(
        self,
        wasm: bytes,
        define: Callable[[wasmtime.Linker, wasmtime.Store], None] | None = None,
        *,
        on_out_of_instructions: Callable[[], None] = _raise_ooi,
        keep_start: bool = False,
        counter: int = BIG,
    ) -> None:
        self.engine = wasmtime.Engine()
        self.store = wasmtime.Store(self.engine)
        self.module = wasmtime.Module(self.engine, instrument(wasm, keep_start=keep_start))
        linker = wasmtime.Linker(self.engine)
        linker.define_func(
            *OUT_OF_INSTRUCTIONS_IMPORT, wasmtime.FuncType([], []), on_out_of_instructions
        )
        if define is not None:
            define(linker, self.store)
        self.instance = linker.instantiate(self.store, self.module)
        self.exports = self.instance.exports(self.store)
        self.set_counter(counter)

    def set_counter(self, value: int) -> None:
        glob = self.exports[COUNTER_GLOBAL_EXPORT]
        assert isinstance(glob, wasmtime.Global)
        glob.set_value(self.store, wasmtime.Val.i64(value))

    def counter(self) -> int:
        glob = self.exports[COUNTER_GLOBAL_EXPORT]
        assert isinstance(glob, wasmtime.Global)
        value = glob.value(self.store)
        assert isinstance(value, int)
        return value

    def call(self, name: str, *args: Any) -> Any:
        func = self.exports[name]
        assert isinstance(func, wasmtime.Func)
        return func(self.store, *args)

    def measure(self, name: str, *args: Any) -> tuple[Any, int]:
        """Call an export from a full counter; return (result, instructions used)."""
        self.set_counter(BIG)
        result = self.call(name, *args)
        return result, BIG - self.counter()


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def metered(text: str, **kwargs: Any) -> Metered:
    return Metered(wat(text), **kwargs)


# ------------------------------------------------------------------------------------------
# The cost table


def test_cost_table_matches_design_notes() -> None:
    expected = {
        "block": 0, "loop": 0, "end": 0, "else": 0,
        "i32.add": 1, "local.get": 1, "i32.load": 1, "i32.const": 1,
        "f32.add": 2, "f64.mul": 2, "br": 2, "br_if": 2, "if": 2, "br_table": 2,
        "call": 5, "call_indirect": 10, "i32.div_s": 10, "i64.rem_u": 10,
        "f32.div": 3, "f32.sqrt": 5, "memory.grow": 300, "memory.fill": 100,
        "memory.copy": 100, "global.get": 2, "global.set": 2,
        "v128.load": 1, "v128.store": 1, "f32x4.add": 2, "f32x4.sub": 2, "f32x4.mul": 2,
        "f32x4.div": 10, "f32x4.min": 4, "f32x4.max": 4, "i64x2.mul": 4,
        "i16x8.extend_low_i8x16_s": 1, "i32x4.dot_i16x8_s": 1, "i32x4.add": 1,
        "i16x8.extmul_low_i8x16_s": 1, "i32x4.extadd_pairwise_i16x8_s": 1,
        "f32x4.convert_i32x4_s": 1, "i16x8.extmul_high_i8x16_s": 2, "i32x4.mul": 2,
        "i8x16.shuffle": 3, "i8x16.popcnt": 3, "v128.const": 1,
    }  # fmt: skip
    assert {name: instruction_cost(name) for name in expected} == expected
    assert instruction_cost(0x6A) == 1
    assert instruction_cost(0xFD, 0xE6) == 2
    assert instruction_cost(0xFC, 0x0B) == 100
    with pytest.raises(KeyError):
        instruction_cost(0x06)  # exception handling is not supported


def test_every_simd_opcode_is_in_the_table() -> None:
    simd = {i.subopcode for i in INSTRUCTIONS.values() if i.opcode == 0xFD}
    reserved = {0x9A, 0xA2, 0xA5, 0xA6, 0xAF, 0xB0, 0xB2, 0xB3, 0xB4, 0xBB, 0xC2, 0xC5, 0xC6}
    reserved |= {0xCF, 0xD0, 0xD2, 0xD3, 0xD4, 0xE2, 0xEE}
    assert simd == set(range(256)) - reserved


# Immediates/roles of the instructions that end or open a basic block.
BLOCK_DELIMITERS = {"end", "br", "br_table", "loop", "if", "return_call", "return_call_indirect"}
_SKIP_ENCODING = {"block", "loop", "if", "else", "end"}


def _snippet(name: str) -> str:
    """The instruction in text form with placeholder immediates (parsed, not validated)."""
    imm = INSTRUCTIONS[name].immediates
    if name == "v128.const":
        return "v128.const i32x4 0 0 0 0"
    if name == "i8x16.shuffle":
        return "i8x16.shuffle " + " ".join(str(i) for i in range(16))
    if name == "select_t":
        return "select (result i32)"
    if name == "ref.null":
        return "ref.null func"
    if name == "call_indirect" or name == "return_call_indirect":
        return f"{name} (type 0)"
    if name in ("memory.size", "memory.grow", "memory.copy", "memory.fill", "table.copy"):
        return name
    if imm in ("-", "end", "memarg"):
        return name
    # One index, lane or number: leb, br, br_table, call, return_call, ref.func, lane,
    # memarg_lane, f32, f64, and the bulk operations' segment/table index.
    return f"{name} 0"


@pytest.mark.parametrize("name", sorted(set(INSTRUCTIONS) - _SKIP_ENCODING))
def test_opcode_table_encodings_agree_with_wat(name: str) -> None:
    wasm = wat(f"(module (type (func)) (func nop {_snippet(name)} nop))")
    assert b"\x01" + INSTRUCTIONS[name].encoding() in wasm


def test_scanner_sums_every_instruction_and_skips_every_immediate() -> None:
    # One straight-line body holding every instruction that does not end a basic block: the
    # entry block's charge must be 1 + the sum of the table, which only holds if each
    # immediate (memarg, lane, v128 bytes, shuffle lanes, ...) was skipped exactly.
    names = [
        n
        for n, info in INSTRUCTIONS.items()
        if info.immediates not in BLOCK_DELIMITERS and info.immediates != "block"
    ]
    text = "\n".join(_snippet(n) for n in names)
    wasm = wat(f"(module (type (func)) (func {text}))")
    out = instrument(wasm)
    # The first body starts with no locals and `global.get 0; i64.const <entry cost>`.
    body = _first_body(out)
    assert body[:4] == b"\x00\x23\x00\x42"
    cost, _ = decode_sleb(body, 4)
    assert cost == 1 + sum(INSTRUCTIONS[n].cost for n in names)


def _first_body(wasm: bytes) -> bytes:
    pos = 8
    while True:
        sid = wasm[pos]
        size, pos = decode_uleb(wasm, pos + 1)
        if sid == 10:
            _, pos = decode_uleb(wasm, pos)  # function count
            size, pos = decode_uleb(wasm, pos)
            return wasm[pos : pos + size]
        pos += size


def test_leb128_round_trip() -> None:
    for value in (0, 1, 63, 64, 127, 128, 300, 2**32 - 1, 2**63 - 1):
        assert decode_uleb(encode_uleb(value), 0) == (value, len(encode_uleb(value)))
    for value in (0, 1, -1, 63, 64, -64, -65, 2**31, -(2**63), 2**63 - 1):
        assert decode_sleb(encode_sleb(value), 0) == (value, len(encode_sleb(value)))
    assert decode_uleb(b"\x85\x80\x80\x80\x00", 0) == (5, 5)  # padded, as wasm-ld writes


# ------------------------------------------------------------------------------------------
# Counts


def test_straight_line() -> None:
    m = metered(
        """(module (func (export "f") (param i32 i32) (result i32)
            local.get 0 local.get 1 i32.add   ;; 1 1 1
            i32.const 3 i32.mul               ;; 1 1
            i32.const 7 i32.div_u             ;; 1 10
            f32.convert_i32_s f32.sqrt        ;; 3 5
            i32.trunc_sat_f32_s))             ;; 20"""
    )
    assert m.measure("f", 10, 11) == (3, 1 + 3 + 2 + 11 + 8 + 20)


def test_loop_runs_n_times() -> None:
    m = metered(
        """(module (func (export "sum") (param $n i32) (result i32) (local $i i32) (local $acc i32)
            (loop $l
              local.get $acc local.get $i i32.add local.set $acc
              local.get $i i32.const 1 i32.add local.tee $i
              local.get $n i32.lt_u
              br_if $l)
            local.get $acc))"""
    )
    # entry: 1 (+ loop 0); body: 10 ones + br_if 2 = 12; after the loop: local.get 1.
    for n in (1, 10, 1000):
        assert m.measure("sum", n) == (n * (n - 1) // 2, 1 + 12 * n + 1)


def test_if_else_both_branches() -> None:
    m = metered(
        """(module (func (export "pick") (param i32) (result i32)
            local.get 0
            (if (result i32) (then i32.const 10 i32.const 20 i32.mul) (else i32.const 5))
            i32.const 1 i32.add))"""
    )
    # entry: 1 + local.get 1 + if 2 = 4; then: 3; else: 1; after: 2.
    assert m.measure("pick", 1) == (201, 4 + 3 + 2)
    assert m.measure("pick", 0) == (6, 4 + 1 + 2)


def test_call() -> None:
    m = metered(
        """(module
            (func $sq (param i32) (result i32) local.get 0 local.get 0 i32.mul)
            (func (export "f") (param i32) (result i32)
              local.get 0 call $sq i32.const 1 i32.add))"""
    )
    # f: 1 + 1 + call 5 + 1 + 1 = 9 (a call does not end a block); $sq: 1 + 3 = 4.
    assert m.measure("f", 7) == (50, 9 + 4)


def test_br_table() -> None:
    m = metered(
        """(module (func (export "sw") (param i32) (result i32)
            (block $b2 (block $b1 (block $b0
              local.get 0
              br_table $b0 $b1 $b2)
             i32.const 100 return)
            i32.const 200 i32.const 2 i32.mul return)
           i32.const 300))"""
    )
    # entry: 1 + local.get 1 + br_table 2 = 4; then the chosen arm: 2, 4 or 1.
    assert m.measure("sw", 0) == (100, 4 + 2)
    assert m.measure("sw", 1) == (400, 4 + 4)
    assert m.measure("sw", 2) == (300, 4 + 1)
    assert m.measure("sw", 9) == (300, 4 + 1)


BULK = """(module
  (memory (export "memory") 2)
  (table 16 funcref)
  (data $d "hello, world")
  (func (export "fill") (param $n i32) i32.const 0 i32.const 7 local.get $n memory.fill)
  (func (export "copy") (param $n i32) i32.const 1000 i32.const 0 local.get $n memory.copy)
  (func (export "init") (param $n i32) i32.const 2000 i32.const 0 local.get $n memory.init $d)
  (func (export "tfill") (param $n i32) i32.const 0 ref.null func local.get $n table.fill 0)
  (func (export "after_end") (param $n i32)
    (block (result i32) i32.const 0) i32.const 9 local.get $n memory.fill))
"""


def test_bulk_memory_charges_size() -> None:
    m = metered(BULK)
    for n in (0, 1, 1000, 65536):
        # entry: 1 + three operands + 100 static; the size comes on top.
        assert m.measure("fill", n) == (None, 104 + n)
        assert m.measure("copy", n) == (None, 104 + n)
    assert m.measure("init", 5) == (None, 109)
    assert m.measure("tfill", 16) == (None, 120)
    # A bulk op that opens its basic block (right after `end`): entry 1 + i32.const 1 = 2,
    # then 1 + 1 + 100 + n.
    assert m.measure("after_end", 50) == (None, 2 + 102 + 50)
    mem = m.exports["memory"]
    assert isinstance(mem, wasmtime.Memory)
    assert mem.read(m.store, 2000, 2005) == b"hello"
    assert mem.read(m.store, 0, 3) == b"\x09\x09\x09"


def test_bulk_helper_saturates_on_wrap_around() -> None:
    m = metered(BULK, on_out_of_instructions=lambda: None)
    minimum = -(2**63)
    # The static part (104) fits; subtracting the size would wrap to a positive number.
    m.set_counter(minimum + 200)
    m.call("fill", 1000)
    assert m.counter() == minimum


def test_simd() -> None:
    m = metered(SIMD)
    # simd: 1 + (1+1+1) + 1 + (1+3+1) + 2 + 2 + 1 + 1 + 3 + 1 = 20; lane 2 = 11 + 4 * 2.5.
    assert m.measure("simd", 4) == (21, 20)
    assert m.measure("simd2") == (-20 + 3 + 42, SIMD2_COST)
    assert SIMD2_COST == 31


SIMD = """(module
  (func (export "simd") (param i32) (result i32)
    v128.const i16x8 1 2 3 4 5 6 7 8          ;; 1
    v128.const i16x8 1 1 1 1 1 1 1 1          ;; 1
    i32x4.dot_i16x8_s                         ;; 1   -> 3 7 11 15
    v128.const f32x4 1.5 2 2.5 3              ;; 1
    local.get 0 f32.convert_i32_s f32x4.splat ;; 1 3 1
    f32x4.mul                                 ;; 2
    i32x4.trunc_sat_f32x4_s                   ;; 2
    i32x4.add                                 ;; 1
    v128.const i32x4 0 0 0 0                  ;; 1
    i8x16.shuffle 8 9 10 11 0 0 0 0 0 0 0 0 0 0 0 0  ;; 3
    i32x4.extract_lane 0)                     ;; 1
  (func (export "simd2") (result i32)
    v128.const i8x16 0 0 0 0 0 0 0 0 -2 3 4 5 6 7 8 9  ;; 1
    v128.const i8x16 0 0 0 0 0 0 0 0 10 10 1 1 1 1 1 1 ;; 1
    i16x8.extmul_high_i8x16_s                 ;; 2  -> -20 30 4 5 6 7 8 9
    i16x8.extract_lane_s 0                    ;; 1  -> -20
    v128.const f32x4 9 0 0 0                  ;; 1
    v128.const f32x4 3 1 1 1                  ;; 1
    f32x4.div                                 ;; 10 -> 3 0 0 0
    i32x4.trunc_sat_f32x4_s                   ;; 2
    i32x4.extract_lane 0                      ;; 1  -> 3
    i32.add                                   ;; 1
    v128.const i64x2 7 0                      ;; 1
    v128.const i64x2 6 0                      ;; 1
    i64x2.mul                                 ;; 4
    i64x2.extract_lane 0                      ;; 1  -> 42
    i32.wrap_i64                              ;; 1
    i32.add)                                  ;; 1
)"""
SIMD2_COST = 1 + (1 + 1 + 2 + 1) + (1 + 1 + 10 + 2 + 1 + 1) + (1 + 1 + 4 + 1 + 1 + 1)


# ------------------------------------------------------------------------------------------
# Running out, and what the rewrite must preserve


def test_endless_loop_runs_out_of_instructions() -> None:
    m = metered("""(module (func (export "spin") (loop $l br $l)))""")
    m.set_counter(1000)
    with pytest.raises(OutOfInstructions):
        m.call("spin")
    # entry 1, then 2 per iteration; the loop header's check fires at the first negative.
    assert m.counter() == -1


def test_entry_check_is_exact() -> None:
    m = metered("""(module (func (export "f") (result i32) i32.const 1 i32.const 2 i32.add))""")
    m.set_counter(4)  # cost 4: reaching exactly zero is fine
    assert m.call("f") == 3
    assert m.counter() == 0
    m.set_counter(3)
    with pytest.raises(OutOfInstructions):
        m.call("f")


def _custom_section(name: str, payload: bytes) -> bytes:
    body = encode_uleb(len(name)) + name.encode() + payload
    return b"\x00" + encode_uleb(len(body)) + body


def test_custom_sections_preserved_byte_for_byte() -> None:
    wasm = wat(
        """(module (func $f (export "f") (result i32) i32.const 1)
                   (func $g (export "g") (result i32) call $f))"""
    )
    candid = _custom_section("icp:public candid:service", b"service : { f : () -> (int32) }")
    early = _custom_section("early", bytes(range(256)))
    # One custom section before the type section, one at the end.
    wasm = wasm[:8] + early + wasm[8:] + candid
    out = instrument(wasm)
    assert out[8 : 8 + len(early)] == early
    assert out.endswith(candid)
    wasmtime.Module.validate(wasmtime.Engine(), out)


INDICES = """(module
  (type $unary (func (param i32) (result i32)))
  (import "env" "add" (func $add (param i32 i32) (result i32)))
  (import "env" "log" (func $log (param i32)))
  (import "env" "base" (global $base i32))
  (table 4 funcref)
  (elem (i32.const 0) $double $square $boom $via_import)
  (global $started (mut i32) (i32.const 0))
  (global $fref funcref (ref.func $square))
  (memory 1)
  (func $double (type $unary) local.get 0 i32.const 2 i32.mul)
  (func $square (type $unary) local.get 0 local.get 0 i32.mul)
  (func $boom (type $unary) unreachable)
  (func $via_import (type $unary) local.get 0 global.get $base call $add)
  (func $init i32.const 1 global.set $started)
  (func (export "dispatch") (param $which i32) (param $x i32) (result i32)
    local.get $x local.get $which call_indirect (type $unary)
    local.get $x call $log)
  (func (export "started") (result i32) global.get $started)
  (func (export "fref_is_null") (result i32) global.get $fref ref.is_null)
  (func (export "direct") (param i32) (result i32) local.get 0 call $square call $double)
  (start $init)
)"""


def _run_plain(wasm: bytes, calls: Sequence[tuple[str, tuple[int, ...]]]) -> list[Any]:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, wasm)
    linker = wasmtime.Linker(engine)
    logged: list[int] = []
    _define_env(linker, store, logged)
    instance = linker.instantiate(store, module)
    exports = instance.exports(store)
    results: list[Any] = []
    for name, args in calls:
        func = exports[name]
        assert isinstance(func, wasmtime.Func)
        results.append(func(store, *args))
    return [*results, logged]


def _define_env(linker: wasmtime.Linker, store: wasmtime.Store, logged: list[int]) -> None:
    i32 = wasmtime.ValType.i32()
    linker.define_func("env", "add", wasmtime.FuncType([i32, i32], [i32]), lambda a, b: a + b)
    linker.define_func("env", "log", wasmtime.FuncType([i32], []), logged.append)
    base = wasmtime.Global(store, wasmtime.GlobalType(i32, False), wasmtime.Val.i32(1000))
    linker.define(store, "env", "base", base)


CALLS = [
    ("dispatch", (0, 21)),
    ("dispatch", (1, 9)),
    ("dispatch", (3, 5)),
    ("direct", (3,)),
    ("started", ()),
    ("fref_is_null", ()),
]


def test_function_indices_after_the_shift() -> None:
    wasm = wat(INDICES)
    expected = _run_plain(wasm, CALLS)
    assert expected == [42, 81, 1005, 18, 1, 0, [21, 9, 5]]

    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, instrument(wasm))
    assert CANISTER_START_EXPORT in [e.name for e in module.exports]
    linker = wasmtime.Linker(engine)
    logged: list[int] = []
    _define_env(linker, store, logged)
    linker.define_func(*OUT_OF_INSTRUCTIONS_IMPORT, wasmtime.FuncType([], []), _raise_ooi)
    instance = linker.instantiate(store, module)
    exports = instance.exports(store)
    counter = exports[COUNTER_GLOBAL_EXPORT]
    assert isinstance(counter, wasmtime.Global)
    counter.set_value(store, wasmtime.Val.i64(BIG))

    def call(name: str, *args: int) -> Any:
        func = exports[name]
        assert isinstance(func, wasmtime.Func)
        return func(store, *args)

    # The start function is not run at instantiation: the host runs it once the counter is set.
    assert call("started") == 0
    call(CANISTER_START_EXPORT)
    results = [call(name, *args) for name, args in CALLS]
    assert [*results, logged] == expected

    # The name section was shifted with the functions: the trap names the right one.
    with pytest.raises(wasmtime.Trap, match="boom"):
        call("dispatch", 2, 0)

    # dispatch(1, 9): 1 + 2 + call_indirect 10 + 1 + call 5 = 19; $square: 4; $log: host.
    counter.set_value(store, wasmtime.Val.i64(BIG))
    call("dispatch", 1, 9)
    value = counter.value(store)
    assert isinstance(value, int)
    assert BIG - value == 19 + 4


def test_keep_start_runs_it_at_instantiation() -> None:
    calls: list[str] = []
    m = Metered(
        wat(INDICES),
        lambda linker, store: _define_env(linker, store, []),
        on_out_of_instructions=lambda: calls.append("ooi"),
        keep_start=True,
    )
    # The counter starts at 0, so the start function already went negative at its entry.
    assert m.call("started") == 1
    assert calls == ["ooi"]
    assert CANISTER_START_EXPORT not in m.exports


def test_rejects_already_instrumented() -> None:
    once = instrument(wat("(module (func))"))
    with pytest.raises(MeteringError):
        instrument(once)


@pytest.mark.parametrize(
    "text",
    [
        "(module (memory i64 1))",  # memory64: the replica meters it differently
        "(module (func (param v128) (result v128) local.get 0 i32x4.relaxed_trunc_f32x4_s))",
        "(module (memory 1 1 shared) (func (result i32) i32.const 0 i32.atomic.load))",
    ],
)
def test_rejects_unsupported_features(text: str) -> None:
    with pytest.raises(MeteringError):
        instrument(wat(text))


def test_empty_module() -> None:
    out = instrument(wat("(module)"))
    module = wasmtime.Module(wasmtime.Engine(), out)
    assert [e.name for e in module.exports] == [COUNTER_GLOBAL_EXPORT]


def test_large_synthetic_module_is_fast() -> None:
    func = """(func (param i32 i32) (result i32) (local v128)
      (loop $l
        local.get 0 i32.const 4 i32.add local.tee 0 v128.load offset=16 local.set 2
        local.get 2 local.get 2 f32x4.mul local.get 2 f32x4.add v128.any_true
        (if (then local.get 1 i32.const 1 i32.add local.set 1) (else nop))
        local.get 0 local.get 1 i32.lt_u br_if $l)
      (block (block (block local.get 1 br_table 0 1 2) i32.const 1 drop) nop)
      local.get 0 local.get 1 call 0)
    """
    wasm = wat("(module (memory 1) " + func * 3000 + ")")
    assert len(wasm) > 250_000
    start = time.perf_counter()
    out = instrument(wasm)
    elapsed = time.perf_counter() - start
    wasmtime.Module.validate(wasmtime.Engine(), out)
    # ~0.4 us per instruction in CPython; a 1 MB code section takes well under a second.
    assert elapsed < 5.0 * len(wasm) / 1_000_000 + 0.5


# ------------------------------------------------------------------------------------------
# A real rustc-built canister


REAL_CANISTER = REPO / "assets" / "gpt2_backend.wasm.gz"


def test_real_canister_round_trips() -> None:
    if not REAL_CANISTER.exists():
        pytest.skip(f"{REAL_CANISTER.relative_to(REPO)} is absent")
    wasm = gzip.decompress(REAL_CANISTER.read_bytes())
    out = instrument(wasm)
    engine = wasmtime.Engine()
    wasmtime.Module.validate(engine, out)
    module = wasmtime.Module(engine, out)
    imports = [(i.module, i.name) for i in module.imports]
    assert imports[0] == OUT_OF_INSTRUCTIONS_IMPORT
    assert imports[1:] == [(i.module, i.name) for i in wasmtime.Module(engine, wasm).imports]
    assert COUNTER_GLOBAL_EXPORT in [e.name for e in module.exports]
