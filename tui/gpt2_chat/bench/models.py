"""Deterministic random GPT-2-shaped checkpoints, written straight to canister-ready files.

The output is what `prepare` writes for a real checkpoint (same names, header, metadata and,
for int8, the same `quantize_int8` per output channel with `<name>_scale` F32 tensors), but
the weights come from a seeded generator instead of a source file. Tensors are generated,
quantized and written one at a time, and embeddings in slices of rows, so even GPT-2 xl in
int8 needs only tens of MB of memory and never exists in f32.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gpt2_chat.client.prepare import (
    FORMAT,
    SCALE_SUFFIX,
    Gpt2Config,
    PreparedModel,
    _expected_shape,
    _is_int8_matrix,
    _layout,
    _required,
    _Tensor,
    quantize_int8,
)

#: Standard deviation of every random weight (GPT-2's initializer range).
STD = 0.02
DEFAULT_SEED = 20240601
#: Rows of an embedding generated at a time (the embeddings' scales are per row).
_ROWS_PER_SLICE = 4096


@dataclass(frozen=True)
class Shape:
    """A GPT-2 architecture: what a random checkpoint is shaped like."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int = 50257
    n_ctx: int = 1024

    def config(self) -> Gpt2Config:
        return Gpt2Config(
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            n_inner=4 * self.n_embd,
            vocab_size=self.vocab_size,
            n_ctx=self.n_ctx,
            layer_norm_epsilon=1e-5,
        )

    @property
    def parameters(self) -> int:
        c = self.config()
        return sum(math.prod(_shape(name, c)) for name in _required(c))


GPT2 = Shape("gpt2", 12, 12, 768)
GPT2_MEDIUM = Shape("gpt2-medium", 24, 16, 1024)
GPT2_LARGE = Shape("gpt2-large", 36, 20, 1280)
GPT2_XL = Shape("gpt2-xl", 48, 25, 1600)
BIG_SHAPES = (GPT2_MEDIUM, GPT2_LARGE, GPT2_XL)


def _shape(name: str, config: Gpt2Config) -> tuple[int, ...]:
    shape = _expected_shape(name, config)
    assert shape is not None, name
    return shape


def _rng(seed: int, name: str) -> np.random.Generator:
    """One generator per tensor: a tensor's values do not depend on the others."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _values(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Normal(0, STD) weights; layer-norm gains are 1 + Normal(0, STD) as after training
    they hover around one."""
    a = rng.standard_normal(shape, dtype=np.float32)
    a *= np.float32(STD)
    if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
        a += np.float32(1.0)
    return a


def _chunks(
    name: str, shape: tuple[int, ...], int8: bool, seed: int
) -> Iterator[tuple[bytes, npt.NDArray[np.float32] | None]]:
    """(bytes of the tensor's next slice, its int8 scales or None), in file order."""
    rng = _rng(seed, name)
    embedding = name in ("wte.weight", "lm_head.weight")
    if len(shape) == 2 and (embedding or name == "wpe.weight"):
        # Row slices: an embedding's outputs (and so its scales) are its rows.
        for start in range(0, shape[0], _ROWS_PER_SLICE):
            rows = min(_ROWS_PER_SLICE, shape[0] - start)
            a = _values(name, (rows, shape[1]), rng)
            if int8 and embedding:
                q, scales = quantize_int8(a, 0)
                yield q.tobytes(), scales
            else:
                yield a.tobytes(), None
        return
    a = _values(name, shape, rng)
    if int8 and _is_int8_matrix(name):
        q, scales = quantize_int8(a, 1)  # Conv1D: [in, out], outputs are columns
        yield q.tobytes(), scales
    else:
        yield a.tobytes(), None


def write_random_model(
    path: Path, shape: Shape, dtype: str = "f32", seed: int = DEFAULT_SEED
) -> PreparedModel:
    """Writes a random checkpoint of `shape` in `dtype` ("f32" or "int8") to `path`.

    The same arguments always give the same bytes."""
    if dtype not in ("f32", "int8"):
        raise ValueError(f"dtype must be f32 or int8, not {dtype!r}")
    int8 = dtype == "int8"
    config = shape.config()
    tensors = {n: _Tensor(n, "F32", _shape(n, config), 0) for n in _required(config)}
    layout = _layout(tensors, int8)
    metadata = {
        **config.metadata(),
        "format": FORMAT,
        "source": f"random {shape.name} seed={seed} std={STD}",
        "dtype": dtype,
    }
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, dt, dims in layout:
        size = math.prod(dims) * (1 if dt == "I8" else 4)
        header[name] = {"dtype": dt, "shape": list(dims), "data_offsets": [offset, offset + size]}
        offset += size
    # The same canonical header as `prepare` writes.
    blob = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    blob += b" " * (-len(blob) % 8)
    total = 8 + len(blob) + offset

    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:

        def emit(data: bytes) -> None:
            f.write(data)
            digest.update(data)

        emit(struct.pack("<Q", len(blob)))
        emit(blob)
        # Scales sort right after their matrix (`<name>_scale`): emit them once it is done.
        scales: list[npt.NDArray[np.float32]] = []
        for name, _dt, dims in layout:
            if name.endswith(SCALE_SUFFIX) and name.removesuffix(SCALE_SUFFIX) in tensors:
                emit(np.concatenate(scales).tobytes())
                scales = []
                continue
            for data, s in _chunks(name, dims, int8, seed):
                emit(data)
                if s is not None:
                    scales.append(s)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    assert path.stat().st_size == total
    return PreparedModel(
        path=path, size=total, sha256=digest.hexdigest(), config=config, dtype=dtype
    )
