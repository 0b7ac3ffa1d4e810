"""Canister ids: a principal as given, or a canister name looked up in the files dfx and
icp-cli write into their project (`canister_ids.json`, `.dfx/<network>/`, `.icp/`)."""

from __future__ import annotations

import json
from pathlib import Path

from icp_principal.principal import Principal

from gpt2_chat.errors import BackendError

DEFAULT_CANISTER_NAME = "gpt2_backend"


def is_principal_text(text: str) -> bool:
    try:
        Principal.from_str(text)
    except (ValueError, TypeError):
        return False
    return True


def resolve_canister_id(name_or_id: str | None, project_root: Path | str, network: str) -> str:
    """A principal text is returned as is; a name (default `gpt2_backend`) is looked up in
    the files dfx writes for the dfx network (`Network.dfx_network`): `<root>/
    canister_ids.json` for `ic`, `<root>/.dfx/<network>/canister_ids.json` for local
    networks (icp-cli's id mappings are read as a fallback)."""
    name = name_or_id or DEFAULT_CANISTER_NAME
    if is_principal_text(name):
        return name
    root = Path(project_root)
    if network == "ic":
        dfx_files = [root / "canister_ids.json"]
    else:
        dfx_files = [root / ".dfx" / network / "canister_ids.json", root / "canister_ids.json"]
    icp_files = [
        root / ".icp" / "data" / "mappings" / f"{network}.ids.json",
        root / ".icp" / "cache" / "mappings" / f"{network}.ids.json",
    ]
    for path in dfx_files + icp_files:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise BackendError(f"cannot read canister ids from {path}: {e}") from e
        entry = data.get(name) if isinstance(data, dict) else None
        # dfx: {"name": {"<network>": "<id>"}}; icp-cli: {"name": "<id>"}.
        found = entry.get(network) if isinstance(entry, dict) else entry
        if isinstance(found, str) and is_principal_text(found):
            return found
    searched = ", ".join(str(p) for p in dfx_files)
    raise BackendError(
        f"no canister id for `{name}` on network `{network}` (searched {searched}): "
        f"deploy it first (`dfx deploy {name}`) or pass the canister id"
    )
