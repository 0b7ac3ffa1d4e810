"""User settings: what they are, their ranges, the file they are saved in, and how a run's
settings are resolved.

Precedence, everywhere: command-line flag > GPT2_CHAT_* environment variable > settings
file > built-in default. Flags and variables set the connection settings for one run and
are never written to the file; only a change the user makes in the app is saved.
"""

from __future__ import annotations

import functools
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import platformdirs

from gpt2_chat.errors import UserError
from gpt2_chat.network import NETWORK_HELP, UnknownNetwork, parse_network

if typing.TYPE_CHECKING:
    from gpt2_chat.client.chat import ChatSettings

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
    #: "embedded", "local", "ic"/"mainnet" or a replica URL (see network.parse_network).
    network: str = "embedded"
    canister: str | None = None
    identity: str | None = None
    state_dir: str | None = None
    #: The dfx project whose canister ids are used; None: the nearest dfx.json upward.
    project_dir: str | None = None
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
        try:
            parse_network(self.network)
        except UnknownNetwork as e:
            raise InvalidSetting("network", str(e)) from None
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

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()


@dataclass(frozen=True)
class ConnectionOption:
    """A connection setting that a flag and a GPT2_CHAT_* variable can set for one run."""

    name: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "GPT2_CHAT_" + self.name.upper()


CONNECTION_OPTIONS = (
    ConnectionOption("network", f"{NETWORK_HELP}; default embedded"),
    ConnectionOption("canister", "canister id, or its dfx name (default gpt2_backend)"),
    ConnectionOption(
        "identity",
        "PEM file, dfx identity name or 'anonymous' (default: the embedded runtime's own key; "
        "dfx's selected identity on a replica)",
    ),
    ConnectionOption(
        "state_dir", f"embedded runtime state directory (default {default_state_dir()})"
    ),
    ConnectionOption(
        "project_dir", "dfx project with the canister ids (default: nearest dfx.json upward)"
    ),
)
#: Changing one of these means opening another backend.
CONNECTION_FIELDS = frozenset(o.name for o in CONNECTION_OPTIONS)
FIELD_NAMES = tuple(f.name for f in fields(Settings))


def chat_settings(settings: Settings) -> ChatSettings:
    """What a chat turn or a generate call uses, from the settings."""
    from gpt2_chat.client.canister import Sampling
    from gpt2_chat.client.chat import ChatSettings

    return ChatSettings(
        sampling=Sampling(settings.temperature, settings.top_k, settings.top_p, settings.seed),
        max_new_tokens=settings.max_new_tokens,
        tokens_per_call=settings.tokens_per_call,
        instruction_budget=settings.instruction_budget,
    )


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


class SettingsStore:
    """The settings of one run: the file's, with the flags' and variables' overrides.

    A settings file that is not valid leaves `load_error` set and the defaults in force
    (the app says so and starts; the CLI stops with the error)."""

    def __init__(
        self,
        path: Path | None = None,
        flags: Mapping[str, str | None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path or config_path()
        self.load_error: SettingsFileError | None = None
        try:
            self.saved = load_settings(self.path)
        except SettingsFileError as e:
            self.saved = Settings()
            self.load_error = e
        env = os.environ if environ is None else environ
        flags = flags or {}
        #: field -> (value, the variable or flag that sets it for this run).
        self.overrides: dict[str, tuple[str, str]] = {}
        for option in CONNECTION_OPTIONS:
            if env.get(option.env):
                self.overrides[option.name] = (env[option.env], option.env)
            value = flags.get(option.name)
            if value is not None:
                self.overrides[option.name] = (value, option.flag)

    @property
    def effective(self) -> Settings:
        """The settings in force: saved ones with the overrides applied."""
        values: dict[str, object] = {name: value for name, (value, _) in self.overrides.items()}
        return replace(self.saved, **values)  # type: ignore[arg-type]

    def checked(self) -> Settings:
        """The effective settings, validated; an override out of range is named by the
        flag or variable that set it."""
        settings = self.effective
        try:
            settings.validate()
        except InvalidSetting as e:
            source = self.override_source(e.field)
            if source is None:
                raise
            raise InvalidSetting(e.field, f"{source} {getattr(settings, e.field)}: {e}") from None
        return settings

    def override_source(self, name: str) -> str | None:
        """The environment variable or flag that sets `name` for this run, if any."""
        entry = self.overrides.get(name)
        return entry[1] if entry else None

    def source(self, name: str) -> str:
        """Where the value in force comes from: a flag, a variable, the file or the default."""
        override = self.override_source(name)
        if override:
            return override
        if getattr(self.saved, name) != getattr(Settings(), name):
            return f"settings file {self.path}"
        return "default"

    def save(self, new: Settings) -> set[str]:
        """Validates and saves `new` (the effective settings the user wants); returns the
        names of the fields that changed. Raises InvalidSetting (nothing saved) when
        invalid, OSError when the file cannot be written."""
        new.validate()
        old = self.effective
        changed = {n for n in FIELD_NAMES if getattr(new, n) != getattr(old, n)}
        saved = replace(self.saved, **{n: getattr(new, n) for n in changed})
        save_settings(saved, self.path)
        self.saved = saved
        self.load_error = None
        for name in changed:
            self.overrides.pop(name, None)
        return changed
