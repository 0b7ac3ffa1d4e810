"""User settings, saved as JSON in the platform's config directory.

Precedence, everywhere: command-line flag > GPT2_CHAT_* environment variable > saved
settings > built-in default.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import platformdirs

APP = "gpt2-chat"


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
        """Raises ValueError naming the first setting out of range."""
        if not 0 <= self.temperature <= 100:
            raise ValueError("temperature must be between 0 and 100")
        if self.top_k < 0:
            raise ValueError("top_k must be 0 (off) or more")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 0 <= self.seed < 2**64:
            raise ValueError("seed must be a 64-bit unsigned number")
        if not 1 <= self.max_new_tokens <= 1024:
            raise ValueError("max_new_tokens must be between 1 and 1024")
        if not 1 <= self.tokens_per_call <= 1024:
            raise ValueError("tokens_per_call must be between 1 and 1024")
        if self.instruction_budget is not None and not (
            10_000_000 <= self.instruction_budget <= 39_000_000_000
        ):
            raise ValueError("instruction_budget must be between 10M and 39B")

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


def load_settings(path: Path | None = None) -> Settings:
    path = path or config_path()
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read settings from {path}: {e}") from e
    known = {f.name for f in fields(Settings)}
    settings = Settings(**{k: v for k, v in raw.items() if k in known})
    settings.validate()
    return settings


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    settings.validate()
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(settings), indent=2) + "\n")
    tmp.replace(path)
    return path
