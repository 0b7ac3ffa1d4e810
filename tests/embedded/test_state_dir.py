"""The state dir on disk: one runtime at a time, damaged files named with a way out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from gpt2_chat.backends.embedded.stable_memory import PAGE, StateInUse
from gpt2_chat.backends.embedded.state_dir import DamagedState, reset
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


def test_a_stable_memory_of_part_of_a_page_is_named_with_the_way_out(
    wasm: bytes, tmp_path: Path
) -> None:
    open_canister(wasm, tmp_path).close()
    stable = tmp_path / "stable.bin"
    with stable.open("r+b") as f:
        f.truncate(PAGE + 100)
    with pytest.raises(DamagedState) as caught:
        open_canister(wasm, tmp_path)
    assert str(stable) in str(caught.value) and "gpt2-chat reset" in str(caught.value)


def test_a_stable_memory_shorter_than_recorded_is_damage(wasm: bytes, tmp_path: Path) -> None:
    c = open_canister(wasm, tmp_path)
    c.update("bump", b"", CONTROLLER)
    c.close()
    with (tmp_path / "stable.bin").open("r+b") as f:
        f.truncate(0)  # a whole number of pages, but not the one page the canister has
    with pytest.raises(DamagedState):
        open_canister(wasm, tmp_path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("canister.json", "{not json"),
        ("canister.json", "[1, 2]"),
        ("canister.json", '{"wasm_sha256": "x", "installed_ns": "soon"}'),
        ("controllers.json", "5"),
        ("controllers.json", "[5]"),
        ("controllers.json", '["not a principal"]'),
        ("controllers.json", "\xff\xfe"),
    ],
)
def test_unreadable_metadata_names_the_file(
    wasm: bytes, tmp_path: Path, name: str, content: str
) -> None:
    open_canister(wasm, tmp_path).close()
    (tmp_path / name).write_text(content, encoding="latin-1")
    with pytest.raises(DamagedState) as caught:
        open_canister(wasm, tmp_path)
    assert str(tmp_path / name) in str(caught.value)
    open_canister(wasm, tmp_path / "elsewhere").close()  # the failed open left no lock


def test_reset_moves_the_state_aside_and_keeps_the_identity(wasm: bytes, tmp_path: Path) -> None:
    c = open_canister(wasm, tmp_path)
    c.update("bump", b"", CONTROLLER)
    (tmp_path / "identity.pem").write_text("key")
    with pytest.raises(StateInUse):
        reset(tmp_path)
    c.close()
    (tmp_path / "stable.bin").write_bytes(b"garbage")
    backup = reset(tmp_path)
    assert backup is not None and (backup / "stable.bin").read_bytes() == b"garbage"
    assert (backup / "canister.json").exists() and (backup / "controllers.json").exists()
    assert (tmp_path / "identity.pem").read_text() == "key"
    fresh = open_canister(wasm, tmp_path)  # installed anew: canister_init grows one page
    assert decode(fresh.query("state", b"", CONTROLLER).data)[:3] == (0, 0, 0)
    fresh.close()
    assert reset(tmp_path / "empty") is None
