"""Where the shipped data lives: the repository's `assets/` folder.

In a source checkout (the README's way to run) that is `<repo>/assets`; `GPT2_CHAT_ASSETS`
overrides it, e.g. for a packaged install that puts the folder elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ASSETS = Path(__file__).resolve().parents[2] / "assets"


def assets_dir() -> Path:
    override = os.environ.get("GPT2_CHAT_ASSETS")
    return Path(override) if override else _REPO_ASSETS


def asset_path(name: str) -> Path:
    """Path of a shipped file, e.g. ``asset_path("tokenizer/gpt2-tokenizer.json")``."""
    path = assets_dir() / name
    if not path.exists():
        raise FileNotFoundError(
            f"missing asset {name!r} (looked in {assets_dir()}); "
            "run gpt2-chat from a checkout of the repository or set GPT2_CHAT_ASSETS"
        )
    return path


def candid_interface() -> str:
    """The canister's Candid interface (`gpt2_backend.did`, generated from its Rust types)."""
    return (_REPO_ASSETS.parent / "canister" / "gpt2_backend.did").read_text(encoding="utf-8")
