"""The model tab through Textual's pilot: upload with progress, pause and resume (also after
a restart), cancel, prepare, and the canister state it shows."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DirectoryTree, Input, ProgressBar, Select

from gpt2_chat.app.confirm import ConfirmScreen
from gpt2_chat.app.fmt import short_path
from gpt2_chat.client import random_model
from gpt2_chat.client.canister import Gpt2Canister, LoadProgress
from gpt2_chat.client.random_model import SHAPES, Shape
from gpt2_chat.connect import open_backend
from gpt2_chat.settings import Settings
from tests.app.helpers import CHUNK, ChunkGate, RecordingApp, connected, run, shown, wait_for
from tests.app.test_app_snapshots import before

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
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("y")
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
            assert not app.query_one("#browser").display
            await wait_for(
                pilot, lambda: "sha256" in shown(app, "#file-info"), "size and sha256 shown"
            )
            assert shown(app, "#file-info").startswith(f"{local_model.stat().st_size:,} bytes")

    run(scenario())


def test_browse_starts_at_the_models_and_goes_anywhere(local_model: Path, workdir: Path) -> None:
    (workdir / "models").mkdir()
    shutil.copyfile(local_model, workdir / "models" / "demo.safetensors")
    (workdir / "elsewhere").mkdir()
    shutil.copyfile(local_model, workdir / "elsewhere" / "far.safetensors")

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f2", "ctrl+o")
            tree = app.query_one("#file-tree", DirectoryTree)
            assert tree.has_focus
            # Where Prepare writes its models.
            assert Path(tree.path).resolve() == (workdir / "models").resolve()
            await wait_for(pilot, lambda: tree.root.children, "the tree to load")
            assert [n.data.path.name for n in tree.root.children] == ["demo.safetensors"]  # type: ignore[union-attr]
            await pilot.press("backspace")  # one folder up, from the tree
            await wait_for(
                pilot, lambda: Path(tree.path).resolve() == workdir.resolve(), "the parent"
            )
            await pilot.click("#browse-up")  # and above the working directory
            await wait_for(
                pilot, lambda: Path(tree.path).resolve() == workdir.parent.resolve(), "above"
            )
            folder = app.query_one("#browse-dir", Input)
            folder.value = str(workdir / "elsewhere")
            folder.focus()
            await pilot.press("enter")
            await wait_for(
                pilot,
                lambda: Path(tree.path).resolve() == (workdir / "elsewhere").resolve(),
                "the typed folder",
            )
            assert tree.has_focus
            await wait_for(pilot, lambda: tree.root.children, "the tree to load")
            await pilot.press("down", "enter")
            await wait_for(
                pilot,
                lambda: app.query_one("#model-path", Input).value == "elsewhere/far.safetensors",
                "the path to be filled in",
            )

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


def footer_keys(app: RecordingApp) -> set[str]:
    """The actions the footer offers now."""
    return {
        binding.action
        for (_node, binding, enabled, _tooltip) in app.screen.active_bindings.values()
        if binding.show and enabled
    }


def test_buttons_leave_the_focus_on_a_live_control(
    local_model: Path, chunk_gate: Callable[[int], ChunkGate]
) -> None:
    gate = chunk_gate(3)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f2")
            app.query_one("#model-path", Input).value = local_model.name
            await pilot.click("#upload")
            await wait_for(pilot, gate.reached.is_set, "the upload to start")
            # The pressed button is disabled now: the focus went to Pause, and the tab's
            # keys are all in the footer.
            assert app.focused is app.query_one("#pause", Button)
            assert {"pause", "browse", "refresh"} <= footer_keys(app)
            await pilot.press("ctrl+o")
            assert app.query_one("#browser").display
            await pilot.press("ctrl+o")
            assert not app.query_one("#browser").display
            await pilot.press("ctrl+r")
            app.query_one("#pause", Button).focus()
            await pilot.press("escape")
            gate.release.set()
            await wait_for(pilot, lambda: not app.model_view.uploading, "the upload to pause")
            assert any("paused" in m for m in app.messages())
            # Pause is disabled in turn: Resume has the focus.
            resume = app.query_one("#upload", Button)
            assert str(resume.label) == "Resume" and app.focused is resume
            assert {"browse", "refresh"} <= footer_keys(app)

    run(scenario())


def test_the_canister_line_says_what_is_true_during_an_upload(
    loaded: Path, workdir: Path, chunk_gate: Callable[[int], ChunkGate]
) -> None:
    other = workdir / "other.safetensors"
    other.write_bytes(bytes(range(256)) * 4096)  # 1 MB: a different file goes up
    gate = chunk_gate(3)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await choose_and_upload(pilot, app, other.name)
            await wait_for(pilot, gate.reached.is_set, "the upload to start")
            # upload_begin unloaded the old model: neither line may still claim it.
            await wait_for(
                pilot,
                lambda: shown(app, "#canister-state") == "uploading, no model loaded",
                "the canister line to follow the upload",
            )
            await wait_for(
                pilot,
                lambda: "loaded" not in shown(app, "#connection-bar"),
                "the connection bar to drop the old model",
            )
            await pilot.press("escape")
            gate.release.set()
            await wait_for(pilot, lambda: not app.model_view.uploading, "the upload to pause")
            await wait_for(
                pilot, lambda: "partial" in shown(app, "#canister-state"), "the partial state"
            )

    run(scenario())


class LoadGate:
    """load_model answers `steps` partial loads (a third each) before the real call, and
    holds each of those calls until the test releases it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, steps: int = 2) -> None:
        self.calls = 0
        self.reached = [threading.Event() for _ in range(steps)]
        self.release = [threading.Event() for _ in range(steps)]
        real = Gpt2Canister.load_model

        def load_model(canister: Gpt2Canister) -> LoadProgress:
            call, self.calls = self.calls, self.calls + 1
            if call >= steps:
                return real(canister)
            self.reached[call].set()
            if not self.release[call].wait(20):
                raise AssertionError("the test never released the load")
            done = 1_000_000 * (call + 1)
            return LoadProgress(call + 1, 3, done, 3_000_000, False, 0)

        monkeypatch.setattr(Gpt2Canister, "load_model", load_model)

    def release_all(self) -> None:
        for event in self.release:
            event.set()


def test_the_load_bar_moves_with_each_load_call(
    local_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = LoadGate(monkeypatch)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await choose_and_upload(pilot, app, local_model.name)
            await wait_for(pilot, gate.reached[0].is_set, "the first load call")
            bar = app.query_one("#load-bar", ProgressBar)
            # Nothing is known before the first call returns: the bar pulses.
            await wait_for(pilot, lambda: bar.total is None, "a pulsing load bar")
            assert shown(app, "#load-text") == "loading: call 1…"
            gate.release[0].set()
            await wait_for(pilot, gate.reached[1].is_set, "the second load call")
            await wait_for(pilot, lambda: bar.total == 3_000_000, "the first call's progress")
            assert bar.progress == 1_000_000
            assert shown(app, "#load-text") == "1.0/3.0 MB · call 2…"
            gate.release[1].set()
            await wait_for(pilot, lambda: not app.model_view.uploading, "the load to end")
            assert bar.percentage == 1 and shown(app, "#load-text") == "loaded"
            assert gate.calls == 3

    try:
        run(scenario())
    finally:
        gate.release_all()  # a failed test leaves no worker waiting


def test_cancel_after_a_pause_asks_then_says_what_happened(
    local_model: Path, chunk_gate: Callable[[int], ChunkGate]
) -> None:
    gate = chunk_gate(3)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await choose_and_upload(pilot, app, local_model.name)
            await wait_for(pilot, gate.reached.is_set, "the upload to start")
            await pilot.press("escape")
            gate.release.set()
            await wait_for(pilot, lambda: not app.model_view.uploading, "the upload to pause")
            await wait_for(
                pilot, lambda: "partial" in shown(app, "#canister-state"), "the partial state"
            )
            assert shown(app, "#upload-text").startswith("paused")

            await pilot.click("#cancel")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            assert "(0.3 MB of 3.3 MB)" in str(app.screen.query_one("#question").render())
            await pilot.press("escape")  # no: nothing is discarded
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
            app.refresh_model_info()
            await pilot.pause(0.2)
            assert "partial" in shown(app, "#canister-state")

            await pilot.click("#cancel")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("y")
            await wait_for(
                pilot, lambda: "empty" in shown(app, "#canister-state"), "an empty canister"
            )
            assert shown(app, "#upload-text") == "cancelled: the partial upload was discarded"
            assert app.query_one("#upload-bar", ProgressBar).progress == 0
            assert app.focused is app.query_one("#upload", Button)

    run(scenario())


def test_cancel_question_snapshot(
    snap_compare: Callable[..., bool], local_model: Path, workdir: Path
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
        for widget in app.query(Input):  # the screen under the question does not blink
            widget.cursor_blink = False
        app.model_view.action_cancel()
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")

    assert snap_compare(RecordingApp(), terminal_size=(80, 24), run_before=before(steps))


TINY = Shape("tiny-test", n_layer=2, n_head=2, n_embd=16, n_ctx=128)


def test_a_demo_model_in_one_step(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SHAPES, TINY.name, TINY)  # gpt2 itself is 500 MB

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f2")
            # Said plainly before anyone presses it.
            assert "talks nonsense" in shown(app, "#demo-note")
            app.query_one("#demo-shape", Select).value = TINY.name
            await pilot.click("#demo")
            await wait_for(
                pilot,
                lambda: app.model_info is not None and app.model_info.loaded,
                "the demo model to be written, uploaded and loaded",
            )
            await wait_for(pilot, lambda: not app.model_view.uploading, "the upload to end")
            out = workdir / "models" / "tiny-test-random.safetensors"
            assert out.is_file()
            assert (
                app.query_one("#model-path", Input).value == "models/tiny-test-random.safetensors"
            )
            assert "talks nonsense" in shown(app, "#prepare-text")
            assert any("talks nonsense" in m for m in app.messages())
            assert shown(app, "#canister-state").startswith("loaded: 2 layers · 16 dims")
            assert app.messages("error") == []

    run(scenario())


def safetensors_metadata(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    metadata: dict[str, str] = header["__metadata__"]
    return metadata


def test_prepare_int8_from_the_app(workdir: Path) -> None:
    from tests.support import CLI_FIXTURE

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f2")
            app.query_one("#prepare-dtype", Select).value = "int8"
            source = app.query_one("#hf-source", Input)
            source.value = str(CLI_FIXTURE)
            source.focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: not app.model_view.preparing, "prepare to finish")
            assert app.messages("error") == []
            out = workdir / "models" / "gpt2-random-50257-int8.safetensors"
            assert safetensors_metadata(out)["dtype"] == "int8"
            assert app.query_one("#model-path", Input).value == short_path(out)

    run(scenario())


def test_prepare_can_be_stopped(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SHAPES, TINY.name, TINY)
    first_tensor = threading.Event()
    release = threading.Event()
    values = random_model._values

    def held_values(name: str, shape: tuple[int, ...], seed: int) -> Any:
        if not first_tensor.is_set():
            first_tensor.set()
            release.wait(20)
        return values(name, shape, seed)

    monkeypatch.setattr(random_model, "_values", held_values)

    async def scenario() -> None:
        app = RecordingApp()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("f2")
            app.query_one("#demo-shape", Select).value = TINY.name
            await pilot.click("#demo")
            await wait_for(pilot, first_tensor.is_set, "the first tensor")
            stop = app.query_one("#prepare-stop", Button)
            assert app.focused is stop  # Demo is disabled now; Stop is live
            await pilot.click("#prepare-stop")
            release.set()
            await wait_for(pilot, lambda: not app.model_view.preparing, "prepare to stop")
            assert shown(app, "#prepare-text") == "stopped: nothing was written"
            assert not list((workdir / "models").glob("*"))
            assert app.messages("error") == []
            assert not app.model_view.uploading

    try:
        run(scenario())
    finally:
        release.set()
