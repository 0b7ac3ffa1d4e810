"""What a `network` setting means, parsed once: `embedded`, `local`, `ic` (or `mainnet`), or
a replica URL -> which backend, which endpoint, which dfx network the canister ids are
filed under, and how the network is shown to the user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from gpt2_chat.errors import UserError

LOCAL_URL = "http://127.0.0.1:4943"
MAINNET_URL = "https://icp-api.io"
#: Hosts of mainnet's API boundary nodes (and their subdomains).
MAINNET_HOSTS = ("icp-api.io", "ic0.app", "icp0.io")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")

NETWORK_HELP = "embedded (the in-process runtime), local, ic (or mainnet), or a replica URL"


class UnknownNetwork(UserError, ValueError):
    """A network setting that is none of the accepted forms."""


@dataclass(frozen=True)
class Network:
    kind: Literal["embedded", "replica"]
    #: The replica endpoint (None for the embedded runtime).
    url: str | None
    #: The dfx network whose `canister_ids.json` names canisters here: "local" or "ic".
    dfx_network: str | None
    #: How the user sees it: "embedded runtime (not a replica)", "IC mainnet", a URL.
    label: str

    @property
    def embedded(self) -> bool:
        return self.kind == "embedded"


EMBEDDED = Network("embedded", None, None, "embedded runtime (not a replica)")


def parse_network(text: str) -> Network:
    """The network a setting names; UnknownNetwork (saying what is accepted) otherwise."""
    name = text.strip()
    if name == "embedded":
        return EMBEDDED
    if name == "local":
        return Network("replica", LOCAL_URL, "local", f"local replica {LOCAL_URL}")
    if name in ("ic", "mainnet"):
        return Network("replica", MAINNET_URL, "ic", "IC mainnet")
    if name.startswith(("http://", "https://")):
        try:
            host = (urlsplit(name).hostname or "").lower()
        except ValueError as e:  # a malformed port or IPv6 literal
            raise UnknownNetwork(f"`{name}` is not a usable replica URL ({e})") from None
        if not host:
            raise UnknownNetwork(f"`{name}` is not a usable replica URL (no host)")
        url = name.rstrip("/")
        if host in MAINNET_HOSTS or host.endswith(tuple("." + h for h in MAINNET_HOSTS)):
            return Network("replica", url, "ic", f"IC mainnet {url}")
        # Any other endpoint is taken for a local-style network (dfx files its ids there).
        where = "local replica" if host in _LOOPBACK_HOSTS else "replica"
        return Network("replica", url, "local", f"{where} {url}")
    raise UnknownNetwork(f"unknown network `{name}`: use {NETWORK_HELP} (http:// or https://)")
