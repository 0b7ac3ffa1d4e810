"""Bad command-line input and bad settings files: one `error:` line naming the input and
what is accepted, exit 1, never a traceback. Every case fails before a backend opens."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from gpt2_chat import cli

GEN = ["generate", "Hello", "--max-tokens", "4"]

ARGS_CASES = [
    (["generate", "Hello\udcff", "--max-tokens", "4"], "the prompt is not valid UTF-8 (byte 0xff"),
    ([*GEN, "--top-k", "-1"], "--top-k -1: top_k must be between 0 (off) and 4294967295"),
    ([*GEN, "--top-k", "4294967296"], "--top-k 4294967296: top_k must be between"),
    ([*GEN, "--seed", "-1"], "--seed -1: seed must be a 64-bit unsigned number"),
    ([*GEN, "--seed", str(2**64)], f"--seed {2**64}: seed must be a 64-bit"),
    (
        [*GEN, "--tokens-per-call", "-1"],
        "--tokens-per-call -1: tokens_per_call must be between 1 and 1024",
    ),
    ([*GEN, "--tokens-per-call", "0"], "--tokens-per-call 0: tokens_per_call must be between 1"),
    ([*GEN, "--tokens-per-call", "1025"], "--tokens-per-call 1025: tokens_per_call"),
    ([*GEN, "--temperature", "1e40"], "--temperature 1e+40: temperature must be between 0 and 100"),
    ([*GEN, "--temperature", "nan"], "--temperature nan: temperature must be between 0 and 100"),
    ([*GEN, "--temperature", "inf"], "--temperature inf: temperature must be between"),
    ([*GEN, "--temperature", "-1"], "--temperature -1: temperature must be between"),
    ([*GEN, "--top-p", "0"], "--top-p 0: top_p must be in (0, 1]"),
    ([*GEN, "--top-p", "1.5"], "--top-p 1.5: top_p must be in (0, 1]"),
    (
        ["generate", "Hello", "--max-tokens", "0"],
        "--max-tokens 0: max_new_tokens must be between 1 and 1024",
    ),
    (["generate", "Hello", "--max-tokens", "5000"], "--max-tokens 5000: max_new_tokens"),
    (
        [*GEN, "--instruction-budget", "5"],
        "--instruction-budget 5: instruction_budget must be between 10M and 39B",
    ),
    ([*GEN, "--instruction-budget", "40B"], "--instruction-budget 40000000000: instruction_budget"),
    (
        [*GEN, "--instruction-budget", "lots"],
        "argument --instruction-budget: 'lots' is not an instruction count",
    ),
    ([*GEN, "--top-k", "abc"], "argument --top-k: invalid int value: 'abc'"),
    ([*GEN, "--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
    (["generate", "Hello"], "the following arguments are required: --max-tokens"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["--network", "foo", "info"], "--network foo: unknown network `foo`: use embedded"),
    (["--network", "https://", "info"], "`https://` is not a usable replica URL"),
    (["--network", "mainnet\udcff", "info"], "unknown network"),
    (["--network", "local", "info"], "no dfx.json in"),
    (["--network", "foo"], "--network foo: unknown network `foo`"),
    (["tui", "--network", "ftp://x"], "--network ftp://x: unknown network"),
    (["--identity", "missing.pem", "info"], "cannot read identity file"),
    (["deploy"], "no dfx.json in"),
    (["upload", "missing.safetensors"], "no such file: missing.safetensors"),
    (
        ["prepare", "--random", "gpt2", "--seed", "-1", "-o", "x.safetensors"],
        "--seed -1: the weights' seed must be between 0 and 2^64-1",
    ),
]


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("GPT2_CHAT_NETWORK", "GPT2_CHAT_CANISTER", "GPT2_CHAT_IDENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GPT2_CHAT_CONFIG", str(tmp_path / "settings.json"))
    monkeypatch.setenv("GPT2_CHAT_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def one_error_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("argv", "message"), ARGS_CASES)
def test_bad_arguments_are_one_error_line(
    clean_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    line = one_error_line(capsys, cli.main(argv))
    assert message in line, line


def test_a_bad_network_variable_is_named(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPT2_CHAT_NETWORK", "foo")
    line = one_error_line(capsys, cli.main(["info"]))
    assert "GPT2_CHAT_NETWORK foo: unknown network `foo`" in line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1,2]", "does not hold a JSON object"),
        ('{"temperature":"hot"}', "temperature must be a number, not 'hot'"),
        ('{"tokens_per_call":null}', "tokens_per_call must be a whole number, not None"),
        ('{"top_p":[1]}', "top_p must be a number, not [1]"),
        ('{"seed":true}', "seed must be a whole number, not True"),
        ('{"instruction_budget":5}', "instruction_budget must be between 10M and 39B"),
        ('{"network":"foo"}', "unknown network `foo`"),
        ("{", "cannot read settings from"),
        ("\xff\xfe", "cannot read settings from"),
    ],
)
def test_a_bad_settings_file_is_named(
    clean_env: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = clean_env / "settings.json"
    path.write_text(content, encoding="latin-1")
    line = one_error_line(capsys, cli.main(GEN))
    assert message in line and str(path) in line, line


def test_a_settings_file_that_is_a_directory_is_named(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clean_env / "settings.json").mkdir()
    line = one_error_line(capsys, cli.main(["info"]))
    assert "cannot read settings from" in line and str(clean_env / "settings.json") in line


def test_main_leaves_ctrl_c_to_its_caller() -> None:
    """Only the `gpt2-chat` process ignores a late Ctrl-C; `main` called in-process (tests,
    embedding) must leave SIGINT as it found it."""
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(["frobnicate"]) == 1
    assert signal.getsignal(signal.SIGINT) is before
