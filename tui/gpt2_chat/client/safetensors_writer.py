"""The one safetensors writer: canonical header, streamed data, atomic, cancellable.

The header is canonical JSON (sorted keys, no spaces, ASCII), so the same tensors and
metadata always give the same bytes and a sha256 identifies a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gpt2_chat.client.model_format import (
    Cancel,
    PrepareCancelled,
    PrepareError,
    Progress,
    TensorSpec,
    is_cancelled,
)


def header_bytes(layout: Sequence[TensorSpec], metadata: dict[str, str]) -> bytes:
    """The length prefix and header of a file holding `layout` in order."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for t in layout:
        header[t.name] = {
            "dtype": t.dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    blob = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors pads so the data starts 8-byte aligned
    return struct.pack("<Q", len(blob)) + blob


def write_safetensors(
    output: Path,
    layout: Sequence[TensorSpec],
    metadata: dict[str, str],
    data: Iterable[bytes | memoryview],
    *,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> tuple[int, str]:
    """Write the tensors of `layout`, whose bytes `data` yields in order, to `output`;
    (size, sha256 hex).

    `output` appears atomically, complete or not at all: on any error or cancellation the
    partial file is removed. `cancel` is checked before each piece of `data` is produced."""
    head = header_bytes(layout, metadata)
    total = len(head) + sum(t.nbytes for t in layout)
    # Same directory so the final rename is atomic; O_EXCL + default mode keeps the umask.
    tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise PrepareError(f"cannot write {output}: {e}") from e
    digest = hashlib.sha256(head)
    done = 0
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            done = len(head)
            pieces = iter(data)
            while True:
                if is_cancelled(cancel):
                    raise PrepareCancelled(f"cancelled; removed the partial {output.name}")
                piece = next(pieces, None)
                if piece is None:
                    break
                f.write(piece)
                digest.update(piece)
                done += len(piece)
                if progress is not None:
                    progress("write", done, total)
            if done != total:  # the layout and the data disagree: a bug, not a user error
                raise RuntimeError(f"wrote {done} bytes for a {total}-byte layout")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, output)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PrepareError(f"cannot write {output}: {e}") from e
    except BaseException:  # incl. an exception from `progress` or `data`
        tmp.unlink(missing_ok=True)
        raise
    return total, digest.hexdigest()
