"""The chat session: streaming, cancelling, and keeping the conversation inside the
model's context — through the real canister wasm (the CLI fixture: vocab 50257, n_ctx 128)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from gpt2_chat.client.canister import Gpt2Canister, Sampling
from gpt2_chat.client.chat import (
    ChatSettings,
    Conversation,
    Trimmed,
    TurnEvents,
    _held,
    _stop_index,
)
from gpt2_chat.client.prepare import prepare
from gpt2_chat.client.tokenizer import Gpt2Tokenizer
from tests.support import CLI_FIXTURE, OpenCanister, upload


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("model") / "model.safetensors"
    return Path(prepare(str(CLI_FIXTURE), out).path).read_bytes()


@pytest.fixture
def canister(open_canister: OpenCanister, model_file: bytes) -> Gpt2Canister:
    c = open_canister()
    upload(c, model_file)
    return c


def conversation(canister: Gpt2Canister, **kw: int) -> Conversation:
    settings = ChatSettings(sampling=Sampling(temperature=0.8, top_k=40, seed=3), **kw)
    return Conversation(canister, Gpt2Tokenizer(), settings)


def test_a_reply_streams_in_pieces_that_add_up(canister: Gpt2Canister) -> None:
    chat = conversation(canister, max_new_tokens=12, tokens_per_call=3)
    pieces: list[str] = []
    result = chat.send("Hello there", TurnEvents(text=pieces.append))
    assert "".join(pieces) == result.text
    assert len(result.token_ids) <= 12 and result.stop in {"MaxTokens", "EndOfText", "StopString"}
    generate_calls = [c for c in result.calls if c.kind == "generate"]
    assert len(generate_calls) >= (len(result.token_ids) + 2) // 3
    assert canister.session_info(chat.session or 0).tokens == chat.context


def test_cancel_stops_between_calls(canister: Gpt2Canister) -> None:
    chat = conversation(canister, max_new_tokens=40, tokens_per_call=2)
    cancel = threading.Event()
    result = chat.send("Tell me", TurnEvents(text=lambda _text: cancel.set()), cancel)
    assert result.stop in {"Cancelled", "StopString", "EndOfText"}
    if result.stop == "Cancelled":
        assert len([c for c in result.calls if c.kind == "generate"]) <= 2
    assert canister.session_info(chat.session or 0).position == len(chat.context)


def test_old_turns_are_dropped_to_stay_in_context(canister: Gpt2Canister) -> None:
    chat = conversation(canister, max_new_tokens=20, tokens_per_call=20)
    lengths = []
    for turn in range(8):
        chat.send(f"This is turn number {turn} of a long conversation about nothing")
        lengths.append(len(chat.context))
        assert len(chat.context) <= 128
        info = canister.session_info(chat.session or 0)
        assert info.tokens == chat.context  # the canister's cache mirrors the client
    text = chat.tokenizer.decode(chat.context)
    assert "turn number 7" in text and "turn number 0" not in text  # oldest turns went
    assert max(lengths) <= 128 and lengths[-1] >= lengths[1]


def test_a_reply_that_fills_the_context_ends_with_its_prediction(canister: Gpt2Canister) -> None:
    chat = conversation(canister, max_new_tokens=30, tokens_per_call=4)
    prompt = "word" + " word" * 119
    assert len(chat.tokenizer.encode(prompt)) == 120
    result = chat.complete(prompt)
    if result.stop != "EndOfText":
        # 8 tokens fill the 128 positions; the 9th is the full context's prediction.
        assert result.stop == "ContextFull" and len(result.token_ids) == 9
    info = canister.session_info(chat.session or 0)
    assert info.tokens == chat.context and len(chat.context) <= 128


def test_a_prompt_longer_than_the_context_is_refused(canister: Gpt2Canister) -> None:
    chat = conversation(canister)
    with pytest.raises(ValueError, match="the model's context holds 128"):
        chat.complete("word " * 200)


def test_stop_strings_cut_the_reply_and_hold_back_partial_matches() -> None:
    assert _stop_index("Sure!\nUser: hi") == 5
    assert _stop_index("no stop here") is None
    assert _held("answer\nUs") == 3
    assert _held("answer\n") == 1
    assert _held("answer") == 0


class PrefillInSteps:
    """Makes every prefill call read at most `step` tokens, as a big model's budget would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, step: int) -> None:
        self.calls = 0
        original = Gpt2Canister.session_prefill

        def prefill(c: Gpt2Canister, session: int, position: int, tokens: list[int], *a: Any):
            self.calls += 1
            return original(c, session, position, tokens[:step], *a)

        monkeypatch.setattr(Gpt2Canister, "session_prefill", prefill)


def test_outgrowing_the_context_drops_to_half_says_so_and_reads_with_progress(
    canister: Gpt2Canister, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = conversation(canister, max_new_tokens=12, tokens_per_call=12)
    PrefillInSteps(monkeypatch, 8)
    trims: list[tuple[int, Trimmed]] = []
    readings: list[tuple[int, int]] = []
    for turn in range(14):
        readings.clear()
        events = TurnEvents(
            trimmed=lambda t, turn=turn: trims.append((turn, t)),
            reading=lambda done, total: readings.append((done, total)),
        )
        chat.send(f"Turn {turn}: a few more words about the weather today", events)
        assert len(chat.tokens) <= 128
        assert canister.session_info(chat.session or 0).tokens == chat.context == chat.tokens
        if trims and trims[-1][0] == turn:
            # The kept turns are read again in steps, each reported: N/M up to M/M.
            total = readings[-1][1]
            assert total > trims[-1][1].kept and readings[-1][0] == total
            assert [d for d, _ in readings] == sorted({d for d, _ in readings})
    assert trims, "the conversation never outgrew the context"
    for _, trim in trims:
        assert trim.turns >= 1 and trim.tokens > 0 and trim.kept <= 64  # at most half
    # Dropping to half leaves room: a rebuild is turns away, not at every turn.
    turns = [turn for turn, _ in trims]
    assert all(b - a >= 2 for a, b in zip(turns, turns[1:], strict=False)), turns


def test_escape_while_the_context_is_read_again_stops_between_calls(
    canister: Gpt2Canister, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = conversation(canister, max_new_tokens=40, tokens_per_call=40)
    chat.send("Hello")
    chat.send("Tell me about the weather today and tomorrow, please")
    steps = PrefillInSteps(monkeypatch, 4)
    cancel = threading.Event()
    before = steps.calls
    reading: list[int] = []

    def read(done: int, total: int) -> None:
        reading.append(done)
        if len(reading) == 3:  # 0 before the first call, then after each: stop after two
            cancel.set()

    result = chat.send("And the day after?", TurnEvents(reading=read), cancel)
    assert result.stop == "Cancelled" and result.token_ids == []
    assert steps.calls - before == 2  # no prefill call after the cancel
    assert canister.session_info(chat.session or 0).tokens == chat.context
    # The next turn goes on from what the cache holds.
    monkeypatch.undo()
    chat.send("Hello again")
    assert canister.session_info(chat.session or 0).tokens == chat.context == chat.tokens


def test_a_resumed_conversation_reuses_its_session_or_reads_its_tokens_again(
    canister: Gpt2Canister,
) -> None:
    first = conversation(canister, max_new_tokens=8)
    first.send("Hello there")
    saved = (list(first.tokens), list(first.turn_starts), first.session)

    still_there = conversation(canister, max_new_tokens=8)
    still_there.resume(*saved)
    readings: list[tuple[int, int]] = []
    still_there.send("Again", TurnEvents(reading=lambda d, t: readings.append((d, t))))
    assert still_there.session == first.session
    assert readings[-1][1] < 20  # only the new turn was read
    assert still_there.tokens[: len(saved[0])] == saved[0]

    first.reset()  # the canister's cache is gone
    gone = conversation(canister, max_new_tokens=8)
    gone.resume(*saved)
    readings.clear()
    gone.send("Again", TurnEvents(reading=lambda d, t: readings.append((d, t))))
    assert gone.session != saved[2]
    assert readings[-1][1] > len(saved[0])  # the whole saved conversation, read again
    assert gone.tokens[: len(saved[0])] == saved[0]
    assert canister.session_info(gone.session or 0).tokens == gone.context
