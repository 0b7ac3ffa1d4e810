"""What the app remembers between runs besides the settings (the last model file chosen),
kept next to the settings file."""

from __future__ import annotations

import json
from pathlib import Path


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
