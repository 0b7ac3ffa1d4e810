"""Uploading a model file to the canister: chunked, verified, resumable, then loaded.

The canister keeps the upload's progress in stable memory, so whatever interrupted an
upload — a dropped connection, a cancelled run, a killed process — the next run asks the
canister how far it got and continues from there.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from gpt2_chat.client.canister import (
    ChunkMismatch,
    Gpt2Canister,
    LoadProgress,
    PastDeclaredSize,
    Sha256Mismatch,
    StoredModelCorrupt,
    UploadGap,
    UploadState,
)

#: Refusals meaning the canister's stored bytes can never become this file (another file's
#: bytes were appended, or stable memory was damaged): the upload starts over.
UNRECOVERABLE_UPLOAD = (ChunkMismatch, PastDeclaredSize, Sha256Mismatch, StoredModelCorrupt)


class UploadCancelled(Exception):
    """The caller asked to stop; the canister keeps what it received."""


@dataclass(frozen=True)
class Progress:
    #: "hash", "upload", "finalize", "load", or "restart" (the canister's bytes could not
    #: become the file: they were cleared and the upload starts over).
    phase: str
    done: int
    total: int
    #: Bytes per second over this run's upload so far (0 outside the upload phase).
    rate: float = 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.phase != "upload" or self.rate <= 0:
            return None
        return (self.total - self.done) / self.rate


@dataclass(frozen=True)
class UploadResult:
    size: int
    sha256: str
    #: Bytes the canister already had when this run started.
    resumed_from: int
    #: The file was already complete on the canister.
    already_uploaded: bool
    load: LoadProgress | None
    #: The canister held bytes that could not become this file; they were cleared and the
    #: file sent again from the start.
    restarted: bool = False


ProgressFn = Callable[[Progress], None]


def file_sha256(path: Path, progress: ProgressFn | None = None) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
            done += len(block)
            if progress:
                progress(Progress("hash", done, size))
    return h.hexdigest()


def upload_model(
    canister: Gpt2Canister,
    path: Path,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    in_flight: int = 3,
    load: bool = True,
    sha256: str | None = None,
) -> UploadResult:
    """Uploads `path` (resuming what the canister already has), verifies it, loads it.
    `sha256` spares hashing the file again when the caller already has its digest (the
    canister checks the upload against it either way). When the canister's bytes cannot
    become this file, it clears them and starts over once (`UploadResult.restarted`)."""
    report = progress or (lambda _p: None)
    size = path.stat().st_size
    sha = sha256 or file_sha256(path, report)
    send = _Send(canister, path, size, sha, report, cancel, in_flight)
    try:
        return send.upload_and_load(load)
    except UNRECOVERABLE_UPLOAD:
        report(Progress("restart", 0, size))
        canister.upload_clear()
        return replace(send.upload_and_load(load), restarted=True)


@dataclass(frozen=True)
class _Send:
    canister: Gpt2Canister
    path: Path
    size: int
    sha256: str
    report: ProgressFn
    cancel: threading.Event | None
    in_flight: int

    def upload_and_load(self, load: bool) -> UploadResult:
        c = self.canister
        state = c.upload_state()
        already = state.complete and state.sha256 == self.sha256
        if not already and (
            state.declared_sha256 != self.sha256 or state.declared_size != self.size
        ):
            state = c.upload_begin(self.size, self.sha256)
        resumed_from = self.size if already else state.received_bytes
        if not already:
            _send_chunks(c, self.path, state, self.size, self.report, self.cancel, self.in_flight)
            self.report(Progress("finalize", 0, 1))
            c.upload_finalize()
            self.report(Progress("finalize", 1, 1))
        result: LoadProgress | None = None
        if load and not c.upload_state().loaded:
            result = load_model(c, self.report, self.cancel)
        return UploadResult(self.size, self.sha256, resumed_from, already, result)


def load_model(
    canister: Gpt2Canister, report: ProgressFn, cancel: threading.Event | None = None
) -> LoadProgress:
    """Calls load_model until the canister reports the model loaded (big models take
    several calls)."""
    while True:
        _check(cancel)
        p = canister.load_model()
        report(Progress("load", p.loaded_bytes, p.total_bytes))
        if p.done:
            return p


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise UploadCancelled("upload cancelled; run it again to resume")


def _send_chunks(
    canister: Gpt2Canister,
    path: Path,
    state: UploadState,
    size: int,
    report: ProgressFn,
    cancel: threading.Event | None,
    in_flight: int,
) -> None:
    start = state.received_bytes
    step = canister.chunk_size
    offsets = list(range(start, size, step))
    began = time.monotonic()
    done = start
    lock = threading.Lock()

    def send(offset: int) -> None:
        nonlocal done
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(step)
        # With several chunks in flight a later one can overtake an earlier one and be
        # refused as a gap; it is simply sent again once its predecessor has landed.
        for attempt in range(200):
            _check(cancel)
            try:
                canister.upload_chunk(offset, data)
                break
            except UploadGap:
                if attempt == 199:
                    raise
                time.sleep(0.05)
        with lock:
            done += len(data)
            elapsed = max(time.monotonic() - began, 1e-6)
            report(Progress("upload", done, size, (done - start) / elapsed))

    report(Progress("upload", done, size))
    parallel = in_flight if canister.backend.parallel_updates else 1
    if parallel <= 1:
        for offset in offsets:
            send(offset)
        return
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for future in [pool.submit(send, o) for o in offsets]:
            future.result()
