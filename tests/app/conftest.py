"""Fixtures for the app's tests: a prepared GPT-2-vocabulary model (n_embd 16, fast), a
working directory with its own settings file and embedded state dir, helpers to drive the
app with Textual's pilot."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpt2_chat.client.canister import Gpt2Canister
from gpt2_chat.client.prepare import prepare
from gpt2_chat.client.upload import upload_model
from gpt2_chat.connect import open_backend
from gpt2_chat.replica.tools import COMMAND_LOG
from gpt2_chat.settings import Settings
from tests.app.helpers import CHUNK, ChunkGate
from tests.support import CLI_FIXTURE


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLI fixture (GPT-2 vocabulary, 2 layers, n_embd 16) made canister-ready."""
    out = tmp_path_factory.mktemp("model") / "gpt2-random.safetensors"
    prepare(str(CLI_FIXTURE), out)
    return out


@pytest.fixture(scope="session")
def wasm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled canister wasm, so each test's fresh state dir skips compiling it."""
    state = tmp_path_factory.mktemp("template") / "state"
    open_backend(Settings(state_dir=str(state))).close()
    return state / "cache"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wasm_cache: Path) -> Path:
    """The app's world: cwd = tmp_path, settings.json and the state dir `state` in it
    (relative names, so screens show the same text on every run), no network."""
    monkeypatch.chdir(tmp_path)
    for var in ("GPT2_CHAT_NETWORK", "GPT2_CHAT_CANISTER", "GPT2_CHAT_IDENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GPT2_CHAT_STATE_DIR", "state")
    monkeypatch.setenv("GPT2_CHAT_CONFIG", "settings.json")
    monkeypatch.setenv("GPT2_CHAT_CHUNK_SIZE", str(CHUNK))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: fails fast
    shutil.copytree(wasm_cache, tmp_path / "state" / "cache")
    COMMAND_LOG.clear()
    return tmp_path


@pytest.fixture
def local_model(workdir: Path, model_file: Path) -> Path:
    """The model file, copied into the working directory (shown as a relative path)."""
    path = workdir / "gpt2-random.safetensors"
    shutil.copyfile(model_file, path)
    return path


@pytest.fixture
def loaded(workdir: Path, local_model: Path) -> Path:
    """A state dir whose canister already holds the model, loaded."""
    backend = open_backend(Settings(state_dir=str(workdir / "state")))
    try:
        upload_model(Gpt2Canister(backend), local_model)
    finally:
        backend.close()
    return local_model


@pytest.fixture
def no_dfx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with neither dfx nor icp on it."""
    bin_dir = tmp_path / "empty-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.fixture
def chunk_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], ChunkGate]]:
    gates: list[ChunkGate] = []

    def make(at: int) -> ChunkGate:
        gates.append(ChunkGate(monkeypatch, at))
        return gates[-1]

    yield make
    for gate in gates:
        gate.release.set()
