"""What a call costs in cycles, from the IC's published fee schedule.

Fees for a 13-node application subnet, from the IC's "cycles cost of compute and storage"
table (the replica's `CyclesAccountManager` defaults, dfinity/ic
`rs/config/src/subnet_config.rs`): every update message pays a flat execution fee plus a
fee per instruction; an ingress message also pays for its reception and its bytes.
Queries are free to the caller. These are estimates: the subnet's size and the fee
schedule set the real price.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt2_chat.client.canister import ModelConfig, ModelInfo

#: Where the fees below come from, for reports that cite them.
FEE_SCHEDULE = (
    "a 13-node application subnet (the IC's cycles cost table, "
    "https://internetcomputer.org/docs/building-apps/essentials/gas-cost)"
)

#: `update_message_execution_fee`
UPDATE_MESSAGE_FEE = 5_000_000
#: `ten_update_instructions_execution_fee`: 4 cycles per 10 instructions.
TEN_INSTRUCTIONS_FEE = 4
#: `ingress_message_reception_fee`
INGRESS_MESSAGE_FEE = 1_200_000
#: `ingress_byte_reception_fee`
INGRESS_BYTE_FEE = 2_000


@dataclass(frozen=True)
class CallCost:
    """Cycles charged for one ingress update call."""

    execution: int
    ingress: int

    @property
    def total(self) -> int:
        return self.execution + self.ingress


def update_call_cost(instructions: int, ingress_bytes: int = 0) -> CallCost:
    """The cycles an ingress update call that ran `instructions` costs its canister."""
    execution = UPDATE_MESSAGE_FEE + instructions * TEN_INSTRUCTIONS_FEE // 10
    ingress = INGRESS_MESSAGE_FEE + ingress_bytes * INGRESS_BYTE_FEE
    return CallCost(execution, ingress)


def cost_per_1000_tokens(instructions_per_token: float, tokens_per_call: int) -> int:
    """Estimated cycles for 1,000 generated tokens, `tokens_per_call` tokens per update call:
    the instructions of 1,000 tokens plus each call's message and ingress fees (a generate
    call's argument is well under 100 bytes; counted as 100)."""
    calls = -(-1000 // max(tokens_per_call, 1))
    instructions = round(1000 * instructions_per_token)
    return calls * update_call_cost(0, 100).total + instructions * TEN_INSTRUCTIONS_FEE // 10


#: Bytes of a prefill call's argument per prompt token (a Candid `vec nat32`).
PREFILL_BYTES_PER_TOKEN = 4
#: A call's argument apart from its prompt tokens: session, position, budget, sampling.
CALL_ARG_BYTES = 100


def chat_call_cost(kind: str, tokens: int, instructions: int) -> int:
    """Cycles of one chat call: `generate`, or `prefill` of `tokens` prompt tokens."""
    arg_bytes = CALL_ARG_BYTES + (PREFILL_BYTES_PER_TOKEN * tokens if kind == "prefill" else 0)
    return update_call_cost(instructions, arg_bytes).total


#: Decode instructions per multiply-accumulate of a generated token, fitted to the embedded
#: runtime's measurements (docs/benchmarks.md: GPT-2 124M's 123.5M MACs per token take 87M
#: instructions in int8, 246M in f32; the int8 fit predicts gpt2-medium's and -large's
#: measured 244M and 524M within 3%).
#: Keys are the file dtypes `model_info` reports; F16/BF16 weights run as f32 in memory.
DECODE_INSTRUCTIONS_PER_MAC = {"I8": 0.70, "F32": 2.0, "F16": 2.0, "BF16": 2.0}


def decode_instructions_per_token(config: ModelConfig, dtype: str) -> float | None:
    """Estimated instructions per generated token of a model, or None for a dtype without a
    measurement."""
    per_mac = DECODE_INSTRUCTIONS_PER_MAC.get(dtype)
    if per_mac is None:
        return None
    e = config.n_embd
    macs = config.n_layer * (4 * e * e + 2 * e * config.n_inner) + e * config.vocab_size
    return macs * per_mac


#: Warn when the canister's balance would not pay for this many more calls.
LOW_BALANCE_CALLS = 100


def balance_is_low(balance: int, cycles_per_call: int) -> bool:
    """Whether `balance` cycles would not pay for the next LOW_BALANCE_CALLS calls."""
    return balance < LOW_BALANCE_CALLS * cycles_per_call


def shown_balance(info: ModelInfo | None, embedded: bool) -> int | None:
    """The canister's cycle balance worth showing: none from the embedded runtime, which
    holds no cycles (its canister reports 0 there)."""
    return None if embedded or info is None else info.cycles
