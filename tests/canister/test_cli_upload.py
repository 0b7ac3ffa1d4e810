"""`gpt2-chat upload --clear`: the way out of an upload the user no longer wants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import model_bytes


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GPT2_CHAT_STATE_DIR": str(tmp_path / "state"),
        "GPT2_CHAT_CONFIG": str(tmp_path / "settings.json"),
    }
    return subprocess.run(
        [sys.executable, "-m", "gpt2_chat.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_upload_clear_empties_the_canister(tmp_path: Path) -> None:
    model = tmp_path / "head8.safetensors"
    model.write_bytes(model_bytes("head8"))
    assert _run(tmp_path, "upload", str(model)).returncode == 0

    cleared = _run(tmp_path, "upload", "--clear")
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared" in cleared.stdout
    info = json.loads(_run(tmp_path, "info", "--json").stdout)
    assert (info["loaded"], info["uploaded_bytes"], info["stable_memory_damage"]) == (
        False,
        0,
        None,
    )

    again = _run(tmp_path, "upload", "--clear", str(model))  # clear, then upload afresh
    assert again.returncode == 0, again.stderr
    assert "model loaded" in again.stdout and "already uploaded" not in again.stdout

    neither = _run(tmp_path, "upload")
    assert neither.returncode != 0 and "Traceback" not in neither.stderr
