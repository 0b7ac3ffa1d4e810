"""`prepare`: checkpoint -> canister-ready safetensors (names, metadata, checks, download)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from huggingface_hub import constants as hf_constants
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from gpt2_chat.cli import main
from gpt2_chat.client import hub as hub_module
from gpt2_chat.client.prepare import (
    SHAPES,
    Gpt2Config,
    PrepareCancelled,
    PrepareError,
    download,
    prepare,
    prepare_random,
)
from gpt2_chat.client.random_model import Shape

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "gpt2-random-50257"
Arrays = dict[str, npt.NDArray[Any]]
BLOCK_NAMES = (
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
    "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
    "mlp.c_proj.weight", "mlp.c_proj.bias",
)  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------


def gpt2_tensors(
    n_layer: int = 2, n_embd: int = 8, vocab: int = 11, n_ctx: int = 5, seed: int = 0
) -> Arrays:
    """Random f32 GPT-2 weights under canister names (Conv1D weights [in, out])."""
    rng = np.random.default_rng(seed)
    e, f = n_embd, 4 * n_embd
    shapes: dict[str, tuple[int, ...]] = {
        "wte.weight": (vocab, e),
        "wpe.weight": (n_ctx, e),
        "ln_f.weight": (e,),
        "ln_f.bias": (e,),
    }
    block = {
        "ln_1.weight": (e,), "ln_1.bias": (e,), "attn.c_attn.weight": (e, 3 * e),
        "attn.c_attn.bias": (3 * e,), "attn.c_proj.weight": (e, e), "attn.c_proj.bias": (e,),
        "ln_2.weight": (e,), "ln_2.bias": (e,), "mlp.c_fc.weight": (e, f), "mlp.c_fc.bias": (f,),
        "mlp.c_proj.weight": (f, e), "mlp.c_proj.bias": (e,),
    }  # fmt: skip
    for i in range(n_layer):
        shapes.update({f"h.{i}.{k}": v for k, v in block.items()})
    return {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}


def write_checkpoint(
    directory: Path,
    tensors: Arrays,
    *,
    prefix: str = "transformer.",
    config: dict[str, Any] | None = None,
    dtype: type[np.floating[Any]] = np.float32,
) -> Path:
    """A save_pretrained-style directory: config.json + model.safetensors (body names prefixed)."""
    directory.mkdir(parents=True, exist_ok=True)
    n_layer = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("h."))
    cfg: dict[str, Any] = {
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_layer": n_layer,
        "n_head": 2,
        "n_embd": tensors["wte.weight"].shape[1],
        "n_inner": None,
        "vocab_size": tensors["wte.weight"].shape[0],
        "n_positions": tensors["wpe.weight"].shape[0] if "wpe.weight" in tensors else 5,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
    }
    cfg.update(config or {})
    (directory / "config.json").write_text(json.dumps(cfg))
    named = {
        (k if k.startswith("lm_head.") else prefix + k): (
            v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v
        )
        for k, v in tensors.items()
    }
    save_file(named, str(directory / "model.safetensors"))
    return directory


def read_output(path: Path) -> tuple[Arrays, dict[str, str]]:
    with safe_open(str(path), framework="numpy") as f:
        names = f.keys()  # safe_open is not iterable
        return {k: f.get_tensor(k) for k in names}, dict(f.metadata())


def raw_header(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + n])
    return header


def assert_no_output(out: Path) -> None:
    assert list(out.parent.iterdir()) == [], "a failed prepare must leave nothing behind"


# --- the committed fixture -------------------------------------------------------------------


def test_fixture_is_prepared_with_canister_names_metadata_and_values(tmp_path: Path) -> None:
    out = tmp_path / "out" / "gpt2.safetensors"
    calls: list[tuple[str, int, int]] = []
    result = prepare(str(FIXTURE), out, progress=lambda *a: calls.append(a))

    config = Gpt2Config(
        n_layer=2, n_head=2, n_embd=16, n_inner=64, vocab_size=50257, n_ctx=128,
        layer_norm_epsilon=1e-5,
    )  # fmt: skip
    assert result.config == config
    assert result.dtype == "f32"
    assert result.path == out
    data = out.read_bytes()
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert calls[-1] == ("write", len(data), len(data))

    tensors, meta = read_output(out)
    assert meta == {
        "format": "gpt2-chat", "n_layer": "2", "n_head": "2", "n_embd": "16", "n_inner": "64",
        "vocab_size": "50257", "n_ctx": "128", "layer_norm_epsilon": "1e-05",
        "source": FIXTURE.name, "dtype": "f32",
    }  # fmt: skip
    expected = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"} | {
        f"h.{i}.{n}" for i in range(2) for n in BLOCK_NAMES
    }
    assert set(tensors) == expected  # no prefix, tied lm_head absent
    with safe_open(str(FIXTURE / "model.safetensors"), framework="numpy") as src:
        for name, value in tensors.items():
            assert value.dtype == np.float32
            np.testing.assert_array_equal(value, src.get_tensor("transformer." + name))

    # Stable order: header keys and data offsets both follow sorted names, back to back.
    header = raw_header(out)
    names = [k for k in header if k != "__metadata__"]
    assert names == sorted(names)
    offsets = [header[k]["data_offsets"] for k in names]
    assert offsets[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:], strict=False))


def test_same_input_gives_byte_identical_output(tmp_path: Path) -> None:
    a = prepare(str(FIXTURE), tmp_path / "a.safetensors")
    b = prepare(str(FIXTURE), tmp_path / "b.safetensors")
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_prepared_file_prepares_to_the_same_tensors(tmp_path: Path) -> None:
    first = prepare(str(FIXTURE), tmp_path / "a.safetensors")
    again = prepare(str(first.path), tmp_path / "b.safetensors")  # single file, config in metadata
    assert again.config == first.config
    a, _ = read_output(first.path)
    b, meta = read_output(again.path)
    assert meta["source"] == first.path.name
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_unsupported_dtype_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="int4 is not supported; choose one of f32, int8"):
        prepare(str(FIXTURE), tmp_path / "out.safetensors", dtype="int4")
    assert not (tmp_path / "out.safetensors").exists()


def test_int8_stores_matrices_as_int8_with_per_output_scales(tmp_path: Path) -> None:
    out = prepare(str(FIXTURE), tmp_path / "int8.safetensors", dtype="int8")
    f32 = prepare(str(FIXTURE), tmp_path / "f32.safetensors")
    q, ref = load_file(out.path), load_file(f32.path)
    assert out.size < f32.size / 2
    for name, a in ref.items():
        if name == "wte.weight" or name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            assert q[name].dtype == np.int8 and q[name].shape == a.shape
            assert int(np.abs(q[name]).max()) == 127
            scale = q[name + "_scale"]
            axis = 0 if name == "wte.weight" else 1
            assert scale.shape == (a.shape[axis],)
            back = q[name] * (scale[:, None] if axis == 0 else scale[None, :])
            assert np.abs(back - a).max() <= scale.max() / 2 + 1e-7
        else:
            np.testing.assert_array_equal(q[name], a)
    with safe_open(out.path, "np") as f:
        assert f.metadata()["dtype"] == "int8"


# --- synthetic checkpoints -------------------------------------------------------------------


def test_lm_head_equal_to_wte_is_dropped(tmp_path: Path) -> None:
    t = gpt2_tensors()
    t["lm_head.weight"] = t["wte.weight"].copy()
    src = write_checkpoint(tmp_path / "src", t)
    prepare(str(src), tmp_path / "out.safetensors")
    out, _ = read_output(tmp_path / "out.safetensors")
    assert "lm_head.weight" not in out


def test_untied_lm_head_is_kept(tmp_path: Path) -> None:
    t = gpt2_tensors()
    t["lm_head.weight"] = t["wte.weight"] * 2
    src = write_checkpoint(tmp_path / "src", t, config={"tie_word_embeddings": False})
    prepare(str(src), tmp_path / "out.safetensors")
    out, _ = read_output(tmp_path / "out.safetensors")
    np.testing.assert_array_equal(out["lm_head.weight"], t["wte.weight"] * 2)
    np.testing.assert_array_equal(out["wte.weight"], t["wte.weight"])


def test_untied_config_without_lm_head_is_an_error(tmp_path: Path) -> None:
    src = write_checkpoint(tmp_path / "src", gpt2_tensors(), config={"tie_word_embeddings": False})
    out = tmp_path / "out" / "model.safetensors"
    out.parent.mkdir()
    with pytest.raises(PrepareError, match="lm_head.weight"):
        prepare(str(src), out)
    assert_no_output(out)


def test_unprefixed_names_and_mask_buffers(tmp_path: Path) -> None:
    """The hub's own gpt2 file: no `transformer.` prefix, with attn.bias/masked_bias buffers."""
    t = gpt2_tensors()
    named: Arrays = dict(t)
    for i in range(2):
        named[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 5, 5), dtype=np.float32))
        named[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    src = write_checkpoint(tmp_path / "src", named, prefix="")
    prepare(str(src), tmp_path / "out.safetensors")
    out, _ = read_output(tmp_path / "out.safetensors")
    assert set(out) == set(t)


def test_f16_input_is_converted_to_f32(tmp_path: Path) -> None:
    t = gpt2_tensors()
    src = write_checkpoint(tmp_path / "src", t, dtype=np.float16)
    prepare(str(src), tmp_path / "out.safetensors")
    out, _ = read_output(tmp_path / "out.safetensors")
    for k, v in t.items():
        assert out[k].dtype == np.float32
        np.testing.assert_array_equal(out[k], v.astype(np.float16).astype(np.float32))


def test_bf16_input_is_converted_to_f32(tmp_path: Path) -> None:
    """BF16 written by hand (numpy has no bfloat16): the top 16 bits of each f32."""
    t = gpt2_tensors()
    bits = {k: (v.view(np.uint32) >> 16).astype("<u2") for k, v in t.items()}
    header: dict[str, Any] = {}
    offset = 0
    for k, b in bits.items():
        header["transformer." + k] = {
            "dtype": "BF16", "shape": list(b.shape), "data_offsets": [offset, offset + b.nbytes],
        }  # fmt: skip
        offset += b.nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    src = write_checkpoint(tmp_path / "src", t)  # for config.json; weights replaced below
    (src / "model.safetensors").write_bytes(
        struct.pack("<Q", len(blob)) + blob + b"".join(b.tobytes() for b in bits.values())
    )
    prepare(str(src), tmp_path / "out.safetensors")
    out, _ = read_output(tmp_path / "out.safetensors")
    for k, b in bits.items():
        want = (b.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_array_equal(out[k], want)


def _drop(name: str) -> Callable[[Arrays], None]:
    def edit(t: Arrays) -> None:
        del t[name]

    return edit


def _set(name: str, value: Any) -> Callable[[Arrays], None]:
    return lambda t: t.__setitem__(name, value)


def _nan(name: str) -> Callable[[Arrays], None]:
    def edit(t: Arrays) -> None:
        t[name] = t[name].copy()
        t[name].flat[3] = np.nan

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop("h.1.ln_2.bias"), r"missing tensor h\.1\.ln_2\.bias"),
        (_drop("wpe.weight"), r"missing tensor wpe\.weight"),
        (
            _set("h.0.mlp.c_fc.weight", np.zeros((32, 8), np.float32)),  # [out, in]: transposed
            r"tensor transformer\.h\.0\.mlp\.c_fc\.weight has shape \[32, 8\], expected \[8, 32\]",
        ),
        (_nan("h.1.attn.c_proj.weight"), r"tensor transformer\.h\.1\.attn\.c_proj\.weight .*NaN"),
        (_set("wte.weight", np.full((11, 8), np.inf, np.float32)), r"transformer\.wte\.weight"),
        (_set("h.0.attn.c_attn.lora", np.zeros(3, np.float32)), r"unexpected tensor .*lora"),
        (_set("h.2.ln_1.weight", np.zeros(8, np.float32)), r"unexpected tensor .*h\.2\.ln_1"),
        (_set("h.0.ln_1.bias", np.zeros(8, np.int32)), r"h\.0\.ln_1\.bias is I32"),
    ],
    ids=["missing", "missing-wpe", "shape", "nan", "inf", "unexpected", "extra-layer", "int"],
)
def test_bad_tensors_are_named(
    tmp_path: Path, edit: Callable[[Arrays], None], message: str
) -> None:
    t = gpt2_tensors()
    edit(t)
    src = tmp_path / "src"
    src.mkdir()
    write_checkpoint(src, t, config={"n_layer": 2})
    out = tmp_path / "out" / "model.safetensors"
    out.parent.mkdir()
    with pytest.raises(PrepareError, match=message):
        prepare(str(src), out)
    assert_no_output(out)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "bert"}, "model_type is 'bert', not 'gpt2'"),
        ({"activation_function": "relu"}, "activation_function 'relu'"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"n_head": 3}, "n_head 3 does not divide n_embd 8"),
        ({"vocab_size": 12}, r"wte\.weight has shape \[11, 8\], expected \[12, 8\]"),
    ],
)
def test_bad_configs_are_explained(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    src = write_checkpoint(tmp_path / "src", gpt2_tensors(), config=config)
    with pytest.raises(PrepareError, match=message):
        prepare(str(src), tmp_path / "out.safetensors")


def test_gelu_pytorch_tanh_is_gpt2s_gelu(tmp_path: Path) -> None:
    src = write_checkpoint(
        tmp_path / "src", gpt2_tensors(), config={"activation_function": "gelu_pytorch_tanh"}
    )
    assert prepare(str(src), tmp_path / "out.safetensors").config.n_layer == 2


# --- single .safetensors files ---------------------------------------------------------------


def test_single_file_config_is_inferred_with_head_size_64(tmp_path: Path) -> None:
    t = gpt2_tensors(n_layer=3, n_embd=128, vocab=7, n_ctx=4)
    path = tmp_path / "m.safetensors"
    save_file({"transformer." + k: v for k, v in t.items()}, str(path))
    result = prepare(str(path), tmp_path / "out.safetensors")
    assert result.config == Gpt2Config(3, 2, 128, 512, 7, 4, 1e-5)
    out, meta = read_output(tmp_path / "out.safetensors")
    assert meta["n_head"] == "2"
    assert meta["source"] == path.name
    assert set(out) == set(t)


def test_single_file_metadata_sets_head_count_and_epsilon(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(gpt2_tensors(), str(path), metadata={"n_head": "4", "layer_norm_epsilon": "1e-6"})
    result = prepare(str(path), tmp_path / "out.safetensors")
    assert (result.config.n_head, result.config.layer_norm_epsilon) == (4, 1e-6)


def test_single_file_without_head_count_is_explained(tmp_path: Path) -> None:
    # The fixture's n_embd 16 is no multiple of 64; only its config.json knows n_head.
    with pytest.raises(PrepareError, match="cannot infer n_head"):
        prepare(str(FIXTURE / "model.safetensors"), tmp_path / "out.safetensors")


def test_missing_source_is_explained(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="no such file or directory"):
        prepare(str(tmp_path / "nope"), tmp_path / "out.safetensors")
    with pytest.raises(PrepareError, match="no model.safetensors"):
        prepare(str(tmp_path), tmp_path / "out.safetensors")


# --- downloading from a hub --------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub(ThreadingHTTPServer):
    """A tiny stand-in for huggingface.co: HEAD and GET of `/<id>/resolve/<rev>/<file>` with
    the headers huggingface_hub reads (commit, etag, size), Range, and its error codes."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.files: dict[tuple[str, str], bytes] = {}
        self.cut_after: int | None = None  # send only this many body bytes once, then hang up
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve(self, model_id: str, directory: Path) -> None:
        for name in ("config.json", "model.safetensors"):
            self.files[model_id, name] = (directory / name).read_bytes()

    def gets(self, name: str) -> list[dict[str, str]]:
        return [h for method, p, h in self.requests if method == "GET" and p.endswith(name)]


class HubHandler(BaseHTTPRequestHandler):
    server: Hub
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self.answer(head=True)

    def do_GET(self) -> None:
        self.answer(head=False)

    def answer(self, head: bool) -> None:
        hub = self.server
        hub.requests.append((self.command, self.path, dict(self.headers.items())))
        m = re.fullmatch(r"/(.+)/resolve/([^/]+)/([^/]+)", self.path)
        repo = m.group(1) if m else ""
        if not any(r == repo for r, _ in hub.files):
            return self.fail(404, "RepoNotFound")
        if m is None or m.group(2) not in ("main", COMMIT):
            return self.fail(404, "RevisionNotFound")
        body = hub.files.get((repo, m.group(3)))
        if body is None:
            return self.fail(404, "EntryNotFound")
        r = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(r.group(1)) if r and not head else 0
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if head:
            return
        if hub.cut_after is not None and self.path.endswith(".safetensors"):
            self.wfile.write(body[start : start + hub.cut_after])
            hub.cut_after = None
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def fail(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    server = Hub()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)  # so no local folder named like a model id can shadow it
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_download_by_model_id_is_pinned_to_a_commit_and_cached(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.serve("gpt2", FIXTURE)
    cache = tmp_path / "cache"
    calls: list[tuple[str, int, int]] = []
    result = prepare(
        "gpt2", tmp_path / "out.safetensors", cache_dir=cache, progress=lambda *a: calls.append(a)
    )
    size = (FIXTURE / "model.safetensors").stat().st_size
    assert ("download model.safetensors", size, size) in calls
    assert read_output(result.path)[1]["source"] == f"gpt2@{COMMIT}"
    # `main` is resolved by the first file; the second comes from that commit.
    assert [p for m, p, _ in hub.requests if m == "GET"] == [
        "/gpt2/resolve/main/config.json",
        f"/gpt2/resolve/{COMMIT}/model.safetensors",
    ]

    # Cached: only where `main` points is asked, nothing is downloaded again.
    hub.requests.clear()
    again = prepare("gpt2", tmp_path / "again.safetensors", cache_dir=cache)
    assert {m for m, _, _ in hub.requests} == {"HEAD"} and again.sha256 == result.sha256
    # A pinned commit in the cache needs nothing at all.
    hub.requests.clear()
    prepare("gpt2", tmp_path / "pinned.safetensors", revision=COMMIT, cache_dir=cache)
    assert hub.requests == []
    # Unreachable: the cached revision is used as it is.
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    offline = prepare("gpt2", tmp_path / "offline.safetensors", cache_dir=cache)
    assert offline.sha256 == result.sha256


def test_dropped_download_resumes_with_range_and_cancel_stops_it(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub keeps what it received in whole chunks (10 MB); the fixture is 3 MB.
    chunk = 1 << 16
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    model = "openai-community/gpt2-medium"
    hub.serve(model, FIXTURE)
    hub.cut_after = cut = 16 * chunk
    cache = tmp_path / "cache"
    result = prepare(model, tmp_path / "out.safetensors", cache_dir=cache)
    assert [h.get("Range") for h in hub.gets("model.safetensors")] == [None, f"bytes={cut}-"]
    local = prepare(str(FIXTURE), tmp_path / "local.safetensors")
    assert read_output(result.path)[0].keys() == read_output(local.path)[0].keys()
    assert read_output(result.path)[1]["source"] == f"{model}@{COMMIT}"

    # Cancelled mid-download: no output, and no partial file left in the cache.
    stop = threading.Event()
    with pytest.raises(PrepareCancelled):
        prepare(
            model,
            tmp_path / "again.safetensors",
            cache_dir=tmp_path / "other-cache",
            progress=lambda stage, done, total: stop.set() if done >= cut else None,
            cancel=stop,
        )
    assert not (tmp_path / "again.safetensors").exists()
    assert not [p for p in (tmp_path / "other-cache").rglob("*") if "incomplete" in p.name]


@pytest.mark.parametrize(
    ("model_id", "revision", "message"),
    [
        ("nobody/nothing", "main", "cannot download nobody/nothing@main from .*: no such model"),
        ("gpt2", "v9", "cannot download gpt2@v9 from .*: no revision 'v9'"),
    ],
)
def test_hub_refusals_are_clear_errors(
    hub: Hub, tmp_path: Path, model_id: str, revision: str, message: str
) -> None:
    hub.serve("gpt2", FIXTURE)
    with pytest.raises(PrepareError, match=message):
        prepare(model_id, tmp_path / "out.safetensors", revision=revision, cache_dir=tmp_path)
    assert not (tmp_path / "out.safetensors").exists()


def test_unreachable_hub_fails_fast_with_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(PrepareError) as info:
        prepare("gpt2", tmp_path / "out.safetensors", cache_dir=tmp_path / "cache")
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith(f"cannot download gpt2@main from {endpoint}: ")
    assert "refused" in message.lower() and "not in the cache" in message


def test_silent_hub_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "PROBE_TIMEOUT", 0.3)
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(PrepareError, match="timed out; it is not in the cache either"):
            download("gpt2", tmp_path / "cache")
        assert time.monotonic() - started < 5


def test_offline_mode_is_one_clear_error_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "gpt2_chat.cli", "prepare", "gpt2", "-o", "out.safetensors"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: cannot download gpt2@main from "
        f"{env['HF_ENDPOINT']}: offline mode (HF_HUB_OFFLINE) is on; it is not in the cache "
        "either (download the checkpoint elsewhere and pass its directory)"
    ]
    assert not (tmp_path / "out.safetensors").exists()


def test_write_failures_leave_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "out.safetensors").mkdir()  # cannot be replaced by a file
    with pytest.raises(PrepareError, match="cannot write"):
        prepare(str(FIXTURE), tmp_path / "out.safetensors")

    def cancel(stage: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(str(FIXTURE), tmp_path / "x.safetensors", progress=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]


# --- cancelling ----------------------------------------------------------------------------------


def test_cancel_between_tensors_removes_the_partial_output(tmp_path: Path) -> None:
    stop = threading.Event()
    writes: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        writes.append(done)
        if len(writes) == 3:
            stop.set()

    with pytest.raises(PrepareCancelled):
        prepare(str(FIXTURE), tmp_path / "out.safetensors", progress=progress, cancel=stop)
    assert len(writes) == 3, "the write stops at the next tensor"
    assert_no_output(tmp_path / "out.safetensors")


def test_cancel_accepts_a_callable(tmp_path: Path) -> None:
    with pytest.raises(PrepareCancelled):
        prepare(str(FIXTURE), tmp_path / "out.safetensors", cancel=lambda: True)
    assert_no_output(tmp_path / "out.safetensors")


# --- random models -------------------------------------------------------------------------------

TINY = Shape("tiny", n_layer=2, n_head=2, n_embd=16, vocab_size=5000, n_ctx=32)


def test_named_shapes_are_the_released_gpt2_configs() -> None:
    got = {
        name: (s.n_layer, s.n_head, s.n_embd, s.vocab_size, s.n_ctx) for name, s in SHAPES.items()
    }
    assert got == {
        "gpt2": (12, 12, 768, 50257, 1024),
        "gpt2-medium": (24, 16, 1024, 50257, 1024),
        "gpt2-large": (36, 20, 1280, 50257, 1024),
        "gpt2-xl": (48, 25, 1600, 50257, 1024),
    }
    assert SHAPES["gpt2"].parameters == 124_439_808  # GPT-2 small, tied lm_head


@pytest.mark.parametrize("dtype", ["f32", "int8"])
def test_random_model_is_deterministic_and_what_prepare_accepts(tmp_path: Path, dtype: str) -> None:
    first = prepare_random(TINY, tmp_path / "a.safetensors", dtype, seed=3)
    again = prepare_random(TINY, tmp_path / "b.safetensors", dtype, seed=3)
    other = prepare_random(TINY, tmp_path / "c.safetensors", dtype, seed=4)
    assert first.sha256 == again.sha256 != other.sha256
    assert first.path.read_bytes() == again.path.read_bytes()
    assert first.size == first.path.stat().st_size
    assert first.config == TINY.config() and first.dtype == dtype
    tensors, meta = read_output(first.path)
    assert meta["source"] == "random tiny seed=3 std=0.02" and meta["dtype"] == dtype
    assert tensors["wte.weight"].dtype == (np.int8 if dtype == "int8" else np.float32)
    # Row slices of the embedding do not repeat each other.
    wte = tensors["wte.weight"]
    assert not np.array_equal(wte[:4096], wte[1 : 4096 + 1])
    # The canister's format: prepare reads it back and finds the same config.
    if dtype == "f32":
        again_prepared = prepare(str(first.path), tmp_path / "p.safetensors")
        assert again_prepared.config == TINY.config()


def test_random_model_memory_is_bounded_by_a_slice_not_the_model(tmp_path: Path) -> None:
    # wte alone is 50257 x 128 f32 = 26 MB; it is generated 4096 rows (2 MB) at a time
    # (quantizing a slice takes a few temporaries of its size).
    wide = Shape("wide", n_layer=1, n_head=4, n_embd=128, vocab_size=50257, n_ctx=64)
    tracemalloc.start()
    try:
        prepare_random(wide, tmp_path / "wide.safetensors", "int8")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak


def test_random_model_unknown_shape_and_cancel(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="gpt2-medium"):
        prepare_random("gpt3", tmp_path / "x.safetensors")
    # The real shape, cancelled after its first tensor: quick, and nothing is left behind.
    stop = threading.Event()
    with pytest.raises(PrepareCancelled):
        prepare_random(
            "gpt2", tmp_path / "x.safetensors", progress=lambda *_: stop.set(), cancel=stop
        )
    assert_no_output(tmp_path / "x.safetensors")


def test_cli_prepare_random(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SHAPES, "tiny", TINY)
    out = tmp_path / "tiny.safetensors"
    assert main(["prepare", "--random", "tiny", "-o", str(out), "--dtype", "int8"]) == 0
    said = capsys.readouterr().out
    assert "talks nonsense" in said and hashlib.sha256(out.read_bytes()).hexdigest() in said
    out.unlink()
    assert main(["prepare", "--random", "gpt3", "-o", str(tmp_path / "x")]) == 1
    assert "error: unknown GPT-2 shape 'gpt3'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a source and --random together
        main(["prepare", "gpt2", "--random", "gpt2", "-o", str(tmp_path / "x")])
    assert_no_output(tmp_path / "x")
