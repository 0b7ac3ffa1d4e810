"""IC-style instruction metering injected into a canister's wasm, in pure Python.

The IC replica does not count wasm operators: before it compiles a canister it rewrites the
module (dfinity/ic ``rs/embedders/src/wasm_utils/instrumentation.rs``) so that the module
itself decrements an exported i64 counter by the cost of every basic block it enters. This
module performs the same rewrite so that the embedded backend (wasmtime in-process) reports the
instruction counts a replica would. What is mirrored:

* Costs: the replica's ``instruction_to_cost`` for wasm32 (``_OPCODE_TABLE`` below, the one
  place costs live): MVP, sign-extension, saturating truncation, bulk memory, reference types,
  tail calls and all of 128-bit SIMD.
* Basic blocks: a block ends after ``loop``, ``if``, ``else``, ``end``, ``br``, ``br_if``,
  ``br_table``, ``return``, ``unreachable``, ``return_call*``; its summed cost (including the
  delimiter itself) is charged at its start. The function-entry block starts at cost 1.
* Reentrant blocks (function entry, loop bodies) also check ``counter < 0`` and call the
  imported ``__.out_of_instructions``; other blocks only decrement, and are omitted when their
  cost is 0.
* Bulk operations (``memory.fill/copy/init``, ``table.fill/copy/init``) cost 100 statically plus
  their size operand at run time, charged by an injected helper function called right before
  the operation; the helper saturates at ``i64::MIN`` and checks for overflow.
* The counter is a new mutable i64 global exported as ``canister counter_instructions``. The
  injected code itself is not metered.
* The ``start`` function is removed from the start section and exported as
  ``canister_start``, as the replica does, so that the host can set the counter before it runs
  (otherwise it would run at instantiation with the counter still 0 and trap).

Not mirrored, because they are not metering: the replica's other injected imports
(``try_grow_wasm_memory`` and the wasm-native stable memory ones), renaming the memory/table
exports, exporting mutable globals, and the data-segment extraction. Only one import is added,
so our function indices differ from the replica's; the counts do not.

The rewriter works on bytes: it scans each function body once, copies the original bytes
between injection points and re-encodes only what must change (function indices shift by one
because the new import is placed first, as in the replica).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

COUNTER_GLOBAL_EXPORT: Final = "canister counter_instructions"
OUT_OF_INSTRUCTIONS_IMPORT: Final = ("__", "out_of_instructions")
CANISTER_START_EXPORT: Final = "canister_start"
# Prefix of the exports that expose the module's own mutable globals to the host.
MUTABLE_GLOBAL_EXPORT_PREFIX: Final = "canister global "


class MeteringError(ValueError):
    """The module uses something this rewriter does not support, or is malformed."""


# --------------------------------------------------------------------------------------------
# LEB128


def encode_uleb(value: int) -> bytes:
    if value < 0:
        raise ValueError("unsigned LEB128 of a negative number")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        # Done when the remaining bits are all copies of the sign bit just written.
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def decode_uleb(data: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 at ``pos``; returns (value, position after it)."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise MeteringError(f"LEB128 too long at offset {pos}")


def decode_sleb(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if byte & 0x40:
                result -= 1 << shift
            return result, pos
        if shift > 70:
            raise MeteringError(f"LEB128 too long at offset {pos}")


def _vec(items: list[bytes]) -> bytes:
    return encode_uleb(len(items)) + b"".join(items)


def _name(text: str) -> bytes:
    raw = text.encode()
    return encode_uleb(len(raw)) + raw


class Reader:
    """A cursor over ``data[pos:end]`` with the few primitives the binary format needs."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def at_end(self) -> bool:
        return self.pos >= self.end

    def u8(self) -> int:
        if self.pos >= self.end:
            raise MeteringError(f"unexpected end of data at offset {self.pos}")
        byte = self.data[self.pos]
        self.pos += 1
        return byte

    def uleb(self) -> int:
        try:
            value, self.pos = decode_uleb(self.data, self.pos)
        except IndexError:
            raise MeteringError(f"truncated LEB128 at offset {self.pos}") from None
        if self.pos > self.end:
            raise MeteringError(f"LEB128 runs past its section at offset {self.pos}")
        return value

    def sleb(self) -> int:
        try:
            value, self.pos = decode_sleb(self.data, self.pos)
        except IndexError:
            raise MeteringError(f"truncated LEB128 at offset {self.pos}") from None
        return value

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise MeteringError(f"unexpected end of data at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def name(self) -> str:
        raw = self.take(self.uleb())
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise MeteringError(f"invalid UTF-8 name before offset {self.pos}") from None

    def since(self, start: int) -> bytes:
        return self.data[start : self.pos]


# --------------------------------------------------------------------------------------------
# The cost table: one row per instruction, costs as in the replica's `instruction_to_cost`
# for a wasm32 memory. Columns: opcode (`fc:NN`/`fd:NN` for prefixed ones, hex), text-format
# name, immediates/role (parsed below), cost.
#
# Immediates/roles: `-` none; `leb` one LEB; `leb2` two LEBs; `memarg`; `memarg_lane` memarg
# and a lane byte; `lane` a lane byte; `v128` 16 bytes; `f32`/`f64` 4/8 bytes; `block` a block
# type; `loop`/`if` a block type and the start of a (re-entrant / non-re-entrant) basic block;
# `end` ends a basic block; `br` a LEB and ends a basic block; `br_table`; `call` and
# `ref.func` a function index to shift; `return_call` a shifted index and ends a block;
# `call_indirect` two LEBs; `return_call_indirect` two LEBs and ends a block; `select_t`
# a vector of value types; `heaptype` one heap type; `bulk1`/`bulk2` one/two LEBs and a dynamic
# cost taken from the size operand.
_OPCODE_TABLE: Final = """
00 unreachable end 1
01 nop - 1
02 block block 0
03 loop loop 0
04 if if 2
05 else end 0
0b end end 0
0c br br 2
0d br_if br 2
0e br_table br_table 2
0f return end 1
10 call call 5
11 call_indirect call_indirect 10
12 return_call return_call 3
13 return_call_indirect return_call_indirect 60
1a drop - 1
1b select - 1
1c select_t select_t 1
20 local.get leb 1
21 local.set leb 1
22 local.tee leb 1
23 global.get leb 2
24 global.set leb 2
25 table.get leb 5
26 table.set leb 5
28 i32.load memarg 1
29 i64.load memarg 1
2a f32.load memarg 1
2b f64.load memarg 1
2c i32.load8_s memarg 1
2d i32.load8_u memarg 1
2e i32.load16_s memarg 1
2f i32.load16_u memarg 1
30 i64.load8_s memarg 1
31 i64.load8_u memarg 1
32 i64.load16_s memarg 1
33 i64.load16_u memarg 1
34 i64.load32_s memarg 1
35 i64.load32_u memarg 1
36 i32.store memarg 1
37 i64.store memarg 1
38 f32.store memarg 1
39 f64.store memarg 1
3a i32.store8 memarg 1
3b i32.store16 memarg 1
3c i64.store8 memarg 1
3d i64.store16 memarg 1
3e i64.store32 memarg 1
3f memory.size leb 20
40 memory.grow leb 300
41 i32.const leb 1
42 i64.const leb 1
43 f32.const f32 1
44 f64.const f64 1
45 i32.eqz - 1
46 i32.eq - 1
47 i32.ne - 1
48 i32.lt_s - 1
49 i32.lt_u - 1
4a i32.gt_s - 1
4b i32.gt_u - 1
4c i32.le_s - 1
4d i32.le_u - 1
4e i32.ge_s - 1
4f i32.ge_u - 1
50 i64.eqz - 1
51 i64.eq - 1
52 i64.ne - 1
53 i64.lt_s - 1
54 i64.lt_u - 1
55 i64.gt_s - 1
56 i64.gt_u - 1
57 i64.le_s - 1
58 i64.le_u - 1
59 i64.ge_s - 1
5a i64.ge_u - 1
5b f32.eq - 3
5c f32.ne - 3
5d f32.lt - 3
5e f32.gt - 3
5f f32.le - 3
60 f32.ge - 3
61 f64.eq - 3
62 f64.ne - 3
63 f64.lt - 3
64 f64.gt - 3
65 f64.le - 3
66 f64.ge - 3
67 i32.clz - 1
68 i32.ctz - 1
69 i32.popcnt - 1
6a i32.add - 1
6b i32.sub - 1
6c i32.mul - 1
6d i32.div_s - 10
6e i32.div_u - 10
6f i32.rem_s - 10
70 i32.rem_u - 10
71 i32.and - 1
72 i32.or - 1
73 i32.xor - 1
74 i32.shl - 1
75 i32.shr_s - 1
76 i32.shr_u - 1
77 i32.rotl - 1
78 i32.rotr - 1
79 i64.clz - 1
7a i64.ctz - 1
7b i64.popcnt - 1
7c i64.add - 1
7d i64.sub - 1
7e i64.mul - 1
7f i64.div_s - 10
80 i64.div_u - 10
81 i64.rem_s - 10
82 i64.rem_u - 10
83 i64.and - 1
84 i64.or - 1
85 i64.xor - 1
86 i64.shl - 1
87 i64.shr_s - 1
88 i64.shr_u - 1
89 i64.rotl - 1
8a i64.rotr - 1
8b f32.abs - 1
8c f32.neg - 1
8d f32.ceil - 2
8e f32.floor - 2
8f f32.trunc - 2
90 f32.nearest - 2
91 f32.sqrt - 5
92 f32.add - 2
93 f32.sub - 2
94 f32.mul - 2
95 f32.div - 3
96 f32.min - 18
97 f32.max - 18
98 f32.copysign - 2
99 f64.abs - 1
9a f64.neg - 1
9b f64.ceil - 2
9c f64.floor - 2
9d f64.trunc - 2
9e f64.nearest - 2
9f f64.sqrt - 8
a0 f64.add - 2
a1 f64.sub - 2
a2 f64.mul - 2
a3 f64.div - 5
a4 f64.min - 18
a5 f64.max - 18
a6 f64.copysign - 3
a7 i32.wrap_i64 - 1
a8 i32.trunc_f32_s - 20
a9 i32.trunc_f32_u - 20
aa i32.trunc_f64_s - 20
ab i32.trunc_f64_u - 20
ac i64.extend_i32_s - 1
ad i64.extend_i32_u - 1
ae i64.trunc_f32_s - 20
af i64.trunc_f32_u - 20
b0 i64.trunc_f64_s - 20
b1 i64.trunc_f64_u - 20
b2 f32.convert_i32_s - 3
b3 f32.convert_i32_u - 16
b4 f32.convert_i64_s - 3
b5 f32.convert_i64_u - 16
b6 f32.demote_f64 - 1
b7 f64.convert_i32_s - 3
b8 f64.convert_i32_u - 16
b9 f64.convert_i64_s - 3
ba f64.convert_i64_u - 16
bb f64.promote_f32 - 1
bc i32.reinterpret_f32 - 1
bd i64.reinterpret_f64 - 1
be f32.reinterpret_i32 - 1
bf f64.reinterpret_i64 - 1
c0 i32.extend8_s - 1
c1 i32.extend16_s - 1
c2 i64.extend8_s - 1
c3 i64.extend16_s - 1
c4 i64.extend32_s - 1
d0 ref.null heaptype 1
d1 ref.is_null - 5
d2 ref.func ref.func 130
fc:00 i32.trunc_sat_f32_s - 20
fc:01 i32.trunc_sat_f32_u - 20
fc:02 i32.trunc_sat_f64_s - 20
fc:03 i32.trunc_sat_f64_u - 20
fc:04 i64.trunc_sat_f32_s - 20
fc:05 i64.trunc_sat_f32_u - 20
fc:06 i64.trunc_sat_f64_s - 20
fc:07 i64.trunc_sat_f64_u - 20
fc:08 memory.init bulk2 100
fc:09 data.drop leb 300
fc:0a memory.copy bulk2 100
fc:0b memory.fill bulk1 100
fc:0c table.init bulk2 100
fc:0d elem.drop leb 300
fc:0e table.copy bulk2 100
fc:0f table.grow leb 300
fc:10 table.size leb 100
fc:11 table.fill bulk1 100
fd:00 v128.load memarg 1
fd:01 v128.load8x8_s memarg 1
fd:02 v128.load8x8_u memarg 1
fd:03 v128.load16x4_s memarg 1
fd:04 v128.load16x4_u memarg 1
fd:05 v128.load32x2_s memarg 1
fd:06 v128.load32x2_u memarg 1
fd:07 v128.load8_splat memarg 1
fd:08 v128.load16_splat memarg 1
fd:09 v128.load32_splat memarg 1
fd:0a v128.load64_splat memarg 1
fd:0b v128.store memarg 1
fd:0c v128.const v128 1
fd:0d i8x16.shuffle v128 3
fd:0e i8x16.swizzle - 1
fd:0f i8x16.splat - 1
fd:10 i16x8.splat - 1
fd:11 i32x4.splat - 1
fd:12 i64x2.splat - 1
fd:13 f32x4.splat - 1
fd:14 f64x2.splat - 1
fd:15 i8x16.extract_lane_s lane 1
fd:16 i8x16.extract_lane_u lane 1
fd:17 i8x16.replace_lane lane 1
fd:18 i16x8.extract_lane_s lane 1
fd:19 i16x8.extract_lane_u lane 1
fd:1a i16x8.replace_lane lane 1
fd:1b i32x4.extract_lane lane 1
fd:1c i32x4.replace_lane lane 1
fd:1d i64x2.extract_lane lane 1
fd:1e i64x2.replace_lane lane 1
fd:1f f32x4.extract_lane lane 1
fd:20 f32x4.replace_lane lane 1
fd:21 f64x2.extract_lane lane 1
fd:22 f64x2.replace_lane lane 1
fd:23 i8x16.eq - 1
fd:24 i8x16.ne - 1
fd:25 i8x16.lt_s - 1
fd:26 i8x16.lt_u - 2
fd:27 i8x16.gt_s - 1
fd:28 i8x16.gt_u - 2
fd:29 i8x16.le_s - 1
fd:2a i8x16.le_u - 1
fd:2b i8x16.ge_s - 1
fd:2c i8x16.ge_u - 1
fd:2d i16x8.eq - 1
fd:2e i16x8.ne - 1
fd:2f i16x8.lt_s - 1
fd:30 i16x8.lt_u - 2
fd:31 i16x8.gt_s - 1
fd:32 i16x8.gt_u - 2
fd:33 i16x8.le_s - 1
fd:34 i16x8.le_u - 1
fd:35 i16x8.ge_s - 1
fd:36 i16x8.ge_u - 1
fd:37 i32x4.eq - 1
fd:38 i32x4.ne - 1
fd:39 i32x4.lt_s - 1
fd:3a i32x4.lt_u - 2
fd:3b i32x4.gt_s - 1
fd:3c i32x4.gt_u - 2
fd:3d i32x4.le_s - 1
fd:3e i32x4.le_u - 1
fd:3f i32x4.ge_s - 1
fd:40 i32x4.ge_u - 1
fd:41 f32x4.eq - 1
fd:42 f32x4.ne - 1
fd:43 f32x4.lt - 1
fd:44 f32x4.gt - 1
fd:45 f32x4.le - 1
fd:46 f32x4.ge - 1
fd:47 f64x2.eq - 1
fd:48 f64x2.ne - 1
fd:49 f64x2.lt - 1
fd:4a f64x2.gt - 1
fd:4b f64x2.le - 1
fd:4c f64x2.ge - 1
fd:4d v128.not - 1
fd:4e v128.and - 1
fd:4f v128.andnot - 1
fd:50 v128.or - 1
fd:51 v128.xor - 1
fd:52 v128.bitselect - 1
fd:53 v128.any_true - 1
fd:54 v128.load8_lane memarg_lane 1
fd:55 v128.load16_lane memarg_lane 1
fd:56 v128.load32_lane memarg_lane 1
fd:57 v128.load64_lane memarg_lane 1
fd:58 v128.store8_lane memarg_lane 1
fd:59 v128.store16_lane memarg_lane 1
fd:5a v128.store32_lane memarg_lane 1
fd:5b v128.store64_lane memarg_lane 1
fd:5c v128.load32_zero memarg 1
fd:5d v128.load64_zero memarg 1
fd:5e f32x4.demote_f64x2_zero - 1
fd:5f f64x2.promote_low_f32x4 - 1
fd:60 i8x16.abs - 1
fd:61 i8x16.neg - 1
fd:62 i8x16.popcnt - 3
fd:63 i8x16.all_true - 1
fd:64 i8x16.bitmask - 1
fd:65 i8x16.narrow_i16x8_s - 1
fd:66 i8x16.narrow_i16x8_u - 1
fd:67 f32x4.ceil - 2
fd:68 f32x4.floor - 2
fd:69 f32x4.trunc - 2
fd:6a f32x4.nearest - 2
fd:6b i8x16.shl - 3
fd:6c i8x16.shr_s - 3
fd:6d i8x16.shr_u - 2
fd:6e i8x16.add - 1
fd:6f i8x16.add_sat_s - 1
fd:70 i8x16.add_sat_u - 1
fd:71 i8x16.sub - 1
fd:72 i8x16.sub_sat_s - 1
fd:73 i8x16.sub_sat_u - 1
fd:74 f64x2.ceil - 2
fd:75 f64x2.floor - 2
fd:76 i8x16.min_s - 1
fd:77 i8x16.min_u - 1
fd:78 i8x16.max_s - 1
fd:79 i8x16.max_u - 1
fd:7a f64x2.trunc - 2
fd:7b i8x16.avgr_u - 1
fd:7c i16x8.extadd_pairwise_i8x16_s - 1
fd:7d i16x8.extadd_pairwise_i8x16_u - 2
fd:7e i32x4.extadd_pairwise_i16x8_s - 1
fd:7f i32x4.extadd_pairwise_i16x8_u - 3
fd:80 i16x8.abs - 1
fd:81 i16x8.neg - 1
fd:82 i16x8.q15mulr_sat_s - 1
fd:83 i16x8.all_true - 1
fd:84 i16x8.bitmask - 1
fd:85 i16x8.narrow_i32x4_s - 1
fd:86 i16x8.narrow_i32x4_u - 1
fd:87 i16x8.extend_low_i8x16_s - 1
fd:88 i16x8.extend_high_i8x16_s - 1
fd:89 i16x8.extend_low_i8x16_u - 1
fd:8a i16x8.extend_high_i8x16_u - 1
fd:8b i16x8.shl - 2
fd:8c i16x8.shr_s - 2
fd:8d i16x8.shr_u - 2
fd:8e i16x8.add - 1
fd:8f i16x8.add_sat_s - 1
fd:90 i16x8.add_sat_u - 1
fd:91 i16x8.sub - 1
fd:92 i16x8.sub_sat_s - 1
fd:93 i16x8.sub_sat_u - 1
fd:94 f64x2.nearest - 2
fd:95 i16x8.mul - 1
fd:96 i16x8.min_s - 1
fd:97 i16x8.min_u - 1
fd:98 i16x8.max_s - 1
fd:99 i16x8.max_u - 1
fd:9b i16x8.avgr_u - 1
fd:9c i16x8.extmul_low_i8x16_s - 1
fd:9d i16x8.extmul_high_i8x16_s - 2
fd:9e i16x8.extmul_low_i8x16_u - 1
fd:9f i16x8.extmul_high_i8x16_u - 2
fd:a0 i32x4.abs - 1
fd:a1 i32x4.neg - 1
fd:a3 i32x4.all_true - 1
fd:a4 i32x4.bitmask - 1
fd:a7 i32x4.extend_low_i16x8_s - 1
fd:a8 i32x4.extend_high_i16x8_s - 1
fd:a9 i32x4.extend_low_i16x8_u - 1
fd:aa i32x4.extend_high_i16x8_u - 1
fd:ab i32x4.shl - 2
fd:ac i32x4.shr_s - 2
fd:ad i32x4.shr_u - 2
fd:ae i32x4.add - 1
fd:b1 i32x4.sub - 1
fd:b5 i32x4.mul - 2
fd:b6 i32x4.min_s - 1
fd:b7 i32x4.min_u - 1
fd:b8 i32x4.max_s - 1
fd:b9 i32x4.max_u - 1
fd:ba i32x4.dot_i16x8_s - 1
fd:bc i32x4.extmul_low_i16x8_s - 2
fd:bd i32x4.extmul_high_i16x8_s - 2
fd:be i32x4.extmul_low_i16x8_u - 2
fd:bf i32x4.extmul_high_i16x8_u - 2
fd:c0 i64x2.abs - 1
fd:c1 i64x2.neg - 1
fd:c3 i64x2.all_true - 1
fd:c4 i64x2.bitmask - 1
fd:c7 i64x2.extend_low_i32x4_s - 1
fd:c8 i64x2.extend_high_i32x4_s - 1
fd:c9 i64x2.extend_low_i32x4_u - 1
fd:ca i64x2.extend_high_i32x4_u - 1
fd:cb i64x2.shl - 2
fd:cc i64x2.shr_s - 3
fd:cd i64x2.shr_u - 2
fd:ce i64x2.add - 1
fd:d1 i64x2.sub - 1
fd:d5 i64x2.mul - 4
fd:d6 i64x2.eq - 1
fd:d7 i64x2.ne - 1
fd:d8 i64x2.lt_s - 1
fd:d9 i64x2.gt_s - 1
fd:da i64x2.le_s - 1
fd:db i64x2.ge_s - 1
fd:dc i64x2.extmul_low_i32x4_s - 1
fd:dd i64x2.extmul_high_i32x4_s - 1
fd:de i64x2.extmul_low_i32x4_u - 1
fd:df i64x2.extmul_high_i32x4_u - 1
fd:e0 f32x4.abs - 2
fd:e1 f32x4.neg - 2
fd:e3 f32x4.sqrt - 5
fd:e4 f32x4.add - 2
fd:e5 f32x4.sub - 2
fd:e6 f32x4.mul - 2
fd:e7 f32x4.div - 10
fd:e8 f32x4.min - 4
fd:e9 f32x4.max - 4
fd:ea f32x4.pmin - 1
fd:eb f32x4.pmax - 1
fd:ec f64x2.abs - 2
fd:ed f64x2.neg - 2
fd:ef f64x2.sqrt - 14
fd:f0 f64x2.add - 2
fd:f1 f64x2.sub - 2
fd:f2 f64x2.mul - 2
fd:f3 f64x2.div - 12
fd:f4 f64x2.min - 4
fd:f5 f64x2.max - 5
fd:f6 f64x2.pmin - 1
fd:f7 f64x2.pmax - 1
fd:f8 i32x4.trunc_sat_f32x4_s - 2
fd:f9 i32x4.trunc_sat_f32x4_u - 4
fd:fa f32x4.convert_i32x4_s - 1
fd:fb f32x4.convert_i32x4_u - 4
fd:fc i32x4.trunc_sat_f64x2_s_zero - 2
fd:fd i32x4.trunc_sat_f64x2_u_zero - 3
fd:fe f64x2.convert_low_i32x4_s - 1
fd:ff f64x2.convert_low_i32x4_u - 1
"""

# Immediate/role codes. Small ints so that the scanner's dispatch is a list lookup.
_K_NONE: Final = 0
_K_LEB: Final = 1
_K_MEMARG: Final = 2
_K_END: Final = 3
_K_BR: Final = 4
_K_BLOCK: Final = 5
_K_LOOP: Final = 6
_K_IF: Final = 7
_K_CALL: Final = 8
_K_REF_FUNC: Final = 9
_K_PREFIX_FC: Final = 10
_K_PREFIX_FD: Final = 11
_K_BR_TABLE: Final = 12
_K_CALL_INDIRECT: Final = 13
_K_RETURN_CALL: Final = 14
_K_RETURN_CALL_INDIRECT: Final = 15
_K_F32: Final = 16
_K_F64: Final = 17
_K_SELECT_T: Final = 18
_K_HEAPTYPE: Final = 19
_K_LEB2: Final = 20
_K_BULK1: Final = 21
_K_BULK2: Final = 22
_K_LANE: Final = 23
_K_MEMARG_LANE: Final = 24
_K_V128: Final = 25
_K_INVALID: Final = 26

_FUNC_INDEX_KINDS: Final = frozenset((_K_CALL, _K_REF_FUNC, _K_RETURN_CALL))
_BULK_KINDS: Final = frozenset((_K_BULK1, _K_BULK2))
_ONE_LEB_BLOCK_KINDS: Final = frozenset((_K_BR, _K_LOOP, _K_IF))
_CALL_INDIRECT_KINDS: Final = frozenset((_K_CALL_INDIRECT, _K_RETURN_CALL_INDIRECT))

_KIND_CODES: Final[Mapping[str, int]] = {
    "-": _K_NONE,
    "leb": _K_LEB,
    "memarg": _K_MEMARG,
    "end": _K_END,
    "br": _K_BR,
    "block": _K_BLOCK,
    "loop": _K_LOOP,
    "if": _K_IF,
    "call": _K_CALL,
    "ref.func": _K_REF_FUNC,
    "br_table": _K_BR_TABLE,
    "call_indirect": _K_CALL_INDIRECT,
    "return_call": _K_RETURN_CALL,
    "return_call_indirect": _K_RETURN_CALL_INDIRECT,
    "f32": _K_F32,
    "f64": _K_F64,
    "select_t": _K_SELECT_T,
    "heaptype": _K_HEAPTYPE,
    "leb2": _K_LEB2,
    "bulk1": _K_BULK1,
    "bulk2": _K_BULK2,
    "lane": _K_LANE,
    "memarg_lane": _K_MEMARG_LANE,
    "v128": _K_V128,
}


@dataclass(frozen=True)
class OpInfo:
    """One instruction of the cost table."""

    name: str
    opcode: int  # the first byte (0xFC / 0xFD for prefixed instructions)
    subopcode: int | None  # the LEB-encoded sub-opcode after a prefix
    immediates: str  # the immediates/role column of the table
    cost: int

    def encoding(self) -> bytes:
        """The opcode bytes (without immediates)."""
        if self.subopcode is None:
            return bytes((self.opcode,))
        return bytes((self.opcode,)) + encode_uleb(self.subopcode)


def _parse_table() -> dict[str, OpInfo]:
    table: dict[str, OpInfo] = {}
    for line in _OPCODE_TABLE.strip().splitlines():
        code, name, imm, cost = line.split()
        if ":" in code:
            prefix, sub = code.split(":")
            info = OpInfo(name, int(prefix, 16), int(sub, 16), imm, int(cost))
        else:
            info = OpInfo(name, int(code, 16), None, imm, int(cost))
        if imm not in _KIND_CODES or name in table:
            raise AssertionError(f"bad opcode table row: {line}")
        table[name] = info
    return table


INSTRUCTIONS: Final[Mapping[str, OpInfo]] = _parse_table()
"""The cost table by text-format name (``select_t`` is the typed ``select``)."""

_BY_OPCODE: Final[Mapping[tuple[int, int | None], OpInfo]] = {
    (i.opcode, i.subopcode): i for i in INSTRUCTIONS.values()
}


def instruction_cost(op: int | str, subopcode: int | None = None) -> int:
    """The replica's static cost of one instruction, by name or by (opcode, sub-opcode).

    Bulk operations return their static part (100); the size is charged at run time.
    """
    info = INSTRUCTIONS.get(op) if isinstance(op, str) else _BY_OPCODE.get((op, subopcode))
    if info is None:
        raise KeyError(f"unknown or unsupported instruction {op!r} {subopcode!r}")
    return info.cost


def _dispatch_tables() -> tuple[list[int], list[int], list[int], list[int], list[int], list[int]]:
    # Flat 256-entry lists: the scanner indexes them with a byte, which is the fastest lookup
    # CPython offers.
    kind = [_K_INVALID] * 256
    cost = [0] * 256
    fc_kind = [_K_INVALID] * 256
    fc_cost = [0] * 256
    fd_kind = [_K_INVALID] * 256
    fd_cost = [0] * 256
    for info in INSTRUCTIONS.values():
        if info.subopcode is None:
            kind[info.opcode] = _KIND_CODES[info.immediates]
            cost[info.opcode] = info.cost
        elif info.opcode == 0xFC:
            fc_kind[info.subopcode] = _KIND_CODES[info.immediates]
            fc_cost[info.subopcode] = info.cost
        else:
            fd_kind[info.subopcode] = _KIND_CODES[info.immediates]
            fd_cost[info.subopcode] = info.cost
    kind[0xFC] = _K_PREFIX_FC
    kind[0xFD] = _K_PREFIX_FD
    return kind, cost, fc_kind, fc_cost, fd_kind, fd_cost


_KIND, _COST, _FC_KIND, _FC_COST, _FD_KIND, _FD_COST = _dispatch_tables()

# Value types that are a single byte: i32 i64 f32 f64 v128 funcref externref.
_VALTYPES: Final = frozenset((0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F))
_I64: Final = 0x7E

# Section ids, and their required order (custom sections may appear anywhere).
_SEC_CUSTOM, _SEC_TYPE, _SEC_IMPORT, _SEC_FUNCTION, _SEC_TABLE, _SEC_MEMORY = 0, 1, 2, 3, 4, 5
_SEC_GLOBAL, _SEC_EXPORT, _SEC_START, _SEC_ELEMENT, _SEC_CODE, _SEC_DATA = 6, 7, 8, 9, 10, 11
_SEC_DATACOUNT, _SEC_TAG = 12, 13
_SECTION_RANK: Final[Mapping[int, int]] = {
    sid: rank for rank, sid in enumerate((1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11))
}

_EXT_FUNC, _EXT_TABLE, _EXT_MEMORY, _EXT_GLOBAL, _EXT_TAG = 0, 1, 2, 3, 4

_WASM_HEADER: Final = b"\x00asm\x01\x00\x00\x00"


# --------------------------------------------------------------------------------------------
# Code rewriting


class _Injector:
    """Encodes the injected snippets for one module, with a cache for the static ones."""

    def __init__(self, counter_global: int, ooi_func: int, helper_func: int, shift: int) -> None:
        g = encode_uleb(counter_global)
        self.shift = shift
        self._prefix = b"\x23" + g + b"\x42"  # global.get $counter; i64.const <cost>
        self._suffix = b"\x7d\x24" + g  # i64.sub; global.set $counter
        # global.get $counter; i64.const 0; i64.lt_s; if; call $out_of_instructions; end
        self._check = b"\x23" + g + b"\x42\x00\x53\x04\x40\x10" + encode_uleb(ooi_func) + b"\x0b"
        # i64.extend_i32_u; call $helper; i32.wrap_i64 -- the size stays on the stack.
        self.dynamic = b"\xad\x10" + encode_uleb(helper_func) + b"\xa7"
        self._static: dict[int, bytes] = {}
        self._func_index: dict[int, bytes] = {}

    def static(self, cost: int, reentrant: bool) -> bytes:
        if reentrant:
            return self._decrement(cost) + self._check
        # The replica skips non-reentrant blocks that cost nothing.
        return self._decrement(cost) if cost else b""

    def _decrement(self, cost: int) -> bytes:
        snippet = self._static.get(cost)
        if snippet is None:
            snippet = self._prefix + encode_sleb(cost) + self._suffix
            self._static[cost] = snippet
        return snippet

    def func_index(self, old: int) -> bytes:
        enc = self._func_index.get(old)
        if enc is None:
            enc = encode_uleb(old + self.shift)
            self._func_index[old] = enc
        return enc


def _skip_locals(code: bytes, pos: int, end: int) -> int:
    groups, pos = decode_uleb(code, pos)
    for _ in range(groups):
        _, pos = decode_uleb(code, pos)
        if pos >= end or code[pos] not in _VALTYPES:
            raise MeteringError(f"unsupported local type at offset {pos}")
        pos += 1
    return pos


def _meter_body(code: bytes, start: int, end: int, inj: _Injector) -> bytes:
    """Rewrite one function body (locals + expression), ``code[start:end]``."""
    pos = _skip_locals(code, start, end)
    chunks: list[bytes] = [code[start:pos]]
    last = pos  # everything before `last` has been copied into `chunks`
    kinds = _KIND
    costs = _COST
    # The current basic block: where its injection goes, whether it is reentrant, its cost.
    # The function body is a reentrant block whose cost starts at 1, as in the replica.
    block_slot = 1
    chunks.append(b"")
    block_start = pos
    reentrant = True
    cost = 1
    try:
        while pos < end:
            op = code[pos]
            pos += 1
            kind = kinds[op]
            cost += costs[op]
            # The common cases first, each with an early `continue`.
            if kind == _K_NONE:
                continue
            if kind == _K_LEB:
                while code[pos] & 0x80:
                    pos += 1
                pos += 1
                continue
            if kind == _K_MEMARG:
                pos = _skip_memarg(code, pos)
                continue
            if kind == _K_BLOCK:
                while code[pos] & 0x80:
                    pos += 1
                pos += 1
                continue
            if kind in _FUNC_INDEX_KINDS:
                imm = pos
                index, pos = decode_uleb(code, pos)
                chunks.append(code[last:imm])
                chunks.append(inj.func_index(index))
                last = pos
                if kind != _K_RETURN_CALL:
                    continue
            elif kind == _K_PREFIX_FD:
                sub = code[pos]
                pos += 1
                if sub & 0x80:
                    sub, pos = decode_uleb(code, pos - 1)
                    if sub > 0xFF:
                        raise MeteringError(f"unsupported SIMD opcode 0xfd {sub:#x} at {pos}")
                fd_kind = _FD_KIND[sub]
                cost += _FD_COST[sub]
                if fd_kind == _K_NONE:
                    continue
                if fd_kind == _K_MEMARG:
                    pos = _skip_memarg(code, pos)
                elif fd_kind == _K_V128:
                    pos += 16
                elif fd_kind == _K_LANE:
                    pos += 1
                elif fd_kind == _K_MEMARG_LANE:
                    pos = _skip_memarg(code, pos) + 1
                else:
                    raise MeteringError(f"unsupported SIMD opcode 0xfd {sub:#x} at {pos}")
                continue
            elif kind == _K_PREFIX_FC:
                op_pos = pos - 1
                sub, pos = decode_uleb(code, pos)
                fc_kind = _FC_KIND[sub] if sub < 256 else _K_INVALID
                cost += _FC_COST[sub] if sub < 256 else 0
                if fc_kind == _K_NONE:
                    continue
                if fc_kind == _K_LEB:
                    _, pos = decode_uleb(code, pos)
                    continue
                if fc_kind in _BULK_KINDS:
                    _, pos = decode_uleb(code, pos)
                    if fc_kind == _K_BULK2:
                        _, pos = decode_uleb(code, pos)
                    # The size operand is on top of the stack: charge it just before the
                    # operation. If the operation opens its basic block, the replica puts
                    # this call before the block's own decrement (its injection points are
                    # stably sorted by position and this one is recorded first).
                    if op_pos == block_start:
                        chunks.insert(block_slot, inj.dynamic)
                        block_slot += 1
                    else:
                        chunks.append(code[last:op_pos])
                        chunks.append(inj.dynamic)
                        last = op_pos
                    continue
                raise MeteringError(f"unsupported opcode 0xfc {sub:#x} at offset {op_pos}")
            elif kind == _K_END:
                pass
            elif kind in _ONE_LEB_BLOCK_KINDS:  # br, br_if, loop, if
                while code[pos] & 0x80:
                    pos += 1
                pos += 1
            elif kind == _K_BR_TABLE:
                count, pos = decode_uleb(code, pos)
                for _ in range(count + 1):
                    while code[pos] & 0x80:
                        pos += 1
                    pos += 1
            elif kind in _CALL_INDIRECT_KINDS:
                _, pos = decode_uleb(code, pos)
                _, pos = decode_uleb(code, pos)
                if kind == _K_CALL_INDIRECT:
                    continue
            elif kind == _K_F32:
                pos += 4
                continue
            elif kind == _K_F64:
                pos += 8
                continue
            elif kind == _K_SELECT_T:
                count, pos = decode_uleb(code, pos)
                for _ in range(count):
                    if code[pos] not in _VALTYPES:
                        raise MeteringError(f"unsupported select type at offset {pos}")
                    pos += 1
                continue
            elif kind == _K_HEAPTYPE:
                if code[pos] not in (0x70, 0x6F):
                    raise MeteringError(f"unsupported heap type at offset {pos}")
                pos += 1
                continue
            else:
                raise MeteringError(f"unsupported opcode {op:#04x} at offset {pos - 1}")

            # The instruction just read ends the current basic block (its own cost included):
            # fill in the block's injection and open the next block right after it.
            chunks.append(code[last:pos])
            last = pos
            chunks[block_slot] = inj.static(cost, reentrant)
            block_slot = len(chunks)
            chunks.append(b"")
            block_start = pos
            reentrant = kind == _K_LOOP
            cost = 0
    except IndexError:
        raise MeteringError(f"function body ending at offset {end} is truncated") from None
    if pos != end:
        raise MeteringError(f"function body ending at offset {end} overran to {pos}")
    # The block opened by the body's final `end` never runs; like the replica, drop it.
    chunks.append(code[last:end])
    return b"".join(chunks)


def _skip_memarg(code: bytes, pos: int) -> int:
    flags = code[pos]
    pos += 1
    if flags & 0x80:
        while code[pos] & 0x80:
            pos += 1
        pos += 1
    if flags & 0x40:  # multi-memory: an explicit memory index follows
        while code[pos] & 0x80:
            pos += 1
        pos += 1
    while code[pos] & 0x80:
        pos += 1
    return pos + 1


def _rewrite_const_expr(r: Reader, shift: int) -> bytes:
    """Copy a constant expression, shifting ``ref.func`` indices. Ends after its ``end``."""
    out = bytearray()
    start = r.pos
    while True:
        op = r.u8()
        if op == 0x0B:
            out += r.since(start)
            return bytes(out)
        if op in (0x41, 0x42):  # i32.const / i64.const
            r.sleb()
        elif op == 0x43:
            r.take(4)
        elif op == 0x44:
            r.take(8)
        elif op == 0x23:  # global.get
            r.uleb()
        elif op == 0xD0:  # ref.null
            r.u8()
        elif op == 0xD2:  # ref.func: the one place a function index appears
            out += r.data[start : r.pos]
            out += encode_uleb(r.uleb() + shift)
            start = r.pos
        elif op in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended-const arithmetic
            pass
        elif op == 0xFD and r.uleb() == 0x0C:  # v128.const
            r.take(16)
        else:
            raise MeteringError(f"unsupported constant expression at offset {r.pos - 1}")


# --------------------------------------------------------------------------------------------
# Module rewriting


@dataclass
class _Section:
    sid: int
    start: int  # offset of the section id byte
    body: int  # offset of the payload
    end: int

    def raw(self, wasm: bytes) -> bytes:
        return wasm[self.start : self.end]


def _split_sections(wasm: bytes) -> list[_Section]:
    if wasm[:8] != _WASM_HEADER:
        raise MeteringError("not a wasm module (bad magic or version)")
    sections: list[_Section] = []
    r = Reader(wasm, 8)
    while not r.at_end():
        start = r.pos
        sid = r.u8()
        size = r.uleb()
        body = r.pos
        if body + size > len(wasm):
            raise MeteringError(f"section {sid} at offset {start} runs past the end")
        r.pos = body + size
        if sid != _SEC_CUSTOM and sid not in _SECTION_RANK:
            raise MeteringError(f"unknown section id {sid} at offset {start}")
        sections.append(_Section(sid, start, body, body + size))
    return sections


def _section_bytes(sid: int, payload: bytes) -> bytes:
    return bytes((sid,)) + encode_uleb(len(payload)) + payload


def _skip_limits(r: Reader, *, memory: bool) -> None:
    flags = r.uleb()
    if memory and flags & 0x04:
        raise MeteringError("64-bit memories are not supported (the replica meters them apart)")
    r.uleb()
    if flags & 0x01:
        r.uleb()
    if flags & 0x08:  # custom page size
        r.uleb()


def _read_types(wasm: bytes, sec: _Section | None) -> list[bytes]:
    if sec is None:
        return []
    r = Reader(wasm, sec.body, sec.end)
    types: list[bytes] = []
    for _ in range(r.uleb()):
        start = r.pos
        if r.u8() != 0x60:
            raise MeteringError("only plain function types are supported (no GC/rec groups)")
        for _ in range(2):
            for _ in range(r.uleb()):
                if r.u8() not in _VALTYPES:
                    raise MeteringError(f"unsupported value type at offset {r.pos - 1}")
        types.append(r.since(start))
    return types


@dataclass
class _Imports:
    entries: list[bytes]
    funcs: int = 0
    globals: int = 0


def _read_imports(wasm: bytes, sec: _Section | None) -> _Imports:
    imports = _Imports([])
    if sec is None:
        return imports
    r = Reader(wasm, sec.body, sec.end)
    for _ in range(r.uleb()):
        start = r.pos
        module = r.name()
        field = r.name()
        if (module, field) == OUT_OF_INSTRUCTIONS_IMPORT:
            raise MeteringError("the module is already instrumented")
        kind = r.u8()
        if kind == _EXT_FUNC:
            r.uleb()
            imports.funcs += 1
        elif kind == _EXT_TABLE:
            r.u8()
            _skip_limits(r, memory=False)
        elif kind == _EXT_MEMORY:
            _skip_limits(r, memory=True)
        elif kind == _EXT_GLOBAL:
            r.u8()
            r.u8()
            imports.globals += 1
        elif kind == _EXT_TAG:
            r.u8()
            r.uleb()
        else:
            raise MeteringError(f"unknown import kind {kind}")
        imports.entries.append(r.since(start))
    return imports


def _count(wasm: bytes, sec: _Section | None) -> int:
    return 0 if sec is None else Reader(wasm, sec.body, sec.end).uleb()


def _check_memories(wasm: bytes, sec: _Section | None) -> None:
    if sec is None:
        return
    r = Reader(wasm, sec.body, sec.end)
    for _ in range(r.uleb()):
        _skip_limits(r, memory=True)


def _rewrite_globals(
    wasm: bytes, sec: _Section | None, shift: int, first_index: int
) -> tuple[bytes, list[int]]:
    """The global section with the counter appended, and the indices of mutable globals."""
    entries: list[bytes] = []
    mutable: list[int] = []
    if sec is not None:
        r = Reader(wasm, sec.body, sec.end)
        for i in range(r.uleb()):
            header = r.take(2)  # value type, mutability
            if header[1] == 0x01:
                mutable.append(first_index + i)
            entries.append(header + _rewrite_const_expr(r, shift))
    # The counter: (global (mut i64) (i64.const 0)).
    entries.append(bytes((_I64, 0x01, 0x42, 0x00, 0x0B)))
    return _vec(entries), mutable


def _rewrite_exports(
    wasm: bytes, sec: _Section | None, shift: int, extra: list[tuple[str, int, int]]
) -> bytes:
    entries: list[bytes] = []
    names: set[str] = set()
    if sec is not None:
        r = Reader(wasm, sec.body, sec.end)
        for _ in range(r.uleb()):
            start = r.pos
            names.add(r.name())
            head = r.since(start)
            kind = r.u8()
            index = r.uleb()
            if kind == _EXT_FUNC:
                index += shift
            entries.append(head + bytes((kind,)) + encode_uleb(index))
    for name, kind, index in extra:
        if name in names:
            raise MeteringError(f"the module already exports the reserved name {name!r}")
        entries.append(_name(name) + bytes((kind,)) + encode_uleb(index))
    return _vec(entries)


def _rewrite_elements(wasm: bytes, sec: _Section, shift: int) -> bytes:
    r = Reader(wasm, sec.body, sec.end)
    entries: list[bytes] = []
    for _ in range(r.uleb()):
        out = bytearray()
        start = r.pos
        flags = r.uleb()
        if flags > 7:
            raise MeteringError(f"unknown element segment flags {flags}")
        if flags & 0x01 == 0:  # active: optional table index, then the offset expression
            if flags & 0x02:
                r.uleb()
            out += r.since(start)
            out += _rewrite_const_expr(r, shift)
            start = r.pos
        if flags & 0x03:  # an element kind (index form) or reference type (expression form)
            r.u8()
        count = r.uleb()
        out += r.since(start)
        if flags & 0x04:
            for _ in range(count):
                out += _rewrite_const_expr(r, shift)
        else:
            for _ in range(count):
                out += encode_uleb(r.uleb() + shift)
        entries.append(bytes(out))
    return _vec(entries)


def _rewrite_code(wasm: bytes, sec: _Section | None, inj: _Injector, helper: bytes) -> bytes:
    bodies: list[bytes] = []
    if sec is not None:
        r = Reader(wasm, sec.body, sec.end)
        for _ in range(r.uleb()):
            size = r.uleb()
            start = r.pos
            if start + size > sec.end:
                raise MeteringError(f"function body at offset {start} runs past its section")
            body = _meter_body(wasm, start, start + size, inj)
            bodies.append(encode_uleb(len(body)) + body)
            r.pos = start + size
    bodies.append(encode_uleb(len(helper)) + helper)
    return _vec(bodies)


def _helper_body(counter_global: int, ooi_func: int) -> bytes:
    """(func (param $size i64) (result i64) (local $new i64)): charge $size, return it.

    Mirrors the replica's helper: subtract, saturate at i64::MIN on wrap-around, store, call
    out_of_instructions if the counter went negative, and give the size back to the caller.
    """
    g = encode_uleb(counter_global)
    return b"".join(
        (
            b"\x01\x01\x7e",  # one local: i64
            b"\x23" + g + b"\x20\x00\x7d\x22\x01",  # counter - size, tee $new
            b"\x23" + g + b"\x55",  # $new > counter  (wrapped around)
            b"\x04\x7e\x42" + encode_sleb(-(1 << 63)) + b"\x05\x20\x01\x0b",  # ? MIN : $new
            b"\x24" + g,  # global.set $counter
            b"\x23" + g + b"\x42\x00\x53\x04\x40\x10" + encode_uleb(ooi_func) + b"\x0b",
            b"\x20\x00\x0b",  # local.get $size; end
        )
    )


def _rewrite_name_section(payload: bytes, shift: int) -> bytes | None:
    """Shift the function indices of a `name` section; None if it cannot be parsed."""
    try:
        r = Reader(payload)
        r.name()  # "name"
        out = bytearray(payload[: r.pos])
        while not r.at_end():
            sub_id = r.u8()
            size = r.uleb()
            sub = Reader(payload, r.pos, r.pos + size)
            r.pos += size
            if sub_id in (1, 2, 3):  # function names, local names, label names
                content = bytearray()
                count = sub.uleb()
                content += encode_uleb(count)
                for _ in range(count):
                    content += encode_uleb(sub.uleb() + shift)
                    start = sub.pos
                    if sub_id == 1:
                        sub.take(sub.uleb())
                    else:  # an inner name map, indexed by local or label: unchanged
                        for _ in range(sub.uleb()):
                            sub.uleb()
                            sub.take(sub.uleb())
                    content += sub.since(start)
                if not sub.at_end():
                    return None
                out.append(sub_id)
                out += encode_uleb(len(content)) + content
            else:
                out.append(sub_id)
                out += encode_uleb(size) + payload[sub.pos : sub.end]
        return bytes(out)
    except (MeteringError, IndexError):
        return None


def _custom_name(wasm: bytes, sec: _Section) -> str | None:
    try:
        return Reader(wasm, sec.body, sec.end).name()
    except MeteringError:
        return None


def _type_index(types: list[bytes], encoded: bytes) -> int:
    """Index of a function type, appended if the module lacks it (like `add_func_type`)."""
    if encoded in types:
        return types.index(encoded)
    types.append(encoded)
    return len(types) - 1


def instrument(wasm: bytes | bytearray | memoryview, *, keep_start: bool = False) -> bytes:
    """Return ``wasm`` with the replica's instruction metering injected.

    The result imports ``__.out_of_instructions : () -> ()`` as its first function (every
    other function index moves up by one) and exports the mutable i64 counter as
    ``canister counter_instructions``. Set the counter before calling into the module; what
    it has lost afterwards is the instruction count. The start function, if any, is exported
    as ``canister_start`` instead of running at instantiation, unless ``keep_start`` is true
    (then it stays the start function and runs against the counter's initial value of 0).

    Raises MeteringError for malformed modules and for features the replica's metering does
    not cover here (memory64, exception handling, GC types, relaxed SIMD, atomics).
    """
    data = bytes(wasm)  # indexing `bytes` is what the scanner is tuned for
    sections = _split_sections(data)
    first: dict[int, _Section] = {}
    for sec in sections:
        if sec.sid != _SEC_CUSTOM:
            if sec.sid in first:
                raise MeteringError(f"duplicate section {sec.sid}")
            first[sec.sid] = sec

    types = _read_types(data, first.get(_SEC_TYPE))
    imports = _read_imports(data, first.get(_SEC_IMPORT))
    _check_memories(data, first.get(_SEC_MEMORY))
    defined_funcs = _count(data, first.get(_SEC_FUNCTION))
    defined_globals = _count(data, first.get(_SEC_GLOBAL))

    # New index spaces: the import goes first (so every old function index shifts by one,
    # imported ones included), the helper after all functions, the counter after all globals.
    shift = 1
    ooi_func = 0
    helper_func = imports.funcs + shift + defined_funcs
    counter_global = imports.globals + defined_globals
    ooi_type = _type_index(types, b"\x60\x00\x00")
    helper_type = _type_index(types, b"\x60\x01\x7e\x01\x7e")
    inj = _Injector(counter_global, ooi_func, helper_func, shift)

    globals_payload, mutable_globals = _rewrite_globals(
        data, first.get(_SEC_GLOBAL), shift, imports.globals
    )
    # Like the replica, export the module's mutable globals (e.g. the shadow-stack pointer)
    # so the host can save and restore them around a message that traps.
    extra_exports: list[tuple[str, int, int]] = [
        (COUNTER_GLOBAL_EXPORT, _EXT_GLOBAL, counter_global),
        *((f"{MUTABLE_GLOBAL_EXPORT_PREFIX}{g}", _EXT_GLOBAL, g) for g in mutable_globals),
    ]
    new_start: bytes | None = None
    start_sec = first.get(_SEC_START)
    if start_sec is not None:
        start_func = Reader(data, start_sec.body, start_sec.end).uleb() + shift
        if keep_start:
            new_start = encode_uleb(start_func)
        else:
            extra_exports.append((CANISTER_START_EXPORT, _EXT_FUNC, start_func))

    ooi_import = (
        _name(OUT_OF_INSTRUCTIONS_IMPORT[0])
        + _name(OUT_OF_INSTRUCTIONS_IMPORT[1])
        + bytes((_EXT_FUNC,))
        + encode_uleb(ooi_type)
    )
    # The function section is a count and type indices: keep the indices, append the helper's.
    func_sec = first.get(_SEC_FUNCTION)
    old_func_types = b""
    if func_sec is not None:
        r = Reader(data, func_sec.body, func_sec.end)
        r.uleb()
        old_func_types = data[r.pos : func_sec.end]
    replaced: dict[int, bytes | None] = {
        _SEC_TYPE: _vec(types),
        _SEC_IMPORT: _vec([ooi_import, *imports.entries]),
        _SEC_FUNCTION: encode_uleb(defined_funcs + 1) + old_func_types + encode_uleb(helper_type),
        _SEC_GLOBAL: globals_payload,
        _SEC_EXPORT: _rewrite_exports(data, first.get(_SEC_EXPORT), shift, extra_exports),
        _SEC_START: new_start,
        _SEC_CODE: _rewrite_code(
            data, first.get(_SEC_CODE), inj, _helper_body(counter_global, ooi_func)
        ),
    }
    elem_sec = first.get(_SEC_ELEMENT)
    if elem_sec is not None:
        replaced[_SEC_ELEMENT] = _rewrite_elements(data, elem_sec, shift)

    out = bytearray(_WASM_HEADER)
    pending = sorted(
        (sid for sid, payload in replaced.items() if payload is not None and sid not in first),
        key=_SECTION_RANK.__getitem__,
    )

    def emit_pending_before(rank: int) -> None:
        # Sections the module lacked (e.g. no globals) go before the first later-ranked one.
        while pending and _SECTION_RANK[pending[0]] < rank:
            sid = pending.pop(0)
            payload = replaced[sid]
            assert payload is not None
            out.extend(_section_bytes(sid, payload))

    for sec in sections:
        if sec.sid == _SEC_CUSTOM:
            if _custom_name(data, sec) == "name":
                fixed = _rewrite_name_section(data[sec.body : sec.end], shift)
                if fixed is not None:  # unparseable names are dropped, never left wrong
                    out.extend(_section_bytes(_SEC_CUSTOM, fixed))
            else:
                out.extend(sec.raw(data))  # byte for byte
            continue
        emit_pending_before(_SECTION_RANK[sec.sid])
        if sec.sid in replaced:
            payload = replaced[sec.sid]
            if payload is not None:
                out.extend(_section_bytes(sec.sid, payload))
        else:
            out.extend(sec.raw(data))
    emit_pending_before(len(_SECTION_RANK) + 1)
    return bytes(out)
