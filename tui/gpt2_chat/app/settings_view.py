"""The settings tab: a validated form over `Settings`, saved to the config file and applied
at once (the backend is reopened when a connection setting changed; the theme changes live)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Select

from gpt2_chat.errors import EXPECTED_ERRORS
from gpt2_chat.settings import (
    InvalidSetting,
    Settings,
    default_state_dir,
    parse_instruction_count,
)

from .fmt import short_path
from .widgets import OneLine, Pane, SectionTitle


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    #: "text" (required), "optional" (blank = None), "int", "optional-int", "float"
    kind: str
    placeholder: str = ""


CONNECTION = [
    Field("network", "Network", "text", "embedded, local, ic or a replica URL"),
    Field("canister", "Canister id", "optional", "gpt2_backend (the id dfx gave it)"),
    Field("identity", "Identity", "optional", "PEM file, dfx identity or anonymous"),
    Field("state_dir", "State dir", "optional", ""),
]
SAMPLING = [
    Field("temperature", "Temperature", "float", "0 = greedy"),
    Field("top_k", "Top-k", "int", "0 = off"),
    Field("top_p", "Top-p", "float", "1 = off"),
    Field("seed", "Seed", "int"),
    Field("max_new_tokens", "Max new tokens", "int", "per reply, 1-1024"),
    Field("tokens_per_call", "Tokens per call", "int", "1-1024"),
    Field("instruction_budget", "Instr. per call", "optional-int", "canister default (30B)"),
]
FIELDS = CONNECTION + SAMPLING


def parse_field(field: Field, raw: str) -> object:
    """The value of one input; InvalidSetting naming the field when it does not parse."""
    text = raw.strip().replace("_", "")
    if field.kind in ("optional", "optional-int") and not text:
        return None
    if not text:
        raise InvalidSetting(field.name, f"{field.label}: required")
    if field.kind in ("text", "optional"):
        return raw.strip()
    try:
        if field.name == "instruction_budget":
            return parse_instruction_count(text)
        if field.kind in ("int", "optional-int"):
            return int(text)
        return float(text)
    except ValueError:
        kind = "a whole number" if "int" in field.kind else "a number"
        raise InvalidSetting(field.name, f"{field.label}: {raw.strip()!r} is not {kind}") from None


def parse_form(values: dict[str, str], base: Settings) -> Settings:
    """`base` with the form's values; InvalidSetting (the first problem, as the form says it)."""
    changes = {f.name: parse_field(f, values[f.name]) for f in FIELDS}
    settings = replace(base, **changes)  # type: ignore[arg-type]
    try:
        settings.validate()
    except InvalidSetting as e:
        raise InvalidSetting(e.field, form_message(e)) from None
    return settings


def form_message(error: InvalidSetting) -> str:
    """ "top_p must be in (0, 1]" -> "Top-p must be in (0, 1]": the name the form shows."""
    field = next((f for f in FIELDS if f.name == error.field), None)
    message = str(error)
    if field is None or not message.startswith(field.name):
        return message
    return field.label + message[len(field.name) :]


def field_error(field: Field, raw: str, base: Settings) -> str | None:
    """What is wrong with one input on its own (None: nothing), as the form says it."""
    try:
        value = parse_field(field, raw)
        replace(base, **{field.name: value}).validate()  # type: ignore[arg-type]
    except InvalidSetting as e:
        return form_message(e) if e.field == field.name else None
    return None


def form_value(settings: Settings, name: str) -> str:
    value = getattr(settings, name)
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


class SettingsView(Pane):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", tooltip="Save and apply the settings"),
    ]

    _note = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        #: What `fill` last put in each input: an input that differs holds an unsaved edit.
        self._filled: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="settings-scroll"):
            for title, group in (("Connection", CONNECTION), ("Sampling", SAMPLING)):
                yield SectionTitle(title, classes="-first" if title == "Connection" else "")
                for field in group:
                    with Horizontal(classes="row field"):
                        yield Label(field.label, classes="field-label")
                        placeholder = field.placeholder
                        if field.name == "state_dir":
                            placeholder = short_path(default_state_dir())
                        kind = {"int": "integer", "float": "number"}.get(field.kind, "text")
                        yield Input(
                            id=f"set-{field.name}",
                            placeholder=placeholder,
                            type=kind,  # type: ignore[arg-type]
                            compact=True,
                        )
                    # Right under its field: an error must be seen where it is fixed.
                    yield OneLine(id=f"error-{field.name}", classes="field-error hidden")
            yield SectionTitle("Appearance")
            with Horizontal(classes="row field"):
                yield Label("Theme", classes="field-label")
                themes = sorted(self.app.available_themes)
                yield Select(
                    [(t, t) for t in themes], id="set-theme", allow_blank=False, compact=True
                )
            with Horizontal(classes="row buttons"):
                yield Button("Save", id="save", variant="primary", compact=True)
                yield Button("Revert", id="revert", compact=True)
            yield OneLine(id="settings-note")

    def on_mount(self) -> None:
        self.watch(self.gpt2_app, "settings", self._settings_changed, init=True)
        self.watch(self.app, "theme", self._theme_changed, init=True)

    def on_tab_shown(self) -> None:
        self.query_one("#set-network", Input).focus()

    def _settings_changed(self) -> None:
        # A theme chosen here saves the settings too: that must not undo the form's edits.
        self.fill(keep_edits=True)

    def fill(self, keep_edits: bool = False) -> None:
        """The form shows the settings in force (except, with `keep_edits`, the inputs
        the user changed since the last fill)."""
        app = self.gpt2_app
        settings = app.settings
        for field in FIELDS:
            widget = self.query_one(f"#set-{field.name}", Input)
            value = form_value(settings, field.name)
            edited = widget.value != self._filled.get(field.name, widget.value)
            self._filled[field.name] = value
            if not (keep_edits and edited):
                widget.value = value
                self._show_error(field, None)
            source = app.store.override_source(field.name)
            widget.tooltip = f"set by {source} for this run" if source else None
        overridden = [
            f"{f.label} ({app.store.override_source(f.name)})"
            for f in FIELDS
            if app.store.override_source(f.name)
        ]
        note = f"saved in {short_path(app.store.path)}"
        if overridden:
            note += " · for this run: " + ", ".join(overridden)
        self._note = note
        self.query_one("#settings-note", OneLine).update(Text(note))

    def _show_error(self, field: Field, error: str | None) -> None:
        self.query_one(f"#set-{field.name}", Input).set_class(error is not None, "-invalid")
        line = self.query_one(f"#error-{field.name}", OneLine)
        line.set_class(error is None, "hidden")
        line.update(Text(error or ""))

    def _theme_changed(self) -> None:
        select = self.query_one("#set-theme", Select)
        if select.value != self.app.theme:
            with select.prevent(Select.Changed):
                select.value = self.app.theme

    @on(Select.Changed, "#set-theme")
    def _theme_chosen(self, event: Select.Changed) -> None:
        theme = str(event.value)
        if theme != self.app.theme:
            self.app.theme = theme  # the app saves it

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        field = next((f for f in FIELDS if event.input.id == f"set-{f.name}"), None)
        if field is None:
            return
        self._show_error(field, field_error(field, event.value, self.gpt2_app.settings))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id and event.input.id.startswith("set-"):
            event.stop()
            self.action_save()

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#revert")
    def _revert_pressed(self) -> None:
        self.fill()
        self.app.notify("Reverted to the saved settings", timeout=3)

    def values(self) -> dict[str, str]:
        return {f.name: self.query_one(f"#set-{f.name}", Input).value for f in FIELDS}

    def action_save(self) -> None:
        app = self.gpt2_app
        try:
            new = parse_form(self.values(), replace(app.settings, theme=app.theme))
        except InvalidSetting as e:
            self._mark_invalid(e.field, str(e))
            self.report(f"Not saved: {e}", title="Settings")
            return
        try:
            changed = app.apply_settings(new)
        except EXPECTED_ERRORS as e:
            self.report(f"Not saved: {e}", title="Settings")
            return
        self.fill()  # as saved: 2_000_000_000 reads 2000000000 now
        if not changed:
            app.notify("Nothing changed", timeout=3)
            return
        message = "Saved and applied"
        if any(f.name in changed for f in CONNECTION):
            message += "; reconnecting"
        app.notify(message, title="Settings", timeout=4)

    def _mark_invalid(self, name: str, message: str) -> None:
        field = next((f for f in FIELDS if f.name == name), None)
        if field is None:  # a setting the form does not show (the theme)
            return
        self._show_error(field, message)
        self.query_one(f"#set-{name}", Input).focus()
        self.query_one(f"#error-{name}", OneLine).scroll_visible()
