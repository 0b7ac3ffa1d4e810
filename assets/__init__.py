"""Shipped data, installed as the package `gpt2_chat._data` (see pyproject.toml); read it
through `gpt2_chat.assets`. `gpt2_backend.did` links to `canister/gpt2_backend.did`."""
