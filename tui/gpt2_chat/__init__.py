"""gpt2-chat: GPT-2 inside an Internet Computer canister, driven from a terminal."""

__version__ = "0.1.0"
