"""Saved chats in the app (chat, quit, relaunch, reopen, continue: with the canister's cache
still there and gone), the history list, new chat, the help screen, the transcript's
scrolling and typing into the message box."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input

from gpt2_chat.app.chat_view import ChatMessage
from gpt2_chat.app.confirm import ConfirmScreen
from gpt2_chat.app.help_screen import HelpScreen
from gpt2_chat.app.history_screen import HistoryScreen, RenameScreen
from gpt2_chat.client.canister import Gpt2Canister
from gpt2_chat.client.history import ChatHistory
from gpt2_chat.client.upload import upload_model
from gpt2_chat.connect import open_backend
from gpt2_chat.settings import Settings
from tests.app.helpers import RecordingApp, connected, run, shown, wait_for

SIZE = (80, 24)


def transcript(app: RecordingApp) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in app.query(ChatMessage) if m.role != "note"]


async def say(pilot: Any, app: RecordingApp, text: str) -> None:
    assert app.query_one("#prompt", Input).has_focus
    await pilot.press(*text, "enter")
    await wait_for(pilot, lambda: not app.chat_view.busy, f"the reply to {text!r}")


async def first_chat(pilot: Any, app: RecordingApp) -> None:
    await connected(pilot)
    await say(pilot, app, "Hello there")
    await say(pilot, app, "How are you")


async def reopen_and_continue(pilot: Any, app: RecordingApp) -> list[tuple[int, int]]:
    """Opens the saved chat from the list, sends one more message; the reading progress."""
    await connected(pilot)
    await pilot.press("ctrl+l")
    await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "the saved chats")
    table = app.screen.query_one(DataTable)
    assert table.row_count == 1
    assert "Hello there" in str(table.get_row_at(0))
    await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, HistoryScreen), "the chat")
    assert [r for r, _ in transcript(app)] == ["user", "model", "user", "model"]
    assert transcript(app)[0] == ("user", "Hello there")
    readings: list[tuple[int, int]] = []
    original = app.chat_view._reading

    def record(done: int, total: int) -> None:
        readings.append((done, total))
        original(done, total)

    app.chat_view._reading = record  # type: ignore[method-assign]
    await say(pilot, app, "And then")
    assert [r for r, _ in transcript(app)] == ["user", "model"] * 3
    return readings


def test_a_chat_survives_a_restart(loaded: Path, workdir: Path) -> None:
    """The embedded runtime starts with a fresh heap (an upgrade): the sessions are gone,
    so the reopened chat is read into a new one."""
    (workdir / "settings.json").write_text('{"max_new_tokens": 8}')
    first = RecordingApp()

    async def before() -> None:
        async with first.run_test(size=SIZE) as pilot:
            await first_chat(pilot, first)

    run(before())
    saved = ChatHistory().load(1)
    assert [m.role for m in saved.messages] == ["user", "model", "user", "model"]
    assert saved.session is not None and saved.summary.origin.model == "GPT-2 2×16 F32"
    assert saved.sampling["max_new_tokens"] == 8 and saved.tokens

    second = RecordingApp()

    async def after() -> None:
        async with second.run_test(size=SIZE) as pilot:
            readings = await reopen_and_continue(pilot, second)
            conversation = second.chat_view.conversation
            assert conversation is not None
            assert readings[-1][1] > len(saved.tokens)  # the whole chat, read again
            assert conversation.tokens[: len(saved.tokens)] == saved.tokens
            assert second.messages("error") == []

    run(after())
    assert len(ChatHistory().load(1).messages) == 6


def test_a_reopened_chat_reuses_the_session_the_canister_still_holds(
    loaded: Path, workdir: Path
) -> None:
    (workdir / "settings.json").write_text('{"max_new_tokens": 8}')

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await first_chat(pilot, app)
            conversation = app.chat_view.conversation
            assert conversation is not None
            session = conversation.session
            await pilot.press("ctrl+n")
            readings = await reopen_and_continue(pilot, app)
            conversation = app.chat_view.conversation
            assert conversation is not None and conversation.session == session
            assert readings[-1][1] < 20  # only the new message was read
            assert app.messages("error") == []

    run(scenario())


def test_a_chat_continues_in_a_canister_without_its_cache(
    loaded: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "settings.json").write_text('{"max_new_tokens": 8}')
    first = RecordingApp()

    async def before() -> None:
        async with first.run_test(size=SIZE) as pilot:
            await first_chat(pilot, first)

    run(before())
    saved = ChatHistory().load(1)
    # A new embedded state dir with the same model: the session is not there.
    shutil.copytree(workdir / "state" / "cache", workdir / "state2" / "cache")
    backend = open_backend(Settings(state_dir=str(workdir / "state2")))
    try:
        upload_model(Gpt2Canister(backend), loaded)
    finally:
        backend.close()
    monkeypatch.setenv("GPT2_CHAT_STATE_DIR", "state2")
    second = RecordingApp()

    async def after() -> None:
        async with second.run_test(size=SIZE) as pilot:
            readings = await reopen_and_continue(pilot, second)
            conversation = second.chat_view.conversation
            assert conversation is not None
            assert readings[-1][1] > len(saved.tokens)  # the whole chat was read again
            assert conversation.tokens[: len(saved.tokens)] == saved.tokens
            assert second.messages("error") == []

    run(after())


def test_saved_chats_are_renamed_and_deleted_after_a_question(loaded: Path, workdir: Path) -> None:
    (workdir / "settings.json").write_text('{"max_new_tokens": 4}')

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await say(pilot, app, "First chat")
            await pilot.press("ctrl+n")
            assert not isinstance(app.screen, ConfirmScreen)  # saved: nothing to ask
            assert app.messages()[-1] == "New chat · the last one is saved (Ctrl+L)"
            await say(pilot, app, "Second chat")
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "the list")
            table = app.screen.query_one(DataTable)
            assert table.row_count == 2  # the latest first
            assert "Second chat" in str(table.get_row_at(0))
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, RenameScreen), "the rename")
            app.screen.query_one(Input).value = ""
            await pilot.press(*"Greetings", "enter")
            await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "the list")
            assert "Greetings" in str(app.screen.query_one(DataTable).get_row_at(0))
            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("n")
            await pilot.pause()
            assert app.screen.query_one(DataTable).row_count == 2
            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("y")
            await pilot.pause()
            assert [c.label for c in ChatHistory().summaries()] == ["First chat"]
            assert app.chat_view.chat_id is None  # the deleted chat was on screen
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, HistoryScreen)

    run(scenario())


def test_new_chat_while_replying_asks_first(
    loaded: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "settings.json").write_text('{"max_new_tokens": 50, "tokens_per_call": 1}')
    held = threading.Event()
    go_on = threading.Event()
    original = Gpt2Canister.session_generate

    def session_generate(self: Gpt2Canister, *args: Any, **kwargs: Any) -> Any:
        held.set()
        go_on.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Gpt2Canister, "session_generate", session_generate)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press(*"Tell me a story", "enter")
            await wait_for(pilot, held.is_set, "the reply")
            await pilot.press("ctrl+n")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("n")
            await pilot.pause()
            assert app.chat_view.busy and transcript(app)[0] == ("user", "Tell me a story")
            await pilot.press("ctrl+n")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("y")
            go_on.set()
            await pilot.pause()
            assert transcript(app) == [] and app.chat_view.chat_id is None
            assert [c.label for c in ChatHistory().summaries()] == ["Tell me a story"]
            # The stopped reply still ends up in its own chat, not in the new one.
            await wait_for(
                pilot, lambda: len(ChatHistory().load(1).messages) == 2, "the reply saved"
            )
            assert ChatHistory().load(1).messages[1].note == "stopped"

    run(scenario())


def test_help_lists_the_keys_of_the_tab_and_esc_closes_it(loaded: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("question_mark")  # in the empty message box
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
            assert isinstance(app.screen, HelpScreen)
            keys = dict(app.screen.keys)
            for key, what in (("^n", "New chat"), ("^l", "Saved chats"), ("^y", "Copy reply"),
                              ("↑", "Earlier message"), ("^q", "Quit"), ("f2", "Model")):  # fmt: skip
                assert keys.get(key) == what, (key, keys)
            assert "Move cursor left" not in keys.values()  # not the text field's own keys
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen)
            assert app.query_one("#prompt", Input).value == ""  # the ? was not typed
            await pilot.press("f2")
            await pilot.pause()
            app.action_help()
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen) and app.screen.tab == "model"
            assert "Browse" in dict(app.screen.keys).values()

    run(scenario())


def test_typing_in_the_transcript_goes_to_the_box_and_up_recalls_messages(
    loaded: Path, workdir: Path
) -> None:
    (workdir / "settings.json").write_text('{"max_new_tokens": 2}')

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            prompt = app.query_one("#prompt", Input)
            await say(pilot, app, "one")
            await say(pilot, app, "two")
            app.chat_view.transcript.focus()
            await pilot.pause()
            await pilot.press(*"hi")
            assert prompt.has_focus and prompt.value == "hi"
            await pilot.press("up")
            assert prompt.value == "two"
            await pilot.press("up", "up")
            assert prompt.value == "one"
            await pilot.press("down")
            assert prompt.value == "two"
            await pilot.press("down")
            assert prompt.value == "hi"  # the text being typed comes back

    run(scenario())


def test_the_transcript_stays_where_the_reader_scrolled_and_follows_after_a_resize(
    loaded: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "settings.json").write_text('{"max_new_tokens": 30, "tokens_per_call": 5}')
    held = threading.Event()
    go_on = threading.Event()
    original = Gpt2Canister.session_generate
    hold = threading.Event()

    def session_generate(self: Gpt2Canister, *args: Any, **kwargs: Any) -> Any:
        if hold.is_set():
            held.set()
            go_on.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Gpt2Canister, "session_generate", session_generate)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            view = app.chat_view
            for n in range(3):
                await say(pilot, app, f"Message {n}")
            assert view.transcript.max_scroll_y > 5
            hold.set()
            await pilot.press(*"Last one", "enter")
            await wait_for(pilot, held.is_set, "the reply")
            view.transcript.focus()
            await pilot.press("home")  # the reader scrolls up to read
            await pilot.pause()
            assert view.transcript.scroll_y == 0
            go_on.set()
            await wait_for(pilot, lambda: not view.busy, "the reply")
            await pilot.pause()
            assert view.transcript.scroll_y == 0  # not yanked to the bottom
            await pilot.press("end")
            await pilot.pause()
            await pilot.resize_terminal(60, 14)
            await pilot.pause(0.2)
            transcript = view.transcript
            assert transcript.scroll_y == transcript.max_scroll_y > 0  # the latest reply
            assert "tok/s" in shown(app, "#chat-status")

    run(scenario())


def test_after_switching_canisters_the_chat_goes_on_in_the_new_one(
    loaded: Path, workdir: Path
) -> None:
    (workdir / "settings.json").write_text('{"max_new_tokens": 8}')
    shutil.copytree(workdir / "state" / "cache", workdir / "state2" / "cache")
    backend = open_backend(Settings(state_dir=str(workdir / "state2")))
    try:
        upload_model(Gpt2Canister(backend), loaded)
    finally:
        backend.close()

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await first_chat(pilot, app)
            first = app.chat_view.conversation
            assert first is not None
            before = list(first.tokens)
            app.store.overrides.pop("state_dir")  # as if started without GPT2_CHAT_STATE_DIR
            app.apply_settings(replace(app.settings, state_dir="state2"))
            await connected(pilot)
            notes = [m.text for m in app.query(ChatMessage) if m.role == "note"]
            assert notes[-1] == "The backend changed: the next message continues this chat there."
            await say(pilot, app, "Still there?")
            second = app.chat_view.conversation
            assert second is not None and second is not first
            assert second.tokens[: len(before)] == before  # the chat, read into the new one
            assert [r for r, _ in transcript(app)] == ["user", "model"] * 3
            assert len(ChatHistory().load(1).messages) == 6
            assert ChatHistory().load(1).summary.origin.canister.endswith("state2")

    run(scenario())
