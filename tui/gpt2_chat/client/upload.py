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
from dataclasses import dataclass
from pathlib import Path

from gpt2_chat.client.canister import CanisterError, Gpt2Canister, LoadProgress, UploadState


class UploadCancelled(Exception):
    """The caller asked to stop; the canister keeps what it received."""


@dataclass(frozen=True)
class Progress:
    #: "hash", "upload", "finalize" or "load".
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
    canister checks the upload against it either way)."""
    report = progress or (lambda _p: None)
    size = path.stat().st_size
    sha = sha256 or file_sha256(path, report)
    state = canister.upload_state()
    already = state.complete and state.sha256 == sha
    if not already and (state.declared_sha256 != sha or state.declared_size != size):
        state = canister.upload_begin(size, sha)
    resumed_from = size if already else state.received_bytes
    if not already:
        _send_chunks(canister, path, state, size, report, cancel, in_flight)
        report(Progress("finalize", 0, 1))
        canister.upload_finalize()
        report(Progress("finalize", 1, 1))
    result: LoadProgress | None = None
    if load and not canister.upload_state().loaded:
        result = load_model(canister, report, cancel)
    return UploadResult(size, sha, resumed_from, already, result)


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
            except CanisterError as e:
                if "leaves a gap" not in str(e) or attempt == 199:
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
