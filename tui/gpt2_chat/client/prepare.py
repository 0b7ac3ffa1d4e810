"""Turn a GPT-2 checkpoint into a canister-ready safetensors file (`gpt2-chat prepare`).

Input: a `save_pretrained` directory (`config.json` + `model.safetensors`), a single
`.safetensors` file, or a Hugging Face model id (downloaded by `hub`: cached, resumable, at
one commit).
Output: F32 tensors under the canister's names (`wte.weight`, `h.0.ln_1.weight`, ...), no
causal-mask buffers, `lm_head.weight` only when it is not tied to `wte.weight`, sorted by
name, with the GPT-2 config in `__metadata__` so the canister never has to guess it.
The same input always gives the same bytes (see `safetensors_writer`), so a sha256
identifies a prepared model. `prepare_random` writes the same format from random weights.

Peak memory is about twice the largest tensor (wte, plus lm_head when the checkpoint has
one), not the whole model: tensors are read, checked and written one at a time. For
GPT-2 xl that is ~0.65 GB (two 50257x1600 f32 matrices) instead of 6 GB; F16/BF16 inputs
add one half-size copy of the tensor being converted.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gpt2_chat.client.hub import download, is_model_id
from gpt2_chat.client.model_format import (
    FORMAT,
    SUPPORTED_DTYPES,
    Cancel,
    Gpt2Config,
    PrepareCancelled,
    PreparedModel,
    PrepareError,
    Progress,
    encode,
    expected_shape,
    output_layout,
    required_tensors,
)
from gpt2_chat.client.random_model import SHAPES, prepare_random
from gpt2_chat.client.safetensors_writer import write_safetensors

__all__ = [
    "FORMAT",
    "SHAPES",
    "SUPPORTED_DTYPES",
    "Gpt2Config",
    "PrepareCancelled",
    "PrepareError",
    "PreparedModel",
    "Progress",
    "download",
    "prepare",
    "prepare_random",
]

# The safetensors crate refuses bigger headers; a bigger one means a corrupt file.
_MAX_HEADER = 100_000_000
_PREFIX = "transformer."
# Causal-mask buffers older transformers versions saved; not weights.
_IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
_BLOCK = re.compile(r"h\.(\d+)\.(.+)")
# GPT-2's GELU is the tanh approximation; transformers has two names for it.
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")

_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
# Float dtypes we convert to F32. BF16 is read as its raw 16 bits (numpy has no bfloat16).
_READ_AS = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def prepare(
    source: str,
    output: Path,
    *,
    dtype: str = "f32",
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    revision: str = "main",
    cache_dir: Path | None = None,
) -> PreparedModel:
    """Validate the GPT-2 checkpoint `source` and write it canister-ready to `output`.

    `source` is a directory (`config.json` + `model.safetensors`), a `.safetensors` file, or a
    Hugging Face model id such as ``gpt2`` at `revision` (see `hub.download`; `cache_dir`
    None is the hub's own cache).
    `output` appears atomically and only if every check passes. Cancelling (`cancel`,
    checked between tensors) raises `PrepareCancelled` and leaves no output.
    """
    if dtype not in SUPPORTED_DTYPES:
        raise PrepareError(f"{dtype} is not supported; choose one of {', '.join(SUPPORTED_DTYPES)}")
    weights, config_json, origin = _resolve(source, revision, cache_dir, progress, cancel)
    st = _Safetensors(weights)
    tensors = _rename(st)
    if config_json is not None:
        config, tied_in_config = _config_from_json(config_json)
    else:
        config, tied_in_config = _infer_config(st.path, tensors, st.metadata), True
    _check(st.path, tensors, config)

    # Decide about lm_head before writing: the header, which comes first, lists the tensors.
    lm_head = tensors.get("lm_head.weight")
    if lm_head is not None:
        if np.array_equal(_read_f32(st.path, lm_head), _read_f32(st.path, tensors["wte.weight"])):
            del tensors["lm_head.weight"]
    elif not tied_in_config:
        raise PrepareError(
            f"{config_json}: tie_word_embeddings is false but {st.path} has no lm_head.weight"
        )

    metadata = {**config.metadata(), "format": FORMAT, "source": origin, "dtype": dtype}
    layout = output_layout({name: t.shape for name, t in tensors.items()}, dtype)

    def values(name: str) -> Iterator[npt.NDArray[np.float32]]:
        yield _read_finite(st.path, tensors[name])

    size, digest = write_safetensors(
        output, layout, metadata, encode(layout, values), progress=progress, cancel=cancel
    )
    return PreparedModel(path=output, size=size, sha256=digest, config=config, dtype=dtype)


# --- where the checkpoint comes from ---------------------------------------------------------


def _resolve(
    source: str,
    revision: str,
    cache_dir: Path | None,
    progress: Progress | None,
    cancel: Cancel | None,
) -> tuple[Path, Path | None, str]:
    """(weights file, config.json or None, origin) for `source`, downloading a model id if
    needed. The origin names a download by id and commit, a local checkpoint by its file or
    folder name, not its path, so it prepares to the same bytes wherever it sits."""
    path = Path(source).expanduser()
    if path.is_dir():
        return (*_from_directory(path), path.name)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise PrepareError(
                f"{source}: not a .safetensors file; pass a safetensors file, a directory "
                "holding config.json and model.safetensors, or a Hugging Face model id"
            )
        return path, None, path.name
    if is_model_id(source):
        got = download(source, cache_dir, revision=revision, progress=progress, cancel=cancel)
        return (*_from_directory(got.directory), f"{source}@{got.commit}")
    raise PrepareError(f"{source}: no such file or directory (and not a Hugging Face model id)")


def _from_directory(directory: Path) -> tuple[Path, Path | None]:
    weights = directory / "model.safetensors"
    if not weights.is_file():
        if (directory / "model.safetensors.index.json").exists():
            why = "sharded checkpoints are not supported; save with a larger max_shard_size"
        elif (directory / "pytorch_model.bin").exists():
            why = "only safetensors is read; re-save with save_pretrained(safe_serialization=True)"
        else:
            why = "expected a Hugging Face save_pretrained directory"
        raise PrepareError(f"{directory}: no model.safetensors ({why})")
    config = directory / "config.json"
    return weights, config if config.is_file() else None


# --- reading safetensors ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    name: str  # as in the source file
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute file offset of the first byte


class _Safetensors:
    """Header of a safetensors file; tensor data is read on demand by `_read_f32`.

    Not `safetensors.safe_open(framework="numpy")`: it cannot return BF16 tensors (numpy has
    no bfloat16), and reading raw little-endian bytes ourselves handles every float dtype.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as f:
                file_size = os.fstat(f.fileno()).st_size
                prefix = f.read(8)
                if len(prefix) < 8:
                    raise PrepareError(f"{path}: not a safetensors file (shorter than 8 bytes)")
                (header_len,) = struct.unpack("<Q", prefix)
                if header_len > _MAX_HEADER or 8 + header_len > file_size:
                    raise PrepareError(f"{path}: not a safetensors file (bad header length)")
                raw = f.read(header_len)
        except OSError as e:
            raise PrepareError(f"{path}: cannot read: {e}") from e
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PrepareError(f"{path}: not a safetensors file (header is not JSON: {e})") from e
        if not isinstance(header, dict):
            raise PrepareError(f"{path}: not a safetensors file (header is not an object)")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise PrepareError(f"{path}: __metadata__ is not a string-to-string map")
        self.metadata: dict[str, str] = meta
        data_start = 8 + header_len
        self.tensors: dict[str, _Tensor] = {}
        for name, entry in sorted(header.items()):
            self.tensors[name] = _parse_entry(path, name, entry, data_start, file_size)


def _parse_entry(path: Path, name: str, entry: Any, data_start: int, file_size: int) -> _Tensor:
    bad = PrepareError(f"{path}: tensor {name} has a malformed header entry")
    if not isinstance(entry, dict):
        raise bad
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if (
        not isinstance(dtype, str)
        or not isinstance(shape, list)
        or not all(type(d) is int and d >= 0 for d in shape)
        or not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
    ):
        raise bad
    begin, end = offsets
    if not 0 <= begin <= end or data_start + end > file_size:
        raise PrepareError(f"{path}: tensor {name} lies outside the file (truncated download?)")
    itemsize = _ITEMSIZE.get(dtype)
    if itemsize is not None and end - begin != math.prod(shape) * itemsize:
        raise PrepareError(f"{path}: tensor {name}: {end - begin} bytes do not fit {dtype}{shape}")
    return _Tensor(name=name, dtype=dtype, shape=tuple(shape), offset=data_start + begin)


def _read_f32(path: Path, t: _Tensor) -> npt.NDArray[np.float32]:
    """Tensor `t` as a C-contiguous little-endian float32 array."""
    count = math.prod(t.shape)
    try:
        raw = np.fromfile(path, dtype=_READ_AS[t.dtype], count=count, offset=t.offset)
    except OSError as e:
        raise PrepareError(f"{path}: cannot read tensor {t.name}: {e}") from e
    if raw.size != count:
        raise PrepareError(f"{path}: tensor {t.name} is truncated")
    if t.dtype == "BF16":
        # bfloat16 is the top half of a float32: shifting the bits up is an exact conversion.
        out = (raw.astype("<u4") << 16).view("<f4")
    else:
        with np.errstate(over="ignore"):  # F64 beyond f32 range becomes inf; `_write` rejects it
            out = raw.astype("<f4", copy=False)
    return out.reshape(t.shape)


# --- checking ----------------------------------------------------------------------------------


def _rename(st: _Safetensors) -> dict[str, _Tensor]:
    """Source tensors under canister names (no `transformer.` prefix), buffers dropped."""
    out: dict[str, _Tensor] = {}
    for name, t in st.tensors.items():
        short = name.removeprefix(_PREFIX)
        if _IGNORED.fullmatch(short):
            continue
        if short in out:
            raise PrepareError(
                f"{st.path}: tensor {short} appears twice ({out[short].name}, {name})"
            )
        out[short] = t
    return out


def _config_from_json(path: Path) -> tuple[Gpt2Config, bool]:
    """(config, tie_word_embeddings) from a transformers config.json, with GPT2Config's defaults."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PrepareError(f"{path}: cannot read: {e}") from e
    if not isinstance(raw, dict):
        raise PrepareError(f"{path}: not a JSON object")
    model_type = raw.get("model_type")
    if model_type != "gpt2":
        raise PrepareError(
            f"{path}: model_type is {model_type!r}, not 'gpt2'; only GPT-2 is supported"
        )
    activation = raw.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise PrepareError(
            f"{path}: activation_function {activation!r} is not supported (the canister "
            "computes GPT-2's gelu_new)"
        )
    # Variants that change the attention math the canister implements.
    for key, want in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if raw.get(key, want) != want:
            raise PrepareError(f"{path}: {key}={raw[key]!r} is not supported by the canister")

    def whole(key: str, default: int | None) -> int:
        v = raw.get(key, default)
        if type(v) is not int or v <= 0:
            raise PrepareError(f"{path}: {key}={v!r} is not a positive whole number")
        return v

    n_embd = whole("n_embd", 768)
    n_head = whole("n_head", 12)
    if n_embd % n_head:
        raise PrepareError(f"{path}: n_head {n_head} does not divide n_embd {n_embd}")
    eps = raw.get("layer_norm_epsilon", 1e-5)
    if type(eps) not in (int, float) or not 0 < eps < math.inf:
        raise PrepareError(f"{path}: layer_norm_epsilon={eps!r} is not a positive number")
    tie = raw.get("tie_word_embeddings", True)
    config = Gpt2Config(
        n_layer=whole("n_layer", 12),
        n_head=n_head,
        n_embd=n_embd,
        # transformers: n_inner None means 4 * n_embd.
        n_inner=4 * n_embd if raw.get("n_inner") is None else whole("n_inner", None),
        vocab_size=whole("vocab_size", 50257),
        n_ctx=whole("n_positions", 1024),
        layer_norm_epsilon=float(eps),
    )
    return config, tie is not False


def _infer_config(path: Path, tensors: dict[str, _Tensor], meta: dict[str, str]) -> Gpt2Config:
    """Config of a bare safetensors file, the way the canister infers it (engine/loader.rs)."""

    def shape2(name: str) -> tuple[int, int]:
        t = tensors.get(name)
        if t is None:
            raise PrepareError(f"{path}: missing tensor {name}")
        if len(t.shape) != 2 or 0 in t.shape:
            raise PrepareError(f"{path}: tensor {t.name} has shape {list(t.shape)}, expected 2-D")
        return t.shape[0], t.shape[1]

    def declared(key: str) -> int | None:
        v = meta.get(key)
        if v is None:
            return None
        try:
            n = int(v.strip())
        except ValueError:
            n = 0
        if n <= 0:
            raise PrepareError(f"{path}: __metadata__ {key}={v!r} is not a positive whole number")
        return n

    vocab_size, n_embd = shape2("wte.weight")
    n_ctx, _ = shape2("wpe.weight")
    _, n_inner = shape2("h.0.mlp.c_fc.weight")
    layers = [int(m.group(1)) for n in tensors if (m := _BLOCK.fullmatch(n))]
    n_layer = max(layers) + 1
    n_head = declared("n_head")
    if n_head is None:
        if n_embd % 64:
            raise PrepareError(
                f"{path}: cannot infer n_head: n_embd {n_embd} is not a multiple of GPT-2's head "
                "size 64; pass the directory with config.json, or put n_head in __metadata__"
            )
        n_head = n_embd // 64
    if n_embd % n_head:
        raise PrepareError(f"{path}: n_head {n_head} does not divide n_embd {n_embd}")
    actual = {
        "n_layer": n_layer, "n_embd": n_embd, "vocab_size": vocab_size, "n_ctx": n_ctx,
        "n_inner": n_inner,
    }  # fmt: skip
    for key, value in actual.items():
        said = declared(key)
        if said is not None and said != value:
            raise PrepareError(
                f"{path}: __metadata__ says {key}={said} but the tensors have {value}"
            )
    eps = 1e-5
    if "layer_norm_epsilon" in meta:
        try:
            eps = float(meta["layer_norm_epsilon"])
        except ValueError:
            eps = math.nan
        if not 0 < eps < math.inf:
            raise PrepareError(
                f"{path}: __metadata__ layer_norm_epsilon={meta['layer_norm_epsilon']!r} "
                "is not a positive number"
            )
    return Gpt2Config(n_layer, n_head, n_embd, n_inner, vocab_size, n_ctx, eps)


def _check(path: Path, tensors: dict[str, _Tensor], c: Gpt2Config) -> None:
    """Names, shapes and dtypes against the config; values are checked while writing."""
    for name in required_tensors(c):
        if name not in tensors:
            raise PrepareError(f"{path}: missing tensor {name}")
    for name, t in sorted(tensors.items()):
        want = expected_shape(name, c)
        if want is None:
            raise PrepareError(
                f"{path}: unexpected tensor {t.name} (not part of a GPT-2 with n_layer={c.n_layer})"
            )
        if t.shape != want:
            raise PrepareError(
                f"{path}: tensor {t.name} has shape {list(t.shape)}, expected {list(want)}"
            )
        if t.dtype not in _READ_AS:
            raise PrepareError(
                f"{path}: tensor {t.name} is {t.dtype}; "
                "expected float weights (F32, F16, BF16 or F64)"
            )


def _read_finite(path: Path, t: _Tensor) -> npt.NDArray[np.float32]:
    a = _read_f32(path, t)
    finite = np.isfinite(a)
    if not finite.all():
        bad = a.size - int(np.count_nonzero(finite))
        raise PrepareError(f"{path}: tensor {t.name} has {bad} NaN or infinite values")
    return a
