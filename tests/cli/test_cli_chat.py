"""`gpt2-chat chat` saves every chat (also with piped input); `--list` and `--resume`."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2_chat.client.canister import Gpt2Canister
from gpt2_chat.client.prepare import prepare
from gpt2_chat.client.upload import upload_model
from gpt2_chat.connect import open_backend
from gpt2_chat.settings import Settings
from tests.support import CLI_FIXTURE


@pytest.fixture
def env(tmp_path: Path, saved_chats_dir: Path) -> dict[str, str]:
    model = prepare(str(CLI_FIXTURE), tmp_path / "model.safetensors").path
    backend = open_backend(Settings(state_dir=str(tmp_path / "state")))
    try:
        upload_model(Gpt2Canister(backend), Path(model))
    finally:
        backend.close()
    (tmp_path / "settings.json").write_text('{"max_new_tokens": 6}')
    return {
        **os.environ,
        "GPT2_CHAT_STATE_DIR": str(tmp_path / "state"),
        "GPT2_CHAT_CONFIG": str(tmp_path / "settings.json"),
        "GPT2_CHAT_DATA_DIR": str(saved_chats_dir),
    }


def chat(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt2_chat.cli", "chat", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def roles(saved_chats_dir: Path, chat_id: int) -> list[str]:
    with sqlite3.connect(saved_chats_dir / "chats.sqlite3") as db:
        rows = db.execute("SELECT role FROM messages WHERE chat = ? ORDER BY seq", (chat_id,))
        return [role for (role,) in rows]


def test_a_piped_chat_is_saved_listed_and_resumed_with_or_without_the_cache(
    env: dict[str, str], saved_chats_dir: Path, tmp_path: Path
) -> None:
    first = chat(env, stdin="Hello there\nHow are you?\n")
    assert first.returncode == 0, first.stderr
    assert "saved as chat 1: gpt2-chat chat --resume 1" in first.stderr
    assert roles(saved_chats_dir, 1) == ["user", "model", "user", "model"]

    listed = chat(env, "--list")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.split()[0] == "1" and "GPT-2 2×16" in line and line.endswith("Hello there")

    # The canister still holds the session: continuing reads only the new turn.
    again = chat(env, "--resume", "1", stdin="And then?\n")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("you> Hello there\ngpt2>")
    assert roles(saved_chats_dir, 1) == ["user", "model"] * 3

    # A new canister (the same model uploaded into a fresh state dir): read again.
    shutil.rmtree(tmp_path / "state")
    env = {**env, "GPT2_CHAT_STATE_DIR": str(tmp_path / "state2")}
    backend = open_backend(Settings(state_dir=str(tmp_path / "state2")))
    try:
        upload_model(Gpt2Canister(backend), tmp_path / "model.safetensors")
    finally:
        backend.close()
    later = chat(env, "--resume", "1", stdin="Still there?\n")
    assert later.returncode == 0, later.stderr
    assert roles(saved_chats_dir, 1) == ["user", "model"] * 4
    assert "saved as chat 1" in later.stderr

    missing = chat(env, "--resume", "9")
    assert (missing.returncode, missing.stderr) == (
        1,
        "error: there is no saved chat 9 (gpt2-chat chat --list)\n",
    )
