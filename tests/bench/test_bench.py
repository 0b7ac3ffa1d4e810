"""`gpt2-chat bench` on a tiny GPT-2 shape: the structure of its JSON and that its numbers
agree with each other (not absolute speeds: those are what the benchmark itself reports)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from gpt2_chat.backends.embedded import runtime
from gpt2_chat.bench import native, report, run
from gpt2_chat.bench.native import NumpyRuntime, greedy_decode, load_weights, open_runtime
from gpt2_chat.bench.run import Options, run_bench
from gpt2_chat.bench.tables import Budget, Call, CostModel, figures, most
from gpt2_chat.cli import build_parser, main
from gpt2_chat.client.cycles import cost_per_1000_tokens
from gpt2_chat.client.prepare import prepare
from gpt2_chat.client.random_model import Shape, prepare_random
from gpt2_chat.settings import Settings

TINY = Shape("tiny", n_layer=2, n_head=2, n_embd=128, vocab_size=2048, n_ctx=1024)
#: Fits a heap limit of 24 MiB; BIG (~39 MB of int8 weights) does not.
SMALL = Shape("tiny-small", n_layer=2, n_head=2, n_embd=64, vocab_size=2048, n_ctx=256)
BIG = Shape("tiny-big", n_layer=12, n_head=8, n_embd=512, vocab_size=2048, n_ctx=256)
# Per-call limits scaled down to the tiny model, under the IC's labels so the keys match.
BUDGETS = (Budget("20b", 400_000_000, 340_000_000), Budget("40b", 800_000_000, 740_000_000))
LABELS = ("20b", "40b")
PROMPTS = (48, 24, 12)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime, "HEAP_LIMIT", 24 * 1024**2)
        # As without the bench extra (also where it is installed): no native speed.
        mp.setattr(native, "onnxruntime_available", lambda: False)
        options = Options(
            shape=TINY,
            budgets=BUDGETS,
            big_shapes=(SMALL, BIG),
            validate_all=True,
            decode_tokens=16,
            work_dir=tmp_path_factory.mktemp("bench"),
        )
        result = run_bench(options)
    return json.loads(report.to_json(result))


def test_json_has_every_figure(bench: dict[str, Any]) -> None:
    assert {"results", "shapes", "machine", "date", "limits"} <= set(bench)
    assert [r["dtype"] for r in bench["results"]] == ["f32", "int8"]
    keys = {
        "prefill_instructions_per_token",
        "decode_instructions_per_token",
        "tokens_per_second",
        "native_tokens_per_second",
        "ratio",
        "native_skipped",
        "cycles_per_1000_tokens",
        "heap_bytes",
    }
    for label in LABELS:
        keys |= {f"max_prompt_tokens_one_call_{label}", f"max_new_tokens_4_prompt_{label}"}
        for p in PROMPTS:
            keys |= {f"new_tokens_{p}_prompt_kv_{label}", f"new_tokens_{p}_prompt_no_kv_{label}"}
    for r in bench["results"]:
        assert keys <= set(r), keys - set(r)
    assert bench["machine"]["cores"] >= 1 and bench["machine"]["cpu"]


def test_numbers_are_consistent(bench: dict[str, Any]) -> None:
    f32, int8 = bench["results"]
    for r in (f32, int8):
        assert r["decode_instructions_per_token"] > 0
        assert r["prefill_instructions_per_token"] > 0
        assert r["tokens_per_second"] > 0
        # No onnxruntime: no native speed, no ratio, and the result says why.
        assert r["native_tokens_per_second"] is None and r["ratio"] is None
        assert r["native_runtime"] is None and "onnxruntime" in r["native_skipped"]
        assert r["reference_runtime"].startswith("numpy")
        assert r["cycles_per_1000_tokens"] == cost_per_1000_tokens(
            r["decode_instructions_per_token"], Settings().tokens_per_call
        )
        assert r["heap_bytes"] > r["weights_heap_bytes"] > 0
        for label in LABELS:
            assert r[f"max_prompt_tokens_one_call_{label}"] >= 1
            assert r[f"max_new_tokens_4_prompt_{label}"] >= 1
            for p in PROMPTS:
                kv, no_kv = (
                    r[f"new_tokens_{p}_prompt_kv_{label}"],
                    r[f"new_tokens_{p}_prompt_no_kv_{label}"],
                )
                assert kv >= no_kv >= 1
            # Shorter prompts leave more of the budget for output.
            kv_row = [r[f"new_tokens_{p}_prompt_kv_{label}"] for p in PROMPTS]
            assert kv_row == sorted(kv_row)
        for key in r:
            if key.endswith("_20b"):
                assert r[key.removesuffix("_20b") + "_40b"] >= r[key]
    # int8 weights cost fewer instructions and less heap than f32.
    assert int8["prefill_instructions_per_token"] < f32["prefill_instructions_per_token"]
    assert int8["decode_instructions_per_token"] < f32["decode_instructions_per_token"]
    assert int8["weights_heap_bytes"] < f32["weights_heap_bytes"]
    # The native reference computes the same network: greedy f32 tokens agree.
    agree, total = map(int, f32["reference_greedy_agreement"].split("/"))
    assert agree == total == 16


def test_every_figure_was_checked_with_real_calls(bench: dict[str, Any]) -> None:
    for r in bench["results"]:
        figures_ = {k for k in r if k.endswith(LABELS) and not k.startswith("limits")}
        assert set(r["checked_with_real_calls"]) == figures_
        finals: dict[str, dict[str, Any]] = {}
        for v in r["validations"]:
            finals[v["key"]] = v
            assert v["measured_instructions"] is not None
            assert abs(v["model_error"]) < 0.05
        for key, v in finals.items():
            assert v["value"] == r[key]
            assert v["fits"] and not v["next_fits"], v


def test_bigger_shapes_report_whether_they_load(bench: dict[str, Any]) -> None:
    small, big = bench["shapes"]
    assert small["model"] == "tiny-small" and small["fits"] is True
    assert small["decode_instructions_per_token"] > 0
    assert small["heap_bytes"] > small["weights_heap_bytes"] > 0
    assert big["model"] == "tiny-big" and big["fits"] is False
    assert "load_model" in big["error"]


def test_markdown_and_plot(bench: dict[str, Any], tmp_path: Path) -> None:
    png = importlib.util.find_spec("matplotlib") is not None
    written = report.write(bench, tmp_path, png=png)
    text = (tmp_path / "benchmarks.md").read_text()
    assert bench["date"] in text and bench["machine"]["cpu"] in text
    assert "| prefill, instructions / prompt token |" in text
    assert "tiny-big" in text and "does not fit" in text
    assert "Native comparison skipped: onnxruntime is not installed" in text
    assert "| native ÷ embedded | — | — |" in text and "0.18×" not in text
    cycles = [line for line in text.splitlines() if line.startswith("| cycles per 1,000")]
    assert len(cycles) == 1 and "(8 per call)" in cycles[0]
    assert f"{bench['results'][1]['cycles_per_1000_tokens'] / 1e9:.1f}B" in cycles[0]
    assert "gas-cost" in text
    if png:
        assert written[-1].read_bytes().startswith(b"\x89PNG")


def test_random_checkpoint_is_what_prepare_writes(tmp_path: Path) -> None:
    f32 = prepare_random(SMALL, tmp_path / "f32.safetensors", "f32", seed=1)
    again = prepare_random(SMALL, tmp_path / "again.safetensors", "f32", seed=1)
    assert f32.sha256 == again.sha256
    ours = prepare_random(SMALL, tmp_path / "int8.safetensors", "int8", seed=1)
    theirs = prepare(str(f32.path), tmp_path / "prepared.safetensors", dtype="int8")
    a, b = load_file(str(ours.path)), load_file(str(theirs.path))
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    assert a["h.0.mlp.c_fc.weight"].dtype == np.int8
    assert a["h.0.mlp.c_fc.weight_scale"].shape == (4 * SMALL.n_embd,)
    assert a["wte.weight_scale"].shape == (SMALL.vocab_size,)
    assert abs(float(load_file(str(f32.path))["h.1.attn.c_proj.weight"].std()) - 0.02) < 0.002


def test_native_runtimes_agree(tmp_path: Path) -> None:
    for dtype in ("f32", "int8"):
        m = prepare_random(SMALL, tmp_path / f"{dtype}.safetensors", dtype)
        weights = load_weights(m.path)
        ref = greedy_decode(NumpyRuntime(weights), [1, 2, 3], 8)
        preferred = greedy_decode(open_runtime(weights), [1, 2, 3], 8)
        if dtype == "f32" or preferred.runtime.startswith("numpy"):
            assert preferred.tokens == ref.tokens


def test_tables_from_a_cost_model() -> None:
    # 1M per prefill token and 2M per generated token, nothing else.
    model = CostModel.fit(
        1024,
        [Call(0, 16, 16_000_000), Call(16, 64, 64_000_000), Call(80, 8, 8_000_000)],
        [Call(16, 4, 8_000_000), Call(20, 8, 16_000_000), Call(100, 2, 4_000_000)],
        head=500_000,
    )
    assert model.prefill(10) == pytest.approx(10e6, abs=1)
    figs = {f.key: f.value for f in figures(model, Budget("x", 120_000_000, 100_000_000))}
    assert figs["max_prompt_tokens_one_call_x"] == 99
    assert figs["max_new_tokens_4_prompt_x"] == 48
    assert figs["new_tokens_48_prompt_kv_x"] == 26
    # Without the cache: 48.5M + 49.5M for two tokens, a third would pass 100M.
    assert figs["new_tokens_48_prompt_no_kv_x"] == 2
    assert most(lambda n: n * 3.0, 10, 100) == 3


def test_cli_parses_bench() -> None:
    args = build_parser().parse_args(["bench", "--quick", "--json", "--out-dir", "x"])
    assert (args.command, args.quick, args.json, args.out_dir) == ("bench", True, True, Path("x"))
    assert build_parser().parse_args(["bench"]).out_dir is None


def test_cli_bench_writes_files_only_when_asked(
    bench: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(run, "run_bench", lambda options, log: bench)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["date"] == bench["date"]
    assert main(["bench"]) == 0
    assert capsys.readouterr().out.startswith("# Benchmarks")
    assert list(tmp_path.iterdir()) == [], "nothing written without --out-dir"
    assert main(["bench", "--json", "--out-dir", "out"]) == 0
    assert (tmp_path / "out" / "benchmarks.md").is_file()
