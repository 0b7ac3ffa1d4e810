"""A canister wasm run in-process: wasmtime plus the `ic0` system API it imports.

This is a local embedded runtime, not a replica: no consensus, no certificates, no cycles.
What it does keep from the IC, because the product depends on it:

- instruction metering with the replica's cost table (`cost_table.py`, applied by
  `metering.py`) and the per-message
  limits (update 40B, query 5B, install/upgrade 300B), reported per call;
- a trap rolls back the message's heap and stable-memory changes; a query's changes are
  always discarded;
- stable memory persists in the state directory, and reopening it behaves as an upgrade:
  a fresh heap, then `canister_post_upgrade`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import wasmtime
from icp_principal.principal import Principal

from gpt2_chat.backends.base import Reply
from gpt2_chat.backends.embedded import metering
from gpt2_chat.backends.embedded import replica_costs as costs
from gpt2_chat.backends.embedded import state_dir as state_files
from gpt2_chat.backends.embedded.interrupts import InterruptGuard
from gpt2_chat.backends.embedded.stable_memory import StableMemory, StableMemoryError
from gpt2_chat.errors import BackendError, InstructionLimitExceeded

UPDATE_LIMIT = 40_000_000_000
QUERY_LIMIT = 5_000_000_000
UPGRADE_LIMIT = 300_000_000_000
#: The IC's default `wasm_memory_limit`.
HEAP_LIMIT = 3 * 1024**3
#: An empty Candid argument list, what `dfx canister install` sends to `canister_init`.
EMPTY_ARGS = b"DIDL\x00\x00"


class CanisterTrap(Exception):
    """The canister trapped (ic0.trap, a wasm trap, or a bad system API call)."""


class _OutOfInstructions(Exception):
    pass


@dataclass(frozen=True)
class Limits:
    """Instructions, and bytes of stable memory accessed, per message, as on the IC; tests
    lower them to provoke the limit."""

    update: int = UPDATE_LIMIT
    query: int = QUERY_LIMIT
    upgrade: int = UPGRADE_LIMIT
    stable_update: int = costs.STABLE_ACCESS_LIMIT_BYTES["update"]
    stable_query: int = costs.STABLE_ACCESS_LIMIT_BYTES["query"]
    stable_upgrade: int = costs.STABLE_ACCESS_LIMIT_BYTES["upgrade"]


@dataclass
class _Message:
    method: str
    arg: bytes
    caller: bytes
    limit: int
    stable_limit: int  # bytes of stable memory it may access, and dirty
    prepaid: int = 0  # charged before it runs: compiling the module, for install/upgrade
    reply: bytearray = field(default_factory=bytearray)
    accessed: set[int] = field(default_factory=set)  # stable memory OS pages
    dirtied: set[int] = field(default_factory=set)
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
        self._log = log or (lambda _line: None)
        self._lock = threading.Lock()
        self._message: _Message | None = None
        self._snapshot = np.empty(0, dtype=np.uint8)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._stable = StableMemory(state_dir / state_files.STABLE)  # first: it locks the state
        try:
            installed = state_files.read_meta(state_dir)
            recorded = state_files.read_controllers(state_dir)
            if recorded is None:  # a new canister: installed with the given controllers
                state_files.write_controllers(state_dir, [Principal(c) for c in controllers])
            self.controllers = [p.bytes for p in recorded] if recorded else list(controllers)
            state_files.check_stable_size(
                self._stable.path,
                self._stable.file_bytes,
                installed.stable_bytes if installed else None,
            )
            self._start(wasm, installed)
        except BaseException:
            self._stable.close()
            raise

    # ------------------------------------------------------------------ setup

    def _start(self, wasm: bytes, installed: state_files.Meta | None) -> None:
        """Compiles and instantiates the module, then installs or upgrades the canister."""
        config = wasmtime.Config()
        config.epoch_interruption = True  # how a second Ctrl-C stops the guest
        self._engine = wasmtime.Engine(config)
        self._module, instruction_count = self._compile(wasm)
        self._store, self._instance = self._instantiate()
        self._counter = self._global(metering.COUNTER_GLOBAL_EXPORT)
        self._mutable_globals = [
            g
            for name, g in self._exports().items()
            if name.startswith(metering.MUTABLE_GLOBAL_EXPORT_PREFIX)
            and isinstance(g, wasmtime.Global)
        ]
        wasm_sha256 = hashlib.sha256(wasm).hexdigest()
        self._meta = state_files.Meta(
            wasm_sha256, time.time_ns(), installed.stable_bytes if installed else None
        )
        compile_cost = costs.COMPILE_COST_PER_INSTRUCTION * instruction_count
        if installed is not None and installed.wasm_sha256 == wasm_sha256:
            compile_cost //= costs.DESERIALIZATION_SPEED_UP_FACTOR  # compiled before
        if installed is None:
            self._lifecycle("canister_init", compile_cost, EMPTY_ARGS)
        else:
            try:
                self._lifecycle("canister_post_upgrade", compile_cost)
            except BackendError as e:
                raise state_files.DamagedState(
                    self._stable.path, f"the canister cannot start from it ({e})"
                ) from None
        self._meta = replace(self._meta, stable_bytes=self._stable.size_bytes)
        state_files.write_meta(self.state_dir, self._meta)

    def _record_stable_size(self) -> None:
        """Keeps the record of the committed stable-memory size (after the data is there:
        a file longer than its record is fine, a shorter one was truncated)."""
        if self._meta.stable_bytes != self._stable.size_bytes:
            self._meta = replace(self._meta, stable_bytes=self._stable.size_bytes)
            state_files.write_meta(self.state_dir, self._meta)

    def _compile(self, wasm: bytes) -> tuple[wasmtime.Module, int]:
        """Instruments and compiles the module, caching the result by the wasm's hash;
        returns it with its wasm instruction count (what the replica charges compiling by)."""
        cache = self.state_dir / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(wasm + _COMPILED_WITH.encode()).hexdigest()[:32]
        compiled = cache / f"{key}.cwasm"
        counted = cache / f"{key}.instructions"
        if compiled.exists():
            try:
                count = int(counted.read_text())
                return wasmtime.Module.deserialize_file(self._engine, str(compiled)), count
            except (OSError, ValueError, wasmtime.WasmtimeError):
                compiled.unlink()  # from another wasmtime build, or incomplete: recompile
        instrumented = metering.instrument_module(wasm)
        module = wasmtime.Module(self._engine, instrumented.wasm)
        for old in [*cache.glob("*.cwasm"), *cache.glob("*.instructions")]:
            old.unlink()
        counted.write_text(f"{instrumented.instruction_count}\n")
        tmp = compiled.with_suffix(".tmp")
        tmp.write_bytes(module.serialize())
        tmp.replace(compiled)
        return module, instrumented.instruction_count

    def _instantiate(self) -> tuple[wasmtime.Store, wasmtime.Instance]:
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=HEAP_LIMIT)
        store.set_epoch_deadline(1)
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
        msg = _Message(method, arg, caller, self.limits.update, self.limits.stable_update)
        return self._call(f"canister_update {method}", msg, True)

    def query(self, method: str, arg: bytes, caller: bytes) -> Reply:
        msg = _Message(method, arg, caller, self.limits.query, self.limits.stable_query)
        return self._call(f"canister_query {method}", msg, False)

    def _lifecycle(self, export: str, compile_cost: int, arg: bytes = b"") -> None:
        """Runs an install/upgrade hook, charged for compiling the module first (as the
        replica charges the install_code message); records what it used."""
        self.install_instructions = compile_cost
        if export not in self._exports():
            return
        caller = self.controllers[0] if self.controllers else b"\x04"
        msg = _Message(export, arg, caller, self.limits.upgrade, self.limits.stable_upgrade)
        msg.prepaid = compile_cost
        reply = self._call(export, msg, True)
        assert reply.instructions is not None
        self.install_instructions = reply.instructions

    def _call(self, export: str, msg: _Message, commit: bool) -> Reply:
        with self._lock:
            func = self._exports().get(export)
            if not isinstance(func, wasmtime.Func):
                raise BackendError(
                    f"the canister has no {export.split(' ')[0][9:]} method {msg.method!r}"
                )
            guard = InterruptGuard(self._engine)
            with guard:
                reply = self._run(func, export, msg, commit)
            guard.replay()
            return reply

    def _run(self, func: wasmtime.Func, export: str, msg: _Message, commit: bool) -> Reply:
        """One message: committed when it succeeds, rolled back on any exception."""
        heap = self._snapshot_heap()
        saved_globals = [g.value(self._store) for g in self._mutable_globals]
        self._counter.set_value(self._store, wasmtime.Val.i64(msg.limit - msg.prepaid))
        self._store.set_epoch_deadline(1)
        self._message = msg
        try:
            func(self._store)
            used = self._used(msg)
            if msg.rejected is not None:
                raise CanisterTrap(f"rejected: {msg.rejected}")
            is_method = export.startswith(("canister_update", "canister_query"))
            if is_method and not msg.replied:
                raise CanisterTrap("the method returned without replying")
        except BaseException as e:
            self._rollback(heap, saved_globals)
            raise _message_error(e, msg) from None
        finally:
            self._message = None
        if not commit:
            self._rollback(heap, saved_globals)
            return Reply(bytes(msg.reply), used)
        try:
            self._stable.commit()
        except BaseException:
            self._rollback(heap, saved_globals)  # e.g. DiskFull: as if it never ran
            raise
        self._record_stable_size()
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

    def set_controllers(self, controllers: Sequence[bytes]) -> None:
        """Replaces the controllers (the caller checks who may)."""
        with self._lock:
            state_files.write_controllers(self.state_dir, [Principal(c) for c in controllers])
            self.controllers = list(controllers)

    @property
    def closed(self) -> bool:
        return self._stable.closed

    def close(self) -> None:
        with self._lock:
            if not self._stable.closed:
                self._stable.close()

    # ------------------------------------------------------------------ ic0

    def _charge(self, amount: int) -> None:
        left = int(self._counter.value(self._store)) - amount
        self._counter.set_value(self._store, wasmtime.Val.i64(left))
        if left < 0:
            raise _OutOfInstructions()

    def _access_stable(self, offset: int, size: int, *, write: bool) -> int:
        """Counts the message's stable-memory OS pages (traps past its limit, as the
        replica does); returns how many pages this write dirties for the first time."""
        if size == 0:
            return 0
        msg = self._msg()
        pages = range(offset // costs.OS_PAGE, (offset + size - 1) // costs.OS_PAGE + 1)
        touched = msg.dirtied if write else msg.accessed
        before = len(touched)
        touched.update(pages)
        if write:
            msg.accessed.update(pages)
        limit_pages = msg.stable_limit // costs.OS_PAGE
        if len(msg.accessed) > limit_pages:
            raise CanisterTrap(
                f"the message accessed more than {msg.stable_limit:,} bytes of stable memory"
            )
        if len(msg.dirtied) > limit_pages:
            raise CanisterTrap(
                f"the message wrote more than {msg.stable_limit:,} bytes of stable memory"
            )
        return len(touched) - before if write else 0

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

        fee = costs.OVERHEAD

        def copy_out(name: str, source: Callable[[], bytes]) -> Any:
            def fn(c: wasmtime.Caller, dst: int, off: int, size: int) -> None:
                self._charge(fee[name] + size)
                data = source()
                if off < 0 or size < 0 or off + size > len(data):
                    raise CanisterTrap(f"copy out of range: {off}+{size} of {len(data)} bytes")
                mem_write(c, dst, data[off : off + size])

            return fn

        def size_of(name: str, source: Callable[[], bytes]) -> Any:
            def fn(c: wasmtime.Caller) -> int:
                self._charge(fee[name])
                return len(source())

            return fn

        def reply_append(c: wasmtime.Caller, src: int, size: int) -> None:
            self._charge(fee["msg_reply_data_append"] + costs.BYTE_TRANSMISSION_COST_FACTOR * size)
            self._msg().reply += mem_read(c, src, size)

        def reply(c: wasmtime.Caller) -> None:
            self._charge(fee["msg_reply"])
            msg = self._msg()
            if msg.replied:
                raise CanisterTrap("msg_reply called twice")
            msg.replied = True

        def reject(c: wasmtime.Caller, src: int, size: int) -> None:
            self._charge(fee["msg_reject"] + costs.BYTE_TRANSMISSION_COST_FACTOR * size)
            self._msg().rejected = mem_read(c, src, size).decode("utf-8", "replace")

        def trap(c: wasmtime.Caller, src: int, size: int) -> None:
            self._charge(fee["trap"] + costs.TRAP_PER_BYTE * size)
            raise CanisterTrap(mem_read(c, src, size).decode("utf-8", "replace"))

        def debug_print(c: wasmtime.Caller, src: int, size: int) -> None:
            self._charge(fee["debug_print"] + costs.DEBUG_PRINT_PER_BYTE * size)
            self._log(mem_read(c, src, size).decode("utf-8", "replace"))

        def performance_counter(c: wasmtime.Caller, kind: int) -> int:
            self._charge(fee["performance_counter"])
            msg = self._msg()
            return self._used(msg) - msg.prepaid  # the guest's own work, not compiling

        def now(c: wasmtime.Caller) -> int:
            self._charge(fee["time"])
            return time.time_ns()

        def cycle_balance128(c: wasmtime.Caller, dst: int) -> None:
            # The embedded runtime holds no cycles (nothing is charged for): the balance is 0.
            self._charge(fee["canister_cycle_balance128"])
            mem_write(c, dst, (0).to_bytes(16, "little"))

        def is_controller(c: wasmtime.Caller, src: int, size: int) -> int:
            self._charge(fee["is_controller"] + size)
            return int(mem_read(c, src, size) in self.controllers)

        def stable_size(c: wasmtime.Caller) -> int:
            self._charge(fee["stable64_size"])
            return self._stable.size_bytes // (64 * 1024)

        def stable_grow(c: wasmtime.Caller, pages: int) -> int:
            self._charge(fee["stable64_grow"])
            return self._stable.grow(pages)

        def stable_read(c: wasmtime.Caller, dst: int, offset: int, size: int) -> None:
            self._charge(fee["stable64_read"] + size)
            self._stable.check(offset, size)
            self._access_stable(offset, size, write=False)
            mem_write(c, dst, self._stable.read(offset, size))

        def stable_write(c: wasmtime.Caller, offset: int, src: int, size: int) -> None:
            self._stable.check(offset, size)
            new_dirty = self._access_stable(offset, size, write=True)
            self._charge(fee["stable64_write"] + size + costs.DIRTY_PAGE_COST * new_dirty)
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
            ("ic0", "msg_arg_data_size"): ("", "i", size_of("msg_arg_data_size", arg)),
            ("ic0", "msg_arg_data_copy"): ("iii", "", copy_out("msg_arg_data_copy", arg)),
            ("ic0", "msg_caller_size"): ("", "i", size_of("msg_caller_size", caller)),
            ("ic0", "msg_caller_copy"): ("iii", "", copy_out("msg_caller_copy", caller)),
            ("ic0", "canister_self_size"): ("", "i", size_of("canister_self_size", me)),
            ("ic0", "canister_self_copy"): ("iii", "", copy_out("canister_self_copy", me)),
            ("ic0", "msg_reply_data_append"): ("ii", "", reply_append),
            ("ic0", "msg_reply"): ("", "", reply),
            ("ic0", "msg_reject"): ("ii", "", reject),
            ("ic0", "trap"): ("ii", "", trap),
            ("ic0", "debug_print"): ("ii", "", debug_print),
            ("ic0", "performance_counter"): ("i", "I", performance_counter),
            ("ic0", "time"): ("", "I", now),
            ("ic0", "is_controller"): ("ii", "i", is_controller),
            ("ic0", "canister_cycle_balance128"): ("i", "", cycle_balance128),
            ("ic0", "stable64_size"): ("", "I", stable_size),
            ("ic0", "stable64_grow"): ("I", "I", stable_grow),
            ("ic0", "stable64_read"): ("III", "", stable_read),
            ("ic0", "stable64_write"): ("III", "", stable_write),
            metering.OUT_OF_INSTRUCTIONS_IMPORT: ("", "", out_of_instructions),
        }


def _message_error(e: BaseException, msg: _Message) -> BaseException:
    """What a failed message raises, once rolled back."""
    if isinstance(e, _OutOfInstructions):
        return InstructionLimitExceeded(
            f"{msg.method} ran past the limit of {msg.limit:,} instructions per call and was "
            "rolled back"
        )
    if isinstance(e, wasmtime.Trap) and e.trap_code == wasmtime.TrapCode.INTERRUPT:
        return KeyboardInterrupt()  # a second Ctrl-C stopped the guest
    if isinstance(e, CanisterTrap | StableMemoryError | wasmtime.Trap | wasmtime.WasmtimeError):
        text = e.message if isinstance(e, wasmtime.Trap) else str(e)
        return BackendError(f"the canister trapped in {msg.method}: {text}")
    return e  # a bug in a host function: rolled back, and it keeps its traceback


# Compiled code depends on the wasmtime build and the engine config.
_COMPILED_WITH = importlib.metadata.version("wasmtime") + " epoch_interruption"
_VAL = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}
