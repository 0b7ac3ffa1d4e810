"""The canister's upload: offset checks, resume, sha256 verification, access control,
persistence across restarts (upgrades) — through the real wasm."""

from __future__ import annotations

import hashlib

import pytest
from icp_principal.principal import Principal

from gpt2_chat.client.canister import (
    CanisterError,
    ChunkMismatch,
    NotController,
    Sha256Mismatch,
    UploadGap,
    UploadIncomplete,
)
from gpt2_chat.errors import BackendError
from tests.support import OpenCanister, model_bytes, upload


def test_chunks_resume_after_restart_and_verify(open_canister: OpenCanister) -> None:
    data = model_bytes("head8")
    sha = hashlib.sha256(data).hexdigest()
    c = open_canister()
    c.upload_begin(len(data), sha)
    c.upload_chunk(0, data[:30_000])
    c.backend.close()

    c = open_canister()  # a restart: heap reset, post_upgrade; stable memory kept
    state = c.upload_state()
    assert (state.received_bytes, state.declared_sha256, state.complete) == (30_000, sha, False)
    assert c.upload_wasm_ref_cell_length() == 30_000
    assert c.upload_begin(len(data), sha).received_bytes == 30_000  # same file: resume
    c.upload_chunk(30_000, data[30_000:])
    assert c.upload_finalize().sha256 == sha
    progress = c.load_model()
    assert progress.done and progress.total_tensors == 4 + 12
    assert c.model_info().loaded


def test_retry_is_accepted_once_gap_and_conflict_are_refused(open_canister: OpenCanister) -> None:
    data = model_bytes("head8")
    c = open_canister()
    c.upload_begin(len(data), hashlib.sha256(data).hexdigest())
    c.upload_chunk(0, data[:1000])
    assert c.upload_chunk(0, data[:1000]).received_bytes == 1000
    with pytest.raises(UploadGap) as gap:
        c.upload_chunk(2000, data[2000:3000])
    assert gap.value.expected == 1000
    changed = bytearray(data[500:1500])
    changed[0] ^= 0xFF
    with pytest.raises(ChunkMismatch) as differs:
        c.upload_chunk(500, bytes(changed))
    assert differs.value.expected == 1000
    assert c.upload_state().received_bytes == 1000


def test_wrong_sha256_is_refused_and_nothing_loads(open_canister: OpenCanister) -> None:
    data = model_bytes("head8")
    c = open_canister()
    c.upload_begin(len(data), "ab" * 32)
    c.upload_chunk(0, data)
    with pytest.raises(Sha256Mismatch) as mismatch:
        c.upload_finalize()
    assert (mismatch.value.declared, mismatch.value.received) == (
        "ab" * 32,
        hashlib.sha256(data).hexdigest(),
    )
    assert not c.upload_state().complete
    with pytest.raises(UploadIncomplete) as incomplete:
        c.load_model()
    assert (incomplete.value.received, incomplete.value.size) == (len(data), len(data))


def test_only_controllers_upload_clear_or_load(
    open_canister: OpenCanister, stranger: Principal
) -> None:
    data = model_bytes("head8")
    owner = open_canister()
    upload(owner, data, load=False)
    other = open_canister(caller=stranger)
    for attempt in (
        lambda: other.upload_begin(10, "00" * 32),
        lambda: other.upload_chunk(0, b"x"),
        other.upload_finalize,
        other.upload_clear,
        other.load_model,
    ):
        with pytest.raises(NotController):
            attempt()
    with pytest.raises(CanisterError, match="only a controller"):  # the seed's: text
        other.setup_model()
    # The seed's methods return () and so refuse by trapping; the trap changes nothing.
    with pytest.raises(BackendError, match="only a controller"):
        other.upload_model_bytes_chunks(b"more")
    with pytest.raises(BackendError, match="only a controller"):
        other.upload_wasm_ref_cell_clear()
    assert owner.upload_state().complete


def test_model_is_back_after_restart_without_reupload(open_canister: OpenCanister) -> None:
    c = open_canister()
    upload(c, model_bytes("small64"))
    before = c.model_inference(5, [1, 2, 3])
    c.backend.close()
    c = open_canister()
    assert c.model_info().loaded
    assert c.model_inference(5, [1, 2, 3]) == before
