"""Helpers for driving the app in tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Static

from gpt2_chat.app import Gpt2ChatApp
from gpt2_chat.client.canister import Gpt2Canister

#: GPT2_CHAT_CHUNK_SIZE in the tests: the 3.3 MB model goes up in 50 chunks.
CHUNK = 65536


class ChunkGate:
    """Holds the upload before chunk number `at` (0-based) until `release` is set, so a
    test can pause an upload at a known point."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
        self.at = at
        self.sent = 0
        self.reached = threading.Event()
        self.release = threading.Event()
        original = Gpt2Canister.upload_chunk

        def upload_chunk(canister: Gpt2Canister, offset: int, data: bytes) -> Any:
            if self.sent == self.at:
                self.reached.set()
                if not self.release.wait(20):
                    raise AssertionError("the test never released the upload")
            self.sent += 1
            return original(canister, offset, data)

        monkeypatch.setattr(Gpt2Canister, "upload_chunk", upload_chunk)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def wait_for(
    pilot: Pilot[Any], condition: Callable[[], object], what: str, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def connected(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, Gpt2ChatApp)
    await wait_for(pilot, lambda: app.connection is not None, "the backend to open")
    await pilot.pause()


def text(widget: Widget) -> str:
    """A Static's text, as shown."""
    assert isinstance(widget, Static)
    return str(widget.content)


def shown(app: Gpt2ChatApp, selector: str) -> str:
    return text(app.query_one(selector))


class RecordingApp(Gpt2ChatApp):
    """The app, keeping every notification it showed (toasts expire)."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[tuple[str, str]] = []

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        self.notes.append((severity, message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def messages(self, severity: str | None = None) -> list[str]:
        return [m for s, m in self.notes if severity is None or s == severity]
