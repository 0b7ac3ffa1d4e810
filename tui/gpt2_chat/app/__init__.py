"""The `gpt2-chat` terminal app (Textual): chat, model upload, replica and settings.

`run_app()` is what `gpt2-chat` (no subcommand) and `gpt2-chat tui` start.
"""

from gpt2_chat.app.app import Gpt2ChatApp, run_app

__all__ = ["Gpt2ChatApp", "run_app"]
