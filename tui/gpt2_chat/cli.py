"""`gpt2-chat`: the command line. Every subcommand is a thin layer over the client library.

Expected failures (bad input, a refused call, an unreachable replica) print one line to
stderr and exit 1; no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from gpt2_chat.backends.base import Backend
from gpt2_chat.errors import EXPECTED_ERRORS, UserError
from gpt2_chat.settings import Settings, load_settings


class UsageError(UserError):
    """Bad command-line input."""


class StatusLine:
    """A progress line on stderr: redrawn in place on a terminal (at most 20 times a
    second), one line per second when stderr is a file or pipe; ended before anything
    else prints."""

    open = False
    last = 0.0
    last_phase = ""

    @classmethod
    def show(cls, text: str) -> None:
        tty = sys.stderr.isatty()
        now = time.monotonic()
        phase = text.split(":", 1)[0]
        if phase == cls.last_phase and now - cls.last < (0.05 if tty else 1.0):
            return
        cls.last, cls.last_phase = now, phase
        if tty:
            print(f"\r{text:<70}", end="", file=sys.stderr, flush=True)
            cls.open = True
        else:
            print(text, file=sys.stderr, flush=True)

    @classmethod
    def end(cls) -> None:
        if cls.open:
            print(file=sys.stderr)
            cls.open = False


_GLOBAL_OPTIONS = (
    (
        "--network",
        "embedded (the local embedded runtime; default), local, ic, or a replica URL "
        "[GPT2_CHAT_NETWORK]",
    ),
    ("--canister", "canister id or dfx name [GPT2_CHAT_CANISTER]"),
    ("--identity", "PEM file, dfx identity name or 'anonymous' [GPT2_CHAT_IDENTITY]"),
    ("--state-dir", "embedded runtime state directory [GPT2_CHAT_STATE_DIR]"),
)


def _add_global_options(p: argparse.ArgumentParser, default: object) -> None:
    """Accepted before or after the subcommand. On subcommands they default to SUPPRESS,
    so a value given before the subcommand is not overwritten by the subcommand's default."""
    group = p.add_argument_group("connection options")
    for flag, text in _GLOBAL_OPTIONS:
        group.add_argument(flag, help=text, default=default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2-chat", description="Chat with GPT-2 running inside an IC canister."
    )
    _add_global_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("prepare", help="make a canister-ready model file")
    p.add_argument("source", help="Hugging Face id (e.g. gpt2), checkpoint dir or .safetensors")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument(
        "--dtype",
        default="f32",
        choices=["f32", "int8"],
        help="int8: weight matrices in int8 with per-output scales (fewer IC instructions)",
    )

    p = sub.add_parser("upload", help="upload a model file (resumes) and load it")
    p.add_argument("file", type=Path)
    p.add_argument("--no-load", action="store_true", help="upload and verify only")

    p = sub.add_parser("generate", help="continue a prompt")
    p.add_argument("prompt")
    p.add_argument("--max-tokens", type=int, required=True)
    p.add_argument("--temperature", type=float, help="0 = greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--tokens-per-call", type=int)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("info", help="model and upload state")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("chat", help="interactive chat in the terminal (line mode); saved")
    p.add_argument("--list", action="store_true", help="list the saved chats")
    p.add_argument("--resume", type=int, metavar="ID", help="continue saved chat ID")
    sub.add_parser("tui", help="the terminal app: chat, model upload, replica, settings (default)")

    p = sub.add_parser("replica", help="manage the local dfx network")
    p.add_argument("action", choices=["start", "stop", "status"])
    sub.add_parser("deploy", help="deploy the canister to the configured replica with dfx")

    p = sub.add_parser(
        "bench",
        help="benchmark the canister in the embedded runtime: IC instructions per token, "
        "tokens per call, speed beside a native runtime",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--quick",
        action="store_true",
        help="GPT-2 124M only (skip the medium/large/xl heap check), one real check per table",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("docs"),
        help="where benchmarks.md and benchmarks.png are written (default: ./docs)",
    )

    for child in sub.choices.values():
        _add_global_options(child, default=argparse.SUPPRESS)
    return parser


def resolve_settings(args: argparse.Namespace) -> Settings:
    settings = load_settings().with_env()
    flags = {
        "network": args.network,
        "canister": args.canister,
        "identity": args.identity,
        "state_dir": args.state_dir,
    }
    return replace(settings, **{k: v for k, v in flags.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Global options may come before or after the subcommand; the later one wins.
    args = parser.parse_args(argv)
    try:
        command = args.command or "tui"
        if command == "tui":
            # The app reads (and reports problems with) the settings file itself.
            return cmd_tui(args)
        settings = resolve_settings(args)
        return int(COMMANDS[command](args, settings) or 0)
    except KeyboardInterrupt:
        StatusLine.end()
        print("interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as e:
        StatusLine.end()
        print(f"error: {e}", file=sys.stderr)
        return 1


def _canister(settings: Settings) -> tuple[Backend, Any]:
    from gpt2_chat.client.canister import Gpt2Canister
    from gpt2_chat.connect import open_backend

    backend = open_backend(settings)
    return backend, Gpt2Canister(backend)


def cmd_prepare(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.client.prepare import prepare

    def progress(stage: str, done: int, total: int) -> None:
        StatusLine.show(f"{stage}: {_mb(done)} / {_mb(total)}")

    result = prepare(args.source, args.output, dtype=args.dtype, progress=progress)
    StatusLine.end()
    print(f"wrote {result.path} ({_mb(result.size)}, sha256 {result.sha256})")
    return 0


def cmd_upload(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.client.upload import Progress, upload_model

    if not args.file.is_file():
        raise UsageError(f"no such file: {args.file}")
    backend, canister = _canister(settings)
    try:

        def show(p: Progress) -> None:
            line = f"{p.phase}: {_mb(p.done)} / {_mb(p.total)}"
            if p.phase == "upload" and p.rate:
                eta = p.eta_seconds or 0
                line += f"  {p.rate / 1e6:.1f} MB/s  ETA {eta:.0f}s"
            StatusLine.show(line)

        result = upload_model(canister, args.file, show, load=not args.no_load)
        StatusLine.end()
        if result.already_uploaded:
            print(f"already uploaded: {args.file} (sha256 {result.sha256})")
        elif result.resumed_from:
            print(f"resumed at byte {result.resumed_from}; uploaded {args.file}")
        else:
            print(f"uploaded {args.file} ({_mb(result.size)}, sha256 {result.sha256})")
        if result.load is not None:
            print("model loaded")
        return 0
    finally:
        backend.close()


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.client.canister import Sampling
    from gpt2_chat.client.chat import ChatSettings, Conversation
    from gpt2_chat.client.tokenizer import Gpt2Tokenizer

    if args.max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    sampling = Sampling(
        temperature=settings.temperature if args.temperature is None else args.temperature,
        top_k=settings.top_k if args.top_k is None else args.top_k,
        top_p=settings.top_p if args.top_p is None else args.top_p,
        seed=settings.seed if args.seed is None else args.seed,
    )
    chat_settings = ChatSettings(
        sampling=sampling,
        max_new_tokens=args.max_tokens,
        tokens_per_call=args.tokens_per_call or settings.tokens_per_call,
        instruction_budget=settings.instruction_budget,
    )
    backend, canister = _canister(settings)
    conversation = Conversation(canister, Gpt2Tokenizer(), chat_settings)
    try:
        stream: Callable[[str], None] | None = None
        if not args.json:
            stream = lambda t: print(t, end="", flush=True)  # noqa: E731
            print(args.prompt, end="", flush=True)
        result = conversation.complete(args.prompt, stream)
        if args.json:
            out = {
                "prompt_ids": result.prompt_ids,
                "token_ids": result.token_ids,
                "text": result.text,
                "stop": result.stop,
                "calls": len(result.calls),
                "instructions": [c.instructions for c in result.calls],
                "call_kinds": [c.kind for c in result.calls],
                "seconds": round(result.seconds, 3),
            }
            print(json.dumps(out))
        else:
            print()
        return 0
    finally:
        try:
            conversation.reset()
        finally:
            backend.close()


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    backend, canister = _canister(settings)
    try:
        info = canister.model_info()
    finally:
        backend.close()
    data = {
        "backend": backend.description,
        "loaded": info.loaded,
        "uploaded_bytes": info.upload.received_bytes,
        "declared_size": info.upload.declared_size,
        "complete": info.upload.complete,
        "sha256": info.upload.sha256 or info.upload.declared_sha256,
        "dtype": info.dtype,
        "config": asdict(info.config) if info.config else None,
        "weights_heap_bytes": info.weights_heap_bytes,
        "sessions": info.sessions,
    }
    if args.json:
        print(json.dumps(data))
        return 0
    for key, value in data.items():
        print(f"{key:>18}: {value}")
    return 0


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.client.history import ChatHistory
    from gpt2_chat.line_chat import print_saved_chats, run_chat

    history = ChatHistory()
    if args.list:
        return print_saved_chats(history)
    saved = history.load(args.resume) if args.resume is not None else None
    backend, canister = _canister(settings)
    try:
        return run_chat(settings, canister, backend.description, history, saved)
    finally:
        backend.close()


def cmd_tui(args: argparse.Namespace) -> int:
    from gpt2_chat.app import run_app

    flags = {
        name: value
        for name in ("network", "canister", "identity", "state_dir")
        if (value := getattr(args, name, None)) is not None
    }
    return run_app(flags)


def cmd_replica(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.replica import tools

    actions: dict[str, Callable[[], object]] = {
        "start": tools.start,
        "stop": tools.stop,
        "status": tools.status,
    }
    print(actions[args.action]())
    return 0


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.connect import PROJECT_ROOT
    from gpt2_chat.replica import tools

    print(tools.deploy(PROJECT_ROOT))
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Always the embedded runtime (its metering is the measurement), whatever --network says."""
    import importlib.util

    from gpt2_chat.bench import report
    from gpt2_chat.bench.run import Options, run_bench

    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:5.0f}s] {message}", file=sys.stderr, flush=True)

    png = importlib.util.find_spec("matplotlib") is not None
    if not png:
        log("matplotlib is not installed (pip install 'gpt2-chat[bench]'): no PNG plot")
    result = run_bench(Options(quick=args.quick), log)
    written = report.write(result, args.out_dir, png=png)
    log("wrote " + ", ".join(str(p) for p in written))
    print(
        report.to_json(result) if args.json else report.markdown(result),
        end="\n" if args.json else "",
    )
    return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "prepare": cmd_prepare,
    "upload": cmd_upload,
    "generate": cmd_generate,
    "info": cmd_info,
    "chat": cmd_chat,
    "replica": cmd_replica,
    "deploy": cmd_deploy,
    "bench": cmd_bench,
}

if __name__ == "__main__":
    sys.exit(main())
