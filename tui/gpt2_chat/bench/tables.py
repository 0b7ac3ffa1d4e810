"""The seed's tables (tokens per update call) from measured per-token instruction costs.

A direct search would run a call at the limit for every candidate count. Instead the
measured calls are fitted to a small cost model, the tables are read off it, and
`canister_runs` checks chosen figures with real calls.

Cost model (instructions, `j` a position, `P` a prompt length):

- prefill of `P` tokens from position 0 in one call: `c0 + a*P + b*P*(P-1)/2` (the `b`
  term is attention over the growing prefix);
- one more output token after it in the same call, as the seed's `model_inference(1, …)`
  does: `head` (LM head and argmax; that token is not run through the network);
- a generated token at position `j` with the KV cache (LM head, sampling, and the token's
  forward pass through the cache, as `session_generate` does): `g0 + g1*j`, plus `gf` per
  generate call.

The figures, for a budget `B` (the per-call limit less a margin, as the canister keeps):

- *max prompt*: the longest prompt whose prefill plus one output token fits in one call;
- *with KV cache*: `session_prefill(P)` and then `session_generate(n)`, their instructions
  summed, within `B`;
- *without KV cache*: every output token recomputes the whole prefix, i.e. `n` calls of
  `model_inference(1, prompt + outputs so far)` whose instructions, summed, fit in `B`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Instructions the canister keeps free in a call (its MAX_BUDGET is 39B under the 40B limit).
MARGIN = 1_000_000_000
KV_PROMPTS = (48, 24, 12)
SHORT_PROMPT = 4


@dataclass(frozen=True)
class Budget:
    """A per-call instruction limit and the budget the figures must fit in."""

    label: str
    limit: int
    budget: int

    @staticmethod
    def ic(limit: int) -> Budget:
        return Budget(f"{limit // 1_000_000_000}b", limit, limit - MARGIN)


IC_BUDGETS = (Budget.ic(20_000_000_000), Budget.ic(40_000_000_000))


@dataclass(frozen=True)
class Call:
    """A measured call: `tokens` processed from position `start`, costing `instructions`."""

    start: int
    tokens: int
    instructions: int
    seconds: float = 0.0


def _position_sum(start: int, n: int) -> int:
    """Σ_{j=start}^{start+n-1} j"""
    return n * start + n * (n - 1) // 2


@dataclass(frozen=True)
class CostModel:
    n_ctx: int
    prefill_fixed: float
    prefill_per_token: float
    prefill_per_position: float
    head: float
    generate_fixed: float
    generate_per_token: float
    generate_per_position: float

    @staticmethod
    def fit(
        n_ctx: int, prefill_calls: Sequence[Call], generate_calls: Sequence[Call], head: float
    ) -> CostModel:
        """Least squares over the measured calls: each fit needs three calls of different
        lengths and starting positions."""
        a = np.array([[1.0, c.tokens, _position_sum(c.start, c.tokens)] for c in prefill_calls])
        y = np.array([float(c.instructions) for c in prefill_calls])
        if len(prefill_calls) < 3 or np.linalg.matrix_rank(a) < 3:
            raise ValueError("prefill needs three calls of different lengths and positions")
        (c0, pa, pb), *_ = np.linalg.lstsq(a, y, rcond=None)
        g = np.array([[1.0, c.tokens, _position_sum(c.start, c.tokens)] for c in generate_calls])
        gy = np.array([float(c.instructions) for c in generate_calls])
        if len(generate_calls) < 3 or np.linalg.matrix_rank(g) < 3:
            raise ValueError("generate needs three calls of different lengths and positions")
        (gf, g0, g1), *_ = np.linalg.lstsq(g, gy, rcond=None)
        return CostModel(
            n_ctx, float(c0), float(pa), float(pb), head, float(gf), float(g0), float(g1)
        )

    def prefill(self, p: int) -> float:
        return (
            self.prefill_fixed
            + self.prefill_per_token * p
            + self.prefill_per_position * (p * (p - 1) / 2)
        )

    def one_output(self, p: int) -> float:
        """`model_inference(1, prompt of p tokens)`."""
        return self.prefill(p) + self.head

    def generate(self, start: int, n: int) -> float:
        return self.generate_per_token * n + self.generate_per_position * _position_sum(start, n)

    def with_cache(self, p: int, n: int) -> float:
        """`session_prefill(p tokens)` plus `session_generate(n)`."""
        return self.prefill(p) + self.generate_fixed + self.generate(p, n)

    def without_cache(self, p: int, n: int) -> float:
        return sum(self.one_output(p + k) for k in range(n))

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in asdict(self).items() if k != "n_ctx"}


def most(cost: Callable[[int], float], budget: int, cap: int) -> int:
    """The largest n in [0, cap] with cost(n) <= budget (cost grows with n)."""
    lo, hi = 0, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class Figure:
    """One table entry: its key, the prompt it starts from and the tokens that fit."""

    key: str
    kind: str  # "max_prompt", "kv" or "no_kv"
    #: The prompt the outputs follow (0 for "max_prompt", whose value is the prompt).
    prompt: int
    value: int
    predicted: float
    capped_by_context: bool


def figure_cost(model: CostModel, kind: str, prompt: int, n: int) -> float:
    """Instructions of figure `kind` at `n`: the prompt length for "max_prompt", else the
    output tokens after a `prompt`-token prompt."""
    if n == 0:
        return 0.0
    if kind == "max_prompt":
        return model.one_output(n)
    if kind == "kv":
        return model.with_cache(prompt, n)
    return model.without_cache(prompt, n)


def figure_key(kind: str, prompt: int, label: str) -> str:
    if kind == "max_prompt":
        return f"max_prompt_tokens_one_call_{label}"
    if kind == "kv" and prompt == SHORT_PROMPT:
        return f"max_new_tokens_{prompt}_prompt_{label}"
    return f"new_tokens_{prompt}_prompt_{kind}_{label}"


def context_cap(model: CostModel, kind: str, prompt: int) -> int:
    """The most tokens figure `kind` can have before the context is full."""
    return model.n_ctx - (0 if kind == "max_prompt" else prompt)


def figure(
    model: CostModel,
    b: Budget,
    kind: str,
    prompt: int,
    anchor: tuple[int, int] | None = None,
    scale: float = 1.0,
) -> Figure:
    """The most tokens of `kind` that fit in `b`. With `anchor` = (n, measured instructions
    at n), costs are the measurement plus the model's increments from n; `scale` multiplies
    the model's costs (the ratio a real call of a sibling figure measured)."""
    cap = context_cap(model, kind, prompt)
    shift = 0.0
    if anchor is not None:
        shift = anchor[1] - figure_cost(model, kind, prompt, anchor[0]) * scale

    def cost(n: int) -> float:
        return figure_cost(model, kind, prompt, n) * scale + (shift if n else 0.0)

    n = most(cost, b.budget, cap)
    return Figure(
        figure_key(kind, prompt, b.label),
        kind,
        0 if kind == "max_prompt" else prompt,
        n,
        cost(n),
        n == cap,
    )


def figures(model: CostModel, b: Budget) -> list[Figure]:
    """Every table entry for budget `b`, keyed as in the JSON output."""
    out = [figure(model, b, "max_prompt", 0)]
    out += [figure(model, b, "kv", p) for p in (SHORT_PROMPT, *KV_PROMPTS)]
    out += [figure(model, b, "no_kv", p) for p in KV_PROMPTS]
    return out
