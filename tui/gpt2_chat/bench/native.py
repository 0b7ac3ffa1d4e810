"""The native reference: the same GPT-2 forward pass with a KV cache, on one CPU thread.

Preferred: onnxruntime, running a decode graph (one token in; logits and the grown KV cache
out) built with `onnx.helper` from the very weights the canister loaded. Fallback, when
onnxruntime or onnx is not installed: a numpy implementation of the same pass (BLAS held to
one thread with threadpoolctl). int8 checkpoints run with their weights dequantized to f32
(`q * scale`): the same numbers the canister multiplies by, in float arithmetic.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from safetensors import safe_open

from gpt2_chat.client.model_format import SCALE_SUFFIX, Gpt2Config

F32 = npt.NDArray[np.float32]

_CONFIG_KEYS = ("n_layer", "n_head", "n_embd", "n_inner", "vocab_size", "n_ctx")


@dataclass
class Weights:
    """A canister-ready file's tensors as f32 (int8 ones dequantized), under its names, and
    the int8 ones also as they are stored: (values, per-output scales)."""

    config: Gpt2Config
    tensors: dict[str, F32]
    quantized: dict[str, tuple[npt.NDArray[np.int8], F32]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> F32:
        return self.tensors[name]

    @property
    def lm_head(self) -> F32:
        """[vocab, n_embd]: the untied head if the file has one, else the token embeddings."""
        return self.tensors.get("lm_head.weight", self.tensors["wte.weight"])


def load_weights(path: Path) -> Weights:
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        config = Gpt2Config(
            **{k: int(meta[k]) for k in _CONFIG_KEYS},
            layer_norm_epsilon=float(meta.get("layer_norm_epsilon", "1e-5")),
        )
        weights = Weights(config, {})
        for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if name.endswith(SCALE_SUFFIX):
                continue
            a = f.get_tensor(name)
            if a.dtype == np.int8:
                scales = f.get_tensor(name + SCALE_SUFFIX).astype(np.float32)
                weights.quantized[name] = (a, scales)
                # Embeddings [vocab, n_embd] have a scale per row, Conv1D [in, out] per column.
                embedding = name in ("wte.weight", "lm_head.weight")
                a = a.astype(np.float32) * (scales[:, None] if embedding else scales[None, :])
            weights.tensors[name] = np.ascontiguousarray(a, dtype=np.float32)
    return weights


class DecodeRuntime(Protocol):
    """One token at a time through the network; the KV cache lives inside."""

    description: str

    def reset(self) -> None: ...

    def step(self, token: int) -> F32:
        """Appends `token` at the next position; the logits for the position after it."""
        ...


@dataclass(frozen=True)
class NativeResult:
    runtime: str
    tokens: list[int]
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0


def greedy_decode(runtime: DecodeRuntime, prompt: list[int], new_tokens: int) -> NativeResult:
    """Feeds `prompt`, then times `new_tokens` greedy decode steps (argmax, KV cache)."""
    runtime.reset()
    logits: F32 | None = None
    for t in prompt:
        logits = runtime.step(t)
    assert logits is not None, "empty prompt"
    out: list[int] = []
    start = time.perf_counter()
    for _ in range(new_tokens):
        token = int(np.argmax(logits))
        out.append(token)
        logits = runtime.step(token)
    return NativeResult(runtime.description, out, time.perf_counter() - start)


def open_runtime(weights: Weights, prefer: str = "onnxruntime") -> DecodeRuntime:
    """onnxruntime when it (and onnx) are installed and preferred, else numpy."""
    if prefer == "onnxruntime" and onnxruntime_available():
        return OnnxRuntime(weights)
    return NumpyRuntime(weights)


def onnxruntime_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


# --- numpy -------------------------------------------------------------------------------------


@contextmanager
def one_thread() -> Iterator[str]:
    """BLAS limited to one thread (threadpoolctl), yielding how that was ensured."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "BLAS threads not limited (threadpoolctl not installed)"
        return
    with threadpool_limits(limits=1):
        yield "1 thread"


def _layer_norm(x: F32, w: F32, b: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: F32 = ((x - mean) / np.sqrt(var + eps) * w + b).astype(np.float32, copy=False)
    return out


def _gelu(x: F32) -> F32:
    inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return (0.5 * x * (1.0 + np.tanh(inner))).astype(np.float32, copy=False)


class NumpyRuntime:
    """The reference forward pass in numpy, one token per step."""

    def __init__(self, weights: Weights) -> None:
        self.w = weights
        self.description = f"numpy {np.__version__} reference (single thread)"
        self.reset()

    def reset(self) -> None:
        c = self.w.config
        hs = c.n_embd // c.n_head
        self.keys = [np.zeros((c.n_head, 0, hs), np.float32) for _ in range(c.n_layer)]
        self.values = [np.zeros((c.n_head, 0, hs), np.float32) for _ in range(c.n_layer)]

    def step(self, token: int) -> F32:
        with one_thread():
            return self._step(token)

    def _step(self, token: int) -> F32:
        c, w = self.w.config, self.w
        e, nh = c.n_embd, c.n_head
        hs = e // nh
        pos = self.keys[0].shape[1]
        x = w["wte.weight"][token] + w["wpe.weight"][pos]
        for layer in range(c.n_layer):
            p = f"h.{layer}."
            h = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], c.layer_norm_epsilon)
            qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
            q, k, v = (qkv[i * e : (i + 1) * e].reshape(nh, 1, hs) for i in range(3))
            self.keys[layer] = np.concatenate([self.keys[layer], k], axis=1)
            self.values[layer] = np.concatenate([self.values[layer], v], axis=1)
            scores = q @ self.keys[layer].transpose(0, 2, 1) / np.float32(math.sqrt(hs))
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            att = (scores @ self.values[layer]).reshape(e)
            x = x + att @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], c.layer_norm_epsilon)
            f = _gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
            x = x + f @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = _layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], c.layer_norm_epsilon)
        logits: F32 = w.lm_head @ x
        return logits


# --- onnxruntime -------------------------------------------------------------------------------


class OnnxRuntime:
    """GPT-2 decode as one ONNX graph: token, position and the past keys/values in; logits
    and the present keys/values out. Keys and values are kept head-major, [n_head, T, hs],
    so a step only appends to them.

    With int8 weights the matrices run as onnxruntime's integer kernels: activations
    quantized per token (`DynamicQuantizeLinear`, 8 bits), `MatMulInteger` with the file's
    int8 values, then the per-output scales."""

    def __init__(self, weights: Weights) -> None:
        import onnxruntime as ort

        self.config = weights.config
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model, external = build_decode_graph(weights)
        # The weights go to onnxruntime as OrtValues over the numpy arrays, not through
        # protobuf (which would copy them several times); they must outlive the session.
        self._values = [ort.OrtValue.ortvalue_from_numpy(a) for a in external.values()]
        options.add_external_initializers(list(external), self._values)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        kind = "int8 MatMulInteger" if weights.quantized else "f32"
        self.description = f"onnxruntime {ort.__version__} {kind} (CPU, intra_op_num_threads=1)"
        self.reset()

    def reset(self) -> None:
        c = self.config
        hs = c.n_embd // c.n_head
        empty = np.zeros((c.n_head, 0, hs), np.float32)
        self.past: dict[str, F32] = {}
        for layer in range(c.n_layer):
            self.past[f"past_key_{layer}"] = empty
            self.past[f"past_value_{layer}"] = empty
        self.position = 0

    def step(self, token: int) -> F32:
        feeds: dict[str, Any] = {
            "token": np.array([token], np.int64),
            "position": np.array([self.position], np.int64),
            **self.past,
        }
        outputs = self.session.run(None, feeds)
        for layer in range(self.config.n_layer):
            self.past[f"past_key_{layer}"] = outputs[1 + 2 * layer]
            self.past[f"past_value_{layer}"] = outputs[2 + 2 * layer]
        self.position += 1
        logits: F32 = outputs[0].reshape(-1)
        return logits


def build_decode_graph(weights: Weights) -> tuple[bytes, dict[str, npt.NDArray[Any]]]:
    """The serialized ONNX model (opset 17) of one decode step, and its weights: declared in
    the model as external initializers, handed over separately."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = weights.config
    e, nh = c.n_embd, c.n_head
    hs = e // nh
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    external: dict[str, npt.NDArray[Any]] = {}
    counter = iter(range(1 << 30))

    def const(name: str, value: npt.NDArray[Any]) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def op(kind: str, inputs: list[str], **attrs: Any) -> str:
        out = f"{kind.lower()}_{next(counter)}"
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    shape_e = const("shape_e", np.array([1, e], np.int64))
    shape_heads = const("shape_heads", np.array([1, nh, hs], np.int64))
    split3 = const("split3", np.array([e, e, e], np.int64))
    scale = const("scale", np.array(1.0 / math.sqrt(hs), np.float32))
    half = const("half", np.array(0.5, np.float32))
    one = const("one", np.array(1.0, np.float32))
    gelu_a = const("gelu_a", np.array(math.sqrt(2 / math.pi), np.float32))
    gelu_b = const("gelu_b", np.array(0.044715, np.float32))

    def w(name: str, value: npt.NDArray[Any] | None = None) -> str:
        if name not in external:
            a = weights[name] if value is None else value
            dtype = TensorProto.INT8 if a.dtype == np.int8 else TensorProto.FLOAT
            t = TensorProto(name=name, data_type=dtype, dims=a.shape)
            t.data_location = TensorProto.EXTERNAL
            for key, v in (("location", "weights"), ("offset", "0"), ("length", str(a.nbytes))):
                t.external_data.add(key=key, value=v)
            inits.append(t)
            external[name] = a
        return name

    def layer_norm(x: str, prefix: str) -> str:
        return op(
            "LayerNormalization",
            [x, w(prefix + ".weight"), w(prefix + ".bias")],
            axis=-1,
            epsilon=c.layer_norm_epsilon,
        )

    def matmul(x: str, name: str, quantized: tuple[npt.NDArray[np.int8], F32] | None) -> str:
        if quantized is None:
            return op("MatMul", [x, w(name)])
        q, scales = quantized
        xq = [f"{name}_xq", f"{name}_xs", f"{name}_xz"]
        nodes.append(helper.make_node("DynamicQuantizeLinear", [x], xq))
        acc = op("MatMulInteger", [xq[0], w(name + "_q", q), xq[2]])
        y = op("Mul", [op("Cast", [acc], to=TensorProto.FLOAT), w(name + "_scale", scales)])
        return op("Mul", [y, xq[1]])

    def linear(x: str, prefix: str) -> str:
        name = prefix + ".weight"
        return op("Add", [matmul(x, name, weights.quantized.get(name)), w(prefix + ".bias")])

    def gelu(x: str) -> str:
        cube = op("Mul", [op("Mul", [x, x]), x])
        inner = op("Mul", [op("Add", [x, op("Mul", [cube, gelu_b])]), gelu_a])
        return op("Mul", [op("Mul", [x, half]), op("Add", [one, op("Tanh", [inner])])])

    def heads(x: str) -> str:  # [1, e] -> [nh, 1, hs]
        return op("Transpose", [op("Reshape", [x, shape_heads])], perm=[1, 0, 2])

    if "wte.weight" in weights.quantized:
        wte_q, wte_scales = weights.quantized["wte.weight"]
        row = op("Gather", [w("wte_q", wte_q), "token"], axis=0)
        row = op("Cast", [row], to=TensorProto.FLOAT)
        tok = op("Mul", [row, op("Gather", [w("wte_scale", wte_scales), "token"], axis=0)])
    else:
        tok = op("Gather", [w("wte.weight"), "token"], axis=0)
    pos = op("Gather", [w("wpe.weight"), "position"], axis=0)
    x = op("Add", [tok, pos])  # [1, e]
    outputs = []
    for layer in range(c.n_layer):
        p = f"h.{layer}"
        h = layer_norm(x, f"{p}.ln_1")
        qkv = linear(h, f"{p}.attn.c_attn")
        q, k, v = (f"q_{layer}", f"k_{layer}", f"v_{layer}")
        nodes.append(helper.make_node("Split", [qkv, split3], [q, k, v], axis=1))
        keys, values = f"present_key_{layer}", f"present_value_{layer}"
        nodes.append(helper.make_node("Concat", [f"past_key_{layer}", heads(k)], [keys], axis=1))
        nodes.append(
            helper.make_node("Concat", [f"past_value_{layer}", heads(v)], [values], axis=1)
        )
        scores = op(
            "Mul", [op("MatMul", [heads(q), op("Transpose", [keys], perm=[0, 2, 1])]), scale]
        )
        probs = op("Softmax", [scores], axis=-1)
        att = op("Transpose", [op("MatMul", [probs, values])], perm=[1, 0, 2])
        x = op("Add", [x, linear(op("Reshape", [att, shape_e]), f"{p}.attn.c_proj")])
        h = layer_norm(x, f"{p}.ln_2")
        x = op("Add", [x, linear(gelu(linear(h, f"{p}.mlp.c_fc")), f"{p}.mlp.c_proj")])
        outputs += [keys, values]
    x = layer_norm(x, "ln_f")
    head_name = "lm_head.weight" if "lm_head.weight" in weights.tensors else "wte.weight"
    if head_name in weights.quantized:
        head_q, head_scales = weights.quantized[head_name]
        logits = matmul(x, "lm_head_t", (np.ascontiguousarray(head_q.T), head_scales))
    else:
        logits = op("MatMul", [x, w("lm_head_t", np.ascontiguousarray(weights.lm_head.T))])
    nodes.append(helper.make_node("Identity", [logits], ["logits"]))

    kv_shape: list[int | str] = [nh, "past", hs]
    new_shape: list[int | str] = [nh, "present", hs]
    graph_inputs = [
        helper.make_tensor_value_info("token", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("position", TensorProto.INT64, [1]),
    ]
    graph_outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, c.vocab_size])]
    for layer in range(c.n_layer):
        for kind in ("key", "value"):
            graph_inputs.append(
                helper.make_tensor_value_info(f"past_{kind}_{layer}", TensorProto.FLOAT, kv_shape)
            )
            graph_outputs.append(
                helper.make_tensor_value_info(
                    f"present_{kind}_{layer}", TensorProto.FLOAT, new_shape
                )
            )
    graph = helper.make_graph(nodes, "gpt2_decode", graph_inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data, external
