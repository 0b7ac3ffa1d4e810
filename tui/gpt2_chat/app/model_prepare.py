"""The model tab's prepare panel: turn a Hugging Face id or a checkpoint directory into a
canister-ready file in the models folder (f32 or int8), or write a random demo model of a
GPT-2 shape in one step; either can be stopped."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Button, Input, Label, Select

from gpt2_chat.client.model_format import (
    SUPPORTED_DTYPES,
    PrepareCancelled,
    PreparedModel,
    Progress,
)
from gpt2_chat.client.random_model import SHAPES
from gpt2_chat.errors import EXPECTED_ERRORS
from gpt2_chat.settings import Settings

from .fmt import mb, short_path
from .widgets import OneLine, Pane, SectionTitle, start_daemon

#: Prepare's progress reaches the screen at most this often.
PROGRESS_INTERVAL_S = 0.1
#: What a demo model is, said wherever one is offered or made.
DEMO_NOTE = "random weights: it talks nonsense"


def models_dir(settings: Settings) -> Path:
    """Where prepared models go: next to the embedded runtime's state dir."""
    return settings.resolved_state_dir().parent / "models"


def prepared_name(source: str, dtype: str = "f32") -> str:
    """The file name a prepared `source` gets: gpt2 -> gpt2.safetensors,
    openai-community/gpt2-medium -> openai-community--gpt2-medium.safetensors; an int8
    file gets -int8 before the suffix."""
    path = Path(source).expanduser()
    if path.exists():
        stem = path.stem if path.is_file() else path.resolve().name
    else:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "--", source.strip("/"))
    return stem + ("" if dtype == "f32" else f"-{dtype}") + ".safetensors"


def demo_name(shape: str, dtype: str) -> str:
    return prepared_name(f"{shape}-random", dtype)


class PreparePanel(Pane):
    """Source and dtype, Prepare; a demo shape, Demo model; progress and Stop."""

    class Prepared(Message):
        """A model file was written: the upload panel takes it from here (`demo`: a
        random model, uploaded at once)."""

        def __init__(self, path: Path, size: int, sha256: str, demo: bool) -> None:
            super().__init__()
            self.path = path
            self.size = size
            self.sha256 = sha256
            self.demo = demo

    preparing: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        #: Set to stop the running prepare (also by the app when it closes).
        self._cancel: threading.Event | None = None

    def compose(self) -> ComposeResult:
        yield SectionTitle("Prepare a model")
        with Horizontal(classes="row"):
            yield Input(
                id="hf-source",
                placeholder="Hugging Face id (gpt2, openai-community/gpt2-medium) or dir",
                compact=True,
            )
            yield Select(
                [(d, d) for d in SUPPORTED_DTYPES],
                id="prepare-dtype",
                allow_blank=False,
                compact=True,
                tooltip="int8 weights: a quarter of the size, a little less exact",
            )
            yield Button("Prepare", id="prepare", compact=True)
        with Horizontal(classes="row"):
            yield Label("demo", classes="bar-label")
            yield Select(
                [(name, name) for name in SHAPES],
                id="demo-shape",
                allow_blank=False,
                compact=True,
                tooltip="The GPT-2 size the demo model has",
            )
            yield Button("Demo model", id="demo", compact=True, tooltip=DEMO_NOTE)
            yield OneLine(DEMO_NOTE, id="demo-note")
        with Horizontal(classes="row"):
            yield OneLine(id="prepare-text")
            yield Button("Stop", id="prepare-stop", compact=True, disabled=True)

    def watch_preparing(self) -> None:
        focused = self.screen.focused
        buttons = list(self.query(Button))
        self.query_one("#prepare", Button).disabled = self.preparing
        self.query_one("#demo", Button).disabled = self.preparing
        stop = self.query_one("#prepare-stop", Button)
        stop.disabled = not self.preparing
        if focused in buttons:
            # The pressed button is disabled now: keep the focus (and the keys) alive.
            live = stop if self.preparing else self.query_one("#hf-source", Input)
            live.focus()

    def _text(self, text: str) -> None:
        self.query_one("#prepare-text", OneLine).update(Text(text))

    def _dtype(self) -> str:
        return str(self.query_one("#prepare-dtype", Select).value)

    @on(Input.Submitted, "#hf-source")
    def _source_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_prepare()

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        actions = {
            "prepare": self.action_prepare,
            "demo": self.action_demo,
            "prepare-stop": self.action_stop,
        }
        action = actions.get(event.button.id or "")
        if action is not None:
            event.stop()
            action()

    def action_prepare(self) -> None:
        source = self.query_one("#hf-source", Input).value.strip()
        if not source:
            self.report("type a Hugging Face model id (gpt2) or a checkpoint directory")
            return
        dtype = self._dtype()
        output = models_dir(self.gpt2_app.settings) / prepared_name(source, dtype)
        try:
            if Path(source).expanduser().resolve() == output.resolve():
                output = output.with_name(output.stem + "-prepared.safetensors")
        except OSError:
            pass

        def make(progress: Progress, cancel: threading.Event) -> PreparedModel:
            from gpt2_chat.client.prepare import prepare

            return prepare(source, output, dtype=dtype, progress=progress, cancel=cancel)

        self._start(f"preparing {source} ({dtype})", output, make, demo=False)

    def action_demo(self) -> None:
        shape = str(self.query_one("#demo-shape", Select).value)
        dtype = self._dtype()
        output = models_dir(self.gpt2_app.settings) / demo_name(shape, dtype)

        def make(progress: Progress, cancel: threading.Event) -> PreparedModel:
            from gpt2_chat.client.prepare import prepare_random

            return prepare_random(shape, output, dtype=dtype, progress=progress, cancel=cancel)

        self._start(f"demo {shape} ({dtype}, {DEMO_NOTE})", output, make, demo=True)

    def action_stop(self) -> None:
        if self.preparing and self._cancel is not None:
            self._cancel.set()
            self._text("stopping after the tensor being written…")

    def _start(
        self,
        what: str,
        output: Path,
        make: Callable[[Progress, threading.Event], PreparedModel],
        demo: bool,
    ) -> None:
        if self.preparing:
            self.app.notify("A model is already being prepared", severity="warning")
            return
        self._cancel = threading.Event()
        self.preparing = True
        self._text(f"{what} → {short_path(output)}…")
        cancel = self._cancel
        start_daemon(lambda: self._run(make, output, cancel, demo), "prepare")

    def _run(
        self,
        make: Callable[[Progress, threading.Event], PreparedModel],
        output: Path,
        cancel: threading.Event,
        demo: bool,
    ) -> None:
        last = [0.0]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or (total and done >= total):
                last[0] = now
                amount = f"{mb(done)} / {mb(total)}" if total else mb(done)
                self.later(self._text, f"{stage}: {amount}")

        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            result = make(progress, cancel)
        except PrepareCancelled:
            self.later(self._stopped)
        except EXPECTED_ERRORS as e:
            self.later(self._prepare_failed, e)
        except Exception as e:  # a bug; no worker reports it here, so the user must see it
            self.later(self._prepare_failed, RuntimeError(f"{type(e).__name__}: {e}"))
        else:
            self.later(self._prepared, result, demo)

    def _prepared(self, result: PreparedModel, demo: bool) -> None:
        self.preparing = False
        done = f"prepared {short_path(result.path)} ({mb(result.size)})"
        self._text(done + (f": {DEMO_NOTE}" if demo else ""))
        self.post_message(self.Prepared(result.path, result.size, result.sha256, demo))
        if demo:
            note = f"Demo model {short_path(result.path)}: {DEMO_NOTE}. Uploading it."
        else:
            note = f"Prepared {short_path(result.path)}: press Upload"
        self.app.notify(note, title="Model", timeout=6)

    def _stopped(self) -> None:
        self.preparing = False
        self._text("stopped: nothing was written")
        self.app.notify("Prepare stopped; no file was written", title="Model", timeout=4)

    def _prepare_failed(self, error: BaseException) -> None:
        self.preparing = False
        self._text("failed")
        self.report(error, title="Prepare")
