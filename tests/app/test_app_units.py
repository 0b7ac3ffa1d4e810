"""The app's pure helpers: formatting, the canister state line, prepared file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt2_chat.app.chat_view import TurnStats
from gpt2_chat.app.fmt import duration, short_path, short_sha, si
from gpt2_chat.app.model_prepare import prepared_name
from gpt2_chat.app.model_upload import canister_state
from gpt2_chat.client.canister import ModelConfig, ModelInfo, UploadState
from gpt2_chat.client.chat import CallStats, TurnResult
from gpt2_chat.client.cycles import chat_call_cost


def info(
    received: int = 0, size: int | None = None, complete: bool = False, loaded: bool = False
) -> ModelInfo:
    upload = UploadState(
        received,
        size,
        "ab" * 32 if size else None,
        "ab" * 32 if complete else None,
        complete,
        loaded,
    )
    config = ModelConfig(12, 12, 768, 3072, 50257, 1024) if loaded else None
    return ModelInfo(loaded, config, "F32" if loaded else None, 0, upload, None, 0, 0, 1 << 30)


def test_canister_state_words() -> None:
    assert canister_state(None)[0] == "unknown"
    assert canister_state(info()) == ("empty", "empty: choose a model file and Upload")
    word, line = canister_state(info(655_360, 3_253_432))
    assert word == "partial" and line.startswith("partial: 655,360 of 3,253,432 bytes (20%)")
    assert canister_state(info(3_253_432, 3_253_432, complete=True))[0] == "complete"
    word, line = canister_state(info(3_253_432, 3_253_432, complete=True, loaded=True))
    assert word == "loaded"
    assert line == "loaded: 12 layers · 768 dims · 12 heads · vocab 50,257 · context 1024 · F32"


def test_formatting() -> None:
    assert si(286_100_000) == "286M" and si(7_700_000) == "7.7M" and si(950) == "950"
    assert si(1_200_000_000) == "1.2B"
    assert duration(None) == "?" and duration(65) == "1:05" and duration(3725) == "1:02:05"
    assert short_sha("f527a4a8ff53b99749ceeca8de46933dbd7b94e4410abf7e8a3bc4323f653cd7") == (
        "f527a4a8ff53…3cd7"
    )
    assert short_sha(None) == "-"


def test_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    assert short_path(tmp_path / "models" / "x.safetensors") == "models/x.safetensors"
    assert short_path(tmp_path) == "."
    assert prepared_name("gpt2") == "gpt2.safetensors"
    assert (
        prepared_name("openai-community/gpt2-medium") == "openai-community--gpt2-medium.safetensors"
    )
    assert prepared_name("ckpt") == "ckpt.safetensors"
    assert prepared_name(str(tmp_path / "ckpt") + "/") == "ckpt.safetensors"


def test_turn_stats_show_cycles_and_a_low_balance() -> None:
    calls = [CallStats("prefill", 20, 1_000_000_000), CallStats("generate", 10, 870_000_000)]
    result = TurnResult("hi", [1] * 10, [2] * 20, "MaxTokens", calls, 1.0)
    cycles = sum(chat_call_cost(c.kind, c.tokens, c.instructions) for c in calls)
    rich = TurnStats.of(result, 30, 1024, balance=10**15)
    assert rich.cycles == result.cycles == cycles
    assert f"· {si(cycles)} cycles (" in str(rich) and "/1k tok)" in str(rich)
    assert str(rich).endswith(f"· balance {si(10**15)} cycles")
    # 100 more calls like these cost 100 × cycles/2: a balance below that is flagged.
    poor = TurnStats.of(result, 30, 1024, balance=40 * cycles)
    assert str(poor).endswith(f"· balance {si(40 * cycles)} cycles (low: top up the canister)")
    assert "balance" not in str(TurnStats.of(result, 30, 1024, balance=None))
