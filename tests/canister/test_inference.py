"""Generation through the real wasm: reference numerics, sessions, idempotent retries,
budgets, sampling, the seed's methods with dfx's exact Candid bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from icp_candid.candid import Types, decode
from icp_principal.principal import Principal
from safetensors.numpy import load_file

from gpt2_chat.client.canister import (
    AnonymousCaller,
    Gpt2Canister,
    PositionMismatch,
    Sampling,
    UnknownSession,
)
from tests.support import ENGINE_FIXTURES, OpenCanister, model_bytes, upload


def reference(name: str) -> dict[str, np.ndarray]:
    return load_file(ENGINE_FIXTURES / name / "reference.safetensors")


@pytest.fixture
def loaded(open_canister: OpenCanister) -> Gpt2Canister:
    c = open_canister()
    upload(c, model_bytes("small64"))
    return c


def test_session_greedy_equals_transformers(loaded: Gpt2Canister) -> None:
    ref = reference("small64")
    prompt = [int(t) for t in ref["prompt_ids"]]
    s = loaded.session_create(Sampling())
    assert loaded.session_prefill(s.id, 0, prompt).consumed == len(prompt)
    tokens: list[int] = []
    while len(tokens) < len(ref["greedy_ids"]):
        want = min(5, len(ref["greedy_ids"]) - len(tokens))
        reply = loaded.session_generate(s.id, len(prompt) + len(tokens), want)
        assert reply.instructions > 0
        tokens += reply.tokens
    assert tokens == [int(t) for t in ref["greedy_ids"]]
    assert loaded.model_inference(len(tokens), prompt) == tokens


def test_seed_methods_answer_dfx_candid_bytes(open_canister: OpenCanister) -> None:
    """The bytes `dfx canister call gpt2_backend ...` sends, built by hand from the spec."""
    c = open_canister()
    data = model_bytes("small64")
    # upload_model_bytes_chunks '(blob "...")': type table [vec nat8], one arg of type 0.
    for off in range(0, len(data), 1_000_000):
        chunk = data[off : off + 1_000_000]
        arg = b"DIDL\x01\x6d\x7b\x01\x00" + _uleb(len(chunk)) + chunk
        assert c.backend.update("upload_model_bytes_chunks", arg).data.startswith(b"DIDL")
    length = c.backend.query("upload_wasm_ref_cell_length", b"DIDL\x00\x00").data
    assert decode(length, Types.Nat64)[0]["value"] == len(data)
    c.backend.update("upload_wasm_ref_cell_to_stable", b"DIDL\x00\x00")
    c.backend.update("setup_model", b"DIDL\x00\x00")
    # model_inference '(14, vec {1; 2; 3})' typed by the .did as (nat8, vec int64).
    arg = b"DIDL\x01\x6d\x74\x02\x7b\x00\x0e\x03" + struct.pack("<3q", 1, 2, 3)
    reply = c.backend.update("model_inference", arg).data
    result = decode(reply, Types.Variant({"Ok": Types.Vec(Types.Int64), "Err": Types.Text}))
    ids = result[0]["value"]["Ok"]
    assert len(ids) == 14 and all(0 <= i < 512 for i in ids)
    assert ids == c.model_inference(14, [1, 2, 3])


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_generate_retry_is_idempotent_and_position_checked(loaded: Gpt2Canister) -> None:
    s = loaded.session_create(Sampling(temperature=1.0, seed=7))
    loaded.session_prefill(s.id, 0, [5, 6, 7])
    first = loaded.session_generate(s.id, 3, 4)
    again = loaded.session_generate(s.id, 3, 4)  # a retry of the same call
    assert again == first
    assert loaded.session_info(s.id).position == 3 + len(first.tokens)
    at = 3 + len(first.tokens)
    with pytest.raises(PositionMismatch) as wrong:
        loaded.session_generate(s.id, 5, 4)
    assert wrong.value.expected == at
    with pytest.raises(PositionMismatch):
        loaded.session_generate(s.id, 3, 2)  # not the same call: refused, not replayed


def test_sampling_is_reproducible_and_independent_of_call_size(loaded: Gpt2Canister) -> None:
    sampling = Sampling(temperature=0.9, top_k=40, top_p=0.95, seed=1234)

    def run(per_call: int) -> list[int]:
        s = loaded.session_create(sampling)
        loaded.session_prefill(s.id, 0, [9, 8, 7, 6])
        out: list[int] = []
        while len(out) < 12:
            out += loaded.session_generate(s.id, 4 + len(out), per_call).tokens
        loaded.session_delete(s.id)
        return out

    assert run(1) == run(4) == run(12)
    other = loaded.session_create(Sampling(temperature=0.9, top_k=40, top_p=0.95, seed=99))
    loaded.session_prefill(other.id, 0, [9, 8, 7, 6])
    assert loaded.session_generate(other.id, 4, 12).tokens != run(12)


def test_prefill_spans_calls_under_a_small_budget(loaded: Gpt2Canister) -> None:
    prompt = list(range(40))
    whole = loaded.session_create(Sampling())
    loaded.session_prefill(whole.id, 0, prompt)
    expected = loaded.session_generate(whole.id, 40, 6).tokens

    s = loaded.session_create(Sampling())
    calls, position = 0, 0
    while position < len(prompt):
        reply = loaded.session_prefill(s.id, position, prompt[position:], budget=10_000_000)
        assert 0 < reply.consumed < len(prompt)
        position = reply.position
        calls += 1
    assert calls > 2
    assert loaded.session_generate(s.id, 40, 6).tokens == expected


def test_generate_stops_at_the_budget_and_at_the_context_end(loaded: Gpt2Canister) -> None:
    s = loaded.session_create(Sampling())
    loaded.session_prefill(s.id, 0, [1, 2])
    one_token = loaded.session_generate(s.id, 2, 1).instructions
    reply = loaded.session_generate(s.id, 3, 50, budget=int(one_token * 3.5))
    assert reply.stop == "InstructionBudget" and 1 <= len(reply.tokens) <= 4
    position = reply.position
    while True:
        reply = loaded.session_generate(s.id, position, 100)
        position = reply.position
        if reply.stop != "MaxTokens":
            break
    assert reply.stop == "ContextFull" and position == 64
    # The full context's prediction ends the reply, outside the context: asking again at
    # the same position gives the same token, and the position does not move.
    final = reply.tokens[-1]
    again = loaded.session_generate(s.id, 64, 5)
    assert (again.tokens, again.stop, again.position) == ([final], "ContextFull", 64)
    assert len(loaded.session_info(s.id).tokens) == 64


def test_a_prompt_that_fills_the_context_still_gets_its_next_token(
    loaded: Gpt2Canister,
) -> None:
    s = loaded.session_create(Sampling())
    assert loaded.session_prefill(s.id, 0, list(range(1, 65))).position == 64
    reply = loaded.session_generate(s.id, 64, 10)
    assert (len(reply.tokens), reply.stop, reply.position) == (1, "ContextFull", 64)


def test_sessions_belong_to_their_principal(
    open_canister: OpenCanister, loaded: Gpt2Canister, stranger: Principal
) -> None:
    s = loaded.session_create(Sampling())
    loaded.session_prefill(s.id, 0, [1, 2, 3])
    other = open_canister(caller=stranger)
    for attempt in (
        lambda: other.session_info(s.id),
        lambda: other.session_prefill(s.id, 3, [4]),
        lambda: other.session_generate(s.id, 3, 1),
        lambda: other.session_truncate(s.id, 0),
        lambda: other.session_delete(s.id),
    ):
        with pytest.raises(UnknownSession) as unknown:
            attempt()
        assert unknown.value.session == s.id
    assert loaded.session_info(s.id).tokens == [1, 2, 3]
    anonymous = open_canister(caller=Principal.anonymous())
    with pytest.raises(AnonymousCaller):
        anonymous.session_create(Sampling())


def test_a_principal_keeps_at_most_four_sessions(loaded: Gpt2Canister) -> None:
    ids = [loaded.session_create(Sampling()).id for _ in range(5)]
    with pytest.raises(UnknownSession):
        loaded.session_info(ids[0])
    assert [loaded.session_info(i).id for i in ids[1:]] == ids[1:]


def test_truncate_rewinds_and_regenerates_the_same(loaded: Gpt2Canister) -> None:
    s = loaded.session_create(Sampling())
    loaded.session_prefill(s.id, 0, [3, 1, 4, 1, 5])
    first = loaded.session_generate(s.id, 5, 3).tokens
    assert loaded.session_truncate(s.id, 4).position == 4
    loaded.session_prefill(s.id, 4, [5])
    assert loaded.session_generate(s.id, 5, 3).tokens == first
