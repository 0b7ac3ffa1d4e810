"""The replica tab: which backend the app talks to, dfx/icp detection, the local network
(start, stop, status, deploy), the canister id, and a log of the commands run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.widgets import Button, Input, Log, Select, Static

from gpt2_chat.backends.embedded.backend import CANISTER_ID
from gpt2_chat.connect import canister_id, dfx_project_dir
from gpt2_chat.errors import EXPECTED_ERRORS
from gpt2_chat.network import parse_network
from gpt2_chat.replica.tools import (
    COMMAND_LOG,
    CommandRecord,
    ReplicaStatus,
    ReplicaTools,
    ToolInfo,
    missing_tools_message,
)
from gpt2_chat.settings import Settings

from .widgets import OneLine, Pane, SectionTitle, start_daemon

NETWORK_CHOICES = [
    ("Embedded runtime (in-process; not a replica)", "embedded"),
    ("Local replica (dfx, 127.0.0.1:4943)", "local"),
    ("IC mainnet", "ic"),
    ("Custom replica URL", "url"),
]


def network_choice(network: str) -> str:
    """The selector's entry for a network setting (`mainnet` is `ic` by another name)."""
    if network == "mainnet":
        return "ic"
    return network if network in ("embedded", "local", "ic") else "url"


def canister_id_text(settings: Settings) -> str:
    try:
        network = parse_network(settings.network)
        if network.embedded:
            return f"canister {CANISTER_ID} (in the embedded runtime)"
        cid = canister_id(settings, network)
    except EXPECTED_ERRORS as e:
        return f"canister {settings.canister or 'gpt2_backend'}: {e}"
    named = settings.canister or "gpt2_backend"
    return f"canister {cid}" + ("" if cid == named else f" ({named})")


def log_lines(record: CommandRecord) -> list[str]:
    lines = [f"$ {record.command_line}  [{record.outcome}]"]
    if record.finished and record.output.strip():
        lines += ["  " + line for line in record.output.rstrip().splitlines()]
    return lines


class ReplicaView(Pane):
    BINDINGS = [
        Binding("ctrl+r", "refresh", "Refresh", tooltip="Look for dfx/icp and ask the network"),
    ]

    #: A start/stop/deploy command is running.
    running: reactive[str | None] = reactive(None)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tools = ReplicaTools(project_root=dfx_project_dir(self.gpt2_app.settings))
        self.found: list[ToolInfo] | None = None
        self.status: ReplicaStatus | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._looked = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="replica-scroll"):
            yield SectionTitle("Backend", classes="-first")
            with Horizontal(classes="row"):
                yield Select(
                    NETWORK_CHOICES,
                    id="network-choice",
                    value=network_choice(self.gpt2_app.settings.network),
                    allow_blank=False,
                    compact=True,
                )
            with Horizontal(classes="row hidden", id="custom-url-row"):
                yield Input(id="custom-url", placeholder="https://… replica URL", compact=True)
                yield Button("Use", id="use-url", compact=True)
            yield OneLine(id="canister-id")
            yield SectionTitle("dfx / icp")
            yield Static(id="tools-text")
            yield SectionTitle("Local network")
            yield OneLine(id="network-status")
            with Horizontal(classes="row buttons"):
                yield Button("Start", id="start", variant="primary", compact=True)
                yield Button("Stop", id="stop", compact=True)
                yield Button("Status", id="status", compact=True)
                yield Button("Deploy", id="deploy", compact=True)
            yield SectionTitle("Commands run")
            yield Log(id="command-log", max_lines=2000)

    def on_mount(self) -> None:
        log = self.query_one("#command-log", Log)
        for record in COMMAND_LOG.entries():
            log.write_lines(log_lines(record))
        self._unsubscribe = COMMAND_LOG.subscribe(lambda r: self.later(self._logged, r))
        self.watch(self.gpt2_app, "settings", self._sync_settings)
        self._show_tools()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def on_tab_shown(self) -> None:
        # Without scrolling: a focused Select scrolls its (hidden) menu into view.
        self.query_one("#network-choice", Select).focus(scroll_visible=False)
        if not self._looked:
            self._looked = True
            self.action_refresh()

    # ------------------------------------------------------------------ display

    def _text(self, widget_id: str, text: str) -> None:
        self.query_one(f"#{widget_id}", Static).update(Text(text))

    def _sync_settings(self) -> None:
        settings = self.gpt2_app.settings
        choice = network_choice(settings.network)
        select = self.query_one("#network-choice", Select)
        if select.value != choice:
            with select.prevent(Select.Changed):
                select.value = choice
        url = self.query_one("#custom-url", Input)
        if choice == "url":
            url.value = settings.network
        self.query_one("#custom-url-row").set_class(choice != "url", "hidden")
        self.tools.project_root = dfx_project_dir(settings)
        self._text("canister-id", canister_id_text(settings))

    def _show_tools(self) -> None:
        if self.found is None:
            self._text("tools-text", "looking for dfx and icp…")
        elif not self.found:
            self._text("tools-text", missing_tools_message())
        else:
            self._text("tools-text", "\n".join(str(t) for t in self.found))
        if self.status is None:
            self._text("network-status", "status unknown: Status asks the network")
        else:
            self._text("network-status", str(self.status))
        have_tool = bool(self.found)
        busy = self.running is not None
        for button_id in ("start", "stop", "deploy"):
            self.query_one(f"#{button_id}", Button).disabled = busy or not have_tool
        self.query_one("#status", Button).disabled = busy

    def watch_running(self) -> None:
        self._show_tools()

    def _logged(self, record: CommandRecord) -> None:
        self.query_one("#command-log", Log).write_lines(log_lines(record))

    # ------------------------------------------------------------------ actions

    @on(Select.Changed, "#network-choice")
    def _network_chosen(self, event: Select.Changed) -> None:
        choice = str(event.value)
        # The Select reports its value when it mounts and when the settings set it: only a
        # change away from the network in force (and not already overtaken) is a choice.
        stale = event.value != event.select.value
        if stale or choice == network_choice(self.gpt2_app.settings.network):
            return
        self.query_one("#custom-url-row").set_class(choice != "url", "hidden")
        if choice == "url":
            self.query_one("#custom-url", Input).focus()
            return
        self._use_network(choice)

    @on(Input.Submitted, "#custom-url")
    def _url_submitted(self) -> None:
        self._use_custom_url()

    def _use_custom_url(self) -> None:
        url = self.query_one("#custom-url", Input).value.strip()
        if not url.startswith(("http://", "https://")):
            self.report("a replica URL starts with http:// or https://")
            return
        self._use_network(url)

    def _use_network(self, network: str) -> None:
        app = self.gpt2_app
        if network == app.settings.network:
            return
        try:
            app.apply_settings(replace(app.settings, network=network))
        except EXPECTED_ERRORS as e:
            self.report(e)

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        actions: dict[str, Callable[[], None]] = {
            "use-url": self._use_custom_url,
            "start": self.action_start,
            "stop": self.action_stop_network,
            "status": self.action_refresh,
            "deploy": self.action_deploy,
        }
        action = actions.get(event.button.id or "")
        if action is not None:
            event.stop()
            action()

    def action_refresh(self) -> None:
        self._run("status", lambda: self._look(refresh=True))

    def action_start(self) -> None:
        self._run("start", lambda: self.tools.start())

    def action_stop_network(self) -> None:
        self._run("stop", lambda: self.tools.stop())

    def action_deploy(self) -> None:
        self._run("deploy", lambda: self.tools.deploy())

    def _look(self, refresh: bool) -> ReplicaStatus:
        self.found = self.tools.tools(refresh=refresh)
        return self.tools.status()

    def _run(self, what: str, fn: Callable[[], object]) -> None:
        if self.running is not None:
            self.app.notify(f"Wait for {self.running} to finish", severity="warning")
            return
        self.running = what
        self._text("network-status", f"{what}…")
        # A daemon thread, not a worker: `dfx start` or `dfx deploy` can take minutes and
        # must not keep the app from quitting (the commands run in their own sessions).
        start_daemon(lambda: self._command(what, fn), f"replica-{what}")

    def _command(self, what: str, fn: Callable[[], object]) -> None:
        try:
            result = fn()
            # `start` and `status` already report the status; the others need a look.
            status = result if isinstance(result, ReplicaStatus) else self._look(refresh=False)
        except EXPECTED_ERRORS as e:
            self.later(self._command_done, what, None, e)
        except Exception as e:  # a bug; no worker reports it here, so the user must see it
            self.later(self._command_done, what, None, RuntimeError(f"{type(e).__name__}: {e}"))
        else:
            self.later(self._command_done, what, status, None, result)

    def _command_done(
        self,
        what: str,
        status: ReplicaStatus | None,
        error: BaseException | None,
        result: object = None,
    ) -> None:
        self.running = None
        if status is not None:
            self.status = status
        self._show_tools()
        if error is not None:
            self.report(error, title=what.capitalize())
            return
        app = self.gpt2_app
        if what == "deploy":
            cid = getattr(result, "canister_id", None)
            app.notify(f"Deployed gpt2_backend{f': {cid}' if cid else ''}", title="Deploy")
            self._sync_settings()
            if app.settings.network == "local":
                app.reconnect()
        elif what == "start":
            if status is not None and status.running:
                app.notify("The local network is running", title="Start")
                if app.settings.network == "local" and app.connection is None:
                    app.reconnect()
            else:
                url = status.url if status is not None else "its address"
                app.notify(f"Started, but nothing answers at {url} yet", severity="warning")
        elif what == "stop":
            app.notify("The local network stopped", title="Stop")
