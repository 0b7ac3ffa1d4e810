"""The IC replica's instruction costs, one row per wasm instruction.

The numbers are dfinity/ic ``rs/embedders/src/wasm_utils/instrumentation.rs``
``instruction_to_cost`` for a wasm32 memory; `metering.py` charges them per basic block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gpt2_chat.backends.embedded.wasm_binary import encode_uleb

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
K_NONE: Final = 0
K_LEB: Final = 1
K_MEMARG: Final = 2
K_END: Final = 3
K_BR: Final = 4
K_BLOCK: Final = 5
K_LOOP: Final = 6
K_IF: Final = 7
K_CALL: Final = 8
K_REF_FUNC: Final = 9
K_PREFIX_FC: Final = 10
K_PREFIX_FD: Final = 11
K_BR_TABLE: Final = 12
K_CALL_INDIRECT: Final = 13
K_RETURN_CALL: Final = 14
K_RETURN_CALL_INDIRECT: Final = 15
K_F32: Final = 16
K_F64: Final = 17
K_SELECT_T: Final = 18
K_HEAPTYPE: Final = 19
K_LEB2: Final = 20
K_BULK1: Final = 21
K_BULK2: Final = 22
K_LANE: Final = 23
K_MEMARG_LANE: Final = 24
K_V128: Final = 25
K_INVALID: Final = 26

FUNC_INDEX_KINDS: Final = frozenset((K_CALL, K_REF_FUNC, K_RETURN_CALL))
BULK_KINDS: Final = frozenset((K_BULK1, K_BULK2))
ONE_LEB_BLOCK_KINDS: Final = frozenset((K_BR, K_LOOP, K_IF))
CALL_INDIRECT_KINDS: Final = frozenset((K_CALL_INDIRECT, K_RETURN_CALL_INDIRECT))

_KIND_CODES: Final[Mapping[str, int]] = {
    "-": K_NONE,
    "leb": K_LEB,
    "memarg": K_MEMARG,
    "end": K_END,
    "br": K_BR,
    "block": K_BLOCK,
    "loop": K_LOOP,
    "if": K_IF,
    "call": K_CALL,
    "ref.func": K_REF_FUNC,
    "br_table": K_BR_TABLE,
    "call_indirect": K_CALL_INDIRECT,
    "return_call": K_RETURN_CALL,
    "return_call_indirect": K_RETURN_CALL_INDIRECT,
    "f32": K_F32,
    "f64": K_F64,
    "select_t": K_SELECT_T,
    "heaptype": K_HEAPTYPE,
    "leb2": K_LEB2,
    "bulk1": K_BULK1,
    "bulk2": K_BULK2,
    "lane": K_LANE,
    "memarg_lane": K_MEMARG_LANE,
    "v128": K_V128,
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
    kind = [K_INVALID] * 256
    cost = [0] * 256
    fc_kind = [K_INVALID] * 256
    fc_cost = [0] * 256
    fd_kind = [K_INVALID] * 256
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
    kind[0xFC] = K_PREFIX_FC
    kind[0xFD] = K_PREFIX_FD
    return kind, cost, fc_kind, fc_cost, fd_kind, fd_cost


KIND, COST, FC_KIND, FC_COST, FD_KIND, FD_COST = _dispatch_tables()
