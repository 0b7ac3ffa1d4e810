"""The local IC network through `dfx` (or the newer `icp` CLI): detect, start, stop, check,
deploy. The CLI and the TUI both call this; it prints nothing and imports no UI code.

Every command runs with a timeout, stdin closed (a prompt fails instead of waiting) and its
output captured, and lands in a `CommandLog` a UI can show. Output goes to a temporary file,
not a pipe: `dfx start --background` leaves a replica running that inherits the child's
stdout, and reading a pipe until EOF would then wait for the replica to exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import httpx

from gpt2_chat.canister_ids import DEFAULT_CANISTER_NAME, resolve_canister_id
from gpt2_chat.errors import BackendError
from gpt2_chat.network import LOCAL_URL, is_local_host, url_host

DFX_INSTALL = 'sh -ci "$(curl -fsSL https://internetcomputer.org/install.sh)"'
#: Where each tool's default local network listens (icp-cli's gateway defaults to 8000).
LOCAL_URLS = {"dfx": LOCAL_URL, "icp": "http://127.0.0.1:8000"}
TOOL_NAMES = ("dfx", "icp")

VERSION_TIMEOUT_S = 15.0
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
PING_TIMEOUT_S = 15.0
#: `dfx deploy` runs the custom canister's build step (scripts/build-canister.sh) first.
DEPLOY_TIMEOUT_S = 1800.0
PROBE_TIMEOUT_S = 3.0
_MAX_OUTPUT_CHARS = 64_000
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


class ReplicaToolError(BackendError):
    """A tool is missing or a command failed; the message is one line for the user.

    A BackendError, so callers that already report backend failures report these too."""


class ReplicaToolMissing(ReplicaToolError):
    """Neither dfx nor icp (or not the one asked for) is on PATH."""


class CommandFailed(ReplicaToolError):
    """A command exited non-zero, timed out or could not start; `record` has the details."""

    def __init__(self, message: str, record: CommandRecord) -> None:
        super().__init__(message)
        self.record = record


# ---------------------------------------------------------------------- command log


@dataclass(frozen=True)
class CommandRecord:
    """One command run: what, where, how it ended and what it printed (stdout+stderr)."""

    argv: tuple[str, ...]
    cwd: str | None
    started_at: float  # time.time()
    duration: float = 0.0
    returncode: int | None = None  # None: did not finish (timeout) or did not start
    output: str = ""
    timed_out: bool = False
    error: str | None = None  # why it did not start
    finished: bool = True  # False only in the notice a listener gets at start
    timeout: float | None = None

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    @property
    def ok(self) -> bool:
        return self.finished and self.returncode == 0

    @property
    def outcome(self) -> str:
        if not self.finished:
            return "running"
        if self.error:
            return f"did not start: {self.error}"
        if self.timed_out:
            return f"timed out after {self.timeout:g} s, stopped"
        return f"exit {self.returncode} in {self.duration:.1f} s"

    def last_line(self) -> str:
        """The last non-empty output line: usually the error a tool prints before failing."""
        for line in reversed(self.output.splitlines()):
            if line.strip():
                return " ".join(line.split())[:300]
        return ""

    def __str__(self) -> str:
        head = f"$ {self.command_line}  [{self.outcome}]"
        return f"{head}\n{self.output.rstrip()}" if self.output.strip() else head


Listener = Callable[[CommandRecord], None]


class CommandLog:
    """The commands run so far (newest last), bounded. Thread-safe.

    Listeners are called with a `finished=False` record when a command starts and with the
    final record when it ends, on the thread that ran it (a UI should hop to its own
    thread). A failing listener never breaks the command."""

    def __init__(self, max_entries: int = 200) -> None:
        self._entries: deque[CommandRecord] = deque(maxlen=max_entries)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def add(self, record: CommandRecord) -> None:
        if record.finished:
            with self._lock:
                self._entries.append(record)
        self._notify(record)

    def started(self, record: CommandRecord) -> None:
        self._notify(record)

    def entries(self) -> list[CommandRecord]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns a function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, record: CommandRecord) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            with contextlib.suppress(Exception):
                listener(record)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self.entries())


#: The log the module-level functions use (and a UI shows).
COMMAND_LOG = CommandLog()


def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | str | None = None,
    log: CommandLog | None = None,
    env: Mapping[str, str] | None = None,
) -> CommandRecord:
    """Run `argv` to completion or until `timeout` seconds, whichever comes first, and
    record it. Never raises for a failing command: look at the record."""
    args = tuple(str(a) for a in argv)
    where = str(cwd) if cwd is not None else None
    started_at = time.time()
    if log is not None:
        log.started(CommandRecord(args, where, started_at, finished=False, timeout=timeout))
    run_env = dict(os.environ if env is None else env)
    # Plain output for the log: no colours, no progress bars.
    run_env.setdefault("NO_COLOR", "1")
    run_env["TERM"] = "dumb"
    t0 = time.monotonic()
    returncode: int | None = None
    timed_out = False
    error: str | None = None
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                args,
                cwd=where,
                env=run_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own process group, so a timeout can stop everything the command started.
                start_new_session=True,
            )
        except OSError as e:
            error = e.strerror or str(e)
        else:
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _terminate_group(proc)
        out.seek(0)
        output = _clean_output(out.read())
    record = CommandRecord(
        argv=args,
        cwd=where,
        started_at=started_at,
        duration=time.monotonic() - t0,
        returncode=returncode,
        output=output,
        timed_out=timed_out,
        error=error,
        timeout=timeout,
    )
    if log is not None:
        log.add(record)
    return record


def _terminate_group(proc: subprocess.Popen[bytes]) -> None:
    killpg = getattr(os, "killpg", None)
    for sig, grace in ((signal.SIGTERM, 3.0), (getattr(signal, "SIGKILL", signal.SIGTERM), 3.0)):
        try:
            if killpg is not None:
                killpg(proc.pid, sig)
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _clean_output(raw: bytes) -> str:
    text = _ANSI.sub("", raw.decode("utf-8", "replace")).replace("\r\n", "\n")
    if len(text) > _MAX_OUTPUT_CHARS:
        text = f"[… {len(text) - _MAX_OUTPUT_CHARS} characters cut …]\n" + text[-_MAX_OUTPUT_CHARS:]
    return text


def _check(record: CommandRecord) -> CommandRecord:
    """The record when the command succeeded, else CommandFailed with a one-line reason."""
    if record.ok:
        return record
    line = record.command_line
    if record.error:
        message = f"`{line}` could not start: {record.error}"
    elif record.timed_out:
        message = f"`{line}` did not finish within {record.timeout:g} s and was stopped"
    else:
        last = record.last_line()
        message = f"`{line}` failed (exit {record.returncode})" + (f": {last}" if last else "")
    raise CommandFailed(message, record)


# ---------------------------------------------------------------------- tools


@dataclass(frozen=True)
class ToolInfo:
    name: str  # "dfx" or "icp"
    path: str
    version: str | None  # None when `--version` failed
    version_output: str = ""

    @property
    def local_url(self) -> str:
        return LOCAL_URLS[self.name]

    def __str__(self) -> str:
        return f"{self.name} {self.version or '(unknown version)'} ({self.path})"


_VERSION = re.compile(r"\b(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?)")


def find_tools(
    log: CommandLog | None = COMMAND_LOG, timeout: float = VERSION_TIMEOUT_S
) -> list[ToolInfo]:
    """dfx and icp as found on PATH (dfx first), each with its `--version`."""
    found: list[ToolInfo] = []
    for name in TOOL_NAMES:
        path = shutil.which(name)
        if path is None:
            continue
        record = run_command([path, "--version"], timeout=timeout, log=log)
        match = _VERSION.search(record.output) if record.ok else None
        found.append(ToolInfo(name, path, match.group(1) if match else None, record.output.strip()))
    return found


def missing_tools_message(wanted: str | None = None, found: Sequence[ToolInfo] = ()) -> str:
    if wanted and found:
        others = ", ".join(t.name for t in found)
        return f"`{wanted}` is not installed (not on PATH); found: {others}"
    return (
        "neither `dfx` nor `icp` is installed (not on PATH). Install dfx with "
        f"{DFX_INSTALL} (it downloads from internetcomputer.org, so it needs internet "
        "access), or keep using the embedded runtime, which needs neither"
    )


# ---------------------------------------------------------------------- status


@dataclass(frozen=True)
class ReplicaProbe:
    """What GET <url>/api/v2/status said."""

    url: str
    reachable: bool  # something answered HTTP
    healthy: bool  # an IC replica that says it is healthy
    detail: str
    impl_version: str | None = None
    health: str | None = None


def probe_replica(url: str, timeout: float = PROBE_TIMEOUT_S) -> ReplicaProbe:
    """Ask <url>/api/v2/status whether an IC replica answers there. Never raises."""
    url = url.rstrip("/")
    try:
        with httpx.Client(trust_env=not is_local_host(url_host(url)), timeout=timeout) as client:
            response = client.get(f"{url}/api/v2/status")
    except httpx.ConnectError as e:
        refused = "refused" in str(e).lower() or "errno 111" in str(e).lower()
        return ReplicaProbe(url, False, False, "not running" if refused else f"unreachable ({e})")
    except httpx.TimeoutException:
        return ReplicaProbe(url, False, False, f"no answer within {timeout:g} s")
    except httpx.HTTPError as e:
        return ReplicaProbe(url, False, False, f"unreachable ({e})")
    if response.status_code != 200:
        return ReplicaProbe(url, True, False, f"answers HTTP {response.status_code}")
    try:
        status = cbor2.loads(response.content)
    except Exception:  # cbor2's errors are not ValueErrors
        status = None
    if not isinstance(status, Mapping):
        return ReplicaProbe(url, True, False, "answers, but not like an IC replica")
    health = status.get("replica_health_status")
    impl = status.get("impl_version")
    health_text = str(health) if health is not None else None
    healthy = health_text in (None, "healthy")
    detail = "running" + (f", {health_text}" if health_text else "")
    return ReplicaProbe(
        url, True, healthy, detail, str(impl) if impl is not None else None, health_text
    )


@dataclass(frozen=True)
class ReplicaStatus:
    url: str
    running: bool
    healthy: bool
    detail: str
    impl_version: str | None = None
    tool: ToolInfo | None = None
    ping: CommandRecord | None = None  # the tool's own ping, when asked for
    command: CommandRecord | None = None  # the start command, when start() ran one

    def __str__(self) -> str:
        parts = [f"local network at {self.url}: {self.detail}"]
        extras = []
        if self.impl_version:
            extras.append(f"replica {self.impl_version}")
        if self.tool:
            extras.append(f"{self.tool.name} {self.tool.version or '?'}")
        else:
            extras.append("no dfx/icp on PATH")
        parts.append(f" ({'; '.join(extras)})")
        return "".join(parts)


# ---------------------------------------------------------------------- manager


@dataclass(frozen=True)
class DeployResult:
    record: CommandRecord
    canister_id: str | None  # from the ids file the tool wrote, when it could be read

    def __str__(self) -> str:
        head = f"deployed {self.canister_id}" if self.canister_id else "deployed"
        return f"{head}\n{self.record}"


@dataclass
class Timeouts:
    version: float = VERSION_TIMEOUT_S
    start: float = START_TIMEOUT_S
    stop: float = STOP_TIMEOUT_S
    ping: float = PING_TIMEOUT_S
    deploy: float = DEPLOY_TIMEOUT_S
    probe: float = PROBE_TIMEOUT_S


@dataclass
class ReplicaTools:
    """The local network as one tool sees it.

    prefer: "dfx" or "icp" to insist on one; default dfx when both are installed (this
    project ships a dfx.json). url: where the network answers; default the tool's port."""

    project_root: Path | None = None
    prefer: str | None = None
    log: CommandLog = field(default_factory=lambda: COMMAND_LOG)
    url_override: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    _found: list[ToolInfo] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.prefer not in (None, *TOOL_NAMES):
            raise ValueError(f"unknown tool {self.prefer!r}: use dfx or icp")

    def tools(self, refresh: bool = False) -> list[ToolInfo]:
        """Installed tools (cached after the first look)."""
        with self._lock:
            if self._found is None or refresh:
                self._found = find_tools(self.log, self.timeouts.version)
            return list(self._found)

    def tool(self) -> ToolInfo:
        """The tool commands use; ReplicaToolMissing when there is none."""
        found = self.tools()
        for tool in found:
            if self.prefer is None or tool.name == self.prefer:
                return tool
        raise ReplicaToolMissing(missing_tools_message(self.prefer, found))

    def _tool_or_none(self) -> ToolInfo | None:
        try:
            return self.tool()
        except ReplicaToolMissing:
            return None

    @property
    def url(self) -> str:
        if self.url_override:
            return self.url_override.rstrip("/")
        tool = self._tool_or_none()
        return tool.local_url if tool else LOCAL_URL

    def _run(self, argv: Sequence[str], timeout: float, cwd: Path | None = None) -> CommandRecord:
        where = cwd or self.project_root
        if where is not None and not Path(where).is_dir():
            raise ReplicaToolError(f"project directory {where} does not exist")
        return run_command(argv, timeout=timeout, cwd=where, log=self.log)

    # ------------------------------------------------------------------ commands

    def start(self, clean: bool = False) -> ReplicaStatus:
        """Start the local network in the background (no-op when it already answers).
        clean: dfx only, start from an empty state (`dfx start --clean`)."""
        tool = self.tool()
        probe = probe_replica(self.url, self.timeouts.probe)
        if probe.reachable:
            if not clean:
                return self._status(probe, tool)
            self.stop()  # a clean start needs the running network stopped first
        if tool.name == "dfx":
            argv = [tool.path, "start", "--background"] + (["--clean"] if clean else [])
        else:
            argv = [tool.path, "network", "start", "-d"]
        record = _check(self._run(argv, self.timeouts.start))
        probe = probe_replica(self.url, self.timeouts.probe)
        return self._status(probe, tool, command=record)

    def stop(self) -> CommandRecord:
        tool = self.tool()
        argv = [tool.path, "stop"] if tool.name == "dfx" else [tool.path, "network", "stop"]
        return _check(self._run(argv, self.timeouts.stop))

    def status(self, ping: bool = False) -> ReplicaStatus:
        """Whether the network answers /api/v2/status. ping: also run `dfx ping` /
        `icp network ping` (logged; off by default so polling stays quiet)."""
        probe = probe_replica(self.url, self.timeouts.probe)
        tool = self._tool_or_none()
        record = None
        if ping and tool is not None:
            argv = [tool.path, "ping"] if tool.name == "dfx" else [tool.path, "network", "ping"]
            record = self._run(argv, self.timeouts.ping)
        return self._status(probe, tool, ping=record)

    def deploy(
        self,
        project_root: Path | str | None = None,
        canister: str = DEFAULT_CANISTER_NAME,
        network: str = "local",
        yes: bool = False,
    ) -> DeployResult:
        """`dfx deploy <canister>` (or `icp deploy`) in the project root.

        yes: answer the tool's confirmation prompts (dfx asks before an upgrade that may
        lose data); without it such a prompt fails, since stdin is closed."""
        root = Path(project_root) if project_root is not None else self.project_root
        if root is None:
            raise ReplicaToolError("deploy needs the project directory (where dfx.json is)")
        tool = self.tool()
        if tool.name == "dfx":
            if not (root / "dfx.json").is_file():
                raise ReplicaToolError(f"no dfx.json in {root}: is this the gpt2-chat project?")
            argv = [tool.path, "deploy", canister]
            if network != "local":
                argv += ["--network", network]
            if yes:
                argv.append("--yes")
        else:
            if not (root / "icp.yaml").is_file():
                raise ReplicaToolError(
                    f"`icp deploy` needs an icp.yaml, and {root} declares gpt2_backend in "
                    "dfx.json only: install dfx to deploy"
                )
            argv = [tool.path, "deploy", canister]
            if network != "local":
                argv += ["-e", network]
            if yes:
                argv.append("--yes")
        record = _check(self._run(argv, self.timeouts.deploy, cwd=root))
        try:
            canister_id: str | None = resolve_canister_id(canister, root, network)
        except BackendError:
            canister_id = None
        return DeployResult(record, canister_id)

    def _status(
        self,
        probe: ReplicaProbe,
        tool: ToolInfo | None,
        ping: CommandRecord | None = None,
        command: CommandRecord | None = None,
    ) -> ReplicaStatus:
        return ReplicaStatus(
            url=probe.url,
            running=probe.reachable,
            healthy=probe.healthy,
            detail=probe.detail,
            impl_version=probe.impl_version,
            tool=tool,
            ping=ping,
            command=command,
        )
