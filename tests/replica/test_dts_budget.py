"""On a replica every chat call fits one DTS slice (client/dts.py), for GPT-2 124M in int8
and f32, by the embedded runtime's measured instructions per token (docs/benchmarks.md) and
the canister's own budget rules (canister/backend/src/generation.rs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gpt2_chat.client.canister import GenerateReply, PrefillReply, Sampling
from gpt2_chat.client.chat import ChatSettings, Conversation
from gpt2_chat.client.dts import SLICE_INSTRUCTIONS, slices
from gpt2_chat.client.tokenizer import Gpt2Tokenizer

#: docs/benchmarks.md, GPT-2 124M: instructions per prompt token / per generated token.
MEASURED = {"f32": (147_000_000, 246_000_000), "int8": (51_000_000, 87_000_000)}
#: Per call on top of the tokens (argument decoding, reply, session bookkeeping): generous.
CALL_OVERHEAD = 20_000_000
DEFAULT_BUDGET = 30_000_000_000  # generation.rs DEFAULT_BUDGET
PREFILL_BLOCK = 16  # generation.rs PREFILL_BLOCK
N_LAYER, N_EMBD, N_FF, VOCAB = 12, 768, 3072, 50257


def canister_estimate(position: int, with_head: bool) -> int:
    """generation.rs `estimate_per_token`: the canister's guess before it measures."""
    macs = N_LAYER * (4 * N_EMBD**2 + 2 * N_EMBD * N_FF + 2 * N_EMBD * position)
    return 3 * (macs + (N_EMBD * VOCAB if with_head else 0)) + 1_000_000


@dataclass
class _Session:
    id: int
    n_ctx: int = 1024
    tokens: list[int] = field(default_factory=list)


class CostModelCanister:
    """The session API of Gpt2Canister with generation.rs's budget checks, charging the
    measured costs: what the real canister would do and report, without running a model."""

    def __init__(self, dtype: str) -> None:
        self.prefill_cost, self.decode_cost = MEASURED[dtype]
        self.session = _Session(1)

    def session_create(self, sampling: Sampling) -> _Session:
        return self.session

    def session_truncate(self, session: int, position: int) -> None:
        del self.session.tokens[position:]

    def session_delete(self, session: int) -> None:
        self.session.tokens.clear()

    def session_prefill(
        self, session: int, position: int, tokens: list[int], budget: int | None
    ) -> PrefillReply:
        limit = DEFAULT_BUDGET if budget is None else budget
        used, consumed = CALL_OVERHEAD, 0
        per_token = canister_estimate(len(self.session.tokens), False)
        while consumed < len(tokens):
            affordable = max(0, limit - used) // per_token
            n = max(affordable, 1) if consumed == 0 else affordable
            n = min(n, PREFILL_BLOCK, len(tokens) - consumed)
            if n == 0:
                break
            used += n * self.prefill_cost
            consumed += n
            per_token = self.prefill_cost * 11 // 10
        self.session.tokens += tokens[:consumed]
        return PrefillReply(consumed, len(self.session.tokens), used)

    def session_generate(
        self, session: int, position: int, max_tokens: int, budget: int | None, s: Sampling
    ) -> GenerateReply:
        limit = DEFAULT_BUDGET if budget is None else budget
        used, new = CALL_OVERHEAD, []
        per_token = canister_estimate(len(self.session.tokens), True)
        while True:
            if len(new) >= max_tokens:
                stop = "MaxTokens"
                break
            if new and used + per_token > limit:
                stop = "InstructionBudget"
                break
            new.append(262)  # " the": never a stop string
            used += self.decode_cost
            per_token = self.decode_cost * 11 // 10
        self.session.tokens += new
        return GenerateReply(new, len(self.session.tokens), stop, used)


PROMPT = "The history of the city is long and full of stories. " * 12


@pytest.mark.parametrize("dtype", ["f32", "int8"])
def test_every_call_fits_one_slice_on_a_replica(dtype: str) -> None:
    settings = ChatSettings(max_new_tokens=60, tokens_per_call=64, time_sliced=True)
    chat = Conversation(CostModelCanister(dtype), Gpt2Tokenizer(), settings)  # type: ignore[arg-type]
    result = chat.complete(PROMPT)
    assert len(result.prompt_ids) > 100
    assert [slices(c.instructions) for c in result.calls] == [1] * len(result.calls)
    assert max(c.instructions for c in result.calls) < SLICE_INSTRUCTIONS
    # The whole reply arrives: a call cut at the slice does not end the turn.
    assert len(result.token_ids) == 60 and result.stop == "MaxTokens"
    prefill = [c for c in result.calls if c.kind == "prefill"]
    assert sum(c.tokens for c in prefill) == len(result.prompt_ids)
    assert [c.remaining for c in prefill][-1] == 0  # progress per call, down to nothing
    assert all(a.remaining > b.remaining for a, b in zip(prefill, prefill[1:], strict=False))


@pytest.mark.parametrize("dtype", ["f32", "int8"])
def test_after_the_first_call_the_measured_cost_picks_the_tokens(dtype: str) -> None:
    settings = ChatSettings(max_new_tokens=60, tokens_per_call=64, time_sliced=True)
    chat = Conversation(CostModelCanister(dtype), Gpt2Tokenizer(), settings)  # type: ignore[arg-type]
    chat.complete(PROMPT)
    assert chat.generate_cost is not None
    result = chat.complete(" And then")
    generate = [c for c in result.calls if c.kind == "generate"]
    # Asked for what fits, so calls end at their token count, not at the canister's budget
    # check; each carries as many tokens as one slice holds.
    assert all(c.tokens >= generate[0].tokens for c in generate[:-1])
    assert generate[0].instructions + MEASURED[dtype][1] > SLICE_INSTRUCTIONS * 0.8


def test_without_slicing_a_long_prompt_takes_many_slices() -> None:
    """What the embedded defaults would do on a replica: one 30B-budget prefill call."""
    chat = Conversation(CostModelCanister("f32"), Gpt2Tokenizer(), ChatSettings(max_new_tokens=8))  # type: ignore[arg-type]
    result = chat.complete(PROMPT)
    assert max(slices(c.instructions) for c in result.calls) > 5


def test_a_user_budget_overrides_the_slice() -> None:
    settings = ChatSettings(
        max_new_tokens=60, tokens_per_call=64, time_sliced=True, instruction_budget=8 * 10**9
    )
    chat = Conversation(CostModelCanister("f32"), Gpt2Tokenizer(), settings)  # type: ignore[arg-type]
    result = chat.complete(PROMPT)
    assert max(slices(c.instructions) for c in result.calls) == 4


def test_a_budget_stop_ends_the_call_not_the_turn_without_slicing_too() -> None:
    """`generate --max-tokens 1000` in the embedded runtime: each call stops at the budget
    (~340 int8 tokens at 30B) and the next goes on (it used to end the turn at the first)."""
    settings = ChatSettings(max_new_tokens=60, tokens_per_call=64, instruction_budget=10**9)
    chat = Conversation(CostModelCanister("f32"), Gpt2Tokenizer(), settings)  # type: ignore[arg-type]
    result = chat.complete(PROMPT)
    generate = [c for c in result.calls if c.kind == "generate"]
    assert len(generate) > 1
    assert len(result.token_ids) == 60 and result.stop == "MaxTokens"
