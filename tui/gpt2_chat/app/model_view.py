"""The model tab: the upload panel (choose a file, see what the canister holds, upload and
load it) above the prepare panel (make a canister-ready file)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Input

from .model_prepare import PreparePanel
from .model_upload import UploadPanel
from .widgets import Pane


class ModelView(Pane):
    BINDINGS = [
        Binding("escape", "pause", "Pause upload", tooltip="Pause; Upload resumes later"),
        Binding("ctrl+o", "browse", "Browse", tooltip="Browse for a .safetensors file"),
        Binding("ctrl+r", "refresh", "Refresh", tooltip="Ask the canister what it holds"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="model-scroll"):
            yield UploadPanel(id="upload-panel")
            yield PreparePanel(id="prepare-panel")

    @property
    def upload_panel(self) -> UploadPanel:
        return self.query_one(UploadPanel)

    @property
    def prepare_panel(self) -> PreparePanel:
        return self.query_one(PreparePanel)

    @property
    def uploading(self) -> bool:
        return self.upload_panel.uploading

    @property
    def preparing(self) -> bool:
        return self.prepare_panel.preparing

    def on_tab_shown(self) -> None:
        self.query_one("#model-path", Input).focus()
        self.gpt2_app.refresh_model_info()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pause":
            return self.uploading
        return True

    @on(PreparePanel.Prepared)
    def _prepared(self, event: PreparePanel.Prepared) -> None:
        self.upload_panel.model_file.choose(event.path, event.size, event.sha256)
        if event.demo and self.gpt2_app.connection is not None and not self.uploading:
            self.upload_panel.action_upload()  # a demo model is one step: up and loaded

    def action_upload(self) -> None:
        self.upload_panel.action_upload()

    def action_pause(self) -> None:
        self.upload_panel.action_pause()

    def action_cancel(self) -> None:
        self.upload_panel.action_cancel()

    def action_browse(self) -> None:
        self.upload_panel.action_browse()

    def action_refresh(self) -> None:
        self.gpt2_app.refresh_model_info()
