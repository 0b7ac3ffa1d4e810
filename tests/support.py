"""Helpers shared by the test suites (fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from gpt2_chat.client.canister import Gpt2Canister

REPO = Path(__file__).resolve().parents[1]
ENGINE_FIXTURES = REPO / "canister" / "engine" / "tests" / "fixtures"
CLI_FIXTURE = REPO / "tests" / "fixtures" / "gpt2-random-50257"

OpenCanister = Callable[..., Gpt2Canister]


def model_bytes(name: str) -> bytes:
    return (ENGINE_FIXTURES / name / "model.safetensors").read_bytes()


def upload(canister: Gpt2Canister, data: bytes, chunk: int = 700_000, load: bool = True) -> None:
    canister.upload_begin(len(data), hashlib.sha256(data).hexdigest())
    for offset in range(0, len(data), chunk):
        canister.upload_chunk(offset, data[offset : offset + chunk])
    canister.upload_finalize()
    if load:
        while not canister.load_model().done:
            pass
