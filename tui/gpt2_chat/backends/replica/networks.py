"""Network names and canister ids: which endpoint a network name means and which canister
id a name stands for (dfx's and icp-cli's id files)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from icp_principal.principal import Principal

from gpt2_chat.errors import BackendError

LOCAL_URL = "http://127.0.0.1:4943"
MAINNET_URL = "https://icp-api.io"
NETWORK_ALIASES = {"local": LOCAL_URL, "ic": MAINNET_URL, "mainnet": MAINNET_URL}
DEFAULT_CANISTER_NAME = "gpt2_backend"

#: Hosts of mainnet API boundary nodes (for naming the network and finding canister ids).
_MAINNET_HOSTS = {"icp-api.io", "ic0.app", "icp0.io"}
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"}

# ---------------------------------------------------------------------- networks


def resolve_network_url(network: str) -> str:
    """`local`, `ic` (alias `mainnet`) or an http(s) URL -> the endpoint URL."""
    if network in NETWORK_ALIASES:
        return NETWORK_ALIASES[network]
    if network.startswith(("http://", "https://")):
        if not urlsplit(network).hostname:
            raise BackendError(f"`{network}` is not a usable replica URL")
        return network.rstrip("/")
    raise BackendError(f"unknown network `{network}`: use local, ic or an http(s):// URL")


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_local_url(url: str) -> bool:
    host = _host(url)
    return host in _LOOPBACK_HOSTS or host.endswith(".localhost")


def is_mainnet_url(url: str) -> bool:
    host = _host(url)
    return host in _MAINNET_HOSTS or any(host.endswith("." + h) for h in _MAINNET_HOSTS)


def short_id(canister_id: str) -> str:
    head, _, rest = canister_id.partition("-")
    return f"{head}-…" if rest else canister_id


# ---------------------------------------------------------------------- canister ids


def is_principal_text(text: str) -> bool:
    try:
        Principal.from_str(text)
    except (ValueError, TypeError):
        return False
    return True


def resolve_canister_id(
    name_or_id: str | None, project_root: Path | str, network: str = "local"
) -> str:
    """A principal text is returned as is; a name (default `gpt2_backend`) is looked up in
    the files dfx writes: `<root>/canister_ids.json` for `ic`, `<root>/.dfx/<network>/
    canister_ids.json` for local networks (icp-cli's id mappings are read as a fallback)."""
    name = name_or_id or DEFAULT_CANISTER_NAME
    if is_principal_text(name):
        return name
    root = Path(project_root)
    if network.startswith(("http://", "https://")):
        url = network.rstrip("/")
        if is_mainnet_url(url):
            network = "ic"
        elif is_local_url(url):
            network = "local"
        else:
            raise BackendError(
                f"cannot look up canister `{name}` for {url}: pass its canister id instead"
            )
    if network == "mainnet":
        network = "ic"
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
