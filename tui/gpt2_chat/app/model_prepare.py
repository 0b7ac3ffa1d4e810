"""The model tab's prepare panel: turn a Hugging Face id or a checkpoint directory into a
canister-ready file in the models folder."""

from __future__ import annotations

import re
import time
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Button, Input

from gpt2_chat.errors import EXPECTED_ERRORS
from gpt2_chat.settings import Settings

from .fmt import mb, short_path
from .widgets import OneLine, Pane, SectionTitle, start_daemon

#: Prepare's progress reaches the screen at most this often.
PROGRESS_INTERVAL_S = 0.1


def models_dir(settings: Settings) -> Path:
    """Where prepared models go: next to the embedded runtime's state dir."""
    return settings.resolved_state_dir().parent / "models"


def prepared_name(source: str) -> str:
    """The file name a prepared `source` gets: gpt2 -> gpt2.safetensors,
    openai-community/gpt2-medium -> openai-community--gpt2-medium.safetensors."""
    path = Path(source).expanduser()
    if path.exists():
        stem = path.stem if path.is_file() else path.resolve().name
        return f"{stem}.safetensors"
    return re.sub(r"[^A-Za-z0-9._-]+", "--", source.strip("/")) + ".safetensors"


class PreparePanel(Pane):
    """Source input, Prepare button and a progress line."""

    class Prepared(Message):
        """A model file was written: the upload panel takes it from here."""

        def __init__(self, path: Path, size: int, sha256: str) -> None:
            super().__init__()
            self.path = path
            self.size = size
            self.sha256 = sha256

    preparing: reactive[bool] = reactive(False)

    def compose(self) -> ComposeResult:
        yield SectionTitle("Prepare a model")
        with Horizontal(classes="row"):
            yield Input(
                id="hf-source",
                placeholder="Hugging Face id (gpt2, openai-community/gpt2-medium) or dir",
                compact=True,
            )
            yield Button("Prepare", id="prepare", compact=True)
        yield OneLine(id="prepare-text")

    def watch_preparing(self) -> None:
        self.query_one("#prepare", Button).disabled = self.preparing

    def _text(self, text: str) -> None:
        self.query_one("#prepare-text", OneLine).update(Text(text))

    @on(Input.Submitted, "#hf-source")
    def _source_submitted(self) -> None:
        self.action_prepare()

    @on(Button.Pressed, "#prepare")
    def _prepare_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_prepare()

    def action_prepare(self) -> None:
        source = self.query_one("#hf-source", Input).value.strip()
        if not source:
            self.report("type a Hugging Face model id (gpt2) or a checkpoint directory")
            return
        if self.preparing:
            self.app.notify("A model is already being prepared", severity="warning")
            return
        output = models_dir(self.gpt2_app.settings) / prepared_name(source)
        try:
            if Path(source).expanduser().resolve() == output.resolve():
                output = output.with_name(output.stem + "-prepared.safetensors")
        except OSError:
            pass
        self.preparing = True
        self._text(f"preparing {source} → {short_path(output)}…")
        start_daemon(lambda: self._prepare(source, output), "prepare")

    def _prepare(self, source: str, output: Path) -> None:
        from gpt2_chat.client.prepare import prepare

        last = [0.0]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or (total and done >= total):
                last[0] = now
                amount = f"{mb(done)} / {mb(total)}" if total else mb(done)
                self.later(self._text, f"{stage}: {amount}")

        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            result = prepare(source, output, progress=progress)
        except EXPECTED_ERRORS as e:
            self.later(self._prepare_failed, e)
        except Exception as e:  # a bug; no worker reports it here, so the user must see it
            self.later(self._prepare_failed, RuntimeError(f"{type(e).__name__}: {e}"))
        else:
            self.later(self._prepared, result.path, result.size, result.sha256)

    def _prepared(self, path: Path, size: int, sha256: str) -> None:
        self.preparing = False
        self._text(f"prepared {short_path(path)} ({mb(size)})")
        self.post_message(self.Prepared(path, size, sha256))
        self.app.notify(f"Prepared {short_path(path)}: press Upload", title="Model", timeout=5)

    def _prepare_failed(self, error: BaseException) -> None:
        self.preparing = False
        self._text("failed")
        self.report(error, title="Prepare")
