"""The model tab through Textual's pilot: upload with progress, pause and resume (also after
a restart), cancel, prepare, and the canister state it shows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from textual.widgets import Button, Input, ProgressBar

from tests.app.helpers import CHUNK, ChunkGate, RecordingApp, connected, run, shown, wait_for

SIZE = (100, 30)


async def choose_and_upload(pilot: object, app: RecordingApp, path: str) -> None:
    await pilot.press("f2")  # type: ignore[attr-defined]
    path_input = app.query_one("#model-path", Input)
    assert path_input.has_focus
    path_input.value = path
    await pilot.press("enter")  # type: ignore[attr-defined]


def test_upload_shows_progress_pauses_and_resumes(
    local_model: Path, chunk_gate: Callable[[int], ChunkGate]
) -> None:
    gate = chunk_gate(10)
    size = local_model.stat().st_size

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            assert "empty" in shown(app, "#canister-state")
            await choose_and_upload(pilot, app, local_model.name)
            await wait_for(pilot, gate.reached.is_set, "the upload to reach chunk 10")
            await wait_for(
                pilot,
                lambda: "MB/s" in shown(app, "#upload-text"),
                "bytes, MB/s and ETA on screen",
            )
            bar = app.query_one("#upload-bar", ProgressBar)
            assert bar.total == size and 0 < bar.progress < size
            upload_text = shown(app, "#upload-text")
            assert f"/{size / 1e6:.1f} MB · " in upload_text and "ETA" in upload_text
            assert app.model_view.uploading
            assert not app.query_one("#pause", Button).disabled

            await pilot.press("escape")  # pause
            gate.release.set()
            await wait_for(pilot, lambda: not app.model_view.uploading, "the upload to pause")
            received = 11 * CHUNK  # the held chunk was already on its way
            await wait_for(
                pilot,
                lambda: f"{received:,} of {size:,}" in shown(app, "#canister-state"),
                "the canister's partial state",
            )
            assert any("paused" in m for m in app.messages())
            assert str(app.query_one("#upload", Button).label) == "Resume"
            assert app.model_info is not None and not app.model_info.loaded

            await pilot.press("f2")
            app.query_one("#model-path", Input).focus()
            await pilot.press("enter")  # resume
            await wait_for(
                pilot,
                lambda: app.model_info is not None and app.model_info.loaded,
                "the model to be loaded",
            )
            await wait_for(pilot, lambda: not app.model_view.uploading, "the upload to end")
            assert f"resumed at byte {received:,}" in shown(app, "#upload-text")
            assert shown(app, "#load-text") == "loaded"
            assert app.query_one("#load-bar", ProgressBar).percentage == 1
            assert shown(app, "#canister-state").startswith("loaded: 2 layers · 16 dims")
            assert "GPT-2 2×16 F32 · sha " in shown(app, "#connection-bar")
            assert app.messages("error") == []

    run(scenario())


def test_upload_resumes_after_the_app_restarts(
    local_model: Path, workdir: Path, chunk_gate: Callable[[int], ChunkGate]
) -> None:
    gate = chunk_gate(5)

    async def first_run() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await choose_and_upload(pilot, app, local_model.name)
            await wait_for(pilot, gate.reached.is_set, "the upload to reach chunk 5")
            await pilot.press("escape")
            gate.release.set()
            await wait_for(pilot, lambda: not app.model_view.uploading, "the upload to pause")
        # Leaving run_test closed the backend: the state dir is free again.

    async def second_run() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f2")
            await wait_for(
                pilot,
                lambda: "partial" in shown(app, "#canister-state"),
                "the partial upload to show",
            )
            # The app remembered the file; the canister, how far it got.
            assert app.query_one("#model-path", Input).value == local_model.name
            assert str(app.query_one("#upload", Button).label) == "Resume"
            await wait_for(
                pilot, lambda: "resumes at" in shown(app, "#file-info"), "the file to match"
            )
            await pilot.press("enter")
            await wait_for(
                pilot,
                lambda: app.model_info is not None and app.model_info.loaded,
                "the model to be loaded",
            )
            await wait_for(pilot, lambda: not app.model_view.uploading, "the upload to end")
            assert f"resumed at byte {6 * CHUNK:,}" in shown(app, "#upload-text")
            assert app.messages("error") == []

    run(first_run())
    assert json.loads((workdir / "recent.json").read_text())["model_path"] == local_model.name
    run(second_run())


def test_cancel_discards_the_partial_upload(
    local_model: Path, chunk_gate: Callable[[int], ChunkGate]
) -> None:
    gate = chunk_gate(3)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await choose_and_upload(pilot, app, local_model.name)
            await wait_for(pilot, gate.reached.is_set, "the upload to start")
            await pilot.click("#cancel")
            gate.release.set()
            await wait_for(pilot, lambda: not app.model_view.uploading, "the upload to stop")
            await wait_for(
                pilot, lambda: "empty" in shown(app, "#canister-state"), "an empty canister"
            )
            assert "discarded" in shown(app, "#upload-text")
            assert str(app.query_one("#upload", Button).label) == "Upload"

    run(scenario())


def test_upload_refuses_a_missing_file_with_a_message(workdir: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await choose_and_upload(pilot, app, "nowhere.safetensors")
            await pilot.pause()
            assert "no such file: nowhere.safetensors" in shown(app, "#file-info")
            assert app.messages("error") == ["no such file: nowhere.safetensors"]
            assert not app.model_view.uploading

    run(scenario())


def test_browse_picks_a_file(local_model: Path) -> None:
    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f2", "ctrl+o")
            tree = app.query_one("#file-tree")
            assert tree.display and tree.has_focus
            # The tree lists the working dir: the model file (dirs first, then files).
            await wait_for(pilot, lambda: tree.root.children, "the tree to load")  # type: ignore[attr-defined]
            names = [node.data.path.name for node in tree.root.children]  # type: ignore[attr-defined]
            assert names == ["state", local_model.name]  # dirs first; only .safetensors files
            await pilot.press("down", "down", "enter")
            await wait_for(
                pilot,
                lambda: app.query_one("#model-path", Input).value == local_model.name,
                "the path to be filled in",
            )
            assert not app.query_one("#file-tree").display
            await wait_for(
                pilot, lambda: "sha256" in shown(app, "#file-info"), "size and sha256 shown"
            )
            assert shown(app, "#file-info").startswith(f"{local_model.stat().st_size:,} bytes")

    run(scenario())


def test_prepare_from_a_checkpoint_dir_then_from_an_unreachable_hub(workdir: Path) -> None:
    from tests.support import CLI_FIXTURE

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f2")
            source = app.query_one("#hf-source", Input)
            source.value = str(CLI_FIXTURE)
            source.focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: not app.model_view.preparing, "prepare to finish")
            out = workdir / "models" / "gpt2-random-50257.safetensors"
            assert out.is_file()
            assert (
                app.query_one("#model-path", Input).value == "models/gpt2-random-50257.safetensors"
            )
            assert shown(app, "#prepare-text").startswith("prepared models/gpt2-random-50257")

            source.value = "gpt2"
            await pilot.press("enter")
            await wait_for(pilot, lambda: not app.model_view.preparing, "prepare to fail")
            errors = app.messages("error")
            assert len(errors) == 1 and "gpt2" in errors[0], errors
            assert "Traceback" not in errors[0]

    run(scenario())
