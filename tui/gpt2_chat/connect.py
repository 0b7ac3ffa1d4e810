"""Choosing and opening the backend a command talks to."""

from __future__ import annotations

from pathlib import Path

from gpt2_chat.backends.base import Backend
from gpt2_chat.identity import default_identity, dfx_selected_identity, load_identity
from gpt2_chat.settings import Settings

#: The project root: dfx keeps canister ids under it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def open_backend(settings: Settings) -> Backend:
    """The embedded runtime for `network == "embedded"`, otherwise a replica."""
    if settings.network == "embedded":
        from gpt2_chat.backends.embedded.backend import EmbeddedBackend

        state_dir = settings.resolved_state_dir()
        identity = (
            load_identity(settings.identity)
            if settings.identity
            else default_identity(state_dir / "identity.pem")
        )
        return EmbeddedBackend(state_dir, identity.sender())
    from gpt2_chat.backends.replica import ReplicaBackend, resolve_canister_id

    network = settings.network
    canister_id = resolve_canister_id(
        settings.canister or "gpt2_backend", PROJECT_ROOT, "ic" if network == "ic" else "local"
    )
    identity = load_identity(settings.identity or dfx_selected_identity())
    return ReplicaBackend(network, canister_id, identity)
