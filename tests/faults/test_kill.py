"""kill -9 at random moments of upload, load and generate: nothing a later run cannot use.

A killed process commits nothing of the message it was in (stable memory is written only
when a message succeeds, its record page last), so the next run resumes the upload, loads
the model and generates the same greedy tokens.
"""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

from tests.faults.support import PROMPT, Cli, assert_usable, delays

RUNS = 3


def killed(cli: Cli, args: tuple[str, ...], delay: float) -> None:
    outcome = cli.hurt(args, signal.SIGKILL, delay)
    assert outcome.returncode in (0, -signal.SIGKILL), (outcome.returncode, outcome.stderr)


def test_kill_during_upload_then_resume(loaded: tuple[Cli, list[int]], tmp_path: Path) -> None:
    warm, reference = loaded
    cli = Cli(tmp_path, warm)
    model = cli.prepare()
    for delay in delays(seed=11, count=RUNS, low=0.4, high=1.8):
        killed(cli, ("upload", str(model), "--no-load"), delay)
    done = cli.run("upload", str(model))
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert cli.info()["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert_usable(cli, reference)


def test_kill_during_load_then_load(loaded: tuple[Cli, list[int]], tmp_path: Path) -> None:
    warm, reference = loaded
    cli = Cli(tmp_path, warm)
    model = cli.prepare()
    uploaded = cli.run("upload", str(model), "--no-load")
    assert uploaded.returncode == 0, (uploaded.returncode, uploaded.stdout, uploaded.stderr)
    for delay in delays(seed=12, count=RUNS, low=0.3, high=1.5):
        killed(cli, ("upload", str(model)), delay)  # already uploaded: this loads
    done = cli.run("upload", str(model))  # loads, unless a killed run finished first
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert_usable(cli, reference)


def test_kill_during_generate(loaded: tuple[Cli, list[int]]) -> None:
    cli, reference = loaded
    args = ("generate", PROMPT, "--max-tokens", "110", "--tokens-per-call", "55")
    for delay in delays(seed=13, count=RUNS, low=0.3, high=1.6):
        killed(cli, args, delay)
    assert_usable(cli, reference)
