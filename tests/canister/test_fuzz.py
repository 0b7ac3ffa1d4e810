"""Bounded fuzzing through the real wasm: random Candid to every method, and a corpus of
malformed model files generated here. A refusal — an `Err` or a trap — never changes the
canister's state, and never hangs."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from icp_candid import encode

from gpt2_chat.client.canister import CanisterError, Gpt2Canister, Sampling, interface
from gpt2_chat.errors import BackendError
from tests.canister.malformed import Header, join, rewrite, split
from tests.support import OpenCanister, model_bytes, upload

SEED = 20261130


def _state(c: Gpt2Canister) -> tuple[Any, ...]:
    return c.upload_state(), c.model_info(), c.session_list()


# ---------------------------------------------------------------- random Candid


def _value(t: Any, rng: random.Random, depth: int = 0) -> Any:
    """A random value of the parsed Candid type `t`, biased to edge cases."""
    t = _resolved(t)
    name = t.name
    if name.startswith("nat") or name.startswith("int"):
        bits = int(name[3:]) if name[3:].isdigit() else 64
        signed = name.startswith("int")
        top = (1 << (bits - 1 if signed else bits)) - 1
        low = -(top + 1) if signed else 0
        return rng.choice([low, 0, 1, 2, 7, 64, top, rng.randint(low, top)])
    if name == "bool":
        return rng.random() < 0.5
    if name == "text":
        return rng.choice(["", "0" * 64, "ab" * 32, "\u00e9\u4e2d", "x" * rng.randint(0, 100)])
    if name.startswith("float"):
        return rng.choice([0.0, 1.0, -1.0, 0.5, 1e30, -1e30, 101.0])
    if name == "null":
        return None
    if name.startswith("opt"):
        return [] if rng.random() < 0.4 else [_value(t._type, rng, depth + 1)]
    if name.startswith("vec"):
        if getattr(t, "_is_blob", False):
            return rng.randbytes(rng.choice([0, 1, 8, 100, 5000]))
        n = rng.choice([0, 1, 3, 70])
        return [_value(t._type, rng, depth + 1) for _ in range(n)]
    if name.startswith("record"):
        return {k: _value(v, rng, depth + 1) for k, v in t._field_map.values()}
    if name.startswith("variant"):
        k, v = rng.choice(list(t._field_map.values()))
        return {k: _value(v, rng, depth + 1)}
    raise AssertionError(f"no generator for Candid type {name}")


def _raw_args(rng: random.Random, func: Any) -> Iterator[bytes]:
    """Byte strings that are not the method's arguments: noise, a bare header, a valid
    encoding with a byte changed or cut short."""
    yield rng.randbytes(rng.randint(0, 64))
    yield b"DIDL" + rng.randbytes(rng.randint(0, 32))
    good = encode([{"type": t, "value": _value(t, rng)} for t in func.argTypes])
    cut = bytearray(good)
    if len(cut) > 6:
        cut[rng.randrange(6, len(cut))] ^= 0xFF
    yield bytes(cut)
    yield good[: max(0, len(good) - 1 - rng.randrange(4))]


@pytest.fixture
def busy(open_canister: OpenCanister) -> Gpt2Canister:
    """A canister with a model loaded and a session holding some context."""
    c = open_canister()
    upload(c, model_bytes("head8"))
    s = c.session_create(Sampling())
    c.session_prefill(s.id, 0, [1, 2, 3])
    return c


def test_random_candid_to_every_method_changes_nothing_when_refused(busy: Gpt2Canister) -> None:
    rng = random.Random(SEED)
    methods = interface().methods
    for name, func in sorted(methods.items()):
        call = busy.backend.query if "query" in func.modes else busy.backend.update
        for arg in _raw_args(rng, func):
            before = _state(busy)
            try:
                call(name, arg)
            except BackendError:
                assert _state(busy) == before, f"{name} trapped but changed state"
    refused = 0
    for name, func in sorted(methods.items()):
        for _ in range(6):
            args = [_value(t, rng) for t in func.argTypes]
            before = _state(busy)
            try:
                busy._ok(name, *args) if _has_result(func) else busy._call(name, *args)
            except CanisterError:
                refused += 1
                assert _state(busy) == before, f"{name}{args!r} refused but changed state"
            except BackendError:  # a trap (the seed's methods refuse that way)
                refused += 1
                assert _state(busy) == before, f"{name}{args!r} trapped but changed state"
    assert refused > 20


def _resolved(t: Any) -> Any:
    return t.get_type() if hasattr(t, "get_type") else t


def _has_result(func: Any) -> bool:
    ret = _resolved(func.retTypes[0]) if func.retTypes else None
    if ret is None or not ret.name.startswith("variant"):
        return False
    return {k for k, _ in ret._field_map.values()} == {"Ok", "Err"}


# ---------------------------------------------------------------- malformed models

Mutation = Callable[[bytes, random.Random], bytes]
DTYPES = ["F64", "I32", "I8", "BF16", "F16", "U8", "bool", "", 7]


def _edit(fn: Callable[[Header, random.Random], None]) -> Mutation:
    return lambda data, rng: rewrite(data, lambda h: fn(h, rng))


def _tensor(h: Header, rng: random.Random) -> dict[str, Any]:
    entry: dict[str, Any] = h[rng.choice(sorted(k for k in h if k != "__metadata__"))]
    return entry


def _shape(h: Header, rng: random.Random) -> None:
    t = _tensor(h, rng)
    t["shape"] = rng.choice(
        [[], [0], [2**31], [2**40, 2**40], list(reversed(t["shape"])), t["shape"] + [1]]
    )


def _offsets(h: Header, rng: random.Random) -> None:
    t = _tensor(h, rng)
    begin, end = t["data_offsets"]
    top = 2**64 - 1
    # The right length, but adding the data section's start wraps past 2^64.
    wrap = [top - 3 - (end - begin), top - 3]
    t["data_offsets"] = rng.choice(
        [
            wrap,
            wrap,
            [top - 8, top],
            [2**63, 2**63 + (end - begin)],
            [begin + 4, end + 4],
            [max(0, begin - 4), end - 4],
            [end, begin],
            [begin],
            [-1, end],
            [begin, end * 10**6],
        ]
    )


def _layer(h: Header, rng: random.Random) -> None:
    name = rng.choice(sorted(k for k in h if ".h.0." in k or k.startswith("h.0.")))
    index = rng.choice(["4000000000", "18446744073709551615", "99999999999999999999", "-1", "1"])
    h[name.replace("h.0.", f"h.{index}.", 1)] = h.pop(name)


def _metadata(h: Header, rng: random.Random) -> None:
    key = rng.choice(["n_head", "n_layer", "n_embd", "n_ctx", "vocab_size", "layer_norm_epsilon"])
    h.setdefault("__metadata__", {})[key] = rng.choice(
        ["0", "-1", "inf", "NaN", "1e30", "4000000000", "x", "", "3", "1e-300"]
    )


def _drop(h: Header, rng: random.Random) -> None:
    h.pop(rng.choice(sorted(k for k in h if k != "__metadata__")))


def _dtype(h: Header, rng: random.Random) -> None:
    _tensor(h, rng)["dtype"] = rng.choice(DTYPES)


def _json(data: bytes, rng: random.Random) -> bytes:
    header, body = split(data)
    text = json.dumps(header)
    cut = rng.randrange(len(text))
    return join(rng.choice([text[:cut], text[:cut] + "}" * 3, "[]", "null", '{"a": 1}']), body)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(8, len(data))]


def _length(data: bytes, rng: random.Random) -> bytes:
    n = rng.choice([0, 2**64 - 1, 2**63, len(data), 100_000_001, 3])
    return struct.pack("<Q", n) + data[8:]


MUTATIONS: list[Mutation] = [
    _edit(_shape),
    _edit(_offsets),
    _edit(_offsets),
    _edit(_layer),
    _edit(_metadata),
    _edit(_drop),
    _edit(_dtype),
    _json,
    _truncate,
    _length,
]


def _corpus(n: int) -> list[bytes]:
    rng = random.Random(SEED)
    good = model_bytes("head8")
    return [MUTATIONS[i % len(MUTATIONS)](good, rng) for i in range(n)]


def test_malformed_model_files_get_a_clean_typed_error(open_canister: OpenCanister) -> None:
    c = open_canister()
    outcomes: dict[str, int] = {}
    for data in _corpus(200):
        sha = hashlib.sha256(data).hexdigest()
        c.upload_begin(len(data), sha)
        c.upload_chunk(0, data)
        c.upload_finalize()
        before = _state(c)
        try:
            while not c.load_model().done:
                pass
            outcomes["loaded"] = outcomes.get("loaded", 0) + 1
        except CanisterError as e:
            outcomes[type(e).__name__] = outcomes.get(type(e).__name__, 0) + 1
            assert _state(c) == before, f"{e} changed state"
        c.upload_clear()
    assert outcomes.get("InvalidModel", 0) >= 150, outcomes
    assert set(outcomes) <= {"InvalidModel", "loaded"}, outcomes
