"""Client-side code of gpt2-chat: what runs on the user's machine, not in the canister."""
