"""The saved chats: a list to reopen one (Enter), rename (r) or delete (d, asks first)."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Static

from gpt2_chat.client.history import ChatHistory, ChatSummary, HistoryError

from .confirm import ConfirmScreen


class RenameScreen(ModalScreen[str | None]):
    """A new title for a chat: Enter keeps it, Esc leaves the old one."""

    DEFAULT_CSS = """
    RenameScreen { align: center middle; }
    RenameScreen > Vertical {
        width: 60; max-width: 90%; height: auto;
        border: thick $primary; background: $surface; padding: 1 2;
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_now = title

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("A title for this chat (empty: its first words)", markup=False)
            yield Input(self.title_now, id="rename")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HistoryScreen(ModalScreen[int | None]):
    """Dismissed with the id of the chat to open, or None."""

    DEFAULT_CSS = """
    HistoryScreen { align: center middle; }
    HistoryScreen > Vertical {
        width: 1fr; height: 1fr; margin: 1 2 0 2;
        border: round $primary; background: $surface; padding: 0 1;
        border-title-style: bold;
    }
    HistoryScreen DataTable { height: 1fr; }
    HistoryScreen #history-empty { color: $text-muted; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("r", "rename", "Rename"),
        Binding("d,delete", "delete", "Delete"),
    ]

    def __init__(
        self, history: ChatHistory, current: int | None, on_delete: Callable[[int], None]
    ) -> None:
        super().__init__()
        self.history = history
        self.current = current
        self.on_delete = on_delete
        self.chats: dict[int, ChatSummary] = {}

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Saved chats · Enter opens"
            yield Static("No saved chats yet.", id="history-empty", markup=False)
            yield DataTable(id="history-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("id", "last used", "model", "chat")
        self._fill()
        table.focus()

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        try:
            summaries = self.history.summaries()
        except HistoryError as e:
            self.app.notify(str(e), severity="error", markup=False)
            summaries = []
        self.chats = {chat.id: chat for chat in summaries}
        for chat in summaries:
            used = time.strftime("%m-%d %H:%M", time.localtime(chat.updated))
            mark = "▶" if chat.id == self.current else ""
            table.add_row(f"{mark}{chat.id}", used, chat.origin.model, chat.label, key=str(chat.id))
        self.query_one("#history-empty").display = not summaries
        table.display = bool(summaries)

    def _selected(self) -> ChatSummary | None:
        table = self.query_one(DataTable)
        if not self.chats or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.chats.get(int(key)) if key is not None else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.dismiss(int(event.row_key.value))

    def action_close(self) -> None:
        self.dismiss(None)

    def action_rename(self) -> None:
        chat = self._selected()
        if chat is None:
            return

        def renamed(title: str | None) -> None:
            if title is None:
                return
            try:
                self.history.rename(chat.id, title)
            except HistoryError as e:
                self.app.notify(str(e), severity="error", markup=False)
            self._fill()

        self.app.push_screen(RenameScreen(chat.title or ""), renamed)

    def action_delete(self) -> None:
        chat = self._selected()
        if chat is None:
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.history.delete(chat.id)
            except HistoryError as e:
                self.app.notify(str(e), severity="error", markup=False)
            else:
                self.on_delete(chat.id)
            self._fill()

        self.app.push_screen(
            ConfirmScreen(
                f"Delete saved chat {chat.id} ({chat.label})? It cannot be undone.", "Delete"
            ),
            answered,
        )
