"""`pip install .` (a real wheel, not editable) gives a `gpt2-chat` that works from any
directory: the canister wasm, the tokenizer and the Candid file come with the package.

Offline and fast: the wheel is built with the project venv's setuptools (no build
isolation), installed without dependencies into a fresh venv that borrows the project
venv's site-packages through a path file (whose own .pth files, the editable install's
finder among them, are not run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support import CLI_FIXTURE, REPO

EXPECTED = json.loads((CLI_FIXTURE / "expected.json").read_text())


def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv with gpt2-chat installed from a wheel."""
    if shutil.which("pip", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the project venv has no pip")
    root = tmp_path_factory.mktemp("install")
    # Build from a copy of what the package is made of, so no build files land in the checkout.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("tui", "assets"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=_ignored)
    (source / "canister").mkdir()
    shutil.copy2(REPO / "canister" / "gpt2_backend.did", source / "canister")
    wheels = root / "wheels"
    _run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "-w", wheels, source, cwd=root,
    )  # fmt: skip
    (wheel,) = wheels.glob("gpt2_chat-*.whl")
    listed = set(zipfile.ZipFile(wheel).namelist())
    for data in ("gpt2_backend.wasm.gz", "gpt2_backend.wasm.gz.sha256", "gpt2_backend.did"):
        assert f"gpt2_chat/_data/{data}" in listed
    # Every package in the source tree is in the wheel (pyproject.toml lists them by hand).
    for init in (REPO / "tui").rglob("__init__.py"):
        assert init.relative_to(REPO / "tui").as_posix() in listed, init

    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                     cwd=root).strip())  # fmt: skip
    (site / "project-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--no-index", wheel, cwd=root,
    )  # fmt: skip
    return venv / "bin"


def _ignored(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".mypy_cache") or n.endswith(".egg-info")}


def test_the_installed_command_works_from_any_directory(installed: Path, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GPT2_CHAT_")},
        "GPT2_CHAT_CONFIG": str(tmp_path / "settings.json"),
        "GPT2_CHAT_STATE_DIR": str(tmp_path / "state"),
        "PYTHONPATH": "",
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        installed / "python", "-c", "import gpt2_chat.assets as a; print(a.assets_dir())",
        cwd=elsewhere, env=env,
    ).strip()  # fmt: skip
    assert Path(where).is_relative_to(installed.parent), where  # not the checkout's assets/
    gpt2_chat = installed / "gpt2-chat"
    _run(gpt2_chat, "prepare", CLI_FIXTURE, "-o", "model.safetensors", cwd=elsewhere, env=env)
    assert "model loaded" in _run(gpt2_chat, "upload", "model.safetensors", cwd=elsewhere, env=env)
    case = EXPECTED["cases"][0]
    out = json.loads(
        _run(
            gpt2_chat,
            "generate",
            case["prompt"],
            "--max-tokens",
            "20",
            "--temperature",
            "0",
            "--json",
            cwd=elsewhere,
            env=env,
        )  # fmt: skip
    )
    assert out["prompt_ids"] == case["prompt_ids"]
    assert out["token_ids"] == case["greedy_ids"]
    info = json.loads(_run(gpt2_chat, "info", "--json", cwd=elsewhere, env=env))
    assert info["loaded"] is True
    assert info["connection"]["network"] == {"value": "embedded", "from": "default"}
    assert info["connection"]["state_dir"]["from"] == "GPT2_CHAT_STATE_DIR"
