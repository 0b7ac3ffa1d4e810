from gpt2_chat.client.canister import ModelConfig
from gpt2_chat.client.cycles import (
    balance_is_low,
    chat_call_cost,
    cost_per_1000_tokens,
    decode_instructions_per_token,
    update_call_cost,
)


def test_an_update_call_pays_the_message_fee_instructions_and_ingress() -> None:
    cost = update_call_cost(instructions=1_000_000_000, ingress_bytes=50)
    assert cost.execution == 5_000_000 + 400_000_000
    assert cost.ingress == 1_200_000 + 100_000
    assert cost.total == 406_300_000


def test_fewer_tokens_per_call_cost_more_message_fees() -> None:
    one = cost_per_1000_tokens(87e6, 1)
    many = cost_per_1000_tokens(87e6, 20)
    # The instructions are the same; 1000 calls pay 1000 message and ingress fees, 50 pay 50.
    assert one - many == 950 * (5_000_000 + 1_200_000 + 100 * 2_000)


def test_decode_cost_estimates_match_the_measurements() -> None:
    # docs/benchmarks.md: 87M (int8) and 246M (f32) per 124M token; 244M and 524M (int8) for
    # gpt2-medium and gpt2-large.
    shapes = {
        "gpt2": ModelConfig(12, 12, 768, 3072, 50257, 1024),
        "medium": ModelConfig(24, 16, 1024, 4096, 50257, 1024),
        "large": ModelConfig(36, 20, 1280, 5120, 50257, 1024),
    }
    measured = {("gpt2", "I8"): 87e6, ("gpt2", "F32"): 246e6}
    measured |= {("medium", "I8"): 244e6, ("large", "I8"): 524e6}
    for (shape, dtype), instructions in measured.items():
        estimate = decode_instructions_per_token(shapes[shape], dtype)
        assert estimate is not None and abs(estimate / instructions - 1) < 0.04, shape
    assert decode_instructions_per_token(shapes["gpt2"], "U8") is None


def test_a_chat_prefill_pays_for_its_prompt_bytes() -> None:
    assert chat_call_cost("prefill", 100, 0) - chat_call_cost("generate", 100, 0) == 400 * 2_000


def test_a_balance_is_low_below_a_hundred_calls() -> None:
    assert balance_is_low(99 * 1_000, 1_000)
    assert not balance_is_low(100 * 1_000, 1_000)


def test_bigger_calls_never_cost_more_per_1000_tokens() -> None:
    # 344 tokens per call is 3 calls, the last one short: 1,000 tokens' instructions, not
    # 1,032 (counting whole calls overstated big calls above small ones).
    assert cost_per_1000_tokens(87e6, 344) < cost_per_1000_tokens(87e6, 20)
    assert cost_per_1000_tokens(87e6, 344) == 3 * 6_400_000 + 34_800_000_000
