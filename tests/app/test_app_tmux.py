"""End to end as a person uses it: the real `gpt2-chat` command in a tmux terminal (100x30),
driven with keystrokes, read from the screen. Uploads a model (killing the app mid-upload
and resuming after a restart), chats, quits.

tmux runs on a private socket, so a tmux the person running the tests uses is untouched,
and the server is killed whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import REPO

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed (Debian: apt-get install tmux)"
)


def gpt2_chat_command() -> Path:
    for candidate in (
        REPO / ".venv" / "bin" / "gpt2-chat",
        Path(sys.executable).parent / "gpt2-chat",
    ):
        if candidate.is_file():
            return candidate
    pytest.fail("the gpt2-chat command is not installed in the venv (scripts/setup-python.sh)")


class Terminal:
    """One tmux session on a private server."""

    def __init__(self, socket: str, cwd: Path, env: dict[str, str]) -> None:
        self.socket = socket
        self.cwd = cwd
        self.env = env
        self.session = "gpt2chat"

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert TMUX is not None
        return subprocess.run(
            [TMUX, "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
            env=self.env,
            cwd=self.cwd,
        )

    def start(self, *command: str) -> None:
        self.tmux(
            "new-session", "-d", "-s", self.session, "-x", "100", "-y", "30", "-c", str(self.cwd),
            *command,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", self.session, check=False).returncode == 0

    def pid(self) -> int:
        return int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").stdout)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session).stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.session, "-l", text)

    def wait_for(self, what: str | Callable[[str], bool], timeout: float = 30) -> str:
        check = what if callable(what) else (lambda screen: what in screen)
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"the app exited while waiting for {what!r}:\n{screen}")
            screen = self.screen()
            if check(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what!r}; the screen:\n{screen}")

    def show_tab(self, key: str, footer: str, attempts: int = 6) -> str:
        """Presses a tab's function key until its footer shows. On a loaded machine the
        terminal can deliver an F-key's escape sequence in two reads, which reads as Esc
        and two letters; pressing an F-key again is harmless."""
        for _ in range(attempts - 1):
            self.keys(key)
            with contextlib.suppress(AssertionError):
                return self.wait_for(footer, timeout=5)
        self.keys(key)
        return self.wait_for(footer)

    def wait_gone(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"the app did not exit; the screen:\n{self.screen()}")
            time.sleep(0.1)


@pytest.fixture
def terminal(workdir: Path) -> Iterator[Terminal]:
    env = {
        **os.environ,
        "GPT2_CHAT_STATE_DIR": "state",
        "GPT2_CHAT_CONFIG": "settings.json",
        # Small chunks: thousands of calls, so the upload is still running when killed.
        "GPT2_CHAT_CHUNK_SIZE": "1024",
        "TERM": "xterm-256color",
    }
    term = Terminal(f"gpt2chat-test-{os.getpid()}", workdir, env)
    try:
        yield term
    finally:
        term.tmux("kill-server", check=False)


def test_upload_kill_resume_chat_and_quit_in_a_real_terminal(
    terminal: Terminal, local_model: Path, workdir: Path
) -> None:
    command = str(gpt2_chat_command())

    # 1. Start; choose the model file on the Model tab; start it with the Upload button,
    #    pause with Esc, resume with Enter on the focused Resume; kill the app mid-upload.
    terminal.start(command)
    terminal.wait_for("embedded runtime (not a replica)")
    terminal.wait_for("no model (F2 to upload one)")
    terminal.show_tab("F2", "^o Browse")  # the model tab's keys: the path has focus
    terminal.type(local_model.name)
    terminal.wait_for(f"{local_model.stat().st_size:,} bytes")
    terminal.keys("Tab", "Tab", "Enter")  # path -> Browse -> Upload, pressed
    # The pressed button is disabled while it runs; the tab's keys still work.
    screen = terminal.wait_for(lambda screen: "MB/s" in screen and "esc Pause" in screen)
    assert "ETA" in screen and "^o Browse" in screen
    terminal.keys("Escape")
    screen = terminal.wait_for("paused: Resume continues")
    assert "^o Browse" in screen
    terminal.keys("Enter")  # the focus went to Resume
    terminal.wait_for(lambda screen: "MB/s" in screen and "esc Pause" in screen)
    os.kill(terminal.pid(), signal.SIGKILL)
    terminal.wait_gone()

    # 2. Start again (bigger chunks now: the canister takes any size from its offset): the
    #    canister kept the partial upload, the app the file's path.
    run = f'GPT2_CHAT_CHUNK_SIZE=262144 "{command}"; echo "exit $?" > exit-status'
    terminal.start("sh", "-c", run)
    terminal.wait_for("embedded runtime (not a replica)")
    terminal.show_tab("F2", "^o Browse")
    screen = terminal.wait_for("partial: ")
    assert local_model.name in screen and "Resume" in screen
    terminal.wait_for("resumes at")
    terminal.keys("Enter")
    terminal.wait_for("loaded: 2 layers")
    screen = terminal.wait_for("resumed at byte")
    assert "Uploaded (resumed at byte" in screen  # the notification says it too

    # 3. Chat.
    terminal.show_tab("F1", "^n New chat")  # the chat's keys: the prompt has focus
    terminal.type("Hello, who are you?")
    terminal.keys("Enter")
    # The upload's toast may cover the status line's end for a few seconds.
    screen = terminal.wait_for(lambda screen: "tok/s" in screen and "instr/tok" in screen)
    assert "You" in screen and "Hello, who are you?" in screen and "GPT-2" in screen
    assert "context " in screen and "instr/tok" in screen

    # 4. Quit.
    terminal.keys("C-q")
    terminal.wait_gone()
    assert (workdir / "exit-status").read_text().strip() == "exit 0"

    # 5. Pointed at a replica by flags (nothing listens on that port): the status line names
    #    it, not the embedded runtime, and the saved settings stay as they were.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    saved = (workdir / "settings.json").read_text() if (workdir / "settings.json").exists() else ""
    terminal.start(command, "--network", url, "--canister", "aaaaa-aa")
    screen = terminal.wait_for(url)
    assert "embedded runtime" not in screen
    terminal.keys("C-q")
    terminal.wait_gone()
    after = (workdir / "settings.json").read_text() if (workdir / "settings.json").exists() else ""
    assert after == saved


def test_ctrl_q_at_startup_is_immediate_and_a_chat_survives_a_restart(
    terminal: Terminal, loaded: Path, workdir: Path
) -> None:
    command = str(gpt2_chat_command())
    (workdir / "settings.json").write_text('{"max_new_tokens": 12}')

    # 1. Without the compiled wasm, opening the backend takes seconds: quit meanwhile.
    shutil.rmtree(workdir / "state" / "cache")
    terminal.start(command)
    terminal.wait_for("connecting")
    pressed = time.monotonic()
    terminal.keys("C-q")
    terminal.wait_gone()
    assert time.monotonic() - pressed < 1.5  # a second, plus polling on a busy machine

    # 2. Chat, quit.
    terminal.start(command)
    terminal.wait_for("GPT-2 2×16 F32 · sha", timeout=60)
    terminal.type("Hello, who are you?")
    terminal.keys("Enter")
    terminal.wait_for("tok/s")
    terminal.keys("C-q")
    terminal.wait_gone()

    # 3. Start again: the chat is in the saved list; reopen it and go on.
    terminal.start(command)
    terminal.wait_for("GPT-2 2×16 F32 · sha")
    terminal.keys("C-l")
    # (The footer names "Saved chats" too: wait for the list's own line.)
    terminal.wait_for("Hello, who are you?")
    terminal.keys("Enter")
    terminal.wait_for("The next message continues it")
    terminal.type("Go on")
    terminal.keys("Enter")
    terminal.wait_for(lambda s: "tok/s" in s and "Go on" in s)
    terminal.keys("C-q")
    terminal.wait_gone()
