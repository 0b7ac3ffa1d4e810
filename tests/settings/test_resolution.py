"""One resolution for the CLI and the app: flag > GPT2_CHAT_* variable > settings file >
default, each value's source said, and overrides never saved."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from gpt2_chat.settings import CONNECTION_OPTIONS, InvalidSetting, SettingsStore

URL = "http://127.0.0.1:8000"


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"network": "local", "canister": "aaaaa-aa", "top_k": 3}))
    return path


def test_flags_beat_variables_beat_the_file_beat_defaults(settings_file: Path) -> None:
    env = {"GPT2_CHAT_NETWORK": "ic", "GPT2_CHAT_IDENTITY": "anonymous"}
    store = SettingsStore(settings_file, flags={"network": URL, "canister": None}, environ=env)
    settings = store.checked()
    assert (settings.network, settings.identity, settings.canister) == (
        URL,
        "anonymous",
        "aaaaa-aa",
    )
    assert store.source("network") == "--network"
    assert store.source("identity") == "GPT2_CHAT_IDENTITY"
    assert store.source("canister") == f"settings file {settings_file}"
    assert store.source("state_dir") == "default"
    assert SettingsStore(settings_file, environ=env).source("network") == "GPT2_CHAT_NETWORK"
    assert SettingsStore(settings_file, environ={}).checked().network == "local"


def test_each_connection_option_has_its_flag_and_variable() -> None:
    options = {o.name: (o.flag, o.env) for o in CONNECTION_OPTIONS}
    assert options["state_dir"] == ("--state-dir", "GPT2_CHAT_STATE_DIR")
    assert options["project_dir"] == ("--project-dir", "GPT2_CHAT_PROJECT_DIR")
    assert set(options) == {"network", "canister", "identity", "state_dir", "project_dir"}


def test_saving_keeps_overrides_out_of_the_file(settings_file: Path) -> None:
    store = SettingsStore(settings_file, flags={"network": URL}, environ={})
    assert store.save(replace(store.effective, top_k=7)) == {"top_k"}
    saved = json.loads(settings_file.read_text())
    assert saved["network"] == "local" and saved["top_k"] == 7
    assert store.effective.network == URL  # still in force for this run


def test_a_bad_override_is_named_by_its_source(settings_file: Path) -> None:
    store = SettingsStore(settings_file, environ={"GPT2_CHAT_NETWORK": "carrier-pigeon"})
    with pytest.raises(InvalidSetting, match="GPT2_CHAT_NETWORK carrier-pigeon: unknown network"):
        store.checked()


def test_a_bad_file_leaves_the_defaults_and_the_error(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"top_p": [1]}')
    store = SettingsStore(path, environ={})
    assert store.load_error is not None and str(path) in str(store.load_error)
    assert store.effective.top_p == 0.95
