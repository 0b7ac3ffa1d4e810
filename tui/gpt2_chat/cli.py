"""`gpt2-chat`: the command line. Every subcommand is a thin layer over the client library.

Expected failures (bad input, a refused call, an unreachable replica) print one line to
stderr and exit 1; no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from gpt2_chat.errors import EXPECTED_ERRORS, UserError
from gpt2_chat.settings import (
    CONNECTION_OPTIONS,
    InvalidSetting,
    Settings,
    SettingsStore,
    chat_settings,
    parse_instruction_count,
)

if TYPE_CHECKING:
    from gpt2_chat.connect import Connection


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


class _Parser(argparse.ArgumentParser):
    """Bad arguments are a UsageError: one `error:` line and exit 1, like every failure."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _add_global_options(p: argparse.ArgumentParser, default: object) -> None:
    """Accepted before or after the subcommand. On subcommands they default to SUPPRESS,
    so a value given before the subcommand is not overwritten by the subcommand's default."""
    group = p.add_argument_group("connection options")
    for option in CONNECTION_OPTIONS:
        group.add_argument(option.flag, help=f"{option.help} [{option.env}]", default=default)


#: generate's flags that set a sampling setting for the call: Settings field -> flag.
SAMPLING_FLAGS = {
    "max_new_tokens": "--max-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "seed": "--seed",
    "tokens_per_call": "--tokens-per-call",
    "instruction_budget": "--instruction-budget",
}


def _instruction_count(text: str) -> int:
    try:
        return parse_instruction_count(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpt2-chat", description="Chat with GPT-2 running inside an IC canister.")
    _add_global_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("prepare", help="make a canister-ready model file")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "source", nargs="?", help="Hugging Face id (e.g. gpt2), checkpoint dir or .safetensors"
    )
    what.add_argument(
        "--random",
        metavar="SHAPE",
        help="a randomly initialised model of a GPT-2 shape, gpt2 to gpt2-xl (no download; "
        "talks nonsense)",
    )
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--revision", default="main", help="of a Hugging Face id: branch, tag or commit")
    p.add_argument("--seed", type=int, default=0, help="with --random: the weights' seed")
    p.add_argument(
        "--dtype",
        default="f32",
        choices=["f32", "int8"],
        help="int8: weight matrices in int8 with per-output scales (fewer IC instructions)",
    )

    p = sub.add_parser("upload", help="upload a model file (resumes) and load it")
    p.add_argument("file", type=Path, nargs="?")
    p.add_argument("--no-load", action="store_true", help="upload and verify only")
    p.add_argument(
        "--clear",
        action="store_true",
        help="first clear the canister's upload and unload its model (controllers only)",
    )

    p = sub.add_parser("generate", help="continue a prompt")
    p.add_argument("prompt")
    p.add_argument("--max-tokens", type=int, required=True)
    p.add_argument("--temperature", type=float, help="0 = greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--tokens-per-call", type=int)
    p.add_argument(
        "--instruction-budget",
        type=_instruction_count,
        help="instructions per call, e.g. 500M or 30B (default: the canister's, 30B)",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("info", help="model and upload state")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "reset", help="move the embedded canister's state to a backup and start over"
    )
    p.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")

    p = sub.add_parser("controllers", help="list or change the embedded canister's controllers")
    p.add_argument("action", choices=["list", "add", "remove"])
    p.add_argument("principal", nargs="?", help="for add and remove")

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
        help="also write benchmarks.md and benchmarks.png there (e.g. docs); "
        "without it no file is written",
    )

    for child in sub.choices.values():
        _add_global_options(child, default=argparse.SUPPRESS)
    return parser


def resolve_settings(args: argparse.Namespace) -> Settings:
    """The run's settings: flags > GPT2_CHAT_* variables > settings file > defaults."""
    store = SettingsStore(flags=_connection_flags(args))
    if store.load_error is not None:
        raise store.load_error
    return store.checked()


def _connection_flags(args: argparse.Namespace) -> dict[str, str | None]:
    return {o.name: getattr(args, o.name, None) for o in CONNECTION_OPTIONS}


def _connection_sources(args: argparse.Namespace, settings: Settings) -> dict[str, object]:
    store = SettingsStore(flags=_connection_flags(args))
    return {
        o.name: {"value": getattr(settings, o.name), "from": store.source(o.name)}
        for o in CONNECTION_OPTIONS
    }


def _with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """`settings` with generate's sampling flags applied; a value out of range is a
    UsageError naming the flag and what it accepts."""
    given = {
        name: value
        for name, flag in SAMPLING_FLAGS.items()
        if (value := getattr(args, flag[2:].replace("-", "_"))) is not None
    }
    new = replace(settings, **given)
    try:
        new.validate()
    except InvalidSetting as e:
        if e.field not in given:
            raise
        value = given[e.field]
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise UsageError(f"{SAMPLING_FLAGS[e.field]} {shown}: {e}") from None
    return new


def check_utf8(text: str, what: str) -> None:
    """Arguments that are not valid UTF-8 reach Python as lone surrogates; say so here
    instead of failing on them deep inside the tokenizer or the terminal."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        byte = ord(text[e.start]) & 0xFF
        raise UsageError(
            f"{what} is not valid UTF-8 (byte 0x{byte:02x} at character {e.start})"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        # Global options may come before or after the subcommand; the later one wins.
        args = parser.parse_args(argv)
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
        # Quoted input may hold undecodable bytes (surrogates): shown escaped, never a crash.
        message = str(e).encode("utf-8", "backslashreplace").decode()
        print(f"error: {message}", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The `gpt2-chat` process: `main`, then exit. Kept apart from `main`, which tests call
    in-process, because it changes how this process treats Ctrl-C for good."""
    try:
        code = main()
    except KeyboardInterrupt:  # a second Ctrl-C while main reported the first
        code = 130
    finally:
        _ignore_further_interrupts()
    sys.exit(code)


def _ignore_further_interrupts() -> None:
    """The command is over: a Ctrl-C from now on (a pending one, another press, or one
    during interpreter teardown, which restores the default action and would kill the
    process) must not change the exit status or print a traceback. `signal.signal` first
    runs any pending handler, which may raise the Ctrl-C being handled once more: dropped."""
    while True:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            continue


def cmd_prepare(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.client.prepare import prepare, prepare_random

    def progress(stage: str, done: int, total: int) -> None:
        StatusLine.show(f"{stage}: {_mb(done)} / {_mb(total)}")

    if not 0 <= args.seed < 2**64:
        raise UsageError(f"--seed {args.seed}: the weights' seed must be between 0 and 2^64-1")
    if args.random:
        result = prepare_random(args.random, args.output, args.dtype, args.seed, progress)
    else:
        result = prepare(
            args.source, args.output, dtype=args.dtype, revision=args.revision, progress=progress
        )
    StatusLine.end()
    print(f"wrote {result.path} ({_mb(result.size)}, sha256 {result.sha256})")
    if args.random:
        print(
            f"note: random weights ({args.random} shape, seed {args.seed}): this model talks "
            "nonsense; it shows the flow and the costs, not GPT-2's replies"
        )
    return 0


def cmd_upload(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.client.upload import Progress, upload_model
    from gpt2_chat.connect import open_connection

    if args.file is None and not args.clear:
        raise UsageError("upload needs a FILE (or --clear)")
    if args.file is not None and not args.file.is_file():
        raise UsageError(f"no such file: {args.file}")
    with open_connection(settings) as connection:
        if args.clear:
            connection.canister.upload_clear()
            print("cleared the canister's upload")
            if args.file is None:
                return 0

        def show(p: Progress) -> None:
            line = f"{p.phase}: {_mb(p.done)} / {_mb(p.total)}"
            if p.phase == "upload" and p.rate:
                eta = p.eta_seconds or 0
                line += f"  {p.rate / 1e6:.1f} MB/s  ETA {eta:.0f}s"
            StatusLine.show(line)

        result = upload_model(connection.canister, args.file, show, load=not args.no_load)
        StatusLine.end()
        if result.restarted:
            print(
                "the canister's partial upload could not become this file: "
                "cleared it and sent the file again"
            )
        if result.already_uploaded:
            print(f"already uploaded: {args.file} (sha256 {result.sha256})")
        elif result.resumed_from:
            print(f"resumed at byte {result.resumed_from}; uploaded {args.file}")
        else:
            print(f"uploaded {args.file} ({_mb(result.size)}, sha256 {result.sha256})")
        if result.load is not None:
            print("model loaded")
        return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.client.chat import Conversation
    from gpt2_chat.client.dts import slices
    from gpt2_chat.client.tokenizer import Gpt2Tokenizer
    from gpt2_chat.connect import open_connection

    check_utf8(args.prompt, "the prompt")
    settings = _with_flags(settings, args)
    with open_connection(settings) as connection:
        conversation = Conversation(
            connection.canister,
            Gpt2Tokenizer(),
            chat_settings(settings, time_sliced=connection.backend.time_sliced),
        )
        try:
            stream: Callable[[str], None] | None = None
            if not args.json:
                stream = lambda t: print(t, end="", flush=True)  # noqa: E731
                print(args.prompt, end="", flush=True)
            try:
                result = conversation.complete(args.prompt, stream)
            finally:
                if not args.json:
                    print(flush=True)  # end the streamed line, also before an error
            if args.json:
                out = {
                    "prompt_ids": result.prompt_ids,
                    "token_ids": result.token_ids,
                    "text": result.text,
                    "stop": result.stop,
                    "calls": len(result.calls),
                    "instructions": [c.instructions for c in result.calls],
                    "call_kinds": [c.kind for c in result.calls],
                    # DTS slices each call takes (or would take) on a replica: ~1 s each.
                    "slices": [slices(c.instructions) for c in result.calls],
                    "cycles": result.cycles,
                    "cycles_per_1000_tokens": result.cycles_per_1000_tokens,
                    "seconds": round(result.seconds, 3),
                }
                print(json.dumps(out))
            return 0
        finally:
            conversation.reset()


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.client.cycles import (
        balance_is_low,
        cost_per_1000_tokens,
        decode_instructions_per_token,
        shown_balance,
        update_call_cost,
    )
    from gpt2_chat.connect import open_connection
    from gpt2_chat.network import parse_network

    with open_connection(settings) as connection:
        info = connection.canister.model_info()
    per_token = (
        decode_instructions_per_token(info.config, info.dtype)
        if info.config and info.dtype
        else None
    )
    chat = chat_settings(settings, time_sliced=connection.backend.time_sliced)
    tokens_per_call = chat.tokens_per_call_at(per_token)
    balance = shown_balance(info, parse_network(settings.network).embedded)
    call_cycles = (
        update_call_cost(round(per_token * tokens_per_call), 100).total if per_token else None
    )
    data = {
        "backend": connection.backend.description,
        "loaded": info.loaded,
        "uploaded_bytes": info.upload.received_bytes,
        "declared_size": info.upload.declared_size,
        "complete": info.upload.complete,
        "sha256": info.upload.sha256 or info.upload.declared_sha256,
        "dtype": info.dtype,
        "config": asdict(info.config) if info.config else None,
        "weights_heap_bytes": info.weights_heap_bytes,
        "sessions": info.sessions,
        "cycles_per_1000_tokens": (
            cost_per_1000_tokens(per_token, tokens_per_call) if per_token else None
        ),
        "cycles_per_generate_call": call_cycles,
        "cycles_balance": balance,
        "cycles_low": (
            balance_is_low(balance, call_cycles)
            if isinstance(balance, int) and call_cycles
            else None
        ),
        # Where each connection setting in force came from (flag, variable, file, default).
        "connection": _connection_sources(args, settings),
        "controllers": _embedded_controllers(connection),
        "stable_memory_damage": asdict(info.upload.damage) if info.upload.damage else None,
    }
    if args.json:
        print(json.dumps(data))
        return 0
    for key, value in data.items():
        print(f"{key:>18}: {value}")
    return 0


def _embedded_controllers(connection: Connection) -> list[str] | None:
    """The controllers, where the backend can tell (the replica's are dfx's business)."""
    from gpt2_chat.backends.embedded.backend import EmbeddedBackend

    backend = connection.backend.inner
    if not isinstance(backend, EmbeddedBackend):
        return None
    return [p.to_str() for p in backend.controllers()]


def cmd_controllers(args: argparse.Namespace, settings: Settings) -> int:
    from icp_principal.principal import Principal

    from gpt2_chat.backends.embedded.backend import EmbeddedBackend
    from gpt2_chat.connect import open_backend

    if (args.action == "list") != (args.principal is None):
        raise UsageError("usage: gpt2-chat controllers list | add PRINCIPAL | remove PRINCIPAL")
    backend = open_backend(settings)
    try:
        if not isinstance(backend, EmbeddedBackend):
            raise UsageError(
                "the controllers of a replica canister are changed with "
                "`dfx canister update-settings`"
            )
        controllers = backend.controllers()
        if args.action != "list":
            principal = Principal.from_str(args.principal)
            if args.action == "add" and principal not in controllers:
                controllers.append(principal)
            if args.action == "remove":
                controllers = [c for c in controllers if c != principal]
            backend.set_controllers(controllers)
        for controller in backend.controllers():
            print(controller.to_str())
        return 0
    finally:
        backend.close()


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.backends.embedded.state_dir import reset

    state_dir = settings.resolved_state_dir()
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("reset moves the canister's state aside; pass --yes to confirm")
        answer = input(f"Move the embedded canister's state in {state_dir} to a backup? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return 1
    backup = reset(state_dir)
    if backup is None:
        print(f"nothing to reset in {state_dir}")
    else:
        print(f"moved the canister's state to {backup}; the next command starts a new canister")
    return 0


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.client.history import ChatHistory
    from gpt2_chat.connect import open_connection
    from gpt2_chat.line_chat import print_saved_chats, run_chat

    history = ChatHistory()
    if args.list:
        return print_saved_chats(history)
    saved = history.load(args.resume) if args.resume is not None else None
    with open_connection(settings) as connection:
        return run_chat(settings, connection, history, saved)


def cmd_tui(args: argparse.Namespace) -> int:
    from gpt2_chat.app import run_app

    store = SettingsStore(flags=_connection_flags(args))
    # A bad flag or variable stops here; a bad settings file is the app's to report.
    store.checked()
    return run_app(store)


def cmd_replica(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.connect import dfx_project_dir
    from gpt2_chat.replica.tools import ReplicaTools

    tools = ReplicaTools(project_root=dfx_project_dir(settings))
    actions: dict[str, Callable[[], object]] = {
        "start": tools.start,
        "stop": tools.stop,
        "status": tools.status,
    }
    print(actions[args.action]())
    return 0


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    from gpt2_chat.connect import dfx_project_dir
    from gpt2_chat.replica.tools import ReplicaTools

    project = dfx_project_dir(settings)
    if project is None:
        raise UsageError(
            f"no dfx.json in {Path.cwd()} or above: run deploy from the gpt2-chat project "
            "or pass --project-dir"
        )
    print(ReplicaTools(project_root=project).deploy())
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Always the embedded runtime (its metering is the measurement), whatever --network says."""
    import importlib.util

    from gpt2_chat.bench import native, report
    from gpt2_chat.bench.run import NATIVE_SKIPPED, Options, run_bench

    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:5.0f}s] {message}", file=sys.stderr, flush=True)

    if not native.onnxruntime_available():
        log(f"{NATIVE_SKIPPED}: no native speed comparison")
    png = importlib.util.find_spec("matplotlib") is not None
    if args.out_dir is not None and not png:
        log("matplotlib is not installed (pip install 'gpt2-chat[bench]'): no PNG plot")
    result = run_bench(Options(quick=args.quick), log)
    if args.out_dir is not None:
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
    "reset": cmd_reset,
    "controllers": cmd_controllers,
    "replica": cmd_replica,
    "deploy": cmd_deploy,
    "bench": cmd_bench,
}

if __name__ == "__main__":
    run()
