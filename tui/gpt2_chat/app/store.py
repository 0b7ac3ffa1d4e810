"""The app's settings: what is saved, what the environment and flags override, and saving.

The settings file holds what the user chose in the app. `GPT2_CHAT_*` environment variables
and command-line flags override the connection fields for this run only; saving never
writes an override into the file unless the user changed that field in the app (which
then also wins for the rest of the run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path

from gpt2_chat.settings import Settings, config_path, load_settings, save_settings

#: The settings the environment can override, and the variable that does.
ENV_VARS = {
    "network": "GPT2_CHAT_NETWORK",
    "canister": "GPT2_CHAT_CANISTER",
    "identity": "GPT2_CHAT_IDENTITY",
    "state_dir": "GPT2_CHAT_STATE_DIR",
}
#: Changing one of these means opening another backend.
CONNECTION_FIELDS = frozenset(ENV_VARS)
FIELD_NAMES = tuple(f.name for f in fields(Settings))


class SettingsStore:
    def __init__(self, path: Path | None = None, flags: Mapping[str, str] | None = None) -> None:
        self.path = path or config_path()
        #: Why the saved settings could not be read (the app then starts from defaults).
        self.load_error: str | None = None
        try:
            self.saved = load_settings(self.path)
        except ValueError as e:
            self.saved = Settings()
            self.load_error = f"{e}; using the defaults (saving will replace the file)"
        #: field -> (value, where it comes from: an environment variable or a flag).
        self.overrides: dict[str, tuple[str, str]] = {}
        for name, var in ENV_VARS.items():
            if os.environ.get(var):
                self.overrides[name] = (os.environ[var], var)
        for name, value in (flags or {}).items():
            if value is not None:
                self.overrides[name] = (value, "--" + name.replace("_", "-"))

    @property
    def effective(self) -> Settings:
        """The settings in force: saved ones with the overrides applied."""
        values: dict[str, object] = {k: v for k, (v, _) in self.overrides.items()}
        return replace(self.saved, **values)  # type: ignore[arg-type]

    def override_source(self, name: str) -> str | None:
        """The environment variable or flag that sets `name` for this run, if any."""
        entry = self.overrides.get(name)
        return entry[1] if entry else None

    def save(self, new: Settings) -> set[str]:
        """Validates and saves `new` (the effective settings the user wants); returns the
        names of the fields that changed. Raises ValueError (nothing saved) when invalid,
        OSError when the file cannot be written."""
        new.validate()
        old = self.effective
        changed = {n for n in FIELD_NAMES if getattr(new, n) != getattr(old, n)}
        saved = replace(self.saved, **{n: getattr(new, n) for n in changed})
        save_settings(saved, self.path)
        self.saved = saved
        for name in changed:
            self.overrides.pop(name, None)
        return changed


def recent_path(settings_path: Path) -> Path:
    """Where the app remembers small things between runs (the last model file chosen),
    next to the settings file."""
    return settings_path.with_name("recent.json")


def load_recent(settings_path: Path) -> dict[str, str]:
    try:
        data = json.loads(recent_path(settings_path).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_recent(settings_path: Path, **values: str) -> None:
    """Best effort: failing to remember is not worth bothering the user about."""
    path = recent_path(settings_path)
    data = {**load_recent(settings_path), **values}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError:
        pass
