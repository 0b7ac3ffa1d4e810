"""Reading and writing the WebAssembly binary format: LEB128, a byte cursor, sections.

Only what the metering rewriter (`metering.py`) needs; the format is the core spec's
(https://webassembly.github.io/spec/core/binary/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


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


def encode_vec(items: list[bytes]) -> bytes:
    return encode_uleb(len(items)) + b"".join(items)


def encode_name(text: str) -> bytes:
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
# Types and sections

# Value types that are a single byte: i32 i64 f32 f64 v128 funcref externref.
VALTYPES: Final = frozenset((0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F))
I64: Final = 0x7E

# Section ids, and their required order (custom sections may appear anywhere).
SEC_CUSTOM, SEC_TYPE, SEC_IMPORT, SEC_FUNCTION, SEC_TABLE, SEC_MEMORY = 0, 1, 2, 3, 4, 5
SEC_GLOBAL, SEC_EXPORT, SEC_START, SEC_ELEMENT, SEC_CODE, SEC_DATA = 6, 7, 8, 9, 10, 11
SEC_DATACOUNT, SEC_TAG = 12, 13
SECTION_RANK: Final[Mapping[int, int]] = {
    sid: rank for rank, sid in enumerate((1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11))
}

EXT_FUNC, EXT_TABLE, EXT_MEMORY, EXT_GLOBAL, EXT_TAG = 0, 1, 2, 3, 4

WASM_HEADER: Final = b"\x00asm\x01\x00\x00\x00"


@dataclass
class Section:
    sid: int
    start: int  # offset of the section id byte
    body: int  # offset of the payload
    end: int

    def raw(self, wasm: bytes) -> bytes:
        return wasm[self.start : self.end]


def split_sections(wasm: bytes) -> list[Section]:
    if wasm[:8] != WASM_HEADER:
        raise MeteringError("not a wasm module (bad magic or version)")
    sections: list[Section] = []
    r = Reader(wasm, 8)
    while not r.at_end():
        start = r.pos
        sid = r.u8()
        size = r.uleb()
        body = r.pos
        if body + size > len(wasm):
            raise MeteringError(f"section {sid} at offset {start} runs past the end")
        r.pos = body + size
        if sid != SEC_CUSTOM and sid not in SECTION_RANK:
            raise MeteringError(f"unknown section id {sid} at offset {start}")
        sections.append(Section(sid, start, body, body + size))
    return sections


def section_bytes(sid: int, payload: bytes) -> bytes:
    return bytes((sid,)) + encode_uleb(len(payload)) + payload


def skip_limits(r: Reader, *, memory: bool) -> None:
    flags = r.uleb()
    if memory and flags & 0x04:
        raise MeteringError("64-bit memories are not supported (the replica meters them apart)")
    r.uleb()
    if flags & 0x01:
        r.uleb()
    if flags & 0x08:  # custom page size
        r.uleb()
