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
    """Estimated cycles for 1,000 generated tokens, `tokens_per_call` tokens per update call
    (a generate call's argument is well under 100 bytes; counted as 100)."""
    calls = -(-1000 // max(tokens_per_call, 1))
    per_call = update_call_cost(round(instructions_per_token * tokens_per_call), 100).total
    return calls * per_call
