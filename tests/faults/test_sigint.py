"""Ctrl-C (SIGINT) at random moments of real `gpt2-chat` runs: exit 130 or 0 with one line,
never a crash, and the state dir works afterwards (same greedy tokens as before)."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

from tests.faults.support import PROMPT, Cli, assert_clean_interrupt, assert_usable, delays

RUNS = 3


def test_sigint_during_generate(loaded: tuple[Cli, list[int]]) -> None:
    cli, reference = loaded
    args = ("generate", PROMPT, "--max-tokens", "110", "--tokens-per-call", "55")
    for delay in delays(seed=1, count=RUNS, low=0.3, high=1.6):
        assert_clean_interrupt(cli.hurt(args, signal.SIGINT, delay))
    assert_usable(cli, reference)


def test_sigint_during_chat(loaded: tuple[Cli, list[int]]) -> None:
    cli, reference = loaded
    for delay in delays(seed=2, count=RUNS, low=0.3, high=1.6):
        outcome = cli.hurt(("chat",), signal.SIGINT, delay, stdin="hello\nand more\n")
        assert_clean_interrupt(outcome)
    assert_usable(cli, reference)


def test_sigint_during_upload_then_resume(loaded: tuple[Cli, list[int]], tmp_path: Path) -> None:
    warm, reference = loaded
    cli = Cli(tmp_path, warm)
    model = cli.prepare()
    for delay in delays(seed=3, count=RUNS, low=0.4, high=1.8):
        assert_clean_interrupt(cli.hurt(("upload", str(model)), signal.SIGINT, delay))
    result = cli.run("upload", str(model))
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert cli.info()["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert_usable(cli, reference)
