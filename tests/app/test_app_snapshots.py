"""SVG snapshots of the main screens at 80x24 (pytest-textual-snapshot).

Deterministic by construction: relative paths (cwd is the test's directory, the state dir
is `state`), the chat's reply and timing figures replaced by fixed ones (the model is
random and the engine's numerics may change), no blinking cursor, no toasts. Update after an intended change with `pytest tests/app --snapshot-update`
and look at the SVGs before committing them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from gpt2_chat.app.chat_view import ChatMessage, TurnStats
from gpt2_chat.client.canister import Gpt2Canister
from gpt2_chat.connect import open_backend
from gpt2_chat.settings import Settings
from tests.app.helpers import CHUNK, RecordingApp, connected, shown, wait_for

SnapCompare = Callable[..., bool]


async def settle(pilot: Pilot[Any]) -> None:
    app = pilot.app
    for widget in app.query(Input):
        widget.cursor_blink = False
    app.clear_notifications()
    await pilot.pause()


def before(
    steps: Callable[[Pilot[Any], RecordingApp], Awaitable[None]],
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, RecordingApp)
        await connected(pilot)
        await steps(pilot, app)
        assert app.messages("error") == []
        await settle(pilot)

    return run_before


def test_chat_screen(snap_compare: SnapCompare, loaded: Path, workdir: Path) -> None:
    (workdir / "settings.json").write_text('{"temperature": 0, "max_new_tokens": 24}')

    async def steps(pilot: Pilot[Any], app: RecordingApp) -> None:
        await pilot.press(*"Hello, who are you?", "enter")
        await wait_for(pilot, lambda: not app.chat_view.busy, "the reply")
        # What a random model says changes with every engine change: show a fixed reply
        # (and fixed timing figures) in the real layout.
        reply = [m for m in app.query(ChatMessage) if m.role == "model"][-1]
        assert reply.text
        reply.text = ""
        reply.append(" I am GPT-2, running inside a canister. I have 2 layers and 16 dims.")
        app.chat_view.show_stats(TurnStats(24, 12.5, 4, 7_700_000, 47, 128))
        await pilot.press(*"Tell me more")

    assert snap_compare(RecordingApp(), run_before=before(steps))


def test_chat_screen_without_a_model(snap_compare: SnapCompare, workdir: Path) -> None:
    async def steps(pilot: Pilot[Any], app: RecordingApp) -> None:
        await wait_for(
            pilot, lambda: "no model" in shown(app, "#chat-status"), "the no-model status"
        )

    assert snap_compare(RecordingApp(), run_before=before(steps))


def test_model_screen_loaded(snap_compare: SnapCompare, loaded: Path) -> None:
    async def steps(pilot: Pilot[Any], app: RecordingApp) -> None:
        await pilot.press("f2")
        app.query_one("#model-path", Input).value = loaded.name
        await wait_for(pilot, lambda: "in the canister" in shown(app, "#file-info"), "the sha")

    assert snap_compare(RecordingApp(), run_before=before(steps))


def test_model_screen_partial_upload(
    snap_compare: SnapCompare, local_model: Path, workdir: Path
) -> None:
    data = local_model.read_bytes()
    backend = open_backend(Settings(state_dir=str(workdir / "state")))
    try:
        canister = Gpt2Canister(backend)
        canister.upload_begin(len(data), hashlib.sha256(data).hexdigest())
        for offset in range(0, 16 * CHUNK, CHUNK):
            canister.upload_chunk(offset, data[offset : offset + CHUNK])
    finally:
        backend.close()

    async def steps(pilot: Pilot[Any], app: RecordingApp) -> None:
        await pilot.press("f2")
        app.query_one("#model-path", Input).value = local_model.name
        await wait_for(pilot, lambda: "resumes at" in shown(app, "#file-info"), "the match")

    assert snap_compare(RecordingApp(), run_before=before(steps))


def test_replica_screen_without_dfx(snap_compare: SnapCompare, workdir: Path, no_dfx: Path) -> None:
    async def steps(pilot: Pilot[Any], app: RecordingApp) -> None:
        await pilot.press("f3")
        view = app.query_one("#replica-view")
        await wait_for(
            pilot,
            lambda: view.status is not None and view.running is None,  # type: ignore[attr-defined]
            "the first look",
        )

    assert snap_compare(RecordingApp(), run_before=before(steps))


def test_settings_screen(snap_compare: SnapCompare, workdir: Path) -> None:
    async def steps(pilot: Pilot[Any], app: RecordingApp) -> None:
        await pilot.press("f4")
        app.query_one("#set-temperature", Input).value = "500"
        await pilot.pause()

    assert snap_compare(RecordingApp(), run_before=before(steps))
