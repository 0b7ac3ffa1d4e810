"""User settings, saved as JSON in the platform's config directory.

Precedence, everywhere: command-line flag > GPT2_CHAT_* environment variable > saved
settings > built-in default.
"""

from __future__ import annotations

import functools
import json
import os
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import platformdirs

from gpt2_chat.errors import UserError

APP = "gpt2-chat"


class InvalidSetting(UserError, ValueError):
    """A setting out of its accepted range; `.field` names it (the `Settings` field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


def parse_instruction_count(text: str) -> int:
    """`30B`, `500M`, `2_000_000_000` or `30000000000` -> the count; ValueError otherwise."""
    cleaned = text.strip().replace("_", "").upper()
    scale = _SUFFIXES.get(cleaned[-1:], 1)
    digits = cleaned[:-1] if scale != 1 else cleaned
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(
            f"{text.strip()!r} is not an instruction count (e.g. 30B, 500M, 2000000000)"
        )
    return int(digits) * scale


def config_path() -> Path:
    override = os.environ.get("GPT2_CHAT_CONFIG")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP)) / "settings.json"


def default_state_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP)) / "embedded"


@dataclass
class Settings:
    #: "embedded", "local", "ic" or a replica URL.
    network: str = "embedded"
    canister: str | None = None
    identity: str | None = None
    state_dir: str | None = None
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    seed: int = 0
    max_new_tokens: int = 64
    tokens_per_call: int = 8
    instruction_budget: int | None = None
    theme: str = "textual-dark"

    def validate(self) -> None:
        """Raises InvalidSetting for the first setting of the wrong type or out of range."""
        self._check_types()
        if not 0 <= self.temperature <= 100:
            raise InvalidSetting("temperature", "temperature must be between 0 and 100")
        if not 0 <= self.top_k < 2**32:
            raise InvalidSetting("top_k", "top_k must be between 0 (off) and 4294967295")
        if not 0 < self.top_p <= 1:
            raise InvalidSetting("top_p", "top_p must be in (0, 1]")
        if not 0 <= self.seed < 2**64:
            raise InvalidSetting("seed", "seed must be a 64-bit unsigned number")
        if not 1 <= self.max_new_tokens <= 1024:
            raise InvalidSetting("max_new_tokens", "max_new_tokens must be between 1 and 1024")
        if not 1 <= self.tokens_per_call <= 1024:
            raise InvalidSetting("tokens_per_call", "tokens_per_call must be between 1 and 1024")
        if self.instruction_budget is not None and not (
            10_000_000 <= self.instruction_budget <= 39_000_000_000
        ):
            raise InvalidSetting(
                "instruction_budget", "instruction_budget must be between 10M and 39B"
            )

    def _check_types(self) -> None:
        # A hand-edited settings file can hold anything JSON can.
        for name, (kind, optional) in _field_types().items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            # bool is an int to Python, not to the user; a whole number is a fine float.
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if kind is float:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok:
                expected = {str: "text", int: "a whole number", float: "a number"}[kind]
                raise InvalidSetting(name, f"{name} must be {expected}, not {value!r}")

    def with_env(self) -> Settings:
        """These settings overridden by GPT2_CHAT_NETWORK/CANISTER/IDENTITY/STATE_DIR."""
        env = {
            "network": "GPT2_CHAT_NETWORK",
            "canister": "GPT2_CHAT_CANISTER",
            "identity": "GPT2_CHAT_IDENTITY",
            "state_dir": "GPT2_CHAT_STATE_DIR",
        }
        changes = {k: os.environ[v] for k, v in env.items() if os.environ.get(v)}
        return Settings(**{**asdict(self), **changes})

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()


@functools.cache
def _field_types() -> dict[str, tuple[type, bool]]:
    """Each field's type (str, int or float) and whether it may be None, from `Settings`."""
    hints = typing.get_type_hints(Settings)
    out = {}
    for name, hint in hints.items():
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        out[name] = (base, type(None) in args)
    return out


class SettingsFileError(UserError, ValueError):
    """The settings file exists but cannot be used; the message names it and why."""


def load_settings(path: Path | None = None) -> Settings:
    """The saved settings (defaults when there is no file); SettingsFileError when the file
    cannot be read or holds something that is not valid settings."""
    path = path or config_path()
    try:
        raw: object = json.loads(path.read_text())
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as e:
        raise SettingsFileError(f"cannot read settings from {path}: {e}") from e
    if not isinstance(raw, dict):
        raise SettingsFileError(f"settings file {path} does not hold a JSON object")
    known = {f.name for f in fields(Settings)}
    settings = Settings(**{k: v for k, v in raw.items() if k in known})
    try:
        settings.validate()
    except InvalidSetting as e:
        raise SettingsFileError(f"settings file {path}: {e}") from e
    return settings


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    settings.validate()
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(settings), indent=2) + "\n")
    tmp.replace(path)
    return path
