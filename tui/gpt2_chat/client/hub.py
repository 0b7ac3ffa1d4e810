"""GPT-2 checkpoints from the Hugging Face hub, through `huggingface_hub`.

Files land in the hub's own cache (``$HF_HOME/hub``, shared with other tools) unless a
`cache_dir` is given. A dropped connection resumes where it stopped (within the run:
huggingface_hub 2 does not keep partial files between runs). A revision (branch, tag or
commit) is resolved to a commit by the first file and the second comes from that same
commit, which the prepared file records. ``$HF_ENDPOINT``, ``$HF_TOKEN`` and
``$HF_HUB_OFFLINE`` work as everywhere else. When the hub cannot be reached, a revision
already in the cache is used as it is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm import tqdm

from gpt2_chat.client.model_format import (
    Cancel,
    PrepareCancelled,
    PrepareError,
    Progress,
    is_cancelled,
)

#: What `prepare` needs of a checkpoint.
FILES = ("config.json", "model.safetensors")
#: Seconds to wait for the hub's first answer.
PROBE_TIMEOUT = 15.0
_COMMIT = re.compile(r"[0-9a-f]{40}")
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def is_model_id(source: str) -> bool:
    return (
        _MODEL_ID.fullmatch(source) is not None
        and ".." not in source
        and not source.endswith((".safetensors", ".json", ".bin"))
    )


@dataclass(frozen=True)
class Checkpoint:
    """A downloaded checkpoint: the folder holding `FILES`, and the commit it is."""

    directory: Path
    commit: str


def download(
    model_id: str,
    cache_dir: Path | None = None,
    *,
    revision: str = "main",
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Checkpoint:
    """Fetch `FILES` of `model_id` at `revision` (or find them in the cache)."""
    if not is_model_id(model_id):
        raise PrepareError(f"{model_id!r} is not a Hugging Face model id")
    # Read now, not when huggingface_hub was imported, so a changed environment applies.
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or constants.ENDPOINT
    where = f"{model_id}@{revision}"
    label = f"cannot download {where} from {endpoint}"
    if _COMMIT.fullmatch(revision) and (cached := _cached(model_id, revision, cache_dir)):
        return cached  # a commit never changes: nothing to ask
    try:
        _probe(model_id, revision, endpoint)
    except (OfflineModeIsEnabled, httpx2.TransportError, HfHubHTTPError) as e:
        if isinstance(e, HfHubHTTPError) and _refused(e):
            raise PrepareError(f"{label}: {_explain(e, revision)}") from e
        # Unreachable or offline: a copy in the cache is as good as it was.
        if cached := _cached(model_id, revision, cache_dir):
            return cached
        raise PrepareError(
            f"{label}: {_describe(e)}; it is not in the cache either (download the checkpoint "
            "elsewhere and pass its directory)"
        ) from e
    commit = revision
    for name in FILES:
        if is_cancelled(cancel):
            raise PrepareCancelled(f"cancelled the download of {where}")
        try:
            path = Path(
                hf_hub_download(
                    model_id,
                    name,
                    revision=commit,
                    cache_dir=cache_dir,
                    endpoint=endpoint,
                    tqdm_class=_progress_bar(f"download {name}", progress, cancel),
                )
            )
        except (HfHubHTTPError, EntryNotFoundError) as e:
            raise PrepareError(f"{label}: {_explain(e, revision)}") from e
        except (httpx2.HTTPError, OSError) as e:
            raise PrepareError(
                f"{label}: {name} interrupted ({_describe(e)}); run again to resume"
            ) from e
        # The cache keeps a commit's files in snapshots/<commit>/: once the first file has
        # resolved `revision`, the others come from the same commit even if it moves on.
        commit = path.parent.name
    return Checkpoint(path.parent, commit)


def _probe(model_id: str, revision: str, endpoint: str) -> None:
    """Ask the hub about `revision` once, without retries: quick when it cannot be reached
    (huggingface_hub retries for half a minute before giving up on an empty cache)."""
    url = hf_hub_url(model_id, FILES[0], revision=revision, endpoint=endpoint)
    get_hf_file_metadata(url, timeout=PROBE_TIMEOUT, endpoint=endpoint)


def _cached(model_id: str, revision: str, cache_dir: Path | None) -> Checkpoint | None:
    path: Path | None = None
    for name in FILES:
        try:
            path = Path(
                hf_hub_download(
                    model_id, name, revision=revision, cache_dir=cache_dir, local_files_only=True
                )
            )
        except LocalEntryNotFoundError:
            return None
    assert path is not None
    return Checkpoint(path.parent, path.parent.name)


def _refused(e: HfHubHTTPError) -> bool:
    """The hub answered no (rather than being down or busy: then the cache may do)."""
    status = e.response.status_code
    return 400 <= status < 500 and status != 429


def _explain(e: Exception, revision: str) -> str:
    if isinstance(e, GatedRepoError):
        return "the model is gated: accept its terms on the hub and set HF_TOKEN"
    if isinstance(e, RepositoryNotFoundError):
        return "no such model (or it is private: set HF_TOKEN)"
    if isinstance(e, RevisionNotFoundError):
        return f"no revision {revision!r}"
    if isinstance(e, EntryNotFoundError):
        return "it has no model.safetensors and config.json (only those are read)"
    return _describe(e)


def _describe(e: Exception) -> str:
    if isinstance(e, OfflineModeIsEnabled):
        return "offline mode (HF_HUB_OFFLINE) is on"
    if isinstance(e, HfHubHTTPError):
        return f"HTTP {e.response.status_code}"
    if isinstance(e, httpx2.TimeoutException):
        return "timed out"
    cause = e.__cause__ or e.__context__
    return str(e) or (str(cause) if cause else type(e).__name__)


def _progress_bar(stage: str, progress: Progress | None, cancel: Cancel | None) -> type[tqdm]:
    """A tqdm class for one `hf_hub_download` that reports to `progress` and stops on
    `cancel` (the partial download stays in the cache and resumes next time); it draws
    nothing. A Xet download opens a second bar for compressed transfer bytes after the one
    for the file's bytes; only the first reports, so the numbers are the file's."""
    bars: list[object] = []

    class Bar(tqdm):  # type: ignore[misc]  # tqdm ships no type hints
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes it; plain tqdm does not
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial") or 0)
            self.reports = not bars
            bars.append(self)

        def update(self, n: float | None = 1) -> bool | None:
            if is_cancelled(cancel):
                raise PrepareCancelled(f"cancelled: {stage}")
            self.done += int(n or 0)
            if progress is not None and self.reports:
                progress(stage, self.done, int(self.total or 0))
            return None

    return Bar
