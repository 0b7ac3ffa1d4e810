"""The app: four tabs (chat, model, replica, settings), the bindings, the one backend
connection they share and its lifecycle."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from gpt2_chat.client.canister import ModelInfo
from gpt2_chat.client.history import model_label
from gpt2_chat.connect import Connection, ConnectionClosed, open_connection
from gpt2_chat.errors import EXPECTED_ERRORS
from gpt2_chat.settings import CONNECTION_FIELDS, Settings, SettingsStore

from .chat_view import ChatView, PromptInput
from .fmt import connection_label
from .help_screen import HelpScreen
from .model_view import ModelView
from .replica_view import ReplicaView
from .settings_view import SettingsView
from .widgets import OneLine, Pane, UiCall, start_daemon

TABS = (
    ("chat", "Chat", "F1"),
    ("model", "Model", "F2"),
    ("replica", "Replica", "F3"),
    ("settings", "Settings", "F4"),
)


class ConnectionBar(OneLine):
    """One line above the footer: which backend, whether connected, what model."""


class Gpt2ChatApp(App[None]):
    TITLE = "gpt2-chat"
    #: Absolute, so subclasses defined elsewhere (tests) find it too.
    CSS_PATH = Path(__file__).with_name("app.tcss")
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            # Not in the footer (the tab labels show these keys); in the command palette.
            Binding(key.lower(), f"show_tab('{tab}')", label, show=False)
            for tab, label, key in TABS
        ),
        Binding("ctrl+q", "quit", "Quit", tooltip="Quit gpt2-chat", priority=True),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="This tab's keys"),
    ]

    #: The open backend (None while connecting or when it failed).
    connection: reactive[Connection | None] = reactive(None, always_update=True)
    #: True from the start: the app opens its backend as it starts ("not connected" would be
    #: wrong until that has been tried).
    connecting: reactive[bool] = reactive(True)
    #: Why there is no connection, or why the open one cannot reach the canister.
    connection_error: reactive[str | None] = reactive(None)
    #: What the canister said last (refreshed after uploads, on the model tab, ...).
    model_info: reactive[ModelInfo | None] = reactive(None, always_update=True)
    #: The settings in force.
    settings: reactive[Settings] = reactive(Settings, always_update=True)

    def __init__(
        self, store: SettingsStore | None = None, flags: Mapping[str, str] | None = None
    ) -> None:
        super().__init__()
        self.store = store or SettingsStore(flags=flags)
        self.set_reactive(Gpt2ChatApp.settings, self.store.effective)
        # Connections are opened on daemon threads, one at a time (the embedded runtime
        # allows one per state dir); `_connection_lock` only guards `_open`, so quitting never
        # waits for an open in progress.
        self._opening_lock = threading.Lock()
        self._connection_lock = threading.Lock()
        self._open: Connection | None = None
        self._generation = 0

    def compose(self) -> ComposeResult:
        with TabbedContent(initial="chat", id="tabs"):
            views: dict[str, Callable[[], Pane]] = {
                "chat": partial(ChatView, id="chat-view"),
                "model": partial(ModelView, id="model-view"),
                "replica": partial(ReplicaView, id="replica-view"),
                "settings": partial(SettingsView, id="settings-view"),
            }
            for tab, label, key in TABS:
                title = Content.assemble(label, " ", (key, "dim"))
                with TabPane(title, id=tab):
                    yield views[tab]()
        yield ConnectionBar(id="connection-bar")
        yield Footer()

    def on_mount(self) -> None:
        if self.store.load_error:
            message = f"{self.store.load_error}; using the defaults (saving replaces the file)"
            self.notify(message, severity="error", markup=False, timeout=15)
        self._apply_theme(self.settings.theme)
        self.watch(self, "theme", self._theme_changed, init=False)
        self.reconnect()
        self.query_one(ChatView).on_tab_shown()

    async def action_quit(self) -> None:
        if self.opening_backend:
            # Opening the embedded runtime allocates millions of objects; collecting while
            # the app closes would hold the exit for seconds (on_unmount turns it back on).
            gc.disable()
        await super().action_quit()

    def on_unmount(self) -> None:
        self.close_connection()
        gc.enable()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Plain text unless asked: messages quote paths and library errors, not markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def action_help(self) -> None:
        """The help screen: what the current tab does and the keys it has now."""
        if isinstance(self.screen, HelpScreen):
            return
        keys = [
            (self.get_key_display(b.binding), b.binding.description)
            for b in self.screen.active_bindings.values()
            if b.binding.description and _app_key(b.node, b.binding)
        ]
        tab = self.query_one("#tabs", TabbedContent).active
        self.push_screen(HelpScreen(tab, keys))

    def action_help_quit(self) -> None:
        """Ctrl+C outside a text field. Textual's own hint is markup; notify is plain text."""
        self.notify("Press Ctrl+Q to quit the app", title="Do you want to quit?")

    # ------------------------------------------------------------------ threads -> UI

    def later(self, fn: Callable[..., object], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the app has exited
            self.post_message(UiCall(partial(fn, *args)))

    def on_ui_call(self, message: UiCall) -> None:
        message.fn()

    # ------------------------------------------------------------------ tabs

    def action_show_tab(self, tab: str) -> None:
        tabs = self.query_one("#tabs", TabbedContent)
        if tabs.active == tab:
            self._tab_shown(tab)  # no TabActivated: just focus its main widget again
        else:
            tabs.active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # The event's own pane: querying the screen fails when it arrives during shutdown.
        self._pane_shown(event.pane)

    def _tab_shown(self, tab: str) -> None:
        self._pane_shown(self.query_one(f"#{tab}", TabPane))

    def _pane_shown(self, pane: TabPane) -> None:
        for view in pane.query(Pane):
            view.on_tab_shown()

    @property
    def chat_view(self) -> ChatView:
        return self.query_one(ChatView)

    @property
    def model_view(self) -> ModelView:
        return self.query_one(ModelView)

    # ------------------------------------------------------------------ connection

    def reconnect(self) -> None:
        """(Re)opens the backend for the current settings, in a worker."""
        self._generation += 1
        self.connection = None
        self.model_info = None
        self.connection_error = None
        self.connecting = True
        self._show_connection()
        self._start_connect(self._generation, self.settings)

    def _start_connect(self, generation: int, settings: Settings) -> None:
        # Not a Textual worker: asyncio waits for those at exit, and opening the embedded
        # runtime can take seconds (compiling the wasm, reloading the model).
        start_daemon(partial(self._connect_or_crash, generation, settings), "gpt2-chat-connect")

    def _connect_or_crash(self, generation: int, settings: Settings) -> None:
        try:
            self._connect(generation, settings)
        except Exception as e:  # a bug: crash the app with its traceback, as a worker would
            self.later(_reraise, e)

    def _connect(self, generation: int, settings: Settings) -> None:
        with self._opening_lock:
            with self._connection_lock:
                old, self._open = self._open, None
            if old is not None:
                old.close()
            if generation != self._generation:
                return  # another reconnect came after this one, or the app quit
            try:
                connection = open_connection(settings)
            except EXPECTED_ERRORS as e:
                self.later(self._connect_failed, generation, str(e))
                return
            with self._connection_lock:
                current = generation == self._generation
                if current:
                    self._open = connection
            if not current:
                connection.close()
                return
        try:
            info: ModelInfo | None = connection.canister.model_info()
            error = None
        except EXPECTED_ERRORS as e:
            info, error = None, str(e)
        self.later(self._connected, generation, connection, info, error)

    def _connected(
        self, generation: int, connection: Connection, info: ModelInfo | None, error: str | None
    ) -> None:
        if generation != self._generation:
            return
        self.connecting = False
        self.connection_error = error
        self.connection = connection
        self.model_info = info
        self._show_connection()
        if error is not None:
            self.notify(error, title="Cannot reach the canister", severity="error", timeout=15)

    def _connect_failed(self, generation: int, message: str) -> None:
        if generation != self._generation:
            return
        self.connecting = False
        self.connection_error = message
        self._show_connection()
        self.notify(message, title="Not connected", severity="error", markup=False, timeout=15)

    @property
    def opening_backend(self) -> bool:
        return self._opening_lock.locked()

    def close_connection(self) -> None:
        """Stops the views' work and closes the backend (waits for a call in flight)."""
        self._generation += 1
        for view in self.query(Pane):
            cancel = getattr(view, "_cancel", None)
            if isinstance(cancel, threading.Event):
                cancel.set()
        with self._connection_lock:
            old, self._open = self._open, None
        if old is not None:
            old.close()

    def refresh_model_info(self) -> None:
        if self.connection is not None:
            self._fetch_model_info(self.connection)

    @work(thread=True, exclusive=True, group="model-info")
    def _fetch_model_info(self, connection: Connection) -> None:
        try:
            info = connection.canister.model_info()
        except ConnectionClosed:
            return
        except EXPECTED_ERRORS as e:
            self.later(self._model_info_failed, connection, str(e))
            return
        self.later(self._model_info_fetched, connection, info)

    def _model_info_fetched(self, connection: Connection, info: ModelInfo) -> None:
        if connection is self.connection:
            self.connection_error = None  # reachable (again)
            self.model_info = info
            self._show_connection()

    def _model_info_failed(self, connection: Connection, error: str) -> None:
        self.notify(error, severity="error", timeout=10)
        if connection is self.connection:
            self.connection_error = error
            self._show_connection()

    def model_changed(self) -> None:
        """A model was uploaded or loaded: the chat starts a new conversation with it."""
        self.refresh_model_info()
        self.chat_view.start_over("The canister's model changed: this is a new conversation.")

    def _show_connection(self) -> None:
        bars = self.query("#connection-bar").results(ConnectionBar)
        bar = next(bars, None)
        if bar is None:  # the app is closing: its widgets are gone
            return
        label = connection_label(self.settings)
        if self.connecting:
            bar.update(Text(f"◌ connecting: {label}…", style="dim"))
            return
        if self.connection is None:
            error = self.connection_error or "not connected"
            bar.update(Text.assemble(("✗ ", "bold red"), f"{label}: {error}"))
            return
        if self.connection_error is not None:
            bar.update(Text.assemble(("✗ ", "bold red"), f"unreachable: {label}"))
            return
        info = self.model_info
        if self.model_view.uploading:
            model = "uploading a model (F2)"
        elif info is None:
            model = "model: ?"
        elif info.loaded and info.config is not None:
            # The model first: at 80 columns the end of the line (a long path) is cut.
            model = f"{model_label(info)} · sha {(info.upload.sha256 or '?')[:8]}"
        elif info.upload.complete:
            model = "model uploaded, not loaded (F2)"
        elif info.upload.received_bytes:
            model = "partial upload (F2 to resume)"
        else:
            model = "no model (F2 to upload one)"
        bar.update(Text.assemble(("● ", "bold green"), f"{model} · {label}"))

    # ------------------------------------------------------------------ settings

    def apply_settings(self, new: Settings) -> set[str]:
        """Saves `new` and applies it now. Raises ValueError/OSError (nothing changed)."""
        changed = self.store.save(new)
        self.settings = self.store.effective
        if changed & CONNECTION_FIELDS:
            self.reconnect()
        if "theme" in changed:
            self._apply_theme(self.settings.theme)
        return changed

    def _apply_theme(self, theme: str) -> None:
        if theme == self.theme:
            return
        if theme not in self.available_themes:
            self.notify(f"unknown theme {theme!r}; using {self.theme}", severity="warning")
            return
        self.theme = theme

    def _theme_changed(self, theme: str) -> None:
        """A theme chosen anywhere (settings tab, command palette) is saved."""
        if theme == self.settings.theme:
            return
        try:
            self.store.save(replace(self.store.effective, theme=theme))
        except EXPECTED_ERRORS as e:
            self.notify(f"theme not saved: {e}", severity="error", markup=False)
            return
        self.settings = self.store.effective

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for tab, label, key in TABS:
            show = partial(self.action_show_tab, tab)
            yield SystemCommand(f"{label} tab", f"Show the {label.lower()} tab ({key})", show)
        chat = self.chat_view
        model = self.model_view
        replica = self.query_one(ReplicaView)
        settings = self.query_one(SettingsView)
        commands: list[tuple[str, str, str | None, Callable[[], None]]] = [
            ("New chat", "Start a new conversation (Ctrl+N)", None, chat.action_new_chat),
            ("Copy last reply", "Copy GPT-2's last reply (Ctrl+Y)", None, chat.action_copy_reply),
            (
                "Upload model",
                "Upload the chosen file (Enter in its path)",
                "model",
                model.action_upload,
            ),
            (
                "Browse for a model",
                "Pick a .safetensors file (Ctrl+O)",
                "model",
                model.action_browse,
            ),
            (
                "Refresh canister state",
                "What the canister holds (Ctrl+R)",
                "model",
                model.action_refresh,
            ),
            (
                "Local network status",
                "Find dfx/icp, ask the network (Ctrl+R)",
                "replica",
                replica.action_refresh,
            ),
            ("Start local network", "dfx start --background", "replica", replica.action_start),
            ("Stop local network", "dfx stop", "replica", replica.action_stop_network),
            (
                "Deploy the canister",
                "dfx deploy gpt2_backend (local)",
                "replica",
                replica.action_deploy,
            ),
            (
                "Save settings",
                "Save and apply the settings (Ctrl+S)",
                "settings",
                settings.action_save,
            ),
            ("Reconnect", "Reopen the backend with the current settings", None, self.reconnect),
        ]
        if chat.busy:
            commands.append(("Stop reply", "Stop the reply (Esc)", None, chat.action_stop))
        if model.uploading:
            commands.append(
                ("Pause upload", "Resume continues later (Esc)", None, model.action_pause)
            )
            commands.append(("Cancel upload", "Stop and discard it", None, model.action_cancel))
        for title, help_text, where, action in commands:
            yield SystemCommand(title, help_text, self._on_tab(where, action) if where else action)

    def _on_tab(self, tab: str, action: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            self.action_show_tab(tab)
            action()

        return run


def _reraise(error: Exception) -> None:
    raise error


def _app_key(node: object, binding: Binding) -> bool:
    """Whether the help lists a binding: the app's and the tabs' own keys, not the text
    editing keys of every input."""
    if isinstance(node, PromptInput):
        return binding.action.startswith("recall")
    return isinstance(node, (App, Pane))


def run_app(store: SettingsStore | None = None) -> int:
    """Runs the app until the user quits; 0."""
    app = Gpt2ChatApp(store)
    try:
        app.run()
    finally:
        app.close_connection()
    if app.opening_backend:
        # Quit while the backend was opening: nothing is left to save, and the interpreter's
        # final garbage collection would walk the half-built runtime for seconds.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
