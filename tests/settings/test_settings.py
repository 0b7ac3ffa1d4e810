"""Settings: typed validation errors naming the field, instruction counts, the file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from gpt2_chat.errors import UserError
from gpt2_chat.settings import (
    InvalidSetting,
    Settings,
    SettingsFileError,
    load_settings,
    parse_instruction_count,
)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("30B", 30_000_000_000),
        ("500M", 500_000_000),
        ("2_000_000_000", 2_000_000_000),
        ("30000000000", 30_000_000_000),
        (" 7b ", 7_000_000_000),
        ("10K", 10_000),
    ],
)
def test_instruction_counts_parse(text: str, count: int) -> None:
    assert parse_instruction_count(text) == count


@pytest.mark.parametrize("text", ["", "B", "-5M", "1.5B", "thirty", "3T", "٣"])
def test_bad_instruction_counts_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instruction_count(text)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature": 1e40}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2**32}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": [1]}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"tokens_per_call": None}, "tokens_per_call"),
        ({"max_new_tokens": 1.5}, "max_new_tokens"),
        ({"instruction_budget": 5}, "instruction_budget"),
        ({"network": 3}, "network"),
        ({"canister": ["x"]}, "canister"),
    ],
)
def test_validate_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        replace(Settings(), **change).validate()  # type: ignore[arg-type]
    assert caught.value.field == field
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)


def test_defaults_and_optional_fields_are_valid() -> None:
    Settings().validate()
    Settings(canister="aaaaa-aa", instruction_budget=30_000_000_000, temperature=1).validate()


@pytest.mark.parametrize(
    "content", ["[1,2]", '{"temperature":"hot"}', '{"tokens_per_call":null}', '{"top_p":[1]}', "{"]
)
def test_a_bad_settings_file_is_named(tmp_path: Path, content: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(content)
    with pytest.raises(SettingsFileError, match=str(path)):
        load_settings(path)


def test_unknown_keys_in_the_file_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"top_k": 3, "future_setting": 1}))
    assert load_settings(path).top_k == 3
