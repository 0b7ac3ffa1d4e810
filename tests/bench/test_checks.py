"""Checking a table figure with real calls: what the table claims is what a check saw fit.

A fake canister stands in for the embedded one (these are about the search, not the wasm):
its prompt costs a fixed number of instructions per token, and it refuses prompts longer
than it accepts after running that far, as the real one does when its own estimate says
the rest will not fit.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gpt2_chat.bench.canister_runs import checked_figure
from gpt2_chat.bench.tables import Budget, CostModel, figure
from gpt2_chat.client.canister import CanisterError

PER_TOKEN = 56_900_000
BUDGET = Budget("40b", 40_000_000_000, 39_000_000_000)


class FakeCanister:
    def __init__(self, per_token: float, accepts: int, refuses: bool = True) -> None:
        self.per_token = per_token
        self.accepts = accepts
        self.refuses = refuses  # past `accepts`: an error, or (a full context) no token
        self.metered = SimpleNamespace(last=0)
        self.prompts: list[int] = []

    def set_limit(self, limit: int) -> None:
        pass

    def model_inference(self, max_new: int, prompt: list[int]) -> tuple[list[int], int]:
        n = len(prompt)
        self.prompts.append(n)
        if n > self.accepts:
            self.metered.last = round(self.per_token * self.accepts)
            if self.refuses:
                raise CanisterError(f"a {n}-token prompt does not fit")
            return [], self.metered.last
        self.metered.last = round(self.per_token * n)
        return [1], self.metered.last


def cost_model(per_token: float) -> CostModel:
    return CostModel(1024, 0.0, per_token, 0.0, 0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("per_token", "real_per_token", "accepts"),
    [
        (PER_TOKEN, PER_TOKEN, 672),  # the model says 685, the canister refuses past 672
        (PER_TOKEN, PER_TOKEN * 1.01, 1024),  # the model is 1% low: 685 runs over the budget
        (PER_TOKEN, PER_TOKEN * 0.98, 1024),  # the model is 2% high: there is room for more
        (PER_TOKEN, PER_TOKEN, 1024),  # the model is right
        # Cheap tokens: the model's figure is the whole context, which leaves no room for
        # the output token (no token back, no error).
        (PER_TOKEN / 100, PER_TOKEN / 100, 1023),
    ],
)
def test_the_figure_is_the_largest_checked_value_that_fit(
    per_token: float, real_per_token: float, accepts: int
) -> None:
    truth = min(accepts, int(BUDGET.budget // real_per_token))
    model = cost_model(per_token)
    fig = figure(model, BUDGET, "max_prompt", 0)
    assert fig.value == min(1024, int(BUDGET.budget // per_token))
    bc = FakeCanister(real_per_token, accepts, refuses=accepts < 1023)
    final, checks = checked_figure(bc, model, fig, BUDGET, vocab=50257)  # type: ignore[arg-type]
    assert final.value == truth
    last = checks[-1]
    assert last.value == truth and last.fits and not last.next_fits
    assert all(not c.fits for c in checks if c.value > truth)
    assert len(checks) <= 8
