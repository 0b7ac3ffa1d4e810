"""The replica backend: a canister on a real IC network over its HTTP interface.

Modules: `networks` (network names, canister ids), `envelopes` (signed requests),
`transport` (HTTP under one deadline), `certificate` (certificate verification), `rejects`
and `failures` (reject codes and transport failures as the typed errors of `errors`),
`backend` (queries, calls, polling).
"""

from gpt2_chat.backends.replica.backend import ReplicaBackend
from gpt2_chat.backends.replica.networks import (
    DEFAULT_CANISTER_NAME,
    LOCAL_URL,
    MAINNET_URL,
    NETWORK_ALIASES,
    is_local_url,
    is_mainnet_url,
    resolve_canister_id,
    resolve_network_url,
)

__all__ = [
    "DEFAULT_CANISTER_NAME",
    "LOCAL_URL",
    "MAINNET_URL",
    "NETWORK_ALIASES",
    "ReplicaBackend",
    "is_local_url",
    "is_mainnet_url",
    "resolve_canister_id",
    "resolve_network_url",
]
