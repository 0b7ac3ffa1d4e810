"""The gpt2_backend canister's interface in Python: the one place that knows its Candid.

Each method encodes its arguments, makes the call through a `Backend`, decodes the reply
into a dataclass, and turns the canister's `Err` into `CanisterError`. The types mirror
`canister/backend/src/api.rs` (the `.did` file is generated from it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from icp_candid.candid import Types, decode, encode

from gpt2_chat.backends.base import Backend, Reply
from gpt2_chat.errors import BackendError


class CanisterError(BackendError):
    """The canister answered `Err(message)`: the request was refused and changed nothing."""


# ---------------------------------------------------------------------- Candid types

_UPLOAD_BEGIN = Types.Record({"size": Types.Nat64, "sha256": Types.Text})
_UPLOAD_CHUNK = Types.Record({"offset": Types.Nat64, "data": Types.Vec(Types.Nat8)})
_UPLOAD_STATE = Types.Record(
    {
        "received_bytes": Types.Nat64,
        "declared_size": Types.Opt(Types.Nat64),
        "declared_sha256": Types.Opt(Types.Text),
        "sha256": Types.Opt(Types.Text),
        "complete": Types.Bool,
        "loaded": Types.Bool,
    }
)
_LOAD_PROGRESS = Types.Record(
    {
        "loaded_tensors": Types.Nat32,
        "total_tensors": Types.Nat32,
        "loaded_bytes": Types.Nat64,
        "total_bytes": Types.Nat64,
        "done": Types.Bool,
        "instructions": Types.Nat64,
    }
)
_MODEL_CONFIG = Types.Record(
    {
        "n_layer": Types.Nat32,
        "n_head": Types.Nat32,
        "n_embd": Types.Nat32,
        "n_inner": Types.Nat32,
        "vocab_size": Types.Nat32,
        "n_ctx": Types.Nat32,
    }
)
_MODEL_INFO = Types.Record(
    {
        "loaded": Types.Bool,
        "config": Types.Opt(_MODEL_CONFIG),
        "dtype": Types.Opt(Types.Text),
        "weights_heap_bytes": Types.Nat64,
        "upload": _UPLOAD_STATE,
        "loading": Types.Opt(_LOAD_PROGRESS),
        "sessions": Types.Nat32,
        "kv_bytes_reserved": Types.Nat64,
        "kv_bytes_limit": Types.Nat64,
    }
)
_SAMPLING = Types.Record(
    {
        "temperature": Types.Float32,
        "top_k": Types.Nat32,
        "top_p": Types.Float32,
        "seed": Types.Nat64,
    }
)
_SESSION_INFO = Types.Record(
    {
        "id": Types.Nat64,
        "position": Types.Nat32,
        "n_ctx": Types.Nat32,
        "kv_bytes": Types.Nat64,
        "sampling": _SAMPLING,
        "tokens": Types.Vec(Types.Nat32),
    }
)
_PREFILL_ARGS = Types.Record(
    {
        "session": Types.Nat64,
        "position": Types.Nat32,
        "tokens": Types.Vec(Types.Nat32),
        "instruction_budget": Types.Opt(Types.Nat64),
    }
)
_PREFILL_REPLY = Types.Record(
    {"consumed": Types.Nat32, "position": Types.Nat32, "instructions": Types.Nat64}
)
_STOP_REASON = Types.Variant(
    {
        "MaxTokens": Types.Null,
        "EndOfText": Types.Null,
        "ContextFull": Types.Null,
        "InstructionBudget": Types.Null,
    }
)
_GENERATE_ARGS = Types.Record(
    {
        "session": Types.Nat64,
        "position": Types.Nat32,
        "max_tokens": Types.Nat32,
        "instruction_budget": Types.Opt(Types.Nat64),
        "sampling": Types.Opt(_SAMPLING),
    }
)
_GENERATE_REPLY = Types.Record(
    {
        "tokens": Types.Vec(Types.Nat32),
        "position": Types.Nat32,
        "stop": _STOP_REASON,
        "instructions": Types.Nat64,
    }
)


def _result(ok: Any) -> Any:
    return Types.Variant({"Ok": ok, "Err": Types.Text})


def _opt(value: Any) -> list[Any]:
    return [] if value is None else [value]


def _unopt(value: list[Any]) -> Any:
    return value[0] if value else None


# ---------------------------------------------------------------------- Python types


@dataclass(frozen=True)
class UploadState:
    received_bytes: int
    declared_size: int | None
    declared_sha256: str | None
    sha256: str | None
    complete: bool
    loaded: bool

    @staticmethod
    def from_candid(v: dict[str, Any]) -> UploadState:
        return UploadState(
            received_bytes=v["received_bytes"],
            declared_size=_unopt(v["declared_size"]),
            declared_sha256=_unopt(v["declared_sha256"]),
            sha256=_unopt(v["sha256"]),
            complete=v["complete"],
            loaded=v["loaded"],
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

    def _call(self, kind: str, method: str, args: list[tuple[Any, Any]], ret: Any) -> Any:
        arg = encode([{"type": t, "value": v} for t, v in args])
        call = self.backend.query if kind == "query" else self.backend.update
        reply: Reply = call(method, arg)
        if ret is None:
            return None
        try:
            return decode(reply.data, ret)[0]["value"]
        except Exception as e:  # malformed replies come from a wrong canister, not the user
            raise BackendError(f"{method}: the canister's reply does not decode ({e})") from e

    def _ok(self, kind: str, method: str, args: list[tuple[Any, Any]], ok: Any) -> Any:
        value = self._call(kind, method, args, _result(ok))
        if "Err" in value:
            raise CanisterError(value["Err"])
        return value["Ok"]

    # -- upload

    def upload_begin(self, size: int, sha256: str) -> UploadState:
        v = self._ok(
            "update",
            "upload_begin",
            [(_UPLOAD_BEGIN, {"size": size, "sha256": sha256})],
            _UPLOAD_STATE,
        )
        return UploadState.from_candid(v)

    def upload_chunk(self, offset: int, data: bytes) -> UploadState:
        v = self._ok(
            "update",
            "upload_chunk",
            [(_UPLOAD_CHUNK, {"offset": offset, "data": data})],
            _UPLOAD_STATE,
        )
        return UploadState.from_candid(v)

    def upload_finalize(self) -> UploadState:
        return UploadState.from_candid(self._ok("update", "upload_finalize", [], _UPLOAD_STATE))

    def upload_state(self) -> UploadState:
        return UploadState.from_candid(self._call("query", "upload_state", [], _UPLOAD_STATE))

    def upload_clear(self) -> None:
        self._ok("update", "upload_clear", [], Types.Null)

    # -- model

    def load_model(self) -> LoadProgress:
        return LoadProgress.from_candid(self._ok("update", "load_model", [], _LOAD_PROGRESS))

    def model_info(self) -> ModelInfo:
        return ModelInfo.from_candid(self._call("query", "model_info", [], _MODEL_INFO))

    # -- sessions

    def session_create(self, sampling: Sampling) -> SessionInfo:
        v = self._ok("update", "session_create", [(_SAMPLING, sampling.to_candid())], _SESSION_INFO)
        return SessionInfo.from_candid(v)

    def session_info(self, session: int) -> SessionInfo:
        v = self._ok("query", "session_info", [(Types.Nat64, session)], _SESSION_INFO)
        return SessionInfo.from_candid(v)

    def session_truncate(self, session: int, position: int) -> SessionInfo:
        v = self._ok(
            "update",
            "session_truncate",
            [(Types.Nat64, session), (Types.Nat32, position)],
            _SESSION_INFO,
        )
        return SessionInfo.from_candid(v)

    def session_delete(self, session: int) -> None:
        self._ok("update", "session_delete", [(Types.Nat64, session)], Types.Null)

    def session_prefill(
        self, session: int, position: int, tokens: list[int], budget: int | None = None
    ) -> PrefillReply:
        args = {
            "session": session,
            "position": position,
            "tokens": tokens,
            "instruction_budget": _opt(budget),
        }
        v = self._ok("update", "session_prefill", [(_PREFILL_ARGS, args)], _PREFILL_REPLY)
        return PrefillReply(**v)

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
        v = self._ok("update", "session_generate", [(_GENERATE_ARGS, args)], _GENERATE_REPLY)
        (stop,) = v["stop"].keys()
        return GenerateReply(list(v["tokens"]), v["position"], stop, v["instructions"])

    # -- the seed's methods

    def upload_model_bytes_chunks(self, data: bytes) -> None:
        self._call("update", "upload_model_bytes_chunks", [(Types.Vec(Types.Nat8), data)], None)

    def upload_wasm_ref_cell_length(self) -> int:
        return int(self._call("query", "upload_wasm_ref_cell_length", [], Types.Nat64))

    def upload_wasm_ref_cell_to_stable(self) -> None:
        self._call("update", "upload_wasm_ref_cell_to_stable", [], None)

    def upload_wasm_ref_cell_clear(self) -> None:
        self._call("update", "upload_wasm_ref_cell_clear", [], None)

    def setup_model(self) -> LoadProgress:
        return LoadProgress.from_candid(self._ok("update", "setup_model", [], _LOAD_PROGRESS))

    def model_inference(self, max_new_tokens: int, prompt: list[int]) -> list[int]:
        v = self._ok(
            "update",
            "model_inference",
            [(Types.Nat8, max_new_tokens), (Types.Vec(Types.Int64), prompt)],
            Types.Vec(Types.Int64),
        )
        return list(v)
