"""The benchmark's outputs: JSON, a markdown page and a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2_chat.bench.tables import KV_PROMPTS, MARGIN, SHORT_PROMPT
from gpt2_chat.client.cycles import FEE_SCHEDULE

MARKDOWN = "benchmarks.md"
PLOT = "benchmarks.png"


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1)


def _m(n: float | None) -> str:
    """Instructions in millions."""
    return "—" if n is None else f"{n / 1e6:.0f}M"


def _mb(n: float | None) -> str:
    return "—" if n is None else f"{n / 1e6:.0f} MB"


def _gib(n: float | None) -> str:
    return "—" if n is None else f"{n / 1024**3:.2f} GiB"


def _times(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio}×"


def _cycles(n: float | None) -> str:
    return "—" if n is None else f"{n / 1e9:.1f}B"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _labels(report: dict[str, Any]) -> list[str]:
    return list(report.get("limits", {})) or ["20b", "40b"]


def markdown(report: dict[str, Any]) -> str:
    results: list[dict[str, Any]] = report["results"]
    by_dtype = {r["dtype"]: r for r in results}
    seed: dict[str, Any] = report.get("seed_reference", {})
    targets: dict[str, Any] = report.get("targets", {})
    machine: dict[str, Any] = report["machine"]
    model: dict[str, Any] = report["model"]
    dtypes = list(by_dtype)
    lines = [
        "# Benchmarks",
        "",
        f"`gpt2-chat bench{' --quick' if report.get('quick') else ''}` on {report['date']}, "
        f"{machine['cpu']} ({machine['cores']} cores, {_gib(machine.get('memory_bytes'))}), "
        f"{machine['os']}, Python {machine['python']}, wasmtime {machine.get('wasmtime')}; "
        f"canister wasm sha256 `{report['wasm_sha256'][:16]}…`; took {report['seconds']:.0f} s.",
        "",
        f"Model: the `{model['name']}` GPT-2 architecture ({model['n_layer']} layers, "
        f"{model['n_head']} heads, n_embd {model['n_embd']}, vocab {model['vocab_size']}, "
        f"n_ctx {model['n_ctx']}, {model['parameters'] / 1e6:.0f}M parameters), "
        f"{model['weights']}. Instructions are the embedded runtime's IC metering of whole "
        "update calls.",
        "",
        _row(["", *dtypes, "seed (tract + SIMD)", "target f32", "target int8"]),
        _row(["---"] * (len(dtypes) + 4)),
    ]

    def target(dtype: str, key: str, fmt: Callable[[Any], str]) -> str:
        value = targets.get(dtype, {}).get(key)
        return "—" if value is None else fmt(value)

    def metric(
        title: str,
        key: str,
        fmt: Callable[[Any], str] = str,
        target_fmt: Callable[[Any], str] | None = None,
    ) -> None:
        cells = [
            fmt(by_dtype[d].get(key)) if by_dtype[d].get(key) is not None else "—" for d in dtypes
        ]
        s = seed.get(key)
        tf = target_fmt or (lambda v: f"≤ {fmt(v)}")
        lines.append(
            _row(
                [
                    title,
                    *cells,
                    "—" if s is None else ("~" if key.endswith("per_token") else "") + fmt(s),
                    target("f32", key, tf),
                    target("int8", key, tf),
                ]
            )
        )

    metric("prefill, instructions / prompt token", "prefill_instructions_per_token", _m)
    metric("decode, instructions / generated token (KV cache)", "decode_instructions_per_token", _m)
    for label in _labels(report):
        lim = label.upper()
        metric(
            f"most prompt tokens for 1 output token, one call ({lim})",
            f"max_prompt_tokens_one_call_{label}",
            target_fmt=lambda v: f"≥ {v}",
        )
        metric(
            f"most output tokens for a {SHORT_PROMPT}-token prompt ({lim})",
            f"max_new_tokens_{SHORT_PROMPT}_prompt_{label}",
            target_fmt=lambda v: f"≥ {v}",
        )
    for label in _labels(report):
        lim = label.upper()
        for kind, how in (("kv", "with KV cache"), ("no_kv", "without KV cache")):
            keys = [f"new_tokens_{p}_prompt_{kind}_{label}" for p in KV_PROMPTS]
            cells = [" / ".join(str(by_dtype[d].get(k, "—")) for k in keys) for d in dtypes]
            s = [seed.get(k) for k in keys]
            lines.append(
                _row(
                    [
                        f"output tokens after {'/'.join(map(str, KV_PROMPTS))}-token prompts, "
                        f"{how} ({lim})",
                        *cells,
                        " / ".join(map(str, s)) if all(v is not None for v in s) else "—",
                        "—",
                        "—",
                    ]
                )
            )
    metric("embedded decode, tokens/s (wall clock)", "tokens_per_second")
    metric("native decode, tokens/s (1 thread)", "native_tokens_per_second")
    ratio_target = targets.get("ratio")
    lines.append(
        _row(
            [
                "native ÷ embedded",
                *[_times(by_dtype[d].get("ratio")) for d in dtypes],
                "—",
                f"≤ {ratio_target}×" if ratio_target else "—",
                f"≤ {ratio_target}×" if ratio_target else "—",
            ]
        )
    )
    per_call = {by_dtype[d].get("cycles_tokens_per_call") for d in dtypes} - {None}
    metric(
        "cycles per 1,000 generated tokens"
        + (f" ({per_call.pop()} per call)" if len(per_call) == 1 else ""),
        "cycles_per_1000_tokens",
        _cycles,
    )
    metric("heap: weights + a full context's KV cache", "heap_bytes", _mb)
    metric("wasm memory after loading", "wasm_memory_bytes", _mb)
    skipped = {
        str(by_dtype[d]["native_skipped"]) for d in dtypes if by_dtype[d].get("native_skipped")
    }
    lines += [
        "",
        (
            f"Native comparison skipped: {', '.join(sorted(skipped))}."
            if skipped
            else "Native runtime: "
            + "; ".join(f"{d}: {by_dtype[d].get('native_runtime')}" for d in dtypes)
            + "."
        )
        + " Greedy tokens equal to the canister's over the first "
        + ", ".join(f"{by_dtype[d].get('reference_greedy_agreement')} ({d})" for d in dtypes)
        + " decode steps ("
        + "; ".join(sorted({str(by_dtype[d].get("reference_runtime")) for d in dtypes}))
        + ").",
        "",
        f"Cycles: decode instructions per token at the app's default tokens per call, with "
        f"the fees of {FEE_SCHEDULE} (`client/cycles.py`); an estimate, not a bill.",
    ]
    shapes: list[dict[str, Any]] = report.get("shapes", [])
    if shapes:
        lines += [
            "",
            "## Bigger shapes, int8, under the default 3 GiB heap limit",
            "",
            _row(
                [
                    "model",
                    "layers / heads / n_embd",
                    "parameters",
                    "file",
                    "loads",
                    "weights heap",
                    "wasm memory",
                    "prefill / token",
                    "decode / token",
                    "decode tokens/s",
                ]
            ),
            _row(["---"] * 10),
        ]
        for sh in shapes:
            lines.append(
                _row(
                    [
                        sh["model"],
                        f"{sh['n_layer']} / {sh['n_head']} / {sh['n_embd']}",
                        f"{sh['parameters'] / 1e6:.0f}M",
                        _mb(sh.get("file_bytes")),
                        "yes" if sh.get("fits") else "**does not fit**",
                        _mb(sh.get("weights_heap_bytes")),
                        _mb(sh.get("memory_bytes")),
                        _m(sh.get("prefill_instructions_per_token")),
                        _m(sh.get("decode_instructions_per_token")),
                        sh.get("tokens_per_second", "—"),
                    ]
                )
            )
        for sh in shapes:
            if not sh.get("fits") and sh.get("error"):
                memory = sh.get("memory_bytes")
                at = f" (wasm memory {_gib(memory)} when it trapped)" if memory else ""
                lines.append(f"\n{sh['model']}: {sh['error']}{at}.")
    lines += ["", *_method(report), "", *_validations(results)]
    return "\n".join(lines) + "\n"


def _method(report: dict[str, Any]) -> list[str]:
    limits = report.get("limits", {})
    budgets = ", ".join(
        f"{v['budget'] / 1e9:g}B under the {v['limit'] / 1e9:g}B limit" for v in limits.values()
    )
    return [
        "## How these are measured",
        "",
        "- Prefill: one `session_prefill` of a 128-token prompt, instructions ÷ 128. Decode: "
        "`session_generate` of 32 tokens after a 16-token prompt, instructions ÷ 32 (LM head, "
        "greedy sampling and the token's pass through the KV cache). Tokens/s: the best of "
        "three such calls, taken in turns with the native runtime's 32 decode steps after the "
        "same prompt (the embedded runtime also copies the heap for rollback once per call).",
        f"- Tokens per call: the most tokens whose instructions fit in the budget ({budgets}; "
        "the canister keeps 1B free for the reply and its estimates; the seed's ~263M prefill "
        "is its 20B limit over its 76 tokens). *Prompt tokens for 1 "
        "output*: `model_inference(1, prompt)`, the seed's one-call method. *With KV cache*: "
        "`session_prefill(prompt)` then `session_generate(n)`, their instructions summed. "
        "*Without KV cache*: every output token recomputes the whole prefix, "
        "`model_inference(1, prompt + outputs so far)` per token, summed.",
        "- The figures come from a cost model fitted to measured calls (prefill: per call, per "
        "token and per earlier position; generate: per call, per token and per position) and are "
        "then checked with real calls under the limit (below). A figure is the most tokens "
        "a check saw *fit* (every token returned, instructions within the budget); a check "
        "that shows room for one more, runs over, or is refused by the canister corrects "
        "it and is checked again, until the value above it was seen not to fit or the model "
        "leaves no room for another token.",
        "- Native: the same weights in onnxruntime (decode graph with KV cache built with "
        "onnx.helper; int8 as `MatMulInteger` with 8-bit dynamic activations) on one thread. "
        "Without onnxruntime there is no native speed comparison; a numpy reference still "
        "checks the greedy tokens.",
    ]


def _validations(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Checks with real calls",
        "",
        _row(["dtype", "figure", "value", "how", "calls", "instructions", "model error", "fits",
              "room for one more", "note"]),
        _row(["---"] * 10),
    ]  # fmt: skip
    for r in results:
        for v in r.get("validations", []):
            measured = v.get("measured_instructions")
            err = v.get("model_error")
            lines.append(
                _row(
                    [
                        r["dtype"],
                        f"`{v['key']}`",
                        v["value"],
                        v["vehicle"],
                        v["calls"],
                        "over the limit"
                        if measured is None
                        else f"{measured / 1e9:.3f}B of {v['budget'] / 1e9:g}B",
                        "—" if err is None else f"{err * 100:+.2f}%",
                        "yes" if v["fits"] else "**no**",
                        "**yes**" if v["next_fits"] else "no",
                        v.get("note", ""),
                    ]
                )
            )
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """Instructions per token (ours in f32 and int8, the seed's, the targets) and tokens per
    call at each limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: list[dict[str, Any]] = report["results"]
    targets: dict[str, Any] = report.get("targets", {})
    seed: dict[str, Any] = report.get("seed_reference", {})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))

    names = ["prefill", "decode"]
    keys = ["prefill_instructions_per_token", "decode_instructions_per_token"]
    width = 0.8 / max(len(results), 1)
    colors = {"f32": "tab:blue", "int8": "tab:orange"}
    for i, r in enumerate(results):
        xs = [j + (i - (len(results) - 1) / 2) * width for j in range(len(keys))]
        ys = [r[k] / 1e6 for k in keys]
        bars = ax1.bar(xs, ys, width, label=r["dtype"], color=colors.get(r["dtype"]))
        ax1.bar_label(bars, fmt="%.0fM", fontsize=8)
        for x, k in zip(xs, keys, strict=True):
            t = targets.get(r["dtype"], {}).get(k)
            if t:
                ax1.hlines(t / 1e6, x - width / 2, x + width / 2, colors="black", linestyles="--")
    if seed.get("prefill_instructions_per_token"):
        ax1.axhline(
            seed["prefill_instructions_per_token"] / 1e6,
            color="tab:red",
            linestyle=":",
            label="seed prefill (~263M)",
        )
    ax1.plot([], [], "k--", label="target")
    ax1.set_xticks(range(len(names)), names)
    ax1.set_ylabel("IC instructions per token (millions)")
    params = report.get("model", {}).get("parameters", 0)
    ax1.set_title(f"IC instructions per token, GPT-2 {params / 1e6:.0f}M")
    ax1.legend(fontsize=8)

    labels = _labels(report)
    groups = [
        ("longest prompt\n→ 1 output", "max_prompt_tokens_one_call"),
        (f"{SHORT_PROMPT}-token prompt\n→ outputs", f"max_new_tokens_{SHORT_PROMPT}_prompt"),
        *[(f"{p}-token prompt\n→ outputs", f"new_tokens_{p}_prompt_kv") for p in KV_PROMPTS],
    ]
    series: list[tuple[str, dict[str, Any], str]] = [("seed", seed, "20b")]
    series += [(r["dtype"], r, lab) for r in results for lab in labels]
    shades = {
        ("seed", "20b"): "tab:gray",
        ("f32", "20b"): "lightsteelblue",
        ("f32", "40b"): "tab:blue",
        ("int8", "20b"): "navajowhite",
        ("int8", "40b"): "tab:orange",
    }
    width = 0.8 / len(series)
    for i, (name, src, lab) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        ys = [src.get(f"{key}_{lab}") or 0 for _, key in groups]
        color = shades.get((name, lab))
        bars = ax2.bar(xs, ys, width, label=f"{name} {lab.upper()}", color=color)
        ax2.bar_label(bars, fontsize=6)
    ax2.set_xticks(range(len(groups)), [g for g, _ in groups], fontsize=8)
    ax2.set_ylabel("tokens in one update call")
    ax2.set_title(f"Tokens per call (KV cache; budget = limit - {MARGIN / 1e9:g}B)")
    ax2.legend(fontsize=7)
    fig.suptitle(f"gpt2-chat bench, {report['date'][:10]}, {report['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], out_dir: Path, png: bool = True) -> list[Path]:
    """Writes benchmarks.md (and benchmarks.png) into `out_dir`; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / MARKDOWN
    md.write_text(markdown(report))
    written = [md]
    if png:
        plot(report, out_dir / PLOT)
        written.append(out_dir / PLOT)
    return written
