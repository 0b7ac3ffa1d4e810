"""The embedded canister's stable memory: a file, changed only when a message succeeds.

During a message, writes go to copies of the touched 64 KiB pages and growth is only
recorded; `commit` applies them to the memory-mapped file (data pages first, page 0 —
where the canister keeps its upload record — last, so a process killed mid-commit leaves
the old record pointing at valid data), and `discard` drops them, which is how a trap
rolls stable memory back.

The file is written through the map, so every byte of it must have disk space reserved
first (`posix_fallocate`): a store into a sparse hole on a full disk is a SIGBUS, not an
error. A commit that cannot reserve its growth raises `DiskFull` before writing anything.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gpt2_chat.errors import BackendError

PAGE = 64 * 1024
#: The IC's stable memory limit.
MAX_BYTES = 500 * 1024**3


class StableMemoryError(Exception):
    """An out-of-bounds access: the canister traps."""


class DiskFull(BackendError):
    """The stable-memory file cannot get the space a commit needs."""


class StateInUse(BackendError):
    """Another runtime (in this process or another) has the stable-memory file open."""


def lock_exclusively(file: BinaryIO, state_dir: Path) -> None:
    """Locks an open state file until it is closed; StateInUse when someone else has it.

    flock, not fcntl: its lock belongs to this open file, so a second open in the same
    process is refused too."""
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StateInUse(
            f"the embedded runtime's state in {state_dir} is in use by another "
            "process; close it first or pass another --state-dir"
        ) from None


class StableMemory:
    """The stable-memory file, locked for as long as it is open: two heaps over one file
    would corrupt it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        self.path = path
        self._file = path.open("r+b")
        try:
            lock_exclusively(self._file, path.parent)
            #: The size found on disk (the state dir's checks compare it with the record).
            self.file_bytes = path.stat().st_size
            self._committed = self.file_bytes // PAGE * PAGE
            self._reserve(0, self._committed)  # older files may be sparse
        except BaseException:
            self._file.close()
            raise
        self._size = self._committed
        self._map: mmap.mmap | None = None
        self._remap()
        self._dirty: dict[int, bytearray] = {}

    def _remap(self) -> None:
        if self._map is not None:
            self._map.close()
        self._map = mmap.mmap(self._file.fileno(), self._committed) if self._committed else None

    @property
    def size_bytes(self) -> int:
        return self._size

    def grow(self, pages: int) -> int:
        """Adds `pages` pages; returns the old size in pages, or -1 when over the limit."""
        old = self._size // PAGE
        new_size = self._size + pages * PAGE
        if pages < 0 or new_size > MAX_BYTES:
            return -1
        self._size = new_size
        return old

    def check(self, offset: int, size: int) -> None:
        """Raises StableMemoryError unless [offset, offset + size) is inside the memory."""
        if offset < 0 or size < 0 or offset + size > self._size:
            raise StableMemoryError(
                f"stable memory access out of bounds: {offset}+{size} > {self._size}"
            )

    def read(self, offset: int, size: int) -> np.ndarray:
        """The bytes at `offset` as a uint8 array (a view of the file where possible)."""
        self.check(offset, size)
        end = offset + size
        if not self._dirty and end <= self._committed and self._map is not None:
            return np.frombuffer(self._map, dtype=np.uint8, count=size, offset=offset)
        out = np.zeros(size, dtype=np.uint8)
        for page in range(offset // PAGE, (end - 1) // PAGE + 1 if size else 0):
            lo, hi = max(offset, page * PAGE), min(end, (page + 1) * PAGE)
            src = self._page(page)
            out[lo - offset : hi - offset] = src[lo - page * PAGE : hi - page * PAGE]
        return out

    def write(self, offset: int, data: np.ndarray) -> None:
        size = len(data)
        self.check(offset, size)
        end = offset + size
        for page in range(offset // PAGE, (end - 1) // PAGE + 1 if size else 0):
            buf = self._dirty.get(page)
            if buf is None:
                buf = self._dirty[page] = bytearray(self._page(page))
            lo, hi = max(offset, page * PAGE), min(end, (page + 1) * PAGE)
            view = np.frombuffer(buf, dtype=np.uint8)
            view[lo - page * PAGE : hi - page * PAGE] = data[lo - offset : hi - offset]

    def _page(self, page: int) -> bytes | bytearray | memoryview:
        dirty = self._dirty.get(page)
        if dirty is not None:
            return dirty
        if (page + 1) * PAGE <= self._committed and self._map is not None:
            return memoryview(self._map)[page * PAGE : (page + 1) * PAGE]
        return bytes(PAGE)

    def _reserve(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        try:
            os.posix_fallocate(self._file.fileno(), offset, length)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DiskFull(
                f"no space left for the canister's stable memory ({self.path} needs "
                f"{offset + length:,} bytes); free some space and retry"
            ) from None

    def commit(self) -> None:
        """Applies the message's changes; raises `DiskFull` (changes kept, nothing
        written) when the file cannot grow."""
        if self._size > self._committed:
            self._reserve(self._committed, self._size - self._committed)
            self._committed = self._size
            self._remap()
        assert self._map is not None or not self._dirty
        for page in sorted(self._dirty, reverse=True):
            assert self._map is not None
            self._map[page * PAGE : (page + 1) * PAGE] = self._dirty[page]
        self._dirty.clear()

    def discard(self) -> None:
        self._dirty.clear()
        self._size = self._committed

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        self.discard()
        if self._map is not None:
            self._map.flush()
            self._map.close()
            self._map = None
        self._file.close()
