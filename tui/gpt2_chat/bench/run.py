"""The benchmark run: 124M-shaped checkpoints in f32 and int8 through the embedded runtime and
the native reference, then (unless quick) the bigger shapes in int8."""

from __future__ import annotations

import datetime
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_chat.backends.embedded.backend import shipped_wasm
from gpt2_chat.bench import canister_runs, native
from gpt2_chat.bench.machine import machine_info
from gpt2_chat.bench.tables import (
    IC_BUDGETS,
    KV_PROMPTS,
    Budget,
    Figure,
    figure,
    figure_cost,
    figures,
)
from gpt2_chat.client.cycles import cost_per_1000_tokens
from gpt2_chat.client.random_model import (
    GPT2,
    GPT2_LARGE,
    GPT2_MEDIUM,
    GPT2_XL,
    Shape,
    prepare_random,
)
from gpt2_chat.settings import Settings

Log = Callable[[str], None]

#: The cycles row assumes the app's default generate calls.
CYCLES_TOKENS_PER_CALL = Settings().tokens_per_call
NATIVE_SKIPPED = "onnxruntime is not installed (pip install 'gpt2-chat[bench]')"

#: What the seed measured (tract + SIMD, 20B limit), shown beside ours.
SEED_REFERENCE: dict[str, Any] = {
    "runtime": "the seed: tract + wasm SIMD, f32, 20B limit",
    "prefill_instructions_per_token": 263_000_000,
    "max_prompt_tokens_one_call_20b": 76,
    "max_new_tokens_4_prompt_20b": 17,
    "new_tokens_48_prompt_kv_20b": 5,
    "new_tokens_24_prompt_kv_20b": 10,
    "new_tokens_12_prompt_kv_20b": 14,
    "new_tokens_48_prompt_no_kv_20b": 1,
    "new_tokens_24_prompt_no_kv_20b": 2,
    "new_tokens_12_prompt_no_kv_20b": 5,
}

#: Issue 5's targets for GPT-2 124M.
TARGETS: dict[str, Any] = {
    "f32": {
        "prefill_instructions_per_token": 120_000_000,
        "decode_instructions_per_token": 180_000_000,
    },
    "int8": {
        "prefill_instructions_per_token": 38_000_000,
        "decode_instructions_per_token": 70_000_000,
        "max_prompt_tokens_one_call_40b": 1024,
        "max_new_tokens_4_prompt_40b": 500,
    },
    "ratio": 3.0,
}


@dataclass(frozen=True)
class Options:
    quick: bool = False
    shape: Shape = GPT2
    dtypes: tuple[str, ...] = ("f32", "int8")
    budgets: tuple[Budget, ...] = IC_BUDGETS
    big_shapes: tuple[Shape, ...] = (GPT2_MEDIUM, GPT2_LARGE, GPT2_XL)
    #: Check every figure with real calls; otherwise one per table and limit.
    validate_all: bool | None = None
    prefill_tokens: int = 128
    decode_prompt: int = 16
    decode_tokens: int = 32
    #: Wall-clock decode runs of each runtime (the best counts).
    speed_rounds: int = 3
    seed: int = 20240601
    wasm: bytes | None = None
    work_dir: Path | None = None


def run_bench(options: Options, log: Log | None = None) -> dict[str, Any]:
    say = log or (lambda _m: None)
    began = time.perf_counter()
    wasm = options.wasm if options.wasm is not None else shipped_wasm()
    work = Path(tempfile.mkdtemp(prefix="gpt2-bench-", dir=options.work_dir))
    try:
        results = [_one_dtype(options, dtype, wasm, work, say) for dtype in options.dtypes]
        shapes: list[dict[str, Any]] = []
        if not options.quick:
            for shape in options.big_shapes:
                shapes.append(
                    canister_runs.check_shape(work, shape, wasm, options.seed, _prefixed(say, ""))
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "results": results,
        "shapes": shapes,
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": options.quick,
        "model": {
            "name": options.shape.name,
            "n_layer": options.shape.n_layer,
            "n_head": options.shape.n_head,
            "n_embd": options.shape.n_embd,
            "vocab_size": options.shape.vocab_size,
            "n_ctx": options.shape.n_ctx,
            "parameters": options.shape.parameters,
            "weights": f"random, normal(0, 0.02), seed {options.seed}",
        },
        "limits": {b.label: {"limit": b.limit, "budget": b.budget} for b in options.budgets},
        "wasm_sha256": hashlib.sha256(wasm).hexdigest(),
        "seed_reference": SEED_REFERENCE,
        "targets": TARGETS,
        "seconds": round(time.perf_counter() - began, 1),
    }


def _prefixed(say: Log, prefix: str) -> Log:
    return lambda m: say(prefix + m)


def _one_dtype(options: Options, dtype: str, wasm: bytes, work: Path, say: Log) -> dict[str, Any]:
    shape = options.shape
    log = _prefixed(say, f"{shape.name} {dtype}: ")
    began = time.perf_counter()
    log("writing the checkpoint")
    prepared = prepare_random(
        shape, work / f"{shape.name}-{dtype}.safetensors", dtype, options.seed
    )
    bc = canister_runs.BenchCanister(work / f"state-{dtype}", wasm)
    try:
        log(f"upload and load ({prepared.size / 1e6:.0f} MB)")
        upload_seconds = bc.upload(prepared.path)
        info = bc.info()
        memory = bc.memory_bytes()
        cal = canister_runs.calibrate(
            bc,
            shape.n_ctx,
            shape.vocab_size,
            options.budgets,
            options.prefill_tokens,
            options.decode_prompt,
            options.decode_tokens,
            log,
        )
        model = cal.fit(shape.n_ctx)
        tables: dict[str, Figure] = {}
        validations: list[dict[str, Any]] = []
        checked: list[str] = []
        validate_all = (not options.quick) if options.validate_all is None else options.validate_all
        for b in options.budgets:
            figs = figures(model, b)
            chosen = figs if validate_all else _one_per_table(figs)
            # measured / modelled instructions of the checked figure of each kind
            scales: dict[str, float] = {}
            for fig in chosen:
                final, checks = canister_runs.checked_figure(
                    bc, model, fig, b, shape.vocab_size, log
                )
                tables[final.key] = final
                checked.append(final.key)
                validations += [c.as_dict() for c in checks]
                measured = checks[-1].measured_instructions
                modelled = figure_cost(model, final.kind, final.prompt, final.value)
                if measured and modelled and checks[-1].delivered:
                    scales[final.kind] = measured / modelled
            for fig in figs:
                if fig.key not in tables:
                    scale = scales.get(fig.kind, 1.0)
                    tables[fig.key] = figure(model, b, fig.kind, fig.prompt, scale=scale)
        canister_seconds = time.perf_counter() - began

        # Wall clock: the embedded canister and the native runtime in turns, best of
        # `speed_rounds` each (the machine may be busy with other work). Without onnxruntime
        # there is no native speed to compare with: the numpy reference only checks tokens.
        weights = native.load_weights(prepared.path)
        fast = native.OnnxRuntime(weights) if native.onnxruntime_available() else None
        reference = fast or native.NumpyRuntime(weights)
        prompt = canister_runs.prompt_tokens(options.decode_prompt, shape.vocab_size)
        log("decode speed: embedded canister" + (" and onnxruntime in turns" if fast else ""))
        embedded_runs: list[float] = []
        native_runs: list[float] = []
        for _ in range(options.speed_rounds):
            tokens, seconds = canister_runs.timed_decode(bc, prompt, options.decode_tokens)
            embedded_runs.append(len(tokens) / seconds)
            if fast is not None:
                native_runs.append(
                    native.greedy_decode(fast, prompt, options.decode_tokens).tokens_per_second
                )
        ref = native.greedy_decode(reference, prompt, options.decode_tokens)
        del fast, reference, weights
    finally:
        bc.close()
    prepared.path.unlink()

    agree = 0
    for a, b_ in zip(ref.tokens, cal.decode_tokens, strict=False):
        if a != b_:
            break
        agree += 1
    tps = max(embedded_runs)
    native_tps = max(native_runs) if native_runs else None
    result: dict[str, Any] = {
        "dtype": dtype,
        "model": shape.name,
        "prefill_instructions_per_token": round(cal.prefill_instructions_per_token),
        "decode_instructions_per_token": round(cal.decode_instructions_per_token),
    }
    result.update((k, f.value) for k, f in tables.items())
    result.update(
        {
            "tokens_per_second": round(tps, 2),
            "native_tokens_per_second": None if native_tps is None else round(native_tps, 2),
            "ratio": round(native_tps / tps, 2) if native_tps is not None and tps else None,
            "native_skipped": None if native_runs else NATIVE_SKIPPED,
            # From the per-token figure as reported, so a reader can redo the sum.
            "cycles_per_1000_tokens": cost_per_1000_tokens(
                round(cal.decode_instructions_per_token), CYCLES_TOKENS_PER_CALL
            ),
            "cycles_tokens_per_call": CYCLES_TOKENS_PER_CALL,
            "heap_bytes": info.weights_heap_bytes + cal.kv_bytes_full_context,
            "weights_heap_bytes": info.weights_heap_bytes,
            "kv_bytes_full_context": cal.kv_bytes_full_context,
            "wasm_memory_bytes": memory,
            "file_bytes": prepared.size,
            "native_runtime": ref.runtime if native_runs else None,
            "reference_runtime": ref.runtime,
            "reference_greedy_agreement": f"{agree}/{len(ref.tokens)}",
            "tokens_per_second_runs": [round(x, 2) for x in embedded_runs],
            "native_tokens_per_second_runs": [round(x, 2) for x in native_runs],
            "lm_head_instructions": cal.head_instructions,
            "prefill_tokens": options.prefill_tokens,
            "decode_prompt_tokens": options.decode_prompt,
            "decode_tokens": len(cal.decode_tokens),
            "cost_model": model.as_dict(),
            "capped_by_context": sorted(k for k, f in tables.items() if f.capped_by_context),
            "checked_with_real_calls": checked,
            "validations": validations,
            "upload_seconds": round(upload_seconds, 1),
            "canister_seconds": round(canister_seconds, 1),
            "seconds": round(time.perf_counter() - began, 1),
        }
    )
    return result


def _one_per_table(figs: list[Figure]) -> list[Figure]:
    """The cheapest real checks that still cover each table: the longest prompt for one
    output token, and the first KV-cache row (its prompt is the longest, so fewest tokens)."""
    first_kv = f"new_tokens_{KV_PROMPTS[0]}_prompt_kv_"
    return [f for f in figs if f.kind == "max_prompt" or f.key.startswith(first_kv)]
