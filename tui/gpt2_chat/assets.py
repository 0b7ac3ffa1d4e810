"""The shipped data: the canister wasm, the tokenizer and the canister's Candid interface
(`assets/` in the repository; its `gpt2_backend.did` links to `canister/gpt2_backend.did`).

`assets/` is installed as the package `gpt2_chat._data` (see pyproject.toml), so the data
is found the same way with the editable install of a checkout and with a wheel installed
anywhere. `GPT2_CHAT_ASSETS` points at another assets folder.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def assets_dir() -> Path:
    override = os.environ.get("GPT2_CHAT_ASSETS")
    return Path(override) if override else _package_dir()


def asset_path(name: str) -> Path:
    """Path of a shipped file, e.g. ``asset_path("tokenizer/gpt2-tokenizer.json")`` or
    ``asset_path("gpt2_backend.did")``."""
    path = assets_dir() / name
    if not path.exists():
        raise FileNotFoundError(
            f"missing asset {name!r} (looked in {assets_dir()}); reinstall gpt2-chat or set "
            "GPT2_CHAT_ASSETS to a folder holding it"
        )
    return path


def _package_dir() -> Path:
    # Installed as files on disk (a wheel is unpacked), so the resource root is a Path.
    return Path(str(resources.files("gpt2_chat._data")))


def candid_interface() -> str:
    """The canister's Candid interface (`gpt2_backend.did`, generated from its Rust types)."""
    return asset_path("gpt2_backend.did").read_text(encoding="utf-8")
