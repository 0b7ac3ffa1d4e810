"""The help screen (`?`): what the current tab does and every key it has. Esc closes."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

#: What each tab does, in a few lines (its keys come from its bindings).
TAB_HELP = {
    "chat": (
        "Talk to GPT-2 running in the canister. Replies stream in as each generate call "
        "returns; the status line shows tokens/s, calls, instructions per token and the "
        "context used. When a chat outgrows the model's context the oldest turns leave it "
        "and the rest is read again (with progress; Esc stops). Every chat is saved as it "
        "goes: Ctrl+L reopens one. Drag to select text; Ctrl+C copies it. `?` in an empty "
        "message box opens this help."
    ),
    "model": (
        "Choose a prepared .safetensors file (or prepare one from a Hugging Face id) and "
        "upload it to the canister: chunked, verified, resumable after any interruption; "
        "then load it."
    ),
    "replica": (
        "Choose the backend (embedded runtime, local replica, mainnet, a URL); find dfx/icp; "
        "start, stop, check and deploy to a local network."
    ),
    "settings": (
        "Network, canister, identity, state dir, sampling, tokens per call, instruction "
        "budget, theme: validated, saved, applied without a restart."
    ),
}


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
        border-title-style: bold;
    }
    HelpScreen #help-what { margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape,question_mark", "close", "Close")]

    def __init__(self, tab: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.tab = tab
        self.keys = keys

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = f"Help · {self.tab.capitalize()} tab · Esc closes"
            yield Static(TAB_HELP.get(self.tab, ""), id="help-what", markup=False)
            width = max((len(key) for key, _ in self.keys), default=0) + 2
            lines = Text()
            for key, what in self.keys:
                lines.append(f"{key:<{width}}", style="bold")
                lines.append(f"{what}\n")
            yield Static(lines, id="help-keys")

    def action_close(self) -> None:
        self.dismiss(None)
