"""The model tab's upload panel: the canister's state, the chosen file, upload (resumable,
with pause and cancel) and load, each with its progress bar."""

from __future__ import annotations

import threading
from dataclasses import dataclass
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
    file_sha256,
    load_model,
    upload_model,
)
from gpt2_chat.connect import Connection, ConnectionClosed
from gpt2_chat.errors import EXPECTED_ERRORS

from .confirm import ConfirmScreen
from .file_browser import FileBrowser
from .fmt import count, duration, mb, short_path, short_sha
from .model_prepare import models_dir
from .store import load_recent, save_recent
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


@dataclass(frozen=True)
class FileFacts:
    path: Path
    size: int
    mtime: float
    sha256: str | None = None


class UploadPanel(Pane):
    """Canister state, model file, Upload/Pause/Cancel/Load and their progress."""

    uploading: reactive[bool] = reactive(False, bindings=True)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cancel: threading.Event | None = None
        self._discard = False
        self._facts: FileFacts | None = None
        self._hash_timer: object = None
        self._progress_lock = threading.Lock()
        self._latest: Progress | None = None
        self._flush_pending = False
        #: The phase of the upload or load running now (None: none, or still hashing).
        self._phase: str | None = None

    def compose(self) -> ComposeResult:
        yield SectionTitle("Canister", classes="-first")
        yield OneLine(id="canister-state")
        yield OneLine(id="canister-sha")
        yield SectionTitle("Model file")
        with Horizontal(classes="row"):
            yield Input(
                id="model-path",
                placeholder="path to a .safetensors file · Enter uploads",
                compact=True,
            )
            yield Button("Browse", id="browse", compact=True)
        # Where Prepare writes models, once there are any.
        models = models_dir(self.gpt2_app.settings)
        yield FileBrowser(models if models.is_dir() else Path.cwd(), id="browser", classes="hidden")
        yield OneLine(id="file-info")
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
        last = load_recent(self.gpt2_app.store.path).get("model_path")
        if last:
            self.query_one("#model-path", Input).value = last
        self._show_file_info()

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
        self._show_file_info()

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

    def watch_uploading(self) -> None:
        self._sync()

    def _path(self) -> Path | None:
        value = self.query_one("#model-path", Input).value.strip()
        return Path(value).expanduser() if value else None

    def _show_file_info(self) -> None:
        path = self._path()
        if path is None:
            self._text("file-info", "no file chosen")
            return
        try:
            stat = path.stat()
        except OSError:
            self._text("file-info", f"no such file: {short_path(path)}")
            return
        if not path.is_file():
            self._text("file-info", f"{short_path(path)} is a directory: choose a file")
            return
        facts = self._facts
        if facts is None or facts.path != path or facts.size != stat.st_size:
            self._text("file-info", f"{count(stat.st_size)} bytes ({mb(stat.st_size)})")
            return
        line = f"{count(facts.size)} bytes ({mb(facts.size)}) · sha256 {short_sha(facts.sha256)}"
        info = self.gpt2_app.model_info
        if info is not None and facts.sha256:
            up = info.upload
            if up.sha256 == facts.sha256 and up.complete:
                line += " · in the canister" + (" (loaded)" if info.loaded else "")
            elif not self.uploading and up.declared_sha256 == facts.sha256 and up.received_bytes:
                line += f" · resumes at {100 * up.received_bytes / facts.size:.0f}%"
        self._text("file-info", line)

    @on(Input.Changed, "#model-path")
    def _path_changed(self) -> None:
        self._show_file_info()
        self._schedule_hash()

    def _schedule_hash(self) -> None:
        if self._hash_timer is not None:
            self._hash_timer.stop()  # type: ignore[attr-defined]
        self._hash_timer = self.set_timer(0.4, self._start_hash)

    def _start_hash(self) -> None:
        self._hash_timer = None
        path = self._path()
        if path is None or not path.is_file():
            return
        if self._current_facts(path) is not None:
            return
        stat = path.stat()
        self._hash(FileFacts(path, stat.st_size, stat.st_mtime))

    @work(thread=True, exclusive=True, group="hash")
    def _hash(self, facts: FileFacts) -> None:
        try:
            sha = file_sha256(facts.path)
        except OSError:
            return
        self.later(self._hashed, FileFacts(facts.path, facts.size, facts.mtime, sha))

    def _hashed(self, facts: FileFacts) -> None:
        self._facts = facts
        self._show_file_info()

    # ------------------------------------------------------------------ actions

    @on(Input.Submitted, "#model-path")
    def _path_submitted(self) -> None:
        self.action_upload()

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        actions = {
            "browse": self.action_browse,
            "upload": self.action_upload,
            "pause": self.action_pause,
            "cancel": self.action_cancel,
            "load": self.action_load,
        }
        action = actions.get(event.button.id or "")
        if action is not None:
            event.stop()
            action()

    def action_browse(self) -> None:
        browser = self.query_one(FileBrowser)
        browser.toggle_class("hidden")
        if browser.has_class("hidden"):
            self.query_one("#model-path", Input).focus()
        else:
            browser.focus_tree()

    @on(FileBrowser.Picked)
    def _file_picked(self, event: FileBrowser.Picked) -> None:
        event.stop()
        path_input = self.query_one("#model-path", Input)
        path_input.value = short_path(event.path)
        self.query_one(FileBrowser).add_class("hidden")
        path_input.focus()

    def _connection(self) -> Connection | None:
        connection = self.gpt2_app.connection
        if connection is None:
            self.report(self.gpt2_app.connection_error or "not connected yet: wait a moment")
        return connection

    def action_upload(self) -> None:
        if self.uploading:
            self.app.notify("An upload is already running", severity="warning")
            return
        path = self._path()
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
        self._upload(connection, path, self._cancel, self._known_sha256(path))

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

    def _current_facts(self, path: Path) -> FileFacts | None:
        """What is known of `path`, if the file has not changed since."""
        facts, stat = self._facts, path.stat()
        if facts and (facts.path, facts.size, facts.mtime) == (path, stat.st_size, stat.st_mtime):
            return facts
        return None

    def _known_sha256(self, path: Path) -> str | None:
        facts = self._current_facts(path)
        return facts.sha256 if facts else None

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
        self._facts = FileFacts(path, result.size, path.stat().st_mtime, result.sha256)
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

    def choose(self, path: Path, size: int, sha256: str) -> None:
        """Makes `path` (just prepared: its digest is known) the file to upload."""
        self.query_one("#model-path", Input).value = short_path(path)
        # Recorded under the path as the input gives it back (short_path may make it
        # relative), so the chosen file is recognised and not hashed again.
        chosen = self._path()
        assert chosen is not None
        self._facts = FileFacts(chosen, size, path.stat().st_mtime, sha256)
