"""Randomly initialised GPT-2-shaped models (`gpt2-chat prepare --random SHAPE`).

The output is what `prepare` writes for a real checkpoint (same names, header, metadata and
int8 encoding) but the weights come from a seeded generator: a demo or benchmark model
that needs no download, and talks nonsense. Tensors are generated and written one at a
time, embeddings in slices of rows, so even GPT-2 xl needs only tens of MB of memory.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gpt2_chat.client.model_format import (
    EMBEDDINGS,
    FORMAT,
    Cancel,
    Gpt2Config,
    PreparedModel,
    PrepareError,
    Progress,
    encode,
    expected_shape,
    output_layout,
    required_tensors,
)
from gpt2_chat.client.safetensors_writer import write_safetensors

#: Standard deviation of every random weight (GPT-2's initializer range).
STD = 0.02
#: Rows of an embedding generated at a time (an embedding's int8 scales are per row).
_ROWS_PER_SLICE = 4096


@dataclass(frozen=True)
class Shape:
    """A GPT-2 architecture: what a random model is shaped like."""

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

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config()
        return {name: _shape(name, c) for name in required_tensors(c)}

    @property
    def parameters(self) -> int:
        return sum(math.prod(s) for s in self.tensor_shapes().values())


# The released GPT-2 configurations (Radford et al. 2019; the Hugging Face config.json files).
GPT2 = Shape("gpt2", 12, 12, 768)
GPT2_MEDIUM = Shape("gpt2-medium", 24, 16, 1024)
GPT2_LARGE = Shape("gpt2-large", 36, 20, 1280)
GPT2_XL = Shape("gpt2-xl", 48, 25, 1600)
SHAPES = {s.name: s for s in (GPT2, GPT2_MEDIUM, GPT2_LARGE, GPT2_XL)}


def _shape(name: str, config: Gpt2Config) -> tuple[int, ...]:
    shape = expected_shape(name, config)
    assert shape is not None, name
    return shape


def prepare_random(
    shape: str | Shape,
    output: Path,
    dtype: str = "f32",
    seed: int = 0,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> PreparedModel:
    """Write a random model of `shape` (a name in `SHAPES`, e.g. ``gpt2``) to `output`.

    The same arguments always give the same bytes. Cancelling (`cancel`, checked between
    tensors) raises `PrepareCancelled` and leaves no output."""
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise PrepareError(f"unknown GPT-2 shape {shape!r}; choose one of {', '.join(SHAPES)}")
        shape = SHAPES[shape]
    shapes = shape.tensor_shapes()
    layout = output_layout(shapes, dtype)
    config = shape.config()
    metadata = {
        **config.metadata(),
        "format": FORMAT,
        "source": f"random {shape.name} seed={seed} std={STD}",
        "dtype": dtype,
    }

    def values(name: str) -> Iterator[npt.NDArray[np.float32]]:
        return _values(name, shapes[name], seed)

    size, digest = write_safetensors(
        output, layout, metadata, encode(layout, values), progress=progress, cancel=cancel
    )
    return PreparedModel(path=output, size=size, sha256=digest, config=config, dtype=dtype)


def _values(name: str, shape: tuple[int, ...], seed: int) -> Iterator[npt.NDArray[np.float32]]:
    """Normal(0, STD) weights, embeddings in slices of rows; layer-norm gains are
    1 + Normal(0, STD), as after training they hover around one."""
    # One generator per tensor: a tensor's values do not depend on the others.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    gain = name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
    rows = _ROWS_PER_SLICE if name in (*EMBEDDINGS, "wpe.weight") else shape[0]
    for start in range(0, shape[0], rows):
        a = rng.standard_normal((min(rows, shape[0] - start), *shape[1:]), dtype=np.float32)
        a *= np.float32(STD)
        if gain:
            a += np.float32(1.0)
        yield a
