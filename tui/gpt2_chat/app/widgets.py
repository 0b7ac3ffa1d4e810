"""Pieces the views share: the base pane (thread-safe hand-off to the UI thread, error
reporting) and small widgets."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

if TYPE_CHECKING:
    from gpt2_chat.app.app import Gpt2ChatApp


class UiCall(Message, bubble=False):
    """Runs `fn` on the UI thread (posted from a worker thread)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__()
        self.fn = fn


class Pane(Vertical):
    """A tab's content. Workers hand results back with `later`, which never blocks and is
    harmless once the app is closing."""

    @property
    def gpt2_app(self) -> Gpt2ChatApp:
        return cast("Gpt2ChatApp", self.app)

    def later(self, fn: Callable[..., object], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the app has exited
            self.post_message(UiCall(partial(fn, *args)))

    def on_ui_call(self, message: UiCall) -> None:
        if self.is_attached:  # not when the app is closing
            message.fn()

    def report(self, error: BaseException | str, title: str = "") -> None:
        """An expected failure, as a notification with the library's message (thread-safe)."""
        self.app.notify(str(error), title=title, severity="error", markup=False, timeout=10)

    def on_tab_shown(self) -> None:
        """Called when this pane's tab becomes active: focus its main widget, refresh."""


def start_daemon(fn: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread for work that cannot be cancelled and must not keep the app from
    exiting (a download of hundreds of MB, say)."""
    thread = threading.Thread(target=fn, name=name, daemon=True)
    thread.start()
    return thread


class OneLine(Static):
    """A single line of text, cut with an ellipsis when too long."""

    DEFAULT_CSS = """
    OneLine {
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """


class SectionTitle(Static):
    DEFAULT_CSS = """
    SectionTitle {
        height: 1;
        text-style: bold;
        color: $text-accent;
        margin-top: 1;
    }
    SectionTitle.-first {
        margin-top: 0;
    }
    """
