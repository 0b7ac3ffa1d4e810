"""The model tab's file part: the path (remembered across runs), the file browser, and the
chosen file's size and sha256 (hashed in the background, matched against the canister)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input

from gpt2_chat.client.upload import file_sha256

from .file_browser import FileBrowser
from .fmt import count, mb, short_path, short_sha
from .model_prepare import models_dir
from .store import load_recent
from .widgets import OneLine, Pane, SectionTitle


@dataclass(frozen=True)
class FileFacts:
    path: Path
    size: int
    mtime: float
    sha256: str | None = None


class ModelFile(Pane):
    """Path input and Browse, the browser, one line of facts about the file."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._facts: FileFacts | None = None
        self._hash_timer: object = None
        #: An upload is running (the facts line then leaves out "resumes at").
        self._uploading = False

    def compose(self) -> ComposeResult:
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

    def on_mount(self) -> None:
        last = load_recent(self.gpt2_app.store.path).get("model_path")
        if last:
            self.query_one("#model-path", Input).value = last
        self.show_info(self._uploading)

    def path(self) -> Path | None:
        value = self.query_one("#model-path", Input).value.strip()
        return Path(value).expanduser() if value else None

    def _text(self, text: str) -> None:
        self.query_one("#file-info", OneLine).update(Text(text))

    def show_info(self, uploading: bool) -> None:
        """Size, sha256 and how the file stands in the canister."""
        self._uploading = uploading
        path = self.path()
        if path is None:
            self._text("no file chosen")
            return
        try:
            stat = path.stat()
        except OSError:
            self._text(f"no such file: {short_path(path)}")
            return
        if not path.is_file():
            self._text(f"{short_path(path)} is a directory: choose a file")
            return
        facts = self._facts
        if facts is None or facts.path != path or facts.size != stat.st_size:
            self._text(f"{count(stat.st_size)} bytes ({mb(stat.st_size)})")
            return
        line = f"{count(facts.size)} bytes ({mb(facts.size)}) · sha256 {short_sha(facts.sha256)}"
        info = self.gpt2_app.model_info
        if info is not None and facts.sha256:
            up = info.upload
            if up.sha256 == facts.sha256 and up.complete:
                line += " · in the canister" + (" (loaded)" if info.loaded else "")
            elif not uploading and up.declared_sha256 == facts.sha256 and up.received_bytes:
                line += f" · resumes at {100 * up.received_bytes / facts.size:.0f}%"
        self._text(line)

    def choose(self, path: Path, size: int, sha256: str) -> None:
        """Makes `path` (just prepared: its digest is known) the file to upload."""
        self.query_one("#model-path", Input).value = short_path(path)
        # Recorded under the path as the input gives it back (short_path may make it
        # relative), so the chosen file is recognised and not hashed again.
        chosen = self.path()
        assert chosen is not None
        self.remember(chosen, size, sha256)

    def remember(self, path: Path, size: int, sha256: str) -> None:
        self._facts = FileFacts(path, size, path.stat().st_mtime, sha256)

    def known_sha256(self, path: Path) -> str | None:
        """The digest of `path`, if it was hashed and has not changed since."""
        facts = self._current_facts(path)
        return facts.sha256 if facts else None

    def _current_facts(self, path: Path) -> FileFacts | None:
        facts, stat = self._facts, path.stat()
        if facts and (facts.path, facts.size, facts.mtime) == (path, stat.st_size, stat.st_mtime):
            return facts
        return None

    # ------------------------------------------------------------------ hashing

    @on(Input.Changed, "#model-path")
    def _path_changed(self) -> None:
        self.show_info(self._uploading)
        self._schedule_hash()

    def _schedule_hash(self) -> None:
        if self._hash_timer is not None:
            self._hash_timer.stop()  # type: ignore[attr-defined]
        self._hash_timer = self.set_timer(0.4, self._start_hash)

    def _start_hash(self) -> None:
        self._hash_timer = None
        path = self.path()
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
        self.show_info(self._uploading)

    # ------------------------------------------------------------------ browsing

    @on(Button.Pressed, "#browse")
    def _browse_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_browse()

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
