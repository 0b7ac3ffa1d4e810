"""What the app says about its connection: never 'not connected' while connecting, a
canister that cannot be reached is shown as such (not a green dot), quitting while the
backend opens is immediate, and the model in use stays readable at 80 columns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gpt2_chat.app import app as app_module
from gpt2_chat.app.chat_view import ChatView
from gpt2_chat.client.canister import Gpt2Canister, ModelInfo
from gpt2_chat.errors import BackendError
from gpt2_chat.settings import Settings
from tests.app.helpers import RecordingApp, connected, run, shown, wait_for

SIZE = (80, 24)


def test_the_status_never_says_not_connected_while_connecting(
    loaded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statuses: list[str] = []
    original = ChatView._status

    def record(view: ChatView, text: str) -> None:
        statuses.append(text)
        original(view, text)

    monkeypatch.setattr(ChatView, "_status", record)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            assert statuses[0] == "connecting…"
            assert "not connected" not in statuses

    run(scenario())


def test_a_canister_that_cannot_be_reached_is_not_a_green_dot(
    loaded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a replica agent does when nothing answers: it is created, every call fails.
    def unreachable(canister: Gpt2Canister) -> ModelInfo:
        raise BackendError("cannot reach http://127.0.0.1:4943: connection refused")

    monkeypatch.setattr(Gpt2Canister, "model_info", unreachable)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: not app.connecting, "the connection attempt")
            await pilot.pause()
            bar = shown(app, "#connection-bar")
            assert bar.startswith("✗ unreachable: embedded runtime"), bar
            assert "●" not in bar
            assert shown(app, "#chat-status") == (
                "cannot reach the canister: cannot reach http://127.0.0.1:4943: connection refused"
            )
            assert len(app.messages("error")) == 1

    run(scenario())


def test_quitting_while_the_backend_opens_is_immediate(
    loaded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opening = threading.Event()
    original = app_module.open_connection

    def slow_open(settings: Settings) -> app_module.Connection:
        opening.set()
        time.sleep(5)  # compiling the wasm and reloading a big model take seconds
        return original(settings)

    monkeypatch.setattr(app_module, "open_connection", slow_open)

    async def scenario() -> float:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, opening.is_set, "the backend opening")
            assert "connecting" in shown(app, "#connection-bar")
            started = time.monotonic()
            await pilot.press("ctrl+q")
        return time.monotonic() - started

    import asyncio

    assert asyncio.run(scenario()) < 2.0  # it waited for the open (5 s) before the fix
    # The open finished later finds the app gone and closes what it opened: the state dir
    # is free for the next process.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            app_module.open_connection(Settings(state_dir="state")).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        raise AssertionError("the state dir stayed locked")


def test_the_model_and_network_stay_readable_at_80_columns(loaded: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            bar = shown(app, "#connection-bar")
            assert bar.startswith("● GPT-2 2×16 F32 · sha "), bar
            assert len(bar.split(" · embedded runtime")[0]) < 40  # the model comes first
            assert "embedded runtime (not a replica)" in bar

    run(scenario())


def test_a_bug_while_opening_the_backend_ends_the_app_with_its_traceback(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(settings: Settings) -> app_module.Connection:
        raise RuntimeError("a bug in the backend")

    monkeypatch.setattr(app_module, "open_connection", broken)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: not app.is_running, "the app to stop", 10)

    with pytest.raises(RuntimeError, match="a bug in the backend"):
        run(scenario())
