"""Deterministic time slicing: how a replica runs a long update, and how much work the chat
asks of one call because of it.

An update may use up to 40B instructions, but a replica runs it in slices of at most 2B
(dfinity/ic rs/config/src/subnet_config.rs: `MAX_INSTRUCTIONS_PER_SLICE`), one slice per
round for a canister (about one round a second on mainnet), and replies only after the last.
A call that fits one slice answers in about a round; a 30B call takes ~15 s before any token
shows. So on a replica the chat sizes calls to one slice unless the user sets a budget.
"""

from __future__ import annotations

import math

SLICE_INSTRUCTIONS = 2_000_000_000

#: The per-call instruction budget the chat gives the canister on a replica when the user
#: sets none. The canister stops before a token whose cost (its measurement + 10%) would not
#: fit, and its per-call costs (argument, reply, sampling) come on top: 10% below a slice
#: leaves room for both.
ONE_SLICE_BUDGET = SLICE_INSTRUCTIONS * 9 // 10


def slices(instructions: int) -> int:
    """The slices a replica would run an update that used `instructions` in."""
    return math.ceil(instructions / SLICE_INSTRUCTIONS)


def tokens_fitting(budget: int, instructions_per_token: float) -> int:
    """How many tokens of the measured cost one call with `budget` can produce (at least 1)."""
    return max(1, int(budget // max(instructions_per_token, 1.0)))
