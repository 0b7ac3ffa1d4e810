"""The settings tab through Textual's pilot: saved, reloaded, applied without a restart,
invalid input refused with a message; plus the settings store and form parsing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widgets import Input, Select

from gpt2_chat.app.settings_view import parse_form
from gpt2_chat.settings import InvalidSetting, Settings, SettingsStore
from tests.app.helpers import RecordingApp, connected, run, shown, wait_for

SIZE = (100, 30)


async def set_field(pilot: object, app: RecordingApp, name: str, value: str) -> None:
    widget = app.query_one(f"#set-{name}", Input)
    widget.value = value
    await pilot.pause()  # type: ignore[attr-defined]


def test_settings_are_saved_applied_and_reloaded(workdir: Path, loaded: Path) -> None:
    async def first_run() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f4")
            assert app.query_one("#set-network", Input).has_focus
            assert app.query_one("#set-state_dir", Input).value == "state"
            await set_field(pilot, app, "temperature", "0.3")
            await set_field(pilot, app, "top_k", "5")
            await set_field(pilot, app, "max_new_tokens", "12")
            await set_field(pilot, app, "instruction_budget", "2000000000")
            await pilot.press("ctrl+s")
            assert app.messages("error") == []
            assert "Saved and applied" in app.messages()[-1]
            # Applied at once: the chat's next turn reads these.
            assert (app.settings.temperature, app.settings.top_k) == (0.3, 5)
            assert app.settings.instruction_budget == 2_000_000_000
            assert "temperature 0.3 · top-k 5" in shown(app, "#chat-status")

    run(first_run())
    saved = json.loads((workdir / "settings.json").read_text())
    assert saved["temperature"] == 0.3 and saved["top_k"] == 5 and saved["max_new_tokens"] == 12
    # The state dir came from GPT2_CHAT_STATE_DIR: not written into the file.
    assert saved["state_dir"] is None

    async def second_run() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f4")
            assert app.query_one("#set-temperature", Input).value == "0.3"
            assert app.query_one("#set-top_k", Input).value == "5"
            assert app.query_one("#set-instruction_budget", Input).value == "2000000000"
            assert "GPT2_CHAT_STATE_DIR" in shown(app, "#settings-note")

    run(second_run())


def test_invalid_input_is_refused_with_a_message(workdir: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f4")
            await set_field(pilot, app, "temperature", "500")
            await pilot.press("ctrl+s")
            assert app.messages("error") == ["Not saved: Temperature must be between 0 and 100"]
            temperature = app.query_one("#set-temperature", Input)
            assert temperature.has_class("-invalid") and temperature.has_focus
            await set_field(pilot, app, "temperature", "0.5")
            await set_field(pilot, app, "network", "carrier-pigeon")
            assert app.query_one("#set-network", Input).has_class("-invalid")
            await pilot.press("ctrl+s")
            assert "unknown network `carrier-pigeon`" in app.messages("error")[-1]
            assert app.settings.temperature == 0.7  # nothing applied
            assert not (workdir / "settings.json").exists()  # nothing saved

    run(scenario())


def test_changing_the_state_dir_reopens_the_backend(workdir: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            first = app.connection
            assert first is not None
            await pilot.press("f4")
            await set_field(pilot, app, "state_dir", "other-state")
            await pilot.press("ctrl+s")
            assert "reconnecting" in app.messages()[-1]
            await wait_for(
                pilot,
                lambda: app.connection is not None and app.connection is not first,
                "the new backend",
            )
            assert first.backend.closed  # the old one released its state dir
            assert (workdir / "other-state" / "stable.bin").exists()
            assert "other-state" in shown(app, "#connection-bar")
            assert json.loads((workdir / "settings.json").read_text())["state_dir"] == (
                "other-state"
            )

    run(scenario())


def test_theme_applies_live_and_is_saved(workdir: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f4")
            app.query_one("#set-theme", Select).value = "nord"
            await pilot.pause()
            assert app.theme == "nord"
            assert json.loads((workdir / "settings.json").read_text())["theme"] == "nord"
            app.theme = "gruvbox"  # as the command palette does
            await pilot.pause()
            assert app.query_one("#set-theme", Select).value == "gruvbox"
            assert json.loads((workdir / "settings.json").read_text())["theme"] == "gruvbox"

    run(scenario())
    app = RecordingApp()
    assert app.settings.theme == "gruvbox"


def test_a_broken_settings_file_opens_the_app_with_defaults(workdir: Path) -> None:
    (workdir / "settings.json").write_text("{not json")

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            errors = app.messages("error")
            assert len(errors) == 1 and "cannot read settings from settings.json" in errors[0]
            assert app.settings.temperature == Settings().temperature

    run(scenario())


# ---------------------------------------------------------------------- units


def test_store_keeps_overrides_out_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "settings.json"
    monkeypatch.setenv("GPT2_CHAT_NETWORK", "local")
    monkeypatch.delenv("GPT2_CHAT_STATE_DIR", raising=False)
    store = SettingsStore(path, flags={"canister": "aaaaa-aa"})
    assert store.effective.network == "local" and store.effective.canister == "aaaaa-aa"
    assert store.override_source("network") == "GPT2_CHAT_NETWORK"
    assert store.override_source("canister") == "--canister"
    changed = store.save(replace(store.effective, top_k=3))
    assert changed == {"top_k"}
    saved = json.loads(path.read_text())
    assert saved["network"] == "embedded" and saved["canister"] is None and saved["top_k"] == 3
    # Changing an overridden field in the app saves it and wins for the rest of the run.
    assert store.save(replace(store.effective, network="ic")) == {"network"}
    assert store.effective.network == "ic"
    assert json.loads(path.read_text())["network"] == "ic"


def test_parse_form_names_the_field() -> None:
    values = {
        "network": "embedded",
        "canister": "",
        "identity": "",
        "state_dir": "",
        "temperature": "0.5",
        "top_k": "x",
        "top_p": "1",
        "seed": "0",
        "max_new_tokens": "8",
        "tokens_per_call": "2",
        "instruction_budget": "",
    }
    with pytest.raises(ValueError, match="Top-k: 'x' is not a whole number"):
        parse_form(values, Settings())
    values["top_k"] = "0"
    settings = parse_form(values, Settings())
    assert settings.canister is None and settings.instruction_budget is None
    assert settings.temperature == 0.5 and settings.tokens_per_call == 2
    values["top_p"] = "0"
    with pytest.raises(ValueError, match=r"Top-p must be in \(0, 1\]"):
        parse_form(values, Settings())
    values["top_p"] = "1"
    for text, count in (
        ("500M", 500_000_000),
        ("30B", 30_000_000_000),
        ("2_000_000_000", 2 * 10**9),
    ):
        values["instruction_budget"] = text
        assert parse_form(values, Settings()).instruction_budget == count
    values["instruction_budget"] = "40B"
    with pytest.raises(InvalidSetting, match="Instr. per call must be between") as caught:
        parse_form(values, Settings())
    assert caught.value.field == "instruction_budget"


def test_choosing_a_theme_keeps_unsaved_edits(workdir: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f4")
            await set_field(pilot, app, "temperature", "0.5")
            app.query_one("#set-theme", Select).value = "nord"
            await pilot.pause()
            assert app.theme == "nord"
            assert app.query_one("#set-temperature", Input).value == "0.5"
            await pilot.press("ctrl+s")
            assert app.messages()[-1] == "Saved and applied"
            assert app.settings.temperature == 0.5 and app.settings.theme == "nord"

    run(scenario())


def test_an_error_sits_next_to_its_field_at_80x24(workdir: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=(80, 24)) as pilot:
            await connected(pilot)
            await pilot.press("f4")
            await set_field(pilot, app, "top_p", "7")
            error = app.query_one("#error-top_p")
            assert shown(app, "#error-top_p") == "Top-p must be in (0, 1]"
            await pilot.press("ctrl+s")
            await pilot.pause()
            field = app.query_one("#set-top_p", Input)
            assert field.has_focus
            # On screen, right under its field.
            assert error.region.y == field.region.y + 1
            assert 0 < error.region.y < 24 - 2  # above the status line and footer
            await set_field(pilot, app, "top_p", "0.9")
            assert not error.display
            await set_field(pilot, app, "top_k", "")
            assert shown(app, "#error-top_k") == "Top-k: required"

    run(scenario())


def test_the_instruction_budget_takes_suffixes(workdir: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f4")
            for typed, budget in (
                ("30B", 30_000_000_000),
                ("500M", 500_000_000),
                ("2_000_000_000", 2_000_000_000),
            ):
                await set_field(pilot, app, "instruction_budget", typed)
                assert not app.query_one("#set-instruction_budget", Input).has_class("-invalid")
                await pilot.press("ctrl+s")
                assert app.messages("error") == []
                assert app.settings.instruction_budget == budget

    run(scenario())
