"""The gpt2_backend canister's interface in Python: the one place that knows its Candid.

The Candid types come from the canister's own interface file (`canister/gpt2_backend.did`,
generated from the Rust types), parsed once. Each method encodes its arguments with them,
makes the call through a `Backend`, decodes the reply into a dataclass, and raises the
`CanisterError` subclass that matches the canister's typed `Err` variant.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

from icp_candid import DIDLoader, decode, encode

from gpt2_chat.assets import candid_interface
from gpt2_chat.backends.base import Backend, Reply
from gpt2_chat.errors import BackendError

# ---------------------------------------------------------------------- errors


class CanisterError(BackendError):
    """The canister answered `Err`: the request was refused and changed nothing. The seed's
    `setup_model` and `model_inference` answer with text, raised as this class itself; every
    other method's error is one of the subclasses below, one per variant of the `.did`'s
    `Error`, carrying its fields."""


class NotController(CanisterError):
    def __init__(self) -> None:
        super().__init__("only a controller of this canister may do this")


class AnonymousCaller(CanisterError):
    def __init__(self) -> None:
        super().__init__("sessions need an identity: the anonymous principal cannot own one")


class NoModel(CanisterError):
    def __init__(self) -> None:
        super().__init__("no model is loaded: upload a model file first")


class ModelLoading(CanisterError):
    def __init__(self, loaded_tensors: int, total_tensors: int) -> None:
        super().__init__(
            f"the model is still loading ({loaded_tensors} of {total_tensors} tensors)"
        )
        self.loaded_tensors = loaded_tensors
        self.total_tensors = total_tensors


class InvalidArgument(CanisterError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UploadGap(CanisterError):
    def __init__(self, expected: int) -> None:
        super().__init__(f"the chunk leaves a gap: the canister expects offset {expected}")
        self.expected = expected


class ChunkMismatch(CanisterError):
    def __init__(self, expected: int) -> None:
        super().__init__(
            f"the chunk differs from the bytes the canister already has (it expects offset "
            f"{expected}): they are from another file"
        )
        self.expected = expected


class PastDeclaredSize(CanisterError):
    def __init__(self, size: int) -> None:
        super().__init__(f"the chunk runs past the declared size of {size} bytes")
        self.size = size


class UploadComplete(CanisterError):
    def __init__(self) -> None:
        super().__init__("the upload is complete; begin a new upload or clear it first")


class UploadIncomplete(CanisterError):
    def __init__(self, received: int, size: list[int]) -> None:
        declared = _unopt(size)
        of = f" of {declared}" if declared is not None else ""
        super().__init__(f"the upload is incomplete: {received}{of} bytes received")
        self.received = received
        self.size: int | None = declared


class Sha256Mismatch(CanisterError):
    def __init__(self, received: str, declared: str) -> None:
        super().__init__(
            f"sha256 mismatch: the uploaded bytes hash to {received}, not {declared}; "
            "clear the upload (gpt2-chat upload --clear) and send the file again"
        )
        self.received = received
        self.declared = declared


class InvalidModel(CanisterError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid model file: {detail}")
        self.detail = detail


class StoredModelCorrupt(CanisterError):
    def __init__(self, recorded: str, found: str) -> None:
        super().__init__(
            f"the model in the canister's stable memory hashes to {found}, not {recorded} as "
            "recorded: it was damaged; upload it again"
        )
        self.recorded = recorded
        self.found = found


class UnknownSession(CanisterError):
    def __init__(self, session: int) -> None:
        super().__init__(
            f"no session {session} for this caller (deleted, evicted, or another principal's)"
        )
        self.session = session


class PositionMismatch(CanisterError):
    def __init__(self, expected: int) -> None:
        super().__init__(f"the session is at position {expected}")
        self.expected = expected


class SessionsFull(CanisterError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"all {limit} sessions are in recent use by other principals; try again later"
        )
        self.limit = limit


class NoContext(CanisterError):
    def __init__(self) -> None:
        super().__init__("the session has no context to continue: prefill a prompt first")


class ContextFull(CanisterError):
    def __init__(self, n_ctx: int) -> None:
        super().__init__(f"context is full: the model has {n_ctx} positions")
        self.n_ctx = n_ctx


class OutOfMemory(CanisterError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CallTooBig(CanisterError):
    """`InstructionLimit`: the request cannot be done within one call's instruction limit
    (refused up front, unlike `InstructionLimitExceeded`, a trap)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


#: The `.did`'s `Error` variants and the exception each becomes (a test checks both agree).
ERROR_VARIANTS: dict[str, type[CanisterError]] = {
    "NotController": NotController,
    "AnonymousCaller": AnonymousCaller,
    "NoModel": NoModel,
    "ModelLoading": ModelLoading,
    "InvalidArgument": InvalidArgument,
    "Gap": UploadGap,
    "ChunkMismatch": ChunkMismatch,
    "PastDeclaredSize": PastDeclaredSize,
    "UploadComplete": UploadComplete,
    "UploadIncomplete": UploadIncomplete,
    "Sha256Mismatch": Sha256Mismatch,
    "InvalidModel": InvalidModel,
    "StoredModelCorrupt": StoredModelCorrupt,
    "UnknownSession": UnknownSession,
    "PositionMismatch": PositionMismatch,
    "SessionsFull": SessionsFull,
    "NoContext": NoContext,
    "ContextFull": ContextFull,
    "OutOfMemory": OutOfMemory,
    "InstructionLimit": CallTooBig,
}


def _error(err: Any) -> CanisterError:
    """The exception for an `Err` payload: text (the seed's methods) or an `Error` variant."""
    if isinstance(err, str):
        return CanisterError(err)
    ((name, payload),) = err.items()
    cls = ERROR_VARIANTS[name]
    if payload is None:
        return cls()
    if isinstance(payload, dict):
        return cls(**payload)
    return cls(payload)


# ---------------------------------------------------------------------- Candid types


@dataclass(frozen=True)
class CandidInterface:
    #: Method name -> the parsed `func` type (argument and result types, modes).
    methods: dict[str, Any]
    #: Type name -> type, for the named types of the `.did`.
    types: dict[str, Any]


@functools.cache
def interface() -> CandidInterface:
    """The canister's interface, parsed from its `.did` once."""
    loader = DIDLoader()
    service = loader.load_did_source(candid_interface())
    return CandidInterface(methods=dict(service["methods"]), types=dict(loader.type_env))


def _opt(value: Any) -> list[Any]:
    return [] if value is None else [value]


def _unopt(value: list[Any]) -> Any:
    return value[0] if value else None


# ---------------------------------------------------------------------- Python types


@dataclass(frozen=True)
class StableDamage:
    """What was wrong with the canister's stable memory when it last started (it came up
    empty); `upload_clear` or a new upload acknowledges it."""

    #: The `.did`'s `StableDamage` variant: "UnreadableRecord", "Truncated" or
    #: "Sha256Mismatch".
    kind: str
    #: The variant's fields (e.g. `stable_bytes`, `needed_bytes` for "Truncated").
    fields: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_candid(v: dict[str, Any]) -> StableDamage:
        ((kind, payload),) = v.items()
        return StableDamage(kind, dict(payload) if payload else {})


@dataclass(frozen=True)
class UploadState:
    received_bytes: int
    declared_size: int | None
    declared_sha256: str | None
    sha256: str | None
    complete: bool
    loaded: bool
    damage: StableDamage | None = None

    @staticmethod
    def from_candid(v: dict[str, Any]) -> UploadState:
        damage = _unopt(v["damage"])
        return UploadState(
            received_bytes=v["received_bytes"],
            declared_size=_unopt(v["declared_size"]),
            declared_sha256=_unopt(v["declared_sha256"]),
            sha256=_unopt(v["sha256"]),
            complete=v["complete"],
            loaded=v["loaded"],
            damage=StableDamage.from_candid(damage) if damage else None,
        )


@dataclass(frozen=True)
class LoadProgress:
    loaded_tensors: int
    total_tensors: int
    loaded_bytes: int
    total_bytes: int
    done: bool
    instructions: int

    @staticmethod
    def from_candid(v: dict[str, Any]) -> LoadProgress:
        return LoadProgress(**v)


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int
    n_head: int
    n_embd: int
    n_inner: int
    vocab_size: int
    n_ctx: int


@dataclass(frozen=True)
class ModelInfo:
    loaded: bool
    config: ModelConfig | None
    dtype: str | None
    weights_heap_bytes: int
    upload: UploadState
    loading: LoadProgress | None
    sessions: int
    kv_bytes_reserved: int
    kv_bytes_limit: int
    #: The canister's cycle balance (0 in the embedded runtime, which holds no cycles).
    cycles: int = 0

    @staticmethod
    def from_candid(v: dict[str, Any]) -> ModelInfo:
        config = _unopt(v["config"])
        loading = _unopt(v["loading"])
        return ModelInfo(
            loaded=v["loaded"],
            config=ModelConfig(**config) if config else None,
            dtype=_unopt(v["dtype"]),
            weights_heap_bytes=v["weights_heap_bytes"],
            upload=UploadState.from_candid(v["upload"]),
            loading=LoadProgress.from_candid(loading) if loading else None,
            sessions=v["sessions"],
            kv_bytes_reserved=v["kv_bytes_reserved"],
            kv_bytes_limit=v["kv_bytes_limit"],
            cycles=int(v["cycles"]),
        )


@dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy; top_k 0 and top_p 1 = no cut."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def to_candid(self) -> dict[str, Any]:
        return {
            "temperature": float(self.temperature),
            "top_k": self.top_k,
            "top_p": float(self.top_p),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class SessionInfo:
    id: int
    position: int
    n_ctx: int
    kv_bytes: int
    sampling: Sampling
    tokens: list[int] = field(default_factory=list)

    @staticmethod
    def from_candid(v: dict[str, Any]) -> SessionInfo:
        return SessionInfo(
            id=v["id"],
            position=v["position"],
            n_ctx=v["n_ctx"],
            kv_bytes=v["kv_bytes"],
            sampling=Sampling(**v["sampling"]),
            tokens=list(v["tokens"]),
        )


@dataclass(frozen=True)
class PrefillReply:
    consumed: int
    position: int
    instructions: int


@dataclass(frozen=True)
class GenerateReply:
    tokens: list[int]
    position: int
    #: "MaxTokens", "EndOfText", "ContextFull" or "InstructionBudget".
    stop: str
    instructions: int


# ---------------------------------------------------------------------- the client


class Gpt2Canister:
    """Typed calls to a gpt2_backend canister over any backend."""

    #: Near the seed's chunk size, and a comfortable fit under the IC's 2 MiB ingress limit.
    CHUNK_SIZE = 1_900_000

    def __init__(self, backend: Backend, chunk_size: int | None = None) -> None:
        self.backend = backend
        # GPT2_CHAT_CHUNK_SIZE: smaller chunks for slow links (and for tests).
        self.chunk_size = chunk_size or int(os.environ.get("GPT2_CHAT_CHUNK_SIZE", self.CHUNK_SIZE))
        if not 1 <= self.chunk_size <= self.CHUNK_SIZE:
            raise ValueError(f"chunk size must be between 1 and {self.CHUNK_SIZE} bytes")

    # -- plumbing

    def _call(self, method: str, *args: Any) -> Any:
        """Calls `method` with `args`, typed by the `.did`; returns the decoded result
        (None for a method without one)."""
        func = interface().methods[method]
        arg = encode([{"type": t, "value": v} for t, v in zip(func.argTypes, args, strict=True)])
        call = self.backend.query if "query" in func.modes else self.backend.update
        reply: Reply = call(method, arg)
        if not func.retTypes:
            return None
        try:
            return decode(reply.data, func.retTypes)[0]["value"]
        except Exception as e:  # malformed replies come from a wrong canister, not the user
            raise BackendError(f"{method}: the canister's reply does not decode ({e})") from e

    def _ok(self, method: str, *args: Any) -> Any:
        value = self._call(method, *args)
        if "Err" in value:
            raise _error(value["Err"])
        return value["Ok"]

    # -- upload

    def upload_begin(self, size: int, sha256: str) -> UploadState:
        v = self._ok("upload_begin", {"size": size, "sha256": sha256})
        return UploadState.from_candid(v)

    def upload_chunk(self, offset: int, data: bytes) -> UploadState:
        v = self._ok("upload_chunk", {"offset": offset, "data": data})
        return UploadState.from_candid(v)

    def upload_finalize(self) -> UploadState:
        return UploadState.from_candid(self._ok("upload_finalize"))

    def upload_state(self) -> UploadState:
        return UploadState.from_candid(self._call("upload_state"))

    def upload_clear(self) -> None:
        """Forgets the upload and unloads the model (controllers only)."""
        self._ok("upload_clear")

    # -- model

    def load_model(self) -> LoadProgress:
        return LoadProgress.from_candid(self._ok("load_model"))

    def model_info(self) -> ModelInfo:
        return ModelInfo.from_candid(self._call("model_info"))

    # -- sessions

    def session_create(self, sampling: Sampling) -> SessionInfo:
        return SessionInfo.from_candid(self._ok("session_create", sampling.to_candid()))

    def session_info(self, session: int) -> SessionInfo:
        return SessionInfo.from_candid(self._ok("session_info", session))

    def session_list(self) -> list[SessionInfo]:
        return [SessionInfo.from_candid(v) for v in self._call("session_list")]

    def session_truncate(self, session: int, position: int) -> SessionInfo:
        return SessionInfo.from_candid(self._ok("session_truncate", session, position))

    def session_delete(self, session: int) -> None:
        self._ok("session_delete", session)

    def session_prefill(
        self, session: int, position: int, tokens: list[int], budget: int | None = None
    ) -> PrefillReply:
        args = {
            "session": session,
            "position": position,
            "tokens": tokens,
            "instruction_budget": _opt(budget),
        }
        return PrefillReply(**self._ok("session_prefill", args))

    def session_generate(
        self,
        session: int,
        position: int,
        max_tokens: int,
        budget: int | None = None,
        sampling: Sampling | None = None,
    ) -> GenerateReply:
        args = {
            "session": session,
            "position": position,
            "max_tokens": max_tokens,
            "instruction_budget": _opt(budget),
            "sampling": _opt(sampling.to_candid() if sampling else None),
        }
        v = self._ok("session_generate", args)
        (stop,) = v["stop"].keys()
        return GenerateReply(list(v["tokens"]), v["position"], stop, v["instructions"])

    # -- the seed's methods

    def upload_model_bytes_chunks(self, data: bytes) -> None:
        self._call("upload_model_bytes_chunks", data)

    def upload_wasm_ref_cell_length(self) -> int:
        return int(self._call("upload_wasm_ref_cell_length"))

    def upload_wasm_ref_cell_to_stable(self) -> None:
        self._call("upload_wasm_ref_cell_to_stable")

    def upload_wasm_ref_cell_clear(self) -> None:
        self._call("upload_wasm_ref_cell_clear")

    def setup_model(self) -> LoadProgress:
        return LoadProgress.from_candid(self._ok("setup_model"))

    def model_inference(self, max_new_tokens: int, prompt: list[int]) -> list[int]:
        return list(self._ok("model_inference", max_new_tokens, prompt))
