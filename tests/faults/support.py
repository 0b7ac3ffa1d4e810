"""Running the real `gpt2-chat` in a subprocess and hurting it at a random moment."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import CLI_FIXTURE

#: The greedy continuation every check generates after a fault.
PROMPT = "Hello, my dog"
GREEDY = ("generate", PROMPT, "--max-tokens", "8", "--temperature", "0", "--json")


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """`gpt2-chat` with its own state dir and settings file."""

    def __init__(self, root: Path, warm: Cli | None = None) -> None:
        """`warm`: another Cli whose compiled module to reuse (compiling costs seconds)."""
        self.root = root
        if warm is not None:
            shutil.copytree(warm.root / "state" / "cache", root / "state" / "cache")
        self.env = {
            **os.environ,
            "GPT2_CHAT_STATE_DIR": str(root / "state"),
            "GPT2_CHAT_CONFIG": str(root / "settings.json"),
            "HF_ENDPOINT": "http://127.0.0.1:9",
            "GPT2_CHAT_CHUNK_SIZE": "131072",  # ~25 upload calls: places to be hit
        }

    def run(self, *args: str, stdin: str = "") -> Outcome:
        done = subprocess.run(
            [sys.executable, "-m", "gpt2_chat.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return Outcome(done.returncode, done.stdout, done.stderr)

    def hurt(
        self, args: tuple[str, ...], sig: signal.Signals, delay: float, stdin: str = ""
    ) -> Outcome:
        """Starts the command, sends `sig` after `delay` seconds, waits (bounded)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpt2_chat.cli", *args],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
        out, err = proc.communicate(stdin, timeout=120)
        return Outcome(proc.returncode, out, err)

    def prepare(self) -> Path:
        model = self.root / "model.safetensors"
        if not model.exists():
            result = self.run("prepare", str(CLI_FIXTURE), "-o", str(model))
            assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        return model

    def greedy_tokens(self) -> list[int]:
        result = self.run(*GREEDY)
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        tokens: list[int] = json.loads(result.stdout)["token_ids"]
        return tokens

    def info(self) -> dict[str, object]:
        result = self.run("info", "--json")
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        data: dict[str, object] = json.loads(result.stdout)
        return data


def delays(seed: int, count: int, low: float, high: float) -> list[float]:
    """Reproducible random moments (the seed is in the test's name)."""
    rng = random.Random(seed)
    return [rng.uniform(low, high) for _ in range(count)]


def assert_clean_interrupt(outcome: Outcome) -> None:
    """Exit 0 (finished first) or 130 with one line; never a crash or a traceback."""
    assert outcome.returncode in (0, 130), (outcome.returncode, outcome.stderr)
    assert "Traceback" not in outcome.stderr, outcome.stderr
    if outcome.returncode == 130:
        assert outcome.stderr.strip().splitlines()[-1] == "interrupted", outcome.stderr


def assert_usable(cli: Cli, reference: list[int]) -> None:
    """The state dir still holds the whole model, loaded, and generates as before."""
    info = cli.info()
    assert info["loaded"] and info["complete"], info
    assert cli.greedy_tokens() == reference
