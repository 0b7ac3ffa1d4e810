"""The model tab's upload panel: the canister's state, the model file (`model_file`), then
upload (resumable, with pause and cancel) and load, each with its progress bar."""

from __future__ import annotations

import threading
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widgets import Button, Input, Label, ProgressBar

from gpt2_chat.client.canister import Gpt2Canister, ModelInfo
from gpt2_chat.client.upload import (
    Progress,
    UploadCancelled,
    UploadResult,
    load_model,
    upload_model,
)
from gpt2_chat.connect import Connection, ConnectionClosed
from gpt2_chat.errors import EXPECTED_ERRORS

from .confirm import ConfirmScreen
from .fmt import count, duration, mb, short_sha
from .model_file import ModelFile
from .store import save_recent
from .widgets import OneLine, Pane, SectionTitle

#: What the canister holds while this app is busy with it, by phase: upload_begin has
#: already dropped any model it had loaded.
BUSY_STATE = {
    "upload": "uploading, no model loaded",
    "finalize": "verifying the upload, no model loaded",
    "load": "loading the model: usable once it is loaded",
}


def canister_state(info: ModelInfo | None) -> tuple[str, str]:
    """(state word, one-line description) of what the canister holds."""
    if info is None:
        return "unknown", "unknown (not connected)"
    up = info.upload
    if info.loaded and info.config is not None:
        c = info.config
        return "loaded", (
            f"loaded: {c.n_layer} layers · {c.n_embd} dims · {c.n_head} heads · "
            f"vocab {count(c.vocab_size)} · context {c.n_ctx} · {info.dtype or '?'}"
        )
    if info.loading is not None and info.loading.total_bytes:
        p = info.loading
        return "loading", f"loading: {mb(p.loaded_bytes)} of {mb(p.total_bytes)} loaded"
    if up.complete:
        return "complete", f"complete, not loaded ({mb(up.received_bytes)}): press Load"
    if up.received_bytes and up.declared_size:
        pct = 100 * up.received_bytes / up.declared_size
        return "partial", (
            f"partial: {count(up.received_bytes)} of {count(up.declared_size)} bytes "
            f"({pct:.0f}%): choose the same file and Resume"
        )
    if up.declared_size:
        return "partial", f"partial: 0 of {count(up.declared_size)} bytes: choose the file"
    return "empty", "empty: choose a model file and Upload"


class UploadPanel(Pane):
    """Canister state, the model file, Upload/Pause/Cancel/Load and their progress."""

    uploading: reactive[bool] = reactive(False, bindings=True)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cancel: threading.Event | None = None
        self._discard = False
        self._progress_lock = threading.Lock()
        self._latest: Progress | None = None
        self._flush_pending = False
        #: The phase of the upload or load running now (None: none, or still hashing).
        self._phase: str | None = None

    def compose(self) -> ComposeResult:
        yield SectionTitle("Canister", classes="-first")
        yield OneLine(id="canister-state")
        yield OneLine(id="canister-sha")
        yield ModelFile(id="model-file")
        with Horizontal(classes="row buttons"):
            yield Button("Upload", id="upload", variant="primary", compact=True)
            yield Button("Pause", id="pause", compact=True)
            yield Button("Cancel", id="cancel", variant="error", compact=True)
            yield Button("Load", id="load", compact=True)
        with Horizontal(classes="row"):
            yield Label("upload", classes="bar-label")
            yield ProgressBar(id="upload-bar", show_eta=False)
            yield OneLine(id="upload-text")
        with Horizontal(classes="row"):
            yield Label("load", classes="bar-label")
            yield ProgressBar(id="load-bar", show_eta=False)
            yield OneLine(id="load-text")

    def on_mount(self) -> None:
        self.watch(self.gpt2_app, "model_info", self._sync, init=True)
        self.watch(self.gpt2_app, "connection", self._sync, init=False)

    # ------------------------------------------------------------------ display

    def _text(self, widget_id: str, text: str) -> None:
        self.query_one(f"#{widget_id}", OneLine).update(Text(text))

    def _sync(self) -> None:
        """Canister state line and which buttons make sense now."""
        app = self.gpt2_app
        info = app.model_info
        connected = app.connection is not None
        state, line = canister_state(info) if connected else ("unknown", "not connected")
        if self.uploading and self._phase in BUSY_STATE:
            line = BUSY_STATE[self._phase]
        self._text("canister-state", line)
        sha = None
        if info is not None:
            sha = info.upload.sha256 or info.upload.declared_sha256
        self._text("canister-sha", f"sha256 {short_sha(sha)}" if sha else "")
        busy = self.uploading
        upload = self.query_one("#upload", Button)
        pause = self.query_one("#pause", Button)
        focused = self.screen.focused
        if not busy:  # the canister is partial mid-upload: that is no reason to say Resume
            upload.label = "Resume" if state == "partial" else "Upload"
        upload.disabled = busy or not connected
        pause.disabled = not busy
        self.query_one("#cancel", Button).disabled = not (busy or state == "partial")
        self.query_one("#load", Button).disabled = busy or state != "complete"
        if isinstance(focused, Button) and focused.disabled and focused in self.query(Button):
            # Disabling the pressed button took the focus away, and with it the tab's
            # keys (Esc, Ctrl+O, Ctrl+R): hand it to the control that is live now.
            target = pause if busy else upload
            (target if not target.disabled else self.query_one("#model-path", Input)).focus()
        if not busy:
            self._show_canister_progress(info if connected else None)
        self.model_file.show_info(self.uploading)

    def _show_canister_progress(self, info: ModelInfo | None) -> None:
        """Between uploads the bars show what the canister holds."""
        up = info.upload if info is not None else None
        upload_bar = self.query_one("#upload-bar", ProgressBar)
        if up is not None and up.declared_size:
            upload_bar.update(total=up.declared_size, progress=up.received_bytes)
        elif up is not None and up.complete:
            upload_bar.update(total=1, progress=1)
        else:
            upload_bar.update(total=1, progress=0)
        loaded = info is not None and info.loaded
        self.query_one("#load-bar", ProgressBar).update(total=1, progress=1 if loaded else 0)

    @property
    def model_file(self) -> ModelFile:
        return self.query_one(ModelFile)

    def action_browse(self) -> None:
        self.model_file.action_browse()

    def watch_uploading(self) -> None:
        self._sync()

    @on(Input.Submitted, "#model-path")
    def _path_submitted(self) -> None:
        self.action_upload()

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        actions = {
            "upload": self.action_upload,
            "pause": self.action_pause,
            "cancel": self.action_cancel,
            "load": self.action_load,
        }
        action = actions.get(event.button.id or "")
        if action is not None:
            event.stop()
            action()

    def _connection(self) -> Connection | None:
        connection = self.gpt2_app.connection
        if connection is None:
            self.report(self.gpt2_app.connection_error or "not connected yet: wait a moment")
        return connection

    def action_upload(self) -> None:
        if self.uploading:
            self.app.notify("An upload is already running", severity="warning")
            return
        path = self.model_file.path()
        if path is None:
            self.report("choose a model file first: type its path or Browse (Ctrl+O)")
            return
        if not path.is_file():
            self.report(f"no such file: {path}")
            return
        connection = self._connection()
        if connection is None:
            return
        save_recent(self.gpt2_app.store.path, model_path=str(path))
        self._cancel = threading.Event()
        self._discard = False
        self.query_one("#upload-bar", ProgressBar).update(total=path.stat().st_size, progress=0)
        self.query_one("#load-bar", ProgressBar).update(total=1, progress=0)
        self._text("upload-text", "starting…")
        self._text("load-text", "")
        self._phase = None
        self.uploading = True
        self._upload(connection, path, self._cancel, self.model_file.known_sha256(path))

    def action_pause(self) -> None:
        if self.uploading and self._cancel is not None:
            self._cancel.set()
            self._text("upload-text", "pausing after the chunks in flight…")

    def action_cancel(self) -> None:
        """Asks first: a discarded upload (hundreds of MB, perhaps) goes up from the start
        next time."""
        up = self.gpt2_app.model_info.upload if self.gpt2_app.model_info else None
        if self.uploading:
            question = "Stop the upload and discard what the canister has received?"
        elif up is not None and up.declared_size:
            question = (
                f"Discard the canister's partial upload "
                f"({mb(up.received_bytes)} of {mb(up.declared_size)})?"
            )
        else:
            return
        question += " It cannot be resumed: the file would go up again from the start."
        self.app.push_screen(ConfirmScreen(question, yes="Discard"), self._cancel_answered)

    def _cancel_answered(self, discard: bool | None) -> None:
        if not discard:
            return
        if self.uploading and self._cancel is not None:
            self._discard = True
            self._cancel.set()
            self._text("upload-text", "cancelling…")
            return
        connection = self._connection()
        if connection is not None:
            self._discard_partial(connection)

    def action_load(self) -> None:
        connection = self._connection()
        if connection is None or self.uploading:
            return
        self._cancel = threading.Event()
        self._discard = False
        self._phase = None
        self.uploading = True
        self._load(connection, self._cancel)

    # ------------------------------------------------------------------ workers

    def _progress(self, p: Progress) -> None:
        """Called from worker threads. Updates coalesce: the screen shows the newest
        progress as often as it can redraw, never a backlog."""
        with self._progress_lock:
            self._latest = p
            if self._flush_pending:
                return
            self._flush_pending = True
        self.later(self._flush_progress)

    def _flush_progress(self) -> None:
        with self._progress_lock:
            p, self._latest = self._latest, None
            self._flush_pending = False
        if p is not None:
            self._show_progress(p)

    @work(thread=True, exclusive=True, group="upload")
    def _upload(
        self, connection: Connection, path: Path, cancel: threading.Event, sha256: str | None
    ) -> None:
        canister = connection.canister
        try:
            result = upload_model(canister, path, self._progress, cancel, sha256=sha256, load=False)
            loaded = canister.upload_state().loaded
            if not loaded:
                self._load_calls(canister, cancel)
        except UploadCancelled:
            discarded = False
            if self._discard:
                try:
                    connection.canister.upload_clear()
                    discarded = True
                except EXPECTED_ERRORS as e:
                    self.report(e)
            self.later(self._upload_stopped, discarded)
        except ConnectionClosed:
            self.later(self._upload_failed, None)
        except EXPECTED_ERRORS as e:
            self.later(self._upload_failed, e)
        else:
            self.later(self._uploaded, path, result, not loaded)

    @work(thread=True, exclusive=True, group="upload")
    def _load(self, connection: Connection, cancel: threading.Event) -> None:
        try:
            self._load_calls(connection.canister, cancel)
        except UploadCancelled:
            self.later(self._upload_stopped, False)
        except ConnectionClosed:
            self.later(self._upload_failed, None)
        except EXPECTED_ERRORS as e:
            self.later(self._upload_failed, e)
        else:
            self.later(self._loaded)

    def _load_calls(self, canister: Gpt2Canister, cancel: threading.Event) -> None:
        """Loads the uploaded model (worker thread). A call can take many seconds and only
        its answer says how far it got: the bar pulses until the first one returns, then
        moves with each."""
        calls = 0

        def report(p: Progress) -> None:
            nonlocal calls
            calls += 1
            self.later(self._show_load, p, calls + 1)

        self.later(self._show_load, None, 1)
        load_model(canister, report, cancel)

    @work(thread=True, exclusive=True, group="upload")
    def _discard_partial(self, connection: Connection) -> None:
        try:
            connection.canister.upload_clear()
        except EXPECTED_ERRORS as e:
            self.report(e)
            return
        self.later(self._upload_stopped, True)

    # ------------------------------------------------------------------ on the UI thread

    def _enter_phase(self, phase: str) -> None:
        if phase == self._phase:
            return
        self._phase = phase
        if phase == "upload":
            # upload_begin dropped the canister's model: the app's lines must say so.
            self.gpt2_app.refresh_model_info()
        self._sync()

    def _show_progress(self, p: Progress) -> None:
        if not self.uploading:
            return
        if p.phase in BUSY_STATE:
            self._enter_phase(p.phase)
        if p.phase in ("hash", "upload"):
            self.query_one("#upload-bar", ProgressBar).update(total=p.total, progress=p.done)
        if p.phase == "hash":
            self._text("upload-text", f"hashing {p.done / 1e6:.1f}/{mb(p.total)}")
        elif p.phase == "upload":
            text = f"{p.done / 1e6:.1f}/{mb(p.total)}"
            if p.rate > 0:
                text += f" · {p.rate / 1e6:.1f} MB/s · ETA {duration(p.eta_seconds)}"
            self._text("upload-text", text)
        elif p.phase == "restart":
            self.app.notify(
                "The canister's partial upload could not become this file (other bytes were "
                "appended to it): cleared it and sending the file again.",
                title="Upload restarted",
                severity="warning",
                markup=False,
            )
        elif p.phase == "finalize":
            bar = self.query_one("#upload-bar", ProgressBar)
            bar.update(total=bar.total or 1, progress=bar.total or 1)
            self._text("upload-text", "verifying sha256…" if p.done < p.total else "verified")

    def _show_load(self, p: Progress | None, next_call: int) -> None:
        """`p`: what the last load call said (None: none returned yet)."""
        if not self.uploading:
            return
        self._enter_phase("load")
        bar = self.query_one("#load-bar", ProgressBar)
        if p is None:
            bar.update(total=None)
            self._text("load-text", f"loading: call {next_call}…")
        elif p.total and p.done < p.total:
            bar.update(total=p.total, progress=p.done)
            self._text("load-text", f"{p.done / 1e6:.1f}/{mb(p.total)} · call {next_call}…")

    def _uploaded(self, path: Path, result: UploadResult, loaded_now: bool) -> None:
        self.uploading = False
        self.model_file.remember(path, result.size, result.sha256)
        if result.already_uploaded:
            message = "Already in the canister"
        elif result.resumed_from:
            message = f"Uploaded (resumed at byte {count(result.resumed_from)})"
        else:
            message = f"Uploaded {mb(result.size)}"
        upload_bar = self.query_one("#upload-bar", ProgressBar)
        upload_bar.update(total=result.size, progress=result.size)
        self._text("upload-text", message.lower() if message[0] == "A" else message)
        if loaded_now:
            self._finish_load_bar()
            message += "; model loaded"
        self.app.notify(message, title="Model", timeout=5)
        self.gpt2_app.model_changed()

    def _loaded(self) -> None:
        self.uploading = False
        self._finish_load_bar()
        self.app.notify("Model loaded", title="Model", timeout=5)
        self.gpt2_app.model_changed()

    def _finish_load_bar(self) -> None:
        bar = self.query_one("#load-bar", ProgressBar)
        total = bar.total or 1
        bar.update(total=total, progress=total)
        self._text("load-text", "loaded")

    def _upload_stopped(self, discarded: bool) -> None:
        self.uploading = False
        if discarded:
            self.query_one("#upload-bar", ProgressBar).update(total=1, progress=0)
            self._text("upload-text", "cancelled: the partial upload was discarded")
            self.app.notify("Upload cancelled; the canister's partial upload was discarded")
        else:
            self._text("upload-text", "paused: Resume continues where it stopped")
            self.app.notify("Upload paused: press Resume (or Enter in the path) to continue")
        self.gpt2_app.refresh_model_info()

    def _upload_failed(self, error: BaseException | None) -> None:
        self.uploading = False
        self._text("upload-text", "failed" if error is not None else "interrupted")
        if error is not None:
            self.report(error, title="Upload")
        else:
            self.app.notify(
                "Upload interrupted: the connection changed. Upload again to resume it there.",
                severity="warning",
            )
        self.gpt2_app.refresh_model_info()
