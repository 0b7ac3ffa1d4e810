"""The files of an embedded runtime's state dir: what each must hold, and starting over.

- `stable.bin`: the canister's stable memory, a whole number of 64 KiB pages;
- `canister.json`: the installed wasm's hash, when, and the stable-memory size last
  committed (a shorter `stable.bin` was truncated);
- `controllers.json`: the canister's controllers, a JSON list of principal texts;
- `cache/`: the compiled module (rebuilt when missing or unusable);
- `identity.pem`: the state dir's own key, the default caller.

A reset moves the first three aside; the cache and the identity are not the canister's
state, so they stay.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from icp_principal.principal import Principal

from gpt2_chat.backends.embedded.stable_memory import PAGE, lock_exclusively
from gpt2_chat.errors import BackendError

STABLE = "stable.bin"
META = "canister.json"
CONTROLLERS = "controllers.json"
BACKUPS = "backups"
#: What a reset moves aside (`lock` is what older versions locked).
CANISTER_STATE = (STABLE, META, CONTROLLERS, "lock")


class DamagedState(BackendError):
    """A state file is unreadable or inconsistent with the others."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"{path}: {problem}; to start over, run `gpt2-chat reset` "
            "(it moves the canister's state to a backup)"
        )


@dataclass(frozen=True)
class Meta:
    wasm_sha256: str
    installed_ns: int
    #: None in files written before the size was recorded.
    stable_bytes: int | None = None


def read_meta(state_dir: Path) -> Meta | None:
    """The install record, or None before the first install."""
    path = state_dir / META
    data = _read_json(path)
    if data is None:
        return None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("wasm_sha256"), str)
        or not _is_int(data.get("installed_ns"))
        or not (data.get("stable_bytes") is None or _is_int(data.get("stable_bytes")))
    ):
        raise DamagedState(path, "not a canister record (wasm_sha256, installed_ns, stable_bytes)")
    return Meta(data["wasm_sha256"], data["installed_ns"], data.get("stable_bytes"))


def write_meta(state_dir: Path, meta: Meta) -> None:
    _write_json(state_dir / META, asdict(meta))


def check_stable_size(path: Path, size: int, recorded: int | None) -> None:
    """Raises DamagedState when the file cannot be the stable memory the canister had."""
    if size % PAGE:
        raise DamagedState(
            path, f"{size:,} bytes is not a whole number of 64 KiB pages (truncated or replaced)"
        )
    if recorded is not None and size < recorded:
        raise DamagedState(
            path, f"{size:,} bytes, but the canister had {recorded:,} bytes of stable memory"
        )


def read_controllers(state_dir: Path) -> list[Principal] | None:
    """The controllers, or None when none were recorded yet."""
    path = state_dir / CONTROLLERS
    data = _read_json(path)
    if data is None:
        return None
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise DamagedState(path, "not a JSON list of principal texts")
    try:
        return [Principal.from_str(p) for p in data]
    except ValueError as e:
        raise DamagedState(path, f"not a principal: {e}") from None


def write_controllers(state_dir: Path, controllers: list[Principal]) -> None:
    _write_json(state_dir / CONTROLLERS, [p.to_str() for p in controllers])


def reset(state_dir: Path) -> Path | None:
    """Moves the canister's state into `backups/<UTC time>/` (refused while a runtime has
    it open); returns that folder, or None when there was nothing to move."""
    stable = state_dir / STABLE
    if not stable.exists():
        return _move_to_backup(state_dir)
    with stable.open("rb") as held:
        lock_exclusively(held, state_dir)
        return _move_to_backup(state_dir)


def _move_to_backup(state_dir: Path) -> Path | None:
    present = [name for name in CANISTER_STATE if (state_dir / name).exists()]
    if not present:
        return None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    backup = state_dir / BACKUPS / stamp
    backup.mkdir(parents=True)
    # The stable memory last: until it moves, the state is still there to retry with.
    for name in sorted(present, key=lambda n: n == STABLE):
        os.replace(state_dir / name, backup / name)
    return backup


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedState(path, f"unreadable ({e})") from None
    try:
        return json.loads(text)
    except ValueError:
        raise DamagedState(path, "not valid JSON") from None


def _write_json(path: Path, data: Any) -> None:
    """Atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
