"""What can go wrong talking to a replica, one class per thing the user does next.

All are `BackendError`s (one-line messages); callers that react differently (retry, top up,
redeploy) match the class, never the text. `InstructionLimitExceeded` (gpt2_chat.errors) is
raised for both update and query instruction limits.
"""

from __future__ import annotations

from gpt2_chat.errors import BackendError


class ReplicaUnreachable(BackendError):
    """Nothing answered: refused, DNS, TLS or a dropped connection."""


class ReplicaTimeout(BackendError):
    """The call's one deadline passed; an update may still complete on the canister."""


class NotAReplica(BackendError):
    """The endpoint answered, but not as the IC's HTTP interface specifies."""


class CertificateInvalid(BackendError):
    """A certificate (its signature, delegation, tree or time) failed verification."""


class ReplicaBusy(BackendError):
    """A transient refusal (queue full, rate limited, overloaded): retried, then reported."""


class CanisterNotFound(BackendError):
    """No canister with this id on the network."""


class CanisterEmpty(BackendError):
    """The canister exists but has no wasm module installed."""


class MethodNotFound(BackendError):
    """The installed wasm does not export the method: an older or different build."""


class CanisterOutOfCycles(BackendError):
    """The canister cannot pay for the call (out of cycles or frozen)."""


class CanisterStopped(BackendError):
    """The canister is stopped or stopping."""


class CanisterTrapped(BackendError):
    """The canister trapped (panicked); its message is in the error."""


class CanisterRejected(BackendError):
    """The canister itself rejected the call (reject code 4)."""


class RequestExpired(BackendError):
    """The message's ingress_expiry was refused or passed (usually this computer's clock)."""
