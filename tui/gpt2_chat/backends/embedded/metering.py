"""IC-style instruction metering injected into a canister's wasm, in pure Python.

The IC replica does not count wasm operators: before it compiles a canister it rewrites the
module (dfinity/ic ``rs/embedders/src/wasm_utils/instrumentation.rs``) so that the module
itself decrements an exported i64 counter by the cost of every basic block it enters. This
module performs the same rewrite so that the embedded backend (wasmtime in-process) reports the
instruction counts a replica would. What is mirrored:

* Costs: the replica's ``instruction_to_cost`` for wasm32 (``cost_table.py``, the one
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

from dataclasses import dataclass
from typing import Final

from gpt2_chat.backends.embedded.cost_table import (
    BULK_KINDS,
    CALL_INDIRECT_KINDS,
    COST,
    FC_COST,
    FC_KIND,
    FD_COST,
    FD_KIND,
    FUNC_INDEX_KINDS,
    K_BLOCK,
    K_BR_TABLE,
    K_BULK2,
    K_CALL_INDIRECT,
    K_END,
    K_F32,
    K_F64,
    K_HEAPTYPE,
    K_INVALID,
    K_LANE,
    K_LEB,
    K_LOOP,
    K_MEMARG,
    K_MEMARG_LANE,
    K_NONE,
    K_PREFIX_FC,
    K_PREFIX_FD,
    K_RETURN_CALL,
    K_SELECT_T,
    K_V128,
    KIND,
    ONE_LEB_BLOCK_KINDS,
)
from gpt2_chat.backends.embedded.wasm_binary import (
    EXT_FUNC,
    EXT_GLOBAL,
    EXT_MEMORY,
    EXT_TABLE,
    EXT_TAG,
    I64,
    SEC_CODE,
    SEC_CUSTOM,
    SEC_ELEMENT,
    SEC_EXPORT,
    SEC_FUNCTION,
    SEC_GLOBAL,
    SEC_IMPORT,
    SEC_MEMORY,
    SEC_START,
    SEC_TYPE,
    SECTION_RANK,
    VALTYPES,
    WASM_HEADER,
    MeteringError,
    Reader,
    Section,
    decode_uleb,
    encode_name,
    encode_sleb,
    encode_uleb,
    encode_vec,
    section_bytes,
    skip_limits,
    split_sections,
)

COUNTER_GLOBAL_EXPORT: Final = "canister counter_instructions"
OUT_OF_INSTRUCTIONS_IMPORT: Final = ("__", "out_of_instructions")
CANISTER_START_EXPORT: Final = "canister_start"
# Prefix of the exports that expose the module's own mutable globals to the host.
MUTABLE_GLOBAL_EXPORT_PREFIX: Final = "canister global "


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
        #: Operators in the function bodies rewritten so far.
        self.instructions = 0

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
        if pos >= end or code[pos] not in VALTYPES:
            raise MeteringError(f"unsupported local type at offset {pos}")
        pos += 1
    return pos


def _meter_body(code: bytes, start: int, end: int, inj: _Injector) -> bytes:
    """Rewrite one function body (locals + expression), ``code[start:end]``."""
    pos = _skip_locals(code, start, end)
    chunks: list[bytes] = [code[start:pos]]
    last = pos  # everything before `last` has been copied into `chunks`
    kinds = KIND
    costs = COST
    # The current basic block: where its injection goes, whether it is reentrant, its cost.
    # The function body is a reentrant block whose cost starts at 1, as in the replica.
    block_slot = 1
    chunks.append(b"")
    block_start = pos
    reentrant = True
    cost = 1
    ops = 0
    try:
        while pos < end:
            op = code[pos]
            pos += 1
            ops += 1
            kind = kinds[op]
            cost += costs[op]
            # The common cases first, each with an early `continue`.
            if kind == K_NONE:
                continue
            if kind == K_LEB:
                while code[pos] & 0x80:
                    pos += 1
                pos += 1
                continue
            if kind == K_MEMARG:
                pos = _skip_memarg(code, pos)
                continue
            if kind == K_BLOCK:
                while code[pos] & 0x80:
                    pos += 1
                pos += 1
                continue
            if kind in FUNC_INDEX_KINDS:
                imm = pos
                index, pos = decode_uleb(code, pos)
                chunks.append(code[last:imm])
                chunks.append(inj.func_index(index))
                last = pos
                if kind != K_RETURN_CALL:
                    continue
            elif kind == K_PREFIX_FD:
                sub = code[pos]
                pos += 1
                if sub & 0x80:
                    sub, pos = decode_uleb(code, pos - 1)
                    if sub > 0xFF:
                        raise MeteringError(f"unsupported SIMD opcode 0xfd {sub:#x} at {pos}")
                fd_kind = FD_KIND[sub]
                cost += FD_COST[sub]
                if fd_kind == K_NONE:
                    continue
                if fd_kind == K_MEMARG:
                    pos = _skip_memarg(code, pos)
                elif fd_kind == K_V128:
                    pos += 16
                elif fd_kind == K_LANE:
                    pos += 1
                elif fd_kind == K_MEMARG_LANE:
                    pos = _skip_memarg(code, pos) + 1
                else:
                    raise MeteringError(f"unsupported SIMD opcode 0xfd {sub:#x} at {pos}")
                continue
            elif kind == K_PREFIX_FC:
                op_pos = pos - 1
                sub, pos = decode_uleb(code, pos)
                fc_kind = FC_KIND[sub] if sub < 256 else K_INVALID
                cost += FC_COST[sub] if sub < 256 else 0
                if fc_kind == K_NONE:
                    continue
                if fc_kind == K_LEB:
                    _, pos = decode_uleb(code, pos)
                    continue
                if fc_kind in BULK_KINDS:
                    _, pos = decode_uleb(code, pos)
                    if fc_kind == K_BULK2:
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
            elif kind == K_END:
                pass
            elif kind in ONE_LEB_BLOCK_KINDS:  # br, br_if, loop, if
                while code[pos] & 0x80:
                    pos += 1
                pos += 1
            elif kind == K_BR_TABLE:
                count, pos = decode_uleb(code, pos)
                for _ in range(count + 1):
                    while code[pos] & 0x80:
                        pos += 1
                    pos += 1
            elif kind in CALL_INDIRECT_KINDS:
                _, pos = decode_uleb(code, pos)
                _, pos = decode_uleb(code, pos)
                if kind == K_CALL_INDIRECT:
                    continue
            elif kind == K_F32:
                pos += 4
                continue
            elif kind == K_F64:
                pos += 8
                continue
            elif kind == K_SELECT_T:
                count, pos = decode_uleb(code, pos)
                for _ in range(count):
                    if code[pos] not in VALTYPES:
                        raise MeteringError(f"unsupported select type at offset {pos}")
                    pos += 1
                continue
            elif kind == K_HEAPTYPE:
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
            reentrant = kind == K_LOOP
            cost = 0
    except IndexError:
        raise MeteringError(f"function body ending at offset {end} is truncated") from None
    if pos != end:
        raise MeteringError(f"function body ending at offset {end} overran to {pos}")
    inj.instructions += ops
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


def _read_types(wasm: bytes, sec: Section | None) -> list[bytes]:
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
                if r.u8() not in VALTYPES:
                    raise MeteringError(f"unsupported value type at offset {r.pos - 1}")
        types.append(r.since(start))
    return types


@dataclass
class _Imports:
    entries: list[bytes]
    funcs: int = 0
    globals: int = 0


def _read_imports(wasm: bytes, sec: Section | None) -> _Imports:
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
        if kind == EXT_FUNC:
            r.uleb()
            imports.funcs += 1
        elif kind == EXT_TABLE:
            r.u8()
            skip_limits(r, memory=False)
        elif kind == EXT_MEMORY:
            skip_limits(r, memory=True)
        elif kind == EXT_GLOBAL:
            r.u8()
            r.u8()
            imports.globals += 1
        elif kind == EXT_TAG:
            r.u8()
            r.uleb()
        else:
            raise MeteringError(f"unknown import kind {kind}")
        imports.entries.append(r.since(start))
    return imports


def _count(wasm: bytes, sec: Section | None) -> int:
    return 0 if sec is None else Reader(wasm, sec.body, sec.end).uleb()


def _check_memories(wasm: bytes, sec: Section | None) -> None:
    if sec is None:
        return
    r = Reader(wasm, sec.body, sec.end)
    for _ in range(r.uleb()):
        skip_limits(r, memory=True)


def _rewrite_globals(
    wasm: bytes, sec: Section | None, shift: int, first_index: int
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
    entries.append(bytes((I64, 0x01, 0x42, 0x00, 0x0B)))
    return encode_vec(entries), mutable


def _rewrite_exports(
    wasm: bytes, sec: Section | None, shift: int, extra: list[tuple[str, int, int]]
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
            if kind == EXT_FUNC:
                index += shift
            entries.append(head + bytes((kind,)) + encode_uleb(index))
    for name, kind, index in extra:
        if name in names:
            raise MeteringError(f"the module already exports the reserved name {name!r}")
        entries.append(encode_name(name) + bytes((kind,)) + encode_uleb(index))
    return encode_vec(entries)


def _rewrite_elements(wasm: bytes, sec: Section, shift: int) -> bytes:
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
    return encode_vec(entries)


def _rewrite_code(wasm: bytes, sec: Section | None, inj: _Injector, helper: bytes) -> bytes:
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
    return encode_vec(bodies)


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


def _custom_name(wasm: bytes, sec: Section) -> str | None:
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


@dataclass(frozen=True)
class Instrumented:
    wasm: bytes
    #: What the replica charges compilation by: the operators of the module's function
    #: bodies, plus two per defined global (its init expression and `end`).
    instruction_count: int


def instrument(wasm: bytes | bytearray | memoryview, *, keep_start: bool = False) -> bytes:
    """`instrument_module`, the wasm only."""
    return instrument_module(wasm, keep_start=keep_start).wasm


def instrument_module(
    wasm: bytes | bytearray | memoryview, *, keep_start: bool = False
) -> Instrumented:
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
    sections = split_sections(data)
    first: dict[int, Section] = {}
    for sec in sections:
        if sec.sid != SEC_CUSTOM:
            if sec.sid in first:
                raise MeteringError(f"duplicate section {sec.sid}")
            first[sec.sid] = sec

    types = _read_types(data, first.get(SEC_TYPE))
    imports = _read_imports(data, first.get(SEC_IMPORT))
    _check_memories(data, first.get(SEC_MEMORY))
    defined_funcs = _count(data, first.get(SEC_FUNCTION))
    defined_globals = _count(data, first.get(SEC_GLOBAL))

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
        data, first.get(SEC_GLOBAL), shift, imports.globals
    )
    # Like the replica, export the module's mutable globals (e.g. the shadow-stack pointer)
    # so the host can save and restore them around a message that traps.
    extra_exports: list[tuple[str, int, int]] = [
        (COUNTER_GLOBAL_EXPORT, EXT_GLOBAL, counter_global),
        *((f"{MUTABLE_GLOBAL_EXPORT_PREFIX}{g}", EXT_GLOBAL, g) for g in mutable_globals),
    ]
    new_start: bytes | None = None
    start_sec = first.get(SEC_START)
    if start_sec is not None:
        start_func = Reader(data, start_sec.body, start_sec.end).uleb() + shift
        if keep_start:
            new_start = encode_uleb(start_func)
        else:
            extra_exports.append((CANISTER_START_EXPORT, EXT_FUNC, start_func))

    ooi_import = (
        encode_name(OUT_OF_INSTRUCTIONS_IMPORT[0])
        + encode_name(OUT_OF_INSTRUCTIONS_IMPORT[1])
        + bytes((EXT_FUNC,))
        + encode_uleb(ooi_type)
    )
    # The function section is a count and type indices: keep the indices, append the helper's.
    func_sec = first.get(SEC_FUNCTION)
    old_func_types = b""
    if func_sec is not None:
        r = Reader(data, func_sec.body, func_sec.end)
        r.uleb()
        old_func_types = data[r.pos : func_sec.end]
    replaced: dict[int, bytes | None] = {
        SEC_TYPE: encode_vec(types),
        SEC_IMPORT: encode_vec([ooi_import, *imports.entries]),
        SEC_FUNCTION: encode_uleb(defined_funcs + 1) + old_func_types + encode_uleb(helper_type),
        SEC_GLOBAL: globals_payload,
        SEC_EXPORT: _rewrite_exports(data, first.get(SEC_EXPORT), shift, extra_exports),
        SEC_START: new_start,
        SEC_CODE: _rewrite_code(
            data, first.get(SEC_CODE), inj, _helper_body(counter_global, ooi_func)
        ),
    }
    elem_sec = first.get(SEC_ELEMENT)
    if elem_sec is not None:
        replaced[SEC_ELEMENT] = _rewrite_elements(data, elem_sec, shift)

    out = bytearray(WASM_HEADER)
    pending = sorted(
        (sid for sid, payload in replaced.items() if payload is not None and sid not in first),
        key=SECTION_RANK.__getitem__,
    )

    def emit_pending_before(rank: int) -> None:
        # Sections the module lacked (e.g. no globals) go before the first later-ranked one.
        while pending and SECTION_RANK[pending[0]] < rank:
            sid = pending.pop(0)
            payload = replaced[sid]
            assert payload is not None
            out.extend(section_bytes(sid, payload))

    for sec in sections:
        if sec.sid == SEC_CUSTOM:
            if _custom_name(data, sec) == "name":
                fixed = _rewrite_name_section(data[sec.body : sec.end], shift)
                if fixed is not None:  # unparseable names are dropped, never left wrong
                    out.extend(section_bytes(SEC_CUSTOM, fixed))
            else:
                out.extend(sec.raw(data))  # byte for byte
            continue
        emit_pending_before(SECTION_RANK[sec.sid])
        if sec.sid in replaced:
            payload = replaced[sec.sid]
            if payload is not None:
                out.extend(section_bytes(sec.sid, payload))
        else:
            out.extend(sec.raw(data))
    emit_pending_before(len(SECTION_RANK) + 1)
    return Instrumented(bytes(out), inj.instructions + 2 * defined_globals)
