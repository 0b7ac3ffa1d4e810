"""The chat session: streaming, cancelling, and keeping the conversation inside the
model's context — through the real canister wasm (the CLI fixture: vocab 50257, n_ctx 128)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gpt2_chat.client.canister import Gpt2Canister, Sampling
from gpt2_chat.client.chat import ChatSettings, Conversation, _held, _stop_index
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
    result = chat.send("Hello there", pieces.append)
    assert "".join(pieces) == result.text
    assert len(result.token_ids) <= 12 and result.stop in {"MaxTokens", "EndOfText", "StopString"}
    generate_calls = [c for c in result.calls if c.kind == "generate"]
    assert len(generate_calls) >= (len(result.token_ids) + 2) // 3
    assert canister.session_info(chat.session or 0).tokens == chat.context


def test_cancel_stops_between_calls(canister: Gpt2Canister) -> None:
    chat = conversation(canister, max_new_tokens=40, tokens_per_call=2)
    cancel = threading.Event()
    result = chat.send("Tell me", lambda _text: cancel.set(), cancel)
    assert result.stop in {"Cancelled", "StopString", "EndOfText"}
    if result.stop == "Cancelled":
        assert len([c for c in result.calls if c.kind == "generate"]) <= 2
    assert canister.session_info(chat.session or 0).position == len(chat.context)


def test_old_turns_are_dropped_to_stay_in_context(canister: Gpt2Canister) -> None:
    chat = conversation(canister, max_new_tokens=20, tokens_per_call=20)
    lengths = []
    for turn in range(8):
        chat.send(f"This is turn number {turn} of a long conversation about nothing", None)
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
