"""Networks parsed once, and canister names looked up under the right dfx network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt2_chat.backends.replica import ReplicaBackend
from gpt2_chat.connect import NoDfxProject, dfx_project_dir, open_backend
from gpt2_chat.network import LOCAL_URL, MAINNET_URL, UnknownNetwork, parse_network
from gpt2_chat.settings import InvalidSetting, Settings

MAINNET_ID = "ryjl3-tyaaa-aaaaa-aaaba-cai"
LOCAL_ID = "bkyz2-fmaaa-aaaaa-qaaaq-cai"


@pytest.mark.parametrize(
    ("text", "kind", "url", "dfx_network"),
    [
        ("embedded", "embedded", None, None),
        ("local", "replica", LOCAL_URL, "local"),
        ("ic", "replica", MAINNET_URL, "ic"),
        ("mainnet", "replica", MAINNET_URL, "ic"),
        ("https://icp-api.io", "replica", "https://icp-api.io", "ic"),
        ("https://ic0.app/", "replica", "https://ic0.app", "ic"),
        ("https://icp0.io", "replica", "https://icp0.io", "ic"),
        ("https://boundary.icp0.io", "replica", "https://boundary.icp0.io", "ic"),
        ("http://127.0.0.1:8080", "replica", "http://127.0.0.1:8080", "local"),
        ("http://localhost:4943", "replica", "http://localhost:4943", "local"),
    ],
)
def test_networks_parse(text: str, kind: str, url: str | None, dfx_network: str | None) -> None:
    network = parse_network(text)
    assert (network.kind, network.url, network.dfx_network) == (kind, url, dfx_network)
    if url:
        assert url in network.label or network.label == "IC mainnet"


@pytest.mark.parametrize("text", ["foo", "", "ftp://x", "http://", "https://[::1", "Local"])
def test_unknown_networks_say_so(text: str) -> None:
    with pytest.raises(UnknownNetwork):
        parse_network(text)
    with pytest.raises(InvalidSetting) as caught:
        Settings(network=text).validate()
    assert caught.value.field == "network"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A dfx project with gpt2_backend deployed both locally and on mainnet."""
    (tmp_path / "dfx.json").write_text("{}")
    (tmp_path / "canister_ids.json").write_text(json.dumps({"gpt2_backend": {"ic": MAINNET_ID}}))
    local = tmp_path / ".dfx" / "local"
    local.mkdir(parents=True)
    (local / "canister_ids.json").write_text(json.dumps({"gpt2_backend": {"local": LOCAL_ID}}))
    return tmp_path


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("ic", MAINNET_ID),
        ("mainnet", MAINNET_ID),
        ("https://icp-api.io", MAINNET_ID),
        ("https://ic0.app", MAINNET_ID),
        ("https://icp0.io", MAINNET_ID),
        ("local", LOCAL_ID),
        ("http://127.0.0.1:4943", LOCAL_ID),
    ],
)
def test_a_canister_name_is_looked_up_under_the_networks_dfx_network(
    project: Path, monkeypatch: pytest.MonkeyPatch, network: str, expected: str
) -> None:
    # Found from a subdirectory of the project, as dfx finds it (not from the package).
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    settings = Settings(network=network, canister="gpt2_backend", identity="anonymous")
    assert dfx_project_dir(settings) == project.resolve()
    backend = open_backend(settings)  # opens no socket until the first call
    try:
        assert isinstance(backend, ReplicaBackend)
        assert backend.canister_id == expected
        assert backend.url == parse_network(network).url
    finally:
        backend.close()


def test_a_configured_project_dir_wins(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    settings = Settings(network="ic", project_dir=str(project), identity="anonymous")
    backend = open_backend(settings)
    try:
        assert isinstance(backend, ReplicaBackend) and backend.canister_id == MAINNET_ID
    finally:
        backend.close()


def test_a_name_without_a_dfx_project_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoDfxProject, match="no dfx.json"):
        open_backend(Settings(network="local", identity="anonymous"))
    # An id needs no project.
    backend = open_backend(Settings(network="local", canister=LOCAL_ID, identity="anonymous"))
    backend.close()
