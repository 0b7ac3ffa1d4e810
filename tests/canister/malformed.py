"""Rewriting a safetensors file's JSON header, keeping its tensor bytes: the way the
malformed-model tests make bad files from good ones."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

Header = dict[str, Any]


def split(data: bytes) -> tuple[Header, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    header: Header = json.loads(data[8 : 8 + n])
    return header, data[8 + n :]


def join(header: Header | str, body: bytes) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + body


def rewrite(data: bytes, edit: Callable[[Header], None]) -> bytes:
    """`data` with its header changed in place by `edit`."""
    header, body = split(data)
    edit(header)
    return join(header, body)


def rename(data: bytes, old_suffix: str, new_suffix: str) -> bytes:
    """Renames the one tensor whose name ends with `old_suffix`."""

    def edit(header: Header) -> None:
        (name,) = [k for k in header if k.endswith(old_suffix)]
        header[name[: -len(old_suffix)] + new_suffix] = header.pop(name)

    return rewrite(data, edit)
