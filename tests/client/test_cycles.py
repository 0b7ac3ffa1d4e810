from gpt2_chat.client.cycles import cost_per_1000_tokens, update_call_cost


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
