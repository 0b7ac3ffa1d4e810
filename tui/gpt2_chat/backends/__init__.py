"""Ways to reach a gpt2_backend canister: the embedded runtime or a real replica."""
