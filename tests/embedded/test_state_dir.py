"""The state dir on disk: one runtime at a time, damaged files named with a way out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from gpt2_chat.backends.embedded.stable_memory import StateInUse
from tests.embedded.test_runtime import CONTROLLER, WAT, decode, open_canister


@pytest.fixture
def wasm() -> bytes:
    return wasmtime.wat2wasm(WAT)


def test_the_stable_memory_file_itself_is_locked(wasm: bytes, tmp_path: Path) -> None:
    first = open_canister(wasm, tmp_path)
    for stray in tmp_path.glob("lock"):  # what an older runtime locked instead
        stray.unlink()
    with pytest.raises(StateInUse):
        open_canister(wasm, tmp_path)
    first.update("bump", b"", CONTROLLER)
    first.close()
    second = open_canister(wasm, tmp_path)
    assert decode(second.query("state", b"", CONTROLLER).data)[1] == 1


def test_another_process_holding_the_state_keeps_us_out(wasm: bytes, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path;"
            "from gpt2_chat.backends.embedded.stable_memory import StableMemory;"
            f"m = StableMemory(Path({str(tmp_path / 'stable.bin')!r})); print('ready', flush=True);"
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        with pytest.raises(StateInUse):
            open_canister(wasm, tmp_path)
    finally:
        holder.communicate("", timeout=30)
    open_canister(wasm, tmp_path).close()  # free again once the holder exits
