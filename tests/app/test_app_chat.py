"""The chat tab through Textual's pilot: a reply streams in, the status line fills, Esc stops
a reply between calls, new chat, copy, sampling settings apply to the next turn."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Input

from gpt2_chat.app.chat_view import ChatMessage, TurnStats
from gpt2_chat.client.canister import CanisterError, Gpt2Canister
from tests.app.helpers import RecordingApp, connected, run, shown, wait_for

SIZE = (100, 30)


def messages(app: RecordingApp) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in app.query(ChatMessage) if m.role != "note"]


async def say(pilot: Any, app: RecordingApp, text: str) -> None:
    prompt = app.query_one("#prompt", Input)
    assert prompt.has_focus
    await pilot.press(*text, "enter")


def test_reply_streams_and_the_status_line_fills(loaded: Path, workdir: Path) -> None:
    # One token per call: the reply arrives in many pieces.
    (workdir / "settings.json").write_text('{"max_new_tokens": 24, "tokens_per_call": 1}')

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            assert "temperature 0.7" in shown(app, "#chat-status")
            assert "context 0/128 · temperature 0.7 · top-k 40" in shown(app, "#chat-status")
            pieces: list[str] = []
            original = app.chat_view._piece

            def record(reply: ChatMessage, piece: str) -> None:
                pieces.append(piece)
                original(reply, piece)

            app.chat_view._piece = record  # type: ignore[method-assign]
            await say(pilot, app, "Hello there")
            await wait_for(pilot, lambda: not app.chat_view.busy, "the reply")
            (user, reply) = messages(app)
            assert user == ("user", "Hello there")
            assert reply[0] == "model" and reply[1].strip()
            assert len(pieces) > 1 and "".join(pieces) == reply[1]  # streamed, call by call
            status = shown(app, "#chat-status")
            assert "tok/s" in status and "calls" in status and "instr/tok" in status
            stats = app.chat_view.last_stats
            assert stats is not None and stats.calls >= 2 and stats.n_ctx == 128
            assert f"context {stats.context}/128" in status
            assert stats.instructions_per_token and stats.instructions_per_token > 0
            assert app.query_one("#prompt", Input).value == ""
            assert app.messages("error") == []

    run(scenario())


def test_escape_stops_a_reply_between_calls(
    loaded: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "settings.json").write_text('{"max_new_tokens": 100, "tokens_per_call": 1}')
    first_call_done = threading.Event()
    go_on = threading.Event()
    original = Gpt2Canister.session_generate
    calls = []

    def session_generate(self: Gpt2Canister, *args: Any, **kwargs: Any) -> Any:
        reply = original(self, *args, **kwargs)
        calls.append(reply)
        if len(calls) == 2:  # hold the reply after its second call until Esc was pressed
            first_call_done.set()
            go_on.wait(10)
        return reply

    monkeypatch.setattr(Gpt2Canister, "session_generate", session_generate)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await say(pilot, app, "Tell me a long story")
            await wait_for(pilot, first_call_done.is_set, "the second generate call")
            await pilot.pause()
            assert "Esc stops" in shown(app, "#chat-status")
            footer_keys = [
                b.key for (_, b, enabled, _) in app.screen.active_bindings.values() if enabled
            ]
            assert "escape" in footer_keys
            await pilot.press("escape")
            go_on.set()
            await wait_for(pilot, lambda: not app.chat_view.busy, "the reply to stop")
            reply = [m for m in app.query(ChatMessage) if m.role == "model"][-1]
            assert reply.note == "stopped"
            assert len(calls) == 2  # no call after Esc
            assert app.chat_view.last_stats is not None
            assert app.chat_view.last_stats.tokens == 2
            # The conversation goes on after a stop.
            monkeypatch.setattr(Gpt2Canister, "session_generate", original)
            await say(pilot, app, "Go on")
            await wait_for(pilot, lambda: not app.chat_view.busy, "the next reply")
            assert [r for r, _ in messages(app)] == ["user", "model", "user", "model"]

    run(scenario())


def test_new_chat_copy_and_sampling_settings(loaded: Path, workdir: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("ctrl+y")
            assert app.messages("warning") == ["There is no reply to copy yet"]
            await say(pilot, app, "Hi")
            await wait_for(pilot, lambda: not app.chat_view.busy, "the reply")
            reply = messages(app)[-1][1]
            await pilot.press("ctrl+y")
            assert app.clipboard == reply
            first = app.chat_view.conversation
            assert first is not None and first.session is not None

            # The next turn uses the settings in force: greedy now.
            settings = app.settings
            settings.temperature = 0.0
            settings.max_new_tokens = 5
            await say(pilot, app, "Again")
            await wait_for(pilot, lambda: not app.chat_view.busy, "the second reply")
            assert first.settings.sampling.temperature == 0.0
            assert app.chat_view.last_stats is not None
            assert app.chat_view.last_stats.tokens <= 5

            await pilot.press("ctrl+n")
            assert messages(app) == []
            assert app.chat_view.conversation is None
            assert "context 0/128" in shown(app, "#chat-status")
            assert first.session is not None  # kept in the canister: the chat is saved
            await say(pilot, app, "Hello again")
            await wait_for(pilot, lambda: not app.chat_view.busy, "a reply in the new chat")
            second = app.chat_view.conversation
            assert second is not None and second is not first
            assert app.chat_view.last_stats is not None
            assert app.chat_view.last_stats.context < 40  # only this chat's tokens
            assert app.messages("error") == []

    run(scenario())


def test_chat_without_a_model_says_how_to_get_one(workdir: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            assert "no model is loaded" in shown(app, "#chat-status")
            await say(pilot, app, "Hello")
            assert app.messages("error") == [
                "no model is loaded in the canister: upload one on the Model tab (F2)"
            ]
            assert messages(app) == []
            assert app.query_one("#prompt", Input).value == "Hello"  # nothing lost

    run(scenario())


def test_text_selection_and_ctrl_c_copy_plain_text(loaded: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await say(pilot, app, "Hi")
            await wait_for(pilot, lambda: not app.chat_view.busy, "the reply")
            reply = [m for m in app.query(ChatMessage) if m.role == "model"][-1]
            reply.text_select_all()
            await pilot.pause()
            assert app.query_one("#prompt", Input).has_focus  # Ctrl+C still reaches it
            await pilot.press("ctrl+c")
            assert app.clipboard == f"GPT-2\n{reply.text}"

    run(scenario())


def test_a_prompt_too_long_for_the_context_is_refused_and_kept(loaded: Path) -> None:
    long_text = " ".join(["word"] * 200)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            prompt = app.query_one("#prompt", Input)
            prompt.value = long_text
            await pilot.press("enter")
            await wait_for(pilot, lambda: not app.chat_view.busy, "the refusal")
            errors = app.messages("error")
            assert len(errors) == 1 and "the model's context holds 128" in errors[0]
            assert prompt.value == long_text  # given back to edit
            prompt.value = "Short"
            await pilot.press("enter")
            await wait_for(pilot, lambda: not app.chat_view.busy, "a reply")
            assert messages(app)[-1][0] == "model" and messages(app)[-1][1]

    run(scenario())


def test_command_palette_lists_and_runs_the_apps_commands(loaded: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for title in ("Chat tab", "Model tab", "Replica tab", "Settings tab", "New chat",
                          "Copy last reply", "Upload model", "Browse for a model",
                          "Start local network", "Deploy the canister", "Save settings",
                          "Reconnect", "Keys", "Quit"):  # fmt: skip
                assert title in titles, title
            await pilot.press("ctrl+p")
            await pilot.press(*"Settings tab")

            def first_hit() -> str:
                if not isinstance(app.screen, CommandPalette):
                    return ""
                hits = app.screen.query_one(CommandList)
                if hits.highlighted is None or not hits.option_count:
                    return ""
                return str(hits.get_option_at_index(hits.highlighted).prompt)

            await wait_for(pilot, lambda: "Settings tab" in first_hit(), "the palette's hit")
            await pilot.press("enter")
            await wait_for(
                pilot,
                lambda: app.query_one("#tabs").active == "settings",  # type: ignore[attr-defined]
                "the settings tab",
            )

    run(scenario())


def test_outgrowing_the_context_says_what_was_dropped_shows_progress_and_esc_stops(
    loaded: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "settings.json").write_text('{"max_new_tokens": 30, "tokens_per_call": 30}')
    original = Gpt2Canister.session_prefill
    armed = threading.Event()
    reached = threading.Event()
    release = threading.Event()
    after_release: list[int] = []
    armed_calls: list[int] = []

    def prefill(c: Gpt2Canister, session: int, position: int, tokens: list[int], *a: Any) -> Any:
        # Four tokens a call, as a big model's budget would; hold the second call of the
        # rebuild until the test pressed Esc.
        if armed.is_set():
            armed_calls.append(position)
            if len(armed_calls) == 2:
                reached.set()
                release.wait(10)
        if release.is_set():
            after_release.append(position)
        return original(c, session, position, tokens[:4], *a)

    monkeypatch.setattr(Gpt2Canister, "session_prefill", prefill)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            view = app.chat_view
            for turn in range(30):
                conversation = view.conversation
                if conversation is not None and len(conversation.tokens) + 16 + 30 > 128:
                    break
                await say(pilot, app, f"Turn {turn} about the weather")
                await wait_for(pilot, lambda: not view.busy, "a reply")
            assert conversation is not None and len(conversation.tokens) + 16 + 30 > 128
            armed.set()
            await say(pilot, app, "And now something else entirely")
            await wait_for(pilot, reached.is_set, "the context read again")
            await pilot.pause(0.1)
            notes = [m.text for m in app.query(ChatMessage) if m.role == "note"]
            assert any("the oldest" in n and "no longer in it" in n for n in notes), notes
            assert "reading the context 4/" in shown(app, "#chat-status")  # the first call
            await pilot.press("escape")
            release.set()
            await wait_for(pilot, lambda: not view.busy, "the rebuild to stop")
            assert after_release == armed_calls[1:]  # the held call ended; none after Esc
            assert [m for m in app.query(ChatMessage) if m.role == "model"][-1].note == "stopped"
            monkeypatch.setattr(Gpt2Canister, "session_prefill", original)
            await say(pilot, app, "Hello again")
            await wait_for(pilot, lambda: not view.busy, "a reply after the stop")
            assert view.last_stats is not None and view.last_stats.context <= 128
            assert app.messages("error") == []

    run(scenario())


def test_one_call_is_singular_and_a_failed_turn_clears_the_old_statistics(
    loaded: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "· 1 call ·" in str(TurnStats(1, 2.0, 1, 100.0, 10, 128))
    assert "· 2 calls ·" in str(TurnStats(1, 2.0, 2, 100.0, 10, 128))

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await say(pilot, app, "Hi")
            await wait_for(pilot, lambda: not app.chat_view.busy, "the reply")
            assert "tok/s" in shown(app, "#chat-status")

            def refuse(*args: Any, **kwargs: Any) -> Any:
                raise CanisterError("refused")

            monkeypatch.setattr(Gpt2Canister, "session_generate", refuse)
            await say(pilot, app, "Again")
            await wait_for(pilot, lambda: not app.chat_view.busy, "the failure")
            assert app.messages("error") == ["refused"]
            assert app.chat_view.last_stats is None
            assert "tok/s" not in shown(app, "#chat-status")

    run(scenario())


def test_ctrl_c_outside_a_text_field_says_how_to_quit_in_plain_text(loaded: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            app.chat_view.transcript.focus()
            await pilot.pause()
            await pilot.press("ctrl+c")
            await pilot.pause()
            assert app.messages() == ["Press Ctrl+Q to quit the app"]

    run(scenario())
