"""GPT-2's tokenizer, loaded from the shipped `assets/tokenizer/gpt2-tokenizer.json`.

The asset is built by `scripts/build_tokenizer.py` (provenance in `assets/tokenizer/NOTICE.md`).
GPT-2's BPE works on bytes, so one token can hold part of a multi-byte UTF-8 character;
`StreamDecoder` turns generated ids into text without ever showing half a character.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer

from gpt2_chat.assets import asset_path

ASSET_NAME = "tokenizer/gpt2-tokenizer.json"
EOS_TOKEN = "<|endoftext|>"

# What `decode` produces for bytes that do not (yet) form a whole UTF-8 character.
_REPLACEMENT = "\ufffd"


class Gpt2Tokenizer:
    """Text <-> GPT-2 token ids (50,257 tokens; `<|endoftext|>` is id 50256)."""

    def __init__(self, path: Path | None = None) -> None:
        self._tokenizer = Tokenizer.from_file(str(path or asset_path(ASSET_NAME)))
        eos_id = self._tokenizer.token_to_id(EOS_TOKEN)
        if eos_id is None:
            raise ValueError(f"tokenizer has no {EOS_TOKEN} token")
        self._eos_id: int = eos_id

    @property
    def eos_id(self) -> int:
        """Id of `<|endoftext|>`, which GPT-2 emits at the end of a document."""
        return self._eos_id

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; a literal `<|endoftext|>` becomes the single id 50256."""
        return list(self._tokenizer.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`. `<|endoftext|>` is kept (decode is the exact inverse of encode).

        Bytes that do not form complete UTF-8 characters come out as U+FFFD.
        """
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class StreamDecoder:
    """Turns ids arriving one (or a few) at a time into text, a complete character at a time.

    Decoding each token on its own would break characters whose bytes span several tokens
    (emoji, CJK, accented letters). Instead this decodes the ids received since the last
    clean character boundary and holds back a trailing U+FFFD, the mark of a character still
    missing bytes, until a later token completes it. Call `flush` at the end of the stream.
    """

    def __init__(self, tokenizer: Gpt2Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._pending: list[int] = []  # ids since the last point where all text was emitted
        self._emitted = 0  # characters of decode(self._pending) already returned

    def push(self, new_ids: Iterable[int]) -> str:
        """Add newly generated ids; return the text they complete (possibly "")."""
        self._pending.extend(new_ids)
        text = self._tokenizer.decode(self._pending)
        stable = text.rstrip(_REPLACEMENT)
        new = stable[self._emitted :]
        if stable == text:
            # Everything decoded to whole characters, and UTF-8 restarts cleanly after a
            # whole character, so later ids can be decoded without these.
            self._pending.clear()
            self._emitted = 0
        else:
            self._emitted = len(stable)
        return new

    def flush(self) -> str:
        """Return whatever is held back (U+FFFD for bytes that never completed) and reset."""
        text = self._tokenizer.decode(self._pending)[self._emitted :]
        self._pending.clear()
        self._emitted = 0
        return text
