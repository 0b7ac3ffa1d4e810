"""Every bad input gets an `Err` that says what is wrong, and changes nothing."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from safetensors.numpy import load, save

from gpt2_chat.backends.embedded.runtime import Limits
from gpt2_chat.client.canister import (
    CanisterError,
    ContextFull,
    Gpt2Canister,
    InvalidArgument,
    InvalidModel,
    NoContext,
    NoModel,
    Sampling,
)
from gpt2_chat.errors import InstructionLimitExceeded
from tests.support import OpenCanister, model_bytes, upload


@pytest.fixture
def loaded(open_canister: OpenCanister) -> Gpt2Canister:
    c = open_canister()
    upload(c, model_bytes("small64"))  # vocab 512, context 64
    return c


@pytest.mark.parametrize(
    ("tokens", "error", "message"),
    [
        ([1, 512], InvalidArgument, "token id 512 is out of range: the vocabulary has 512 ids"),
        ([], InvalidArgument, "no tokens given"),
        (list(range(65)), ContextFull, "context is full: the model has 64 positions"),
    ],
)
def test_bad_prompts_are_refused(
    loaded: Gpt2Canister, tokens: list[int], error: type[CanisterError], message: str
) -> None:
    s = loaded.session_create(Sampling())
    loaded.session_prefill(s.id, 0, [7])
    with pytest.raises(error, match=message):
        loaded.session_prefill(s.id, 1, tokens)
    assert loaded.session_info(s.id).tokens == [7]
    # The seed's method answers with text.
    with pytest.raises(CanisterError, match=message.split(":")[0]):
        loaded.model_inference(3, tokens if tokens else [])


def test_seed_inference_refuses_negative_and_huge_ids(loaded: Gpt2Canister) -> None:
    for bad in (-1, 2**40):
        with pytest.raises(CanisterError, match=f"token id {bad} is out of range"):
            loaded.model_inference(3, [1, bad])


def test_bad_sampling_settings(loaded: Gpt2Canister) -> None:
    with pytest.raises(InvalidArgument, match="temperature -1 must be between 0 and 100"):
        loaded.session_create(Sampling(temperature=-1))
    s = loaded.session_create(Sampling())
    loaded.session_prefill(s.id, 0, [1])
    with pytest.raises(InvalidArgument, match=r"top_p 0 must be in \(0, 1\]"):
        loaded.session_generate(s.id, 1, 1, sampling=Sampling(temperature=1, top_p=0))
    assert loaded.session_info(s.id).sampling == Sampling()


def test_generating_before_a_model_or_a_prompt(open_canister: OpenCanister) -> None:
    c = open_canister()
    with pytest.raises(NoModel):
        c.session_create(Sampling())
    with pytest.raises(CanisterError, match="no model is loaded"):
        c.model_inference(3, [1, 2])
    upload(c, model_bytes("head8"))
    s = c.session_create(Sampling())
    with pytest.raises(NoContext):
        c.session_generate(s.id, 0, 1)
    with pytest.raises(InvalidArgument, match="over the maximum"):
        c.session_prefill(s.id, 0, [1], budget=10**12)


def _rewrite(transform: object) -> bytes:
    tensors = load(model_bytes("head8"))
    metadata = {"n_head": "4"}
    transform(tensors)  # type: ignore[operator]
    return save(tensors, metadata=metadata)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"\x07" * 5000, "header length .* over the .* limit"),
        (lambda: model_bytes("head8")[:40_000], "truncated"),
        (lambda: b"x" * 8 + b"{", "not a safetensors file|past the end"),
        (
            lambda: _rewrite(
                lambda t: t.update(
                    {
                        "transformer.h.0.attn.c_attn.weight": np.ascontiguousarray(
                            t["transformer.h.0.attn.c_attn.weight"].T
                        )
                    }
                )
            ),
            r"has shape \[96, 32\], expected \[32, 96\]",
        ),
        (
            lambda: _rewrite(
                lambda t: t.update(
                    {"transformer.ln_f.bias": t["transformer.ln_f.bias"].astype(np.int32)}
                )
            ),
            "dtype I32",
        ),
        (lambda: _rewrite(lambda t: t.pop("transformer.ln_f.bias")), "missing tensor ln_f.bias"),
        (
            lambda: _rewrite(
                lambda t: t.update({"transformer.ln_f.bias": np.full(32, np.nan, np.float32)})
            ),
            "non-finite",
        ),
        (
            lambda: _rewrite(lambda t: t.update({"encoder.weight": np.zeros(2, np.float32)})),
            "unexpected tensor encoder.weight",
        ),
    ],
    ids=["garbage", "truncated", "bad-header", "shape", "dtype", "missing", "nan", "not-gpt2"],
)
def test_malformed_models_are_refused_clearly(
    open_canister: OpenCanister, make: object, message: str
) -> None:
    data = make()  # type: ignore[operator]
    c = open_canister()
    upload(c, data, load=False)
    with pytest.raises(InvalidModel, match=message):
        c.load_model()
    info = c.model_info()
    assert not info.loaded and info.loading is None and info.upload.complete
    with pytest.raises(CanisterError, match="no model is loaded"):
        c.model_inference(1, [1])


def test_a_trap_rolls_back_the_whole_message(open_canister: OpenCanister) -> None:
    """A chunk whose hashing runs past the instruction limit: nothing of it remains."""
    data = model_bytes("head8")
    c = open_canister(limits=Limits(update=3_000_000))
    c.upload_begin(len(data), hashlib.sha256(data).hexdigest())
    c.upload_chunk(0, data[:1000])
    with pytest.raises(
        InstructionLimitExceeded, match="upload_chunk ran past the limit of 3,000,000"
    ):
        c.upload_chunk(1000, data[1000:])
    assert c.upload_state().received_bytes == 1000
    c.backend.close()

    c = open_canister()  # normal limits; the state on disk is the rolled-back one
    assert c.upload_state().received_bytes == 1000
    for off in range(1000, len(data), 20_000):
        c.upload_chunk(off, data[off : off + 20_000])
    assert c.upload_finalize().sha256 == hashlib.sha256(data).hexdigest()
    assert c.load_model().done
