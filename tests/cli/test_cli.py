"""`gpt2-chat` end to end: the real command, the real wasm in the embedded runtime."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from icp_identity.identity import Identity

from tests.support import CLI_FIXTURE

EXPECTED = json.loads((CLI_FIXTURE / "expected.json").read_text())


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GPT2_CHAT_STATE_DIR": str(tmp_path / "state"),
        "GPT2_CHAT_CONFIG": str(tmp_path / "settings.json"),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens: downloads fail fast
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt2_chat.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def prepared(tmp_path: Path, env: dict[str, str]) -> Path:
    out = tmp_path / "model.safetensors"
    result = run(env, "prepare", str(CLI_FIXTURE), "-o", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_prepare_upload_and_greedy_generate_equal_transformers(
    prepared: Path, env: dict[str, str]
) -> None:
    result = run(env, "upload", str(prepared))
    assert result.returncode == 0, result.stderr
    assert "model loaded" in result.stdout
    for case in EXPECTED["cases"]:
        result = run(
            env, "generate", case["prompt"], "--max-tokens", "20", "--temperature", "0", "--json"
        )
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["prompt_ids"] == case["prompt_ids"]
        assert out["token_ids"] == case["greedy_ids"]
        assert out["text"] == case["greedy_text"]
        assert out["calls"] == len(out["instructions"]) >= 2
        assert all(i > 0 for i in out["instructions"])
    info = json.loads(run(env, "info", "--json").stdout)
    assert info["loaded"] is True
    assert info["uploaded_bytes"] == prepared.stat().st_size
    assert info["sha256"] == hashlib.sha256(prepared.read_bytes()).hexdigest()
    assert info["dtype"] == "F32"
    assert info["config"] == {
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 16,
        "n_inner": 64,
        "vocab_size": 50257,
        "n_ctx": 128,
    }
    again = run(env, "upload", str(prepared))
    assert again.returncode == 0 and "already uploaded" in again.stdout


def test_an_upload_killed_midway_resumes(
    prepared: Path, env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "GPT2_CHAT_CHUNK_SIZE": "16384"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2_chat.cli", "upload", str(prepared)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill the process once the canister's stable memory holds part of the file.
    stable = tmp_path / "state" / "stable.bin"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if stable.exists() and stable.stat().st_size > 64 * 1024 + 300_000:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    partial = json.loads(run(env, "info", "--json").stdout)
    size = prepared.stat().st_size
    assert 0 < partial["uploaded_bytes"] < size and not partial["complete"]

    result = run(env, "upload", str(prepared))
    assert result.returncode == 0, result.stderr
    assert f"resumed at byte {partial['uploaded_bytes']}" in result.stdout
    info = json.loads(run(env, "info", "--json").stdout)
    assert info["sha256"] == hashlib.sha256(prepared.read_bytes()).hexdigest()
    assert info["loaded"] and info["complete"]


def expect_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and message in lines[-1], lines


def test_errors_are_one_clear_line(tmp_path: Path, prepared: Path, env: dict[str, str]) -> None:
    expect_error(run(env, "upload", str(tmp_path / "missing.safetensors")), "no such file")
    expect_error(run(env, "generate", "hi", "--max-tokens", "5"), "no model is loaded")
    expect_error(
        run(env, "generate", "hi", "--max-tokens", "0"),
        "--max-tokens 0: max_new_tokens must be between 1 and 1024",
    )
    expect_error(run(env, "prepare", "no/such-model", "-o", str(tmp_path / "x")), "cannot download")

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10" * 4096)
    expect_error(run(env, "upload", str(garbage)), "invalid model file")

    assert run(env, "upload", str(prepared)).returncode == 0
    expect_error(
        run(env, "generate", "hi", "--max-tokens", "5", "--temperature", "-1"),
        "--temperature -1: temperature must be between 0 and 100",
    )
    expect_error(
        run(env, "generate", "word " * 200, "--max-tokens", "5"),
        "the prompt is 201 tokens; the model's context holds 128",
    )

    other = tmp_path / "other.pem"
    other.write_bytes(Identity().to_pem())
    expect_error(run(env, "--identity", str(other), "upload", str(garbage)), "only a controller")
    expect_error(
        run(env, "--identity", str(tmp_path / "nope.pem"), "info"), "cannot read identity file"
    )
