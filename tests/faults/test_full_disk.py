"""An upload into a nearly full filesystem: one error line (not SIGBUS), the state before the
failing call intact, and the upload resumes once there is space."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import Cli

DISK_MIB = 12
#: Leaves room for the compiled-module cache (~4.3 MB) and part of the 3.3 MB model.
FILLER_MIB = 6


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_upload_onto_a_full_disk_is_one_error_and_resumes(small_disk: Path) -> None:
    cli = Cli(small_disk)
    cli.env["GPT2_CHAT_CONFIG"] = str(small_disk.parent / "settings.json")
    model = small_disk.parent / "model.safetensors"
    Cli(small_disk.parent).prepare().rename(model)
    filler = small_disk / "filler"
    filler.write_bytes(bytes(FILLER_MIB * 1024 * 1024))

    failed = cli.run("upload", str(model))
    assert failed.returncode == 1, (failed.returncode, failed.stderr)
    assert "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left for the canister's stable memory"), last

    partial = cli.info()
    assert isinstance(partial["uploaded_bytes"], int)
    assert 0 < partial["uploaded_bytes"] < model.stat().st_size
    assert not partial["complete"]

    filler.unlink()
    resumed = cli.run("upload", str(model))
    assert resumed.returncode == 0, (resumed.returncode, resumed.stdout, resumed.stderr)
    assert f"resumed at byte {partial['uploaded_bytes']}" in resumed.stdout
    info = cli.info()
    assert info["loaded"] and info["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
