"""The replica tab through Textual's pilot: without dfx it says how to install it and
nothing breaks; with a (fake) dfx the commands run and land in the log; choosing a replica
that is not there is one clear error."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from icp_identity.identity import Identity
from textual.widgets import Button, Log, Select

from gpt2_chat.app import Gpt2ChatApp
from tests.app.helpers import RecordingApp, connected, run, shown, wait_for

SIZE = (100, 30)

FAKE_DFX = """#!/bin/sh
case "$1" in
  --version) echo "dfx 0.29.1" ;;
  start) echo "Success! The dfx server is running in the background." ;;
  stop) echo "Stopped." ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


def test_replica_tab_without_dfx_says_how_to_install_it(workdir: Path, no_dfx: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f3")
            view = app.query_one("#replica-view")
            await wait_for(
                pilot, lambda: view.running is None and view.status is not None, "the first look"
            )  # type: ignore[attr-defined]
            tools = shown(app, "#tools-text")
            assert "neither `dfx` nor `icp` is installed" in tools
            assert "internetcomputer.org/install.sh" in tools
            assert "embedded runtime" in tools
            assert "not running" in shown(app, "#network-status")
            assert "no dfx/icp on PATH" in shown(app, "#network-status")
            for button in ("start", "stop", "deploy"):
                assert app.query_one(f"#{button}", Button).disabled
            assert not app.query_one("#status", Button).disabled
            assert shown(app, "#canister-id").startswith("canister rrkah-fqaaa-aaaaa-aaaaq-cai")
            before = view.status  # type: ignore[attr-defined]
            await pilot.click("#status")
            await wait_for(
                pilot,
                lambda: view.running is None and view.status is not before,  # type: ignore[attr-defined]
                "a new status",
            )
            assert app.messages("error") == []
            # The app still chats with the embedded runtime.
            assert app.connection is not None

    run(scenario())


def test_choosing_a_replica_that_is_not_there_is_one_clear_error(
    workdir: Path, no_dfx: Path
) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f3")
            app.query_one("#network-choice", Select).value = "local"
            await wait_for(pilot, lambda: app.settings.network == "local", "the choice applied")
            await wait_for(pilot, lambda: not app.connecting, "the connection attempt")
            assert app.connection is None
            errors = app.messages("error")
            assert len(errors) == 1, errors
            assert "Traceback" not in errors[0]
            assert shown(app, "#connection-bar").startswith("✗ local replica")
            assert app.settings.network == "local"
            # Back to the embedded runtime: connected again.
            app.query_one("#network-choice", Select).value = "embedded"
            await connected(pilot)
            assert app.settings.network == "embedded"

    run(scenario())


def test_commands_run_and_land_in_the_log(workdir: Path, no_dfx: Path) -> None:
    dfx = no_dfx / "dfx"
    dfx.write_text(FAKE_DFX)
    dfx.chmod(0o755)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f3")
            view = app.query_one("#replica-view")
            await wait_for(
                pilot, lambda: view.status is not None and view.running is None, "the first look"
            )  # type: ignore[attr-defined]
            assert shown(app, "#tools-text") == f"dfx 0.29.1 ({dfx})"
            assert not app.query_one("#start", Button).disabled
            await pilot.click("#start")
            await wait_for(pilot, lambda: view.running is None, "dfx start")  # type: ignore[attr-defined]
            log = "\n".join(str(line) for line in app.query_one("#command-log", Log).lines)
            assert f"$ {dfx} --version  [exit 0" in log
            assert f"$ {dfx} start --background  [exit 0" in log
            assert "Success! The dfx server is running in the background." in log
            # Nothing listens on the port: said as a warning, not an error.
            assert any("nothing answers" in m for m in app.messages("warning"))
            assert app.messages("error") == []

    run(scenario())


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _replica_start(
    workdir: Path, way: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Gpt2ChatApp, str]:
    """The app pointed at a replica (nothing listens there) in one of the three ways."""
    url = _closed_port_url()
    pem = workdir / "me.pem"
    pem.write_bytes(Identity().to_pem())
    values = {"network": url, "canister": "aaaaa-aa", "identity": str(pem)}
    if way == "flags":
        return Gpt2ChatApp(flags=values), url
    if way == "environment":
        for name, value in values.items():
            monkeypatch.setenv(f"GPT2_CHAT_{name.upper()}", value)
        return Gpt2ChatApp(), url
    (workdir / "settings.json").write_text(json.dumps(values))
    return Gpt2ChatApp(), url


@pytest.mark.parametrize("way", ["flags", "environment", "settings file"])
def test_the_app_starts_on_the_configured_replica_and_saves_nothing(
    workdir: Path, no_dfx: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    app, url = _replica_start(workdir, way, monkeypatch)
    settings_file = workdir / "settings.json"
    before = settings_file.read_text() if settings_file.exists() else None

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: not app.connecting, "the connection attempt")
            await pilot.press("f3")
            await pilot.press("f4")
            await pilot.press("f1")
            await pilot.pause()
            assert app.settings.network == url
            bar = shown(app, "#connection-bar")
            assert url in bar and "embedded" not in bar, bar
            assert app.query_one("#network-choice", Select).value == "url"

    run(scenario())
    after = settings_file.read_text() if settings_file.exists() else None
    assert after == before
