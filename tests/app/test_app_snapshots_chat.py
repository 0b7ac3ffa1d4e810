"""SVG snapshots at 80x24 of the chat side's screens: the saved chats list and the help.
Deterministic: the saved chats are written with a fixed clock in UTC. Update after an
intended change with `--snapshot-update` and look at the SVGs before committing them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from gpt2_chat.app.help_screen import HelpScreen
from gpt2_chat.app.history_screen import HistoryScreen
from gpt2_chat.client.chat import ChatSettings
from gpt2_chat.client.history import ChatHistory, ChatOrigin, SavedMessage
from tests.app.helpers import RecordingApp, connected, wait_for
from tests.app.test_app_snapshots import settle

SnapCompare = Callable[..., bool]
CHATS = (
    ("Hello, who are you?", "I am GPT-2."),
    ("Tell me a story about a canister on the Internet Computer", "Once upon a time"),
    ("What is the weather like?", ""),
)


@pytest.fixture
def saved_chats(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    clock = iter(range(1_800_000_000, 1_800_100_000, 3600))
    monkeypatch.setattr("gpt2_chat.client.history.time.time", lambda: float(next(clock)))
    history = ChatHistory()
    origin = ChatOrigin("embedded", "state", "GPT-2 12×768 INT8", "ab" * 32)
    for question, answer in CHATS:
        chat = history.create(origin, ChatSettings())
        history.add_message(chat, SavedMessage("user", question))
        history.add_message(chat, SavedMessage("model", answer, "" if answer else "stopped"))
    history.rename(2, "A story")


def test_saved_chats_screen(snap_compare: SnapCompare, saved_chats: None, loaded: Path) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await connected(pilot)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "the list")
        await settle(pilot)

    assert snap_compare(RecordingApp(), run_before=run_before)


def test_help_screen(snap_compare: SnapCompare, loaded: Path) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await connected(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        await settle(pilot)

    assert snap_compare(RecordingApp(), run_before=run_before)
