"""The model file browser: any folder (typed, or one level up at a time), its directories
and .safetensors files; picking a file posts `FileBrowser.Picked`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DirectoryTree, Input

from .fmt import short_path


class SafetensorsTree(DirectoryTree):
    """Directories and .safetensors files, no hidden entries."""

    BINDINGS = [Binding("backspace", "parent", "Parent folder")]

    class Parent(Message):
        """Backspace: the browser goes one folder up."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        for path in paths:
            if path.name.startswith("."):
                continue
            try:
                if path.is_dir() or path.suffix == ".safetensors":
                    yield path
            except OSError:
                continue

    def action_parent(self) -> None:
        self.post_message(self.Parent())


class FileBrowser(Vertical):
    """A folder line (Up button, editable path) above the tree of that folder."""

    class Picked(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    def __init__(self, start: Path, *, id: str | None = None, classes: str = "") -> None:
        super().__init__(id=id, classes=classes)
        self._start = start

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Button("Up", id="browse-up", compact=True, tooltip="The parent folder")
            yield Input(
                short_path(self._start),
                id="browse-dir",
                placeholder="a folder: Enter opens it",
                compact=True,
            )
        yield SafetensorsTree(self._start, id="file-tree")

    @property
    def folder(self) -> Path:
        return Path(self.query_one(SafetensorsTree).path)

    def go(self, folder: Path) -> None:
        """Shows `folder` (absolute from here on, so Up can always climb)."""
        folder = folder.expanduser().absolute()
        self.query_one(SafetensorsTree).path = folder
        self.query_one("#browse-dir", Input).value = short_path(folder)

    def focus_tree(self) -> None:
        self.query_one(SafetensorsTree).focus()

    @on(Button.Pressed, "#browse-up")
    def _up_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self._up()

    @on(SafetensorsTree.Parent)
    def _up(self) -> None:
        self.go(self.folder.absolute().parent)

    @on(Input.Submitted, "#browse-dir")
    def _folder_typed(self, event: Input.Submitted) -> None:
        event.stop()
        folder = Path(event.value.strip() or ".").expanduser()
        if not folder.is_dir():
            self.app.notify(f"not a folder: {event.value.strip()}", severity="error")
            return
        self.go(folder)
        self.focus_tree()

    @on(DirectoryTree.FileSelected, "#file-tree")
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.post_message(self.Picked(event.path))
