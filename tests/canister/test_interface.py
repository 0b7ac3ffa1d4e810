"""The Python client and the canister's `.did` agree: every method, every record field,
every error variant (and its fields) — so a change to the Rust types that the client does
not follow fails here, not in a user's hands."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from gpt2_chat.client import canister as client
from gpt2_chat.client.canister import ERROR_VARIANTS, Gpt2Canister, interface


def _fields(candid_type: Any) -> dict[str, Any]:
    """Field name -> type of a parsed Candid record or variant (named types resolved)."""
    t = candid_type.get_type() if hasattr(candid_type, "get_type") else candid_type
    return {name: ty for name, ty in t._field_map.values()}


def test_every_canister_method_has_a_client_method() -> None:
    missing = [m for m in interface().methods if not callable(getattr(Gpt2Canister, m, None))]
    assert missing == []


def test_every_error_variant_is_an_exception_with_its_fields() -> None:
    variants = _fields(interface().types["Error"])
    assert sorted(variants) == sorted(ERROR_VARIANTS)
    for name, payload in variants.items():
        params = list(inspect.signature(ERROR_VARIANTS[name].__init__).parameters)[1:]
        if payload.name.startswith("record"):
            assert sorted(params) == sorted(_fields(payload)), name
        elif payload.name == "null":
            assert params == [], name
        else:
            assert len(params) == 1, name


@pytest.mark.parametrize(
    ("did_name", "cls"),
    [
        ("UploadState", client.UploadState),
        ("LoadProgress", client.LoadProgress),
        ("ModelConfig", client.ModelConfig),
        ("ModelInfo", client.ModelInfo),
        ("Sampling", client.Sampling),
        ("SessionInfo", client.SessionInfo),
        ("PrefillReply", client.PrefillReply),
        ("GenerateReply", client.GenerateReply),
    ],
)
def test_records_have_the_dataclasses_fields(did_name: str, cls: type) -> None:
    assert sorted(_fields(interface().types[did_name])) == sorted(
        f.name for f in dataclasses.fields(cls)
    )
