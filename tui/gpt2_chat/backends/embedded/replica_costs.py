"""What the replica charges a canister, in instructions, besides its wasm instructions:
system API calls, stable-memory pages, and compiling its module.

From dfinity/ic ``rs/embedders/src/wasmtime_embedder/system_api_complexity.rs`` (the
``overhead`` table, and ``overhead_native`` for the stable-memory calls, which the replica
runs natively) and how ``rs/embedders/src/wasmtime_embedder/linker.rs`` applies it: the fixed
overhead, plus one instruction per byte moved (``charge_for_cpu_and_mem``); bytes that leave
the canister (replies, rejects) count ``BYTE_TRANSMISSION_COST_FACTOR`` times; ``debug_print``
and ``trap`` also pay for the canister log (``logging_charge_bytes``: twice the bytes kept, plus
the transmission factor per byte sent; we assume the log has room, as it does for the short
lines this canister prints). Stable-memory limits and the dirty-page charge are from
``rs/config/src/embedders.rs`` and the application-subnet scheduler config. Compiling is
charged to the install or upgrade message per wasm instruction of the module
(``rs/embedders/src/wasm_utils/instrumentation.rs``: the instructions of every function body,
plus two per global), in full for a module the subnet has not compiled yet, divided by
``DESERIALIZATION_SPEED_UP_FACTOR`` otherwise (``rs/execution_environment``,
``CompilationCostHandling``).
"""

from __future__ import annotations

from typing import Final

#: Fixed overhead per call.
OVERHEAD: Final = {
    "msg_arg_data_size": 500,
    "msg_arg_data_copy": 500,
    "msg_caller_size": 500,
    "msg_caller_copy": 500,
    "canister_self_size": 500,
    "canister_self_copy": 500,
    "msg_reply_data_append": 500,
    "msg_reply": 500,
    "msg_reject": 500,
    "time": 500,
    "canister_cycle_balance128": 500,
    "trap": 500,
    "debug_print": 100,
    "performance_counter": 200,
    "is_controller": 1_000,
    "stable64_size": 20,
    "stable64_grow": 100,
    "stable64_read": 20,
    "stable64_write": 20,
}

BYTE_TRANSMISSION_COST_FACTOR: Final = 50
#: A log record is added and, eventually, an old one evicted.
LOG_BYTES_KEPT_FACTOR: Final = 2
#: debug_print's text also goes to the replica's own output (enabled on a local replica).
DEBUG_PRINT_PER_BYTE: Final = LOG_BYTES_KEPT_FACTOR + BYTE_TRANSMISSION_COST_FACTOR + 1
#: trap's message is copied once and logged.
TRAP_PER_BYTE: Final = 1 + LOG_BYTES_KEPT_FACTOR + BYTE_TRANSMISSION_COST_FACTOR

#: Stable memory is accounted in OS pages.
OS_PAGE: Final = 4096
#: Per OS page of stable memory a message dirties for the first time (application subnet).
DIRTY_PAGE_COST: Final = 1_000

_GiB = 1024**3
#: Stable memory a message may access (read or write), and may dirty, by message kind.
STABLE_ACCESS_LIMIT_BYTES: Final = {"update": 2 * _GiB, "query": _GiB, "upgrade": 8 * _GiB}

#: ``cost_to_compile_wasm_instruction`` (rs/config/src/embedders.rs).
COMPILE_COST_PER_INSTRUCTION: Final = 6_000
#: A module the subnet has compiled before is charged this many times less.
DESERIALIZATION_SPEED_UP_FACTOR: Final = 100
