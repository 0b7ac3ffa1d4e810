"""A canister wasm run in-process: wasmtime plus the `ic0` system API it imports.

This is a local embedded runtime, not a replica: no consensus, no certificates, no cycles.
What it does keep from the IC, because the product depends on it:

- instruction metering with the replica's cost table (`metering.py`) and the per-message
  limits (update 40B, query 5B, install/upgrade 300B), reported per call;
- a trap rolls back the message's heap and stable-memory changes; a query's changes are
  always discarded;
- stable memory persists in the state directory, and reopening it behaves as an upgrade:
  a fresh heap, then `canister_post_upgrade`.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import wasmtime

from gpt2_chat.backends.base import Reply
from gpt2_chat.backends.embedded import metering
from gpt2_chat.backends.embedded.stable_memory import StableMemory, StableMemoryError
from gpt2_chat.errors import BackendError, InstructionLimitExceeded

UPDATE_LIMIT = 40_000_000_000
QUERY_LIMIT = 5_000_000_000
UPGRADE_LIMIT = 300_000_000_000
#: The IC's default `wasm_memory_limit`.
HEAP_LIMIT = 3 * 1024**3
#: An empty Candid argument list, what `dfx canister install` sends to `canister_init`.
EMPTY_ARGS = b"DIDL\x00\x00"

# Fixed overheads the replica charges for system API calls (its `system_api_complexity`
# table), plus one instruction per byte copied.
_OVERHEAD = {
    "default": 20,
    "debug_print": 100,
    "performance_counter": 200,
    "canister_cycle_balance128": 500,
}


class CanisterTrap(Exception):
    """The canister trapped (ic0.trap, a wasm trap, or a bad system API call)."""


class _OutOfInstructions(Exception):
    pass


@dataclass(frozen=True)
class Limits:
    """Instructions per message, as on the IC; tests lower them to provoke the limit."""

    update: int = UPDATE_LIMIT
    query: int = QUERY_LIMIT
    upgrade: int = UPGRADE_LIMIT


@dataclass
class _Message:
    method: str
    arg: bytes
    caller: bytes
    limit: int
    reply: bytearray = field(default_factory=bytearray)
    replied: bool = False
    rejected: str | None = None


class EmbeddedCanister:
    """One canister: its module, heap, stable memory file and controllers."""

    def __init__(
        self,
        wasm: bytes,
        state_dir: Path,
        canister_id: bytes,
        controllers: Sequence[bytes],
        log: Callable[[str], None] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.limits = limits or Limits()
        self.canister_id = canister_id
        self.controllers = list(controllers)
        self._log = log or (lambda _line: None)
        self._lock = threading.Lock()
        self._message: _Message | None = None
        self._snapshot = np.empty(0, dtype=np.uint8)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_state_dir(state_dir)
        self._engine = wasmtime.Engine(wasmtime.Config())
        self._module = self._compile(wasm)
        self._stable = StableMemory(state_dir / "stable.bin")
        self._store, self._instance = self._instantiate()
        self._counter = self._global(metering.COUNTER_GLOBAL_EXPORT)
        self._mutable_globals = [
            g
            for name, g in self._exports().items()
            if name.startswith(metering.MUTABLE_GLOBAL_EXPORT_PREFIX)
            and isinstance(g, wasmtime.Global)
        ]
        meta_path = state_dir / "canister.json"
        wasm_sha = hashlib.sha256(wasm).hexdigest()
        if meta_path.exists():
            self._lifecycle("canister_post_upgrade")
        else:
            self._lifecycle("canister_init", EMPTY_ARGS)
        meta = {"wasm_sha256": wasm_sha, "installed_ns": time.time_ns()}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")

    # ------------------------------------------------------------------ setup

    def _compile(self, wasm: bytes) -> wasmtime.Module:
        """Instruments and compiles the module, caching the result by the wasm's hash."""
        cache = self.state_dir / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(wasm + _WASMTIME_VERSION.encode()).hexdigest()[:32]
        compiled = cache / f"{key}.cwasm"
        if compiled.exists():
            try:
                return wasmtime.Module.deserialize_file(self._engine, str(compiled))
            except wasmtime.WasmtimeError:
                compiled.unlink()  # from another wasmtime build: recompile
        module = wasmtime.Module(self._engine, metering.instrument(wasm))
        for old in cache.glob("*.cwasm"):
            old.unlink()
        tmp = compiled.with_suffix(".tmp")
        tmp.write_bytes(module.serialize())
        tmp.replace(compiled)
        return module

    def _instantiate(self) -> tuple[wasmtime.Store, wasmtime.Instance]:
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=HEAP_LIMIT)
        linker = wasmtime.Linker(self._engine)
        for (module, name), (params, results, fn) in self._system_api().items():
            ty = wasmtime.FuncType([_VAL[p] for p in params], [_VAL[r] for r in results])
            linker.define_func(module, name, ty, fn, access_caller=True)
        try:
            instance = linker.instantiate(store, self._module)
        except wasmtime.WasmtimeError as e:
            raise BackendError(f"the canister module cannot run here: {e}") from e
        return store, instance

    def _exports(self) -> dict[str, Any]:
        return dict(self._instance.exports(self._store).items())

    def _global(self, name: str) -> wasmtime.Global:
        g = self._exports().get(name)
        if not isinstance(g, wasmtime.Global):
            raise BackendError(f"instrumented module lacks the global {name!r}")
        return g

    @property
    def _memory(self) -> wasmtime.Memory:
        mem = self._exports()["memory"]
        assert isinstance(mem, wasmtime.Memory)
        return mem

    def _heap(self) -> np.ndarray:
        """The wasm heap as a writable uint8 array (valid until the memory grows)."""
        mem = self._memory
        buf = mem.get_buffer_ptr(self._store)
        return np.ctypeslib.as_array(buf)

    # ------------------------------------------------------------------ calls

    def update(self, method: str, arg: bytes, caller: bytes) -> Reply:
        return self._call(
            f"canister_update {method}", method, arg, caller, self.limits.update, True
        )

    def query(self, method: str, arg: bytes, caller: bytes) -> Reply:
        return self._call(f"canister_query {method}", method, arg, caller, self.limits.query, False)

    def _lifecycle(self, export: str, arg: bytes = b"") -> None:
        if export not in self._exports():
            return
        caller = self.controllers[0] if self.controllers else b"\x04"
        self._call(export, export, arg, caller, self.limits.upgrade, True)

    def _call(
        self, export: str, method: str, arg: bytes, caller: bytes, limit: int, commit: bool
    ) -> Reply:
        with self._lock:
            func = self._exports().get(export)
            if not isinstance(func, wasmtime.Func):
                raise BackendError(
                    f"the canister has no {export.split(' ')[0][9:]} method {method!r}"
                )
            msg = _Message(method, arg, caller, limit)
            heap = self._snapshot_heap()
            saved_globals = [g.value(self._store) for g in self._mutable_globals]
            self._counter.set_value(self._store, wasmtime.Val.i64(limit))
            self._message = msg
            try:
                func(self._store)
                used = self._used(msg)
                if msg.rejected is not None:
                    raise CanisterTrap(f"rejected: {msg.rejected}")
                is_method = export.startswith(("canister_update", "canister_query"))
                if is_method and not msg.replied:
                    raise CanisterTrap("the method returned without replying")
            except _OutOfInstructions:
                self._rollback(heap, saved_globals)
                raise InstructionLimitExceeded(
                    f"{method} ran past the limit of {limit:,} instructions per call and was "
                    "rolled back"
                ) from None
            except (CanisterTrap, StableMemoryError, wasmtime.Trap, wasmtime.WasmtimeError) as e:
                self._rollback(heap, saved_globals)
                text = e.message if isinstance(e, wasmtime.Trap) else str(e)
                raise BackendError(f"the canister trapped in {method}: {text}") from None
            finally:
                self._message = None
            if commit:
                self._stable.commit()
            else:
                self._rollback(heap, saved_globals)
            return Reply(bytes(msg.reply), used)

    def _snapshot_heap(self) -> np.ndarray:
        """A copy of the heap, in a buffer kept between messages: a fresh copy of a large
        heap costs seconds in page faults alone, a copy into warm memory ~0.1 s per GB."""
        now = self._heap()
        if self._snapshot.size < now.size:
            self._snapshot = np.empty(now.size, dtype=np.uint8)
        heap = self._snapshot[: now.size]
        np.copyto(heap, now)
        return heap

    def _used(self, msg: _Message) -> int:
        return msg.limit - int(self._counter.value(self._store))

    def _rollback(self, heap: np.ndarray, saved_globals: list[Any]) -> None:
        now = self._heap()
        now[: len(heap)] = heap
        now[len(heap) :] = 0  # a wasm memory cannot shrink; grown pages return to zero
        for g, v in zip(self._mutable_globals, saved_globals, strict=True):
            g.set_value(self._store, v)
        self._stable.discard()

    @property
    def closed(self) -> bool:
        return self._lock_file.closed

    def close(self) -> None:
        with self._lock:
            if not self._lock_file.closed:
                self._stable.close()
                self._lock_file.close()

    # ------------------------------------------------------------------ ic0

    def _charge(self, amount: int) -> None:
        left = int(self._counter.value(self._store)) - amount
        self._counter.set_value(self._store, wasmtime.Val.i64(left))
        if left < 0:
            raise _OutOfInstructions()

    def _msg(self) -> _Message:
        if self._message is None:
            raise CanisterTrap("system API called outside a message")
        return self._message

    def _system_api(self) -> dict[tuple[str, str], tuple[str, str, Callable[..., Any]]]:
        """(module, name) -> (param types, result types, implementation)."""

        def mem_read(c: wasmtime.Caller, ptr: int, size: int) -> bytes:
            mem = c["memory"]
            assert isinstance(mem, wasmtime.Memory)
            if ptr < 0 or size < 0 or ptr + size > mem.data_len(c):
                raise CanisterTrap(f"memory access out of bounds at {ptr}+{size}")
            return bytes(mem.read(c, ptr, ptr + size))

        def mem_write(c: wasmtime.Caller, ptr: int, data: bytes | np.ndarray) -> None:
            mem = c["memory"]
            assert isinstance(mem, wasmtime.Memory)
            if ptr < 0 or ptr + len(data) > mem.data_len(c):
                raise CanisterTrap(f"memory access out of bounds at {ptr}+{len(data)}")
            if len(data):
                dst = mem.get_buffer_ptr(c, len(data), ptr)
                np.ctypeslib.as_array(dst)[:] = np.frombuffer(data, dtype=np.uint8)

        def copy_out(source: Callable[[], bytes], overhead: int = _OVERHEAD["default"]) -> Any:
            def fn(c: wasmtime.Caller, dst: int, off: int, size: int) -> None:
                data = source()
                if off < 0 or size < 0 or off + size > len(data):
                    raise CanisterTrap(f"copy out of range: {off}+{size} of {len(data)} bytes")
                self._charge(overhead + size)
                mem_write(c, dst, data[off : off + size])

            return fn

        def size_of(source: Callable[[], bytes]) -> Any:
            return lambda c: len(source())

        def reply_append(c: wasmtime.Caller, src: int, size: int) -> None:
            self._charge(_OVERHEAD["default"] + size)
            self._msg().reply += mem_read(c, src, size)

        def reply(c: wasmtime.Caller) -> None:
            msg = self._msg()
            if msg.replied:
                raise CanisterTrap("msg_reply called twice")
            msg.replied = True

        def reject(c: wasmtime.Caller, src: int, size: int) -> None:
            self._msg().rejected = mem_read(c, src, size).decode("utf-8", "replace")

        def trap(c: wasmtime.Caller, src: int, size: int) -> None:
            raise CanisterTrap(mem_read(c, src, size).decode("utf-8", "replace"))

        def debug_print(c: wasmtime.Caller, src: int, size: int) -> None:
            self._charge(_OVERHEAD["debug_print"] + size)
            self._log(mem_read(c, src, size).decode("utf-8", "replace"))

        def performance_counter(c: wasmtime.Caller, kind: int) -> int:
            self._charge(_OVERHEAD["performance_counter"])
            return self._used(self._msg())

        def cycle_balance128(c: wasmtime.Caller, dst: int) -> None:
            # The embedded runtime holds no cycles (nothing is charged for): the balance is 0.
            self._charge(_OVERHEAD["canister_cycle_balance128"])
            mem_write(c, dst, (0).to_bytes(16, "little"))

        def is_controller(c: wasmtime.Caller, src: int, size: int) -> int:
            return int(mem_read(c, src, size) in self.controllers)

        def stable_size(c: wasmtime.Caller) -> int:
            return self._stable.size_bytes // (64 * 1024)

        def stable_grow(c: wasmtime.Caller, pages: int) -> int:
            return self._stable.grow(pages)

        def stable_read(c: wasmtime.Caller, dst: int, offset: int, size: int) -> None:
            self._charge(_OVERHEAD["default"] + size)
            mem_write(c, dst, self._stable.read(offset, size))

        def stable_write(c: wasmtime.Caller, offset: int, src: int, size: int) -> None:
            self._charge(_OVERHEAD["default"] + size)
            mem = c["memory"]
            assert isinstance(mem, wasmtime.Memory)
            if src < 0 or size < 0 or src + size > mem.data_len(c):
                raise CanisterTrap(f"memory access out of bounds at {src}+{size}")
            view = (
                np.ctypeslib.as_array(mem.get_buffer_ptr(c, size, src))
                if size
                else np.zeros(0, np.uint8)
            )
            self._stable.write(offset, view)

        def out_of_instructions(c: wasmtime.Caller) -> None:
            raise _OutOfInstructions()

        arg = lambda: self._msg().arg  # noqa: E731
        caller = lambda: self._msg().caller  # noqa: E731
        me = lambda: self.canister_id  # noqa: E731
        return {
            ("ic0", "msg_arg_data_size"): ("", "i", size_of(arg)),
            ("ic0", "msg_arg_data_copy"): ("iii", "", copy_out(arg)),
            ("ic0", "msg_caller_size"): ("", "i", size_of(caller)),
            ("ic0", "msg_caller_copy"): ("iii", "", copy_out(caller)),
            ("ic0", "canister_self_size"): ("", "i", size_of(me)),
            ("ic0", "canister_self_copy"): ("iii", "", copy_out(me)),
            ("ic0", "msg_reply_data_append"): ("ii", "", reply_append),
            ("ic0", "msg_reply"): ("", "", reply),
            ("ic0", "msg_reject"): ("ii", "", reject),
            ("ic0", "trap"): ("ii", "", trap),
            ("ic0", "debug_print"): ("ii", "", debug_print),
            ("ic0", "performance_counter"): ("i", "I", performance_counter),
            ("ic0", "time"): ("", "I", lambda c: time.time_ns()),
            ("ic0", "is_controller"): ("ii", "i", is_controller),
            ("ic0", "canister_cycle_balance128"): ("i", "", cycle_balance128),
            ("ic0", "stable64_size"): ("", "I", stable_size),
            ("ic0", "stable64_grow"): ("I", "I", stable_grow),
            ("ic0", "stable64_read"): ("III", "", stable_read),
            ("ic0", "stable64_write"): ("III", "", stable_write),
            metering.OUT_OF_INSTRUCTIONS_IMPORT: ("", "", out_of_instructions),
        }


def _lock_state_dir(state_dir: Path) -> IO[str]:
    """One process per state dir: two heaps over one stable-memory file would corrupt it."""
    f = (state_dir / "lock").open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise BackendError(
            f"the embedded runtime's state in {state_dir} is in use by {owner}; "
            "close it first or pass another --state-dir"
        ) from None
    f.truncate(0)
    f.write(f"gpt2-chat process {os.getpid()}\n")
    f.flush()
    return f


_WASMTIME_VERSION = importlib.metadata.version("wasmtime")
_VAL = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}
