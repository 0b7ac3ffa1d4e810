"""What a canister-ready model file holds: the GPT-2 config, tensor names and shapes, the
int8 encoding, and the errors of making one.

`prepare` (from a checkpoint) and `prepare_random` (from a seeded generator) both describe
their output with `output_layout` and turn float32 values into file bytes with `encode`, so
the two cannot drift apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gpt2_chat.errors import UserError

Progress = Callable[[str, int, int], None]
"""`progress(stage, done, total)`; stages are ``"download"`` (bytes; total 0 when unknown)
and ``"write"`` (bytes of the output file)."""

Cancel = threading.Event | Callable[[], bool]
"""Checked between tensors (and between downloaded files): set or true means stop."""

FORMAT = "gpt2-chat"
SUPPORTED_DTYPES = ("f32", "int8")
#: The canister reads an int8 matrix's scales from `<name>_scale` (F32, one per output).
SCALE_SUFFIX = "_scale"


class PrepareError(UserError):
    """The model file cannot be made; the message says why and names the tensor or file."""


class PrepareCancelled(PrepareError):
    """Cancelled on request; the partial output was removed."""


def is_cancelled(cancel: Cancel | None) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else cancel()


@dataclass(frozen=True)
class Gpt2Config:
    n_layer: int
    n_head: int
    n_embd: int
    n_inner: int
    vocab_size: int
    n_ctx: int
    layer_norm_epsilon: float

    def metadata(self) -> dict[str, str]:
        return {
            "n_layer": str(self.n_layer),
            "n_head": str(self.n_head),
            "n_embd": str(self.n_embd),
            "n_inner": str(self.n_inner),
            "vocab_size": str(self.vocab_size),
            "n_ctx": str(self.n_ctx),
            # repr round-trips exactly and the canister's f32 parser reads it ("1e-05").
            "layer_norm_epsilon": repr(self.layer_norm_epsilon),
        }


@dataclass(frozen=True)
class PreparedModel:
    path: Path
    size: int
    sha256: str
    config: Gpt2Config
    dtype: str


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of an output file."""

    name: str
    dtype: str  # "F32" or "I8"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count * (1 if self.dtype == "I8" else 4)


_BLOCK_SHAPES: dict[str, Callable[[int, int], tuple[int, ...]]] = {
    # Conv1D weights are stored [in, out].
    "ln_1.weight": lambda e, f: (e,),
    "ln_1.bias": lambda e, f: (e,),
    "attn.c_attn.weight": lambda e, f: (e, 3 * e),
    "attn.c_attn.bias": lambda e, f: (3 * e,),
    "attn.c_proj.weight": lambda e, f: (e, e),
    "attn.c_proj.bias": lambda e, f: (e,),
    "ln_2.weight": lambda e, f: (e,),
    "ln_2.bias": lambda e, f: (e,),
    "mlp.c_fc.weight": lambda e, f: (e, f),
    "mlp.c_fc.bias": lambda e, f: (f,),
    "mlp.c_proj.weight": lambda e, f: (f, e),
    "mlp.c_proj.bias": lambda e, f: (e,),
}


def required_tensors(c: Gpt2Config) -> Iterator[str]:
    """Every tensor a GPT-2 with config `c` needs (`lm_head.weight` is optional: tied)."""
    yield from ("wte.weight", "wpe.weight")
    for i in range(c.n_layer):
        yield from (f"h.{i}.{p}" for p in _BLOCK_SHAPES)
    yield from ("ln_f.weight", "ln_f.bias")


def expected_shape(name: str, c: Gpt2Config) -> tuple[int, ...] | None:
    """Shape of tensor `name` in a model with config `c`; None if it has no such tensor."""
    e = c.n_embd
    top = {
        "wte.weight": (c.vocab_size, e),
        "lm_head.weight": (c.vocab_size, e),
        "wpe.weight": (c.n_ctx, e),
        "ln_f.weight": (e,),
        "ln_f.bias": (e,),
    }
    if name in top:
        return top[name]
    head, dot, rest = name.partition(".")
    if head != "h" or not dot:
        return None
    layer, dot, part = rest.partition(".")
    if not layer.isdigit() or int(layer) >= c.n_layer or part not in _BLOCK_SHAPES:
        return None
    return _BLOCK_SHAPES[part](e, c.n_inner)


#: Weight matrices that `--dtype int8` stores as int8 with per-output-channel scales.
_INT8_MATRICES = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)
#: Stored [vocab, n_embd]: their outputs are rows (the Conv1D matrices' are columns).
EMBEDDINGS = ("wte.weight", "lm_head.weight")


def is_int8_matrix(name: str) -> bool:
    return name in EMBEDDINGS or name.endswith(_INT8_MATRICES)


def output_axis(name: str) -> int:
    """The axis of an int8 matrix that its scales run along."""
    return 0 if name in EMBEDDINGS else 1


def quantize_int8(
    a: npt.NDArray[np.float32], output_axis: int
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric int8 per output channel: scale = max|w| / 127, q = round(w / scale)."""
    reduce_axis = 1 - output_axis
    scales = (np.abs(a).max(axis=reduce_axis) / 127.0).astype(np.float32)
    divisor = np.where(scales > 0, scales, np.float32(1.0))
    divisor = divisor[None, :] if output_axis == 1 else divisor[:, None]
    q = np.clip(np.rint(a / divisor), -127, 127).astype(np.int8)
    return q, scales


def output_layout(shapes: Mapping[str, tuple[int, ...]], dtype: str) -> list[TensorSpec]:
    """Every tensor of the output file, sorted by name: F32, except that with ``int8`` the
    weight matrices are I8, each followed by its F32 `<name>_scale`."""
    if dtype not in SUPPORTED_DTYPES:
        raise PrepareError(f"{dtype} is not supported; choose one of {', '.join(SUPPORTED_DTYPES)}")
    out: list[TensorSpec] = []
    for name, shape in shapes.items():
        if dtype == "int8" and is_int8_matrix(name):
            out.append(TensorSpec(name, "I8", shape))
            out.append(TensorSpec(name + SCALE_SUFFIX, "F32", (shape[output_axis(name)],)))
        else:
            out.append(TensorSpec(name, "F32", shape))
    return sorted(out, key=lambda t: t.name)


Values = Callable[[str], Iterator[npt.NDArray[np.float32]]]
"""`values(name)`: the float32 values of tensor `name`, whole or in slices of rows; an int8
matrix may come in row slices only if its outputs are rows (the embeddings)."""


def encode(layout: Sequence[TensorSpec], values: Values) -> Iterator[bytes | memoryview]:
    """The data section of a file with `layout`, one slice of a tensor at a time."""
    pending: npt.NDArray[np.float32] | None = None
    for spec in layout:
        # Scales sort right after their matrix, so one quantization serves both.
        if pending is not None and spec.name.endswith(SCALE_SUFFIX):
            yield pending.tobytes()
            pending = None
            continue
        scales: list[npt.NDArray[np.float32]] = []
        for a in values(spec.name):
            if spec.dtype == "I8":
                q, s = quantize_int8(a, output_axis(spec.name))
                scales.append(s)
                yield q.tobytes()
            else:
                yield np.ascontiguousarray(a, dtype="<f4").data.cast("B")
        if scales:
            pending = np.concatenate(scales)
