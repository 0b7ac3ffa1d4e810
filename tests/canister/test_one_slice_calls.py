"""On a replica the chat sizes each call to one DTS slice (client/dts.py). Checked here with
the real canister and the GPT-2 124M shape, counted by the embedded runtime's metering:
every prefill and generate call of a chat turn must take one slice."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt2_chat.client.chat import ChatSettings, Conversation
from gpt2_chat.client.dts import SLICE_INSTRUCTIONS, slices
from gpt2_chat.client.prepare import prepare_random
from gpt2_chat.client.tokenizer import Gpt2Tokenizer
from gpt2_chat.client.upload import upload_model
from tests.support import OpenCanister

PROMPT = "The history of the city is long and full of stories. " * 8


@pytest.mark.parametrize("dtype", ["int8", "f32"])
def test_each_call_of_a_turn_fits_one_slice_with_the_124m_shape(
    open_canister: OpenCanister, tmp_path: Path, dtype: str
) -> None:
    model = tmp_path / f"gpt2-{dtype}.safetensors"
    prepare_random("gpt2", model, dtype)
    canister = open_canister()
    upload_model(canister, model)
    settings = ChatSettings(max_new_tokens=24, tokens_per_call=64, time_sliced=True)
    chat = Conversation(canister, Gpt2Tokenizer(), settings)
    first = chat.complete(PROMPT)
    second = chat.complete(" And then")  # sized by the first turn's measured token cost
    calls = first.calls + second.calls
    assert len(first.prompt_ids) > 80 and len(second.token_ids) == 24
    assert {c.kind for c in calls} == {"prefill", "generate"}
    assert all(slices(c.instructions) == 1 for c in calls), [c.instructions for c in calls]
    # and they are not needlessly small: a prefill call uses most of its slice
    assert max(c.instructions for c in calls if c.kind == "prefill") > SLICE_INSTRUCTIONS // 2
