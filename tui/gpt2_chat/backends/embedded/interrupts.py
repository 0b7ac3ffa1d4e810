"""Ctrl-C during a canister message: held off the guest, honoured once the message ends.

A KeyboardInterrupt raised while wasmtime runs the guest lands inside its ctypes host-call
trampoline (where it can crash the process) or between a host call and the rollback (which
leaves the heap mid-message). So, for the duration of one message on the main thread,
SIGINT only records itself; the caller replays it after the message is committed or
rolled back. A second Ctrl-C within the same message bumps the engine's epoch, which makes
the guest trap at its next loop or call (then the message rolls back like any trap).

The signal is counted by a thread reading the interpreter's wakeup fd, because the Python
handler itself runs only between bytecodes, which never happens while the guest computes.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

import wasmtime


class InterruptGuard:
    """Defers SIGINT for one message; a no-op off the main thread (signals go there)."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._count = 0
        self._seen = False
        self._active = threading.current_thread() is threading.main_thread()
        self._previous: Any = None
        self._previous_fd = -1
        self._pipe = (-1, -1)
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> InterruptGuard:
        if not self._active:
            return self
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._pipe = (read_end, write_end)
        self._watcher = threading.Thread(target=self._watch, name="sigint-watch", daemon=True)
        self._watcher.start()
        self._previous = signal.signal(signal.SIGINT, self._seen_by_python)
        self._previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        return self

    def _watch(self) -> None:
        while chunk := os.read(self._pipe[0], 64):
            self._count += chunk.count(signal.SIGINT)
            if self._count >= 2:
                self._engine.increment_epoch()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._active:
            return
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGINT, self._previous)
        os.close(self._pipe[1])  # the watcher reads what is left, then sees EOF
        assert self._watcher is not None
        self._watcher.join()
        os.close(self._pipe[0])

    def _seen_by_python(self, signum: int, frame: FrameType | None) -> None:
        """The Python-level handler (needed for the wakeup fd to be written); the watcher
        counts. It runs late (between bytecodes) and may not have run by the time the
        message ends: then the restored handler gets the signal itself."""
        self._seen = True

    def replay(self) -> None:
        """Delivers a Ctrl-C that our handler took to the handler that was in place before
        the message (normally: raises KeyboardInterrupt)."""
        if not self._seen:
            return
        handler = self._previous
        if callable(handler):
            handler(signal.SIGINT, None)
        elif handler == signal.SIG_DFL:
            raise KeyboardInterrupt
