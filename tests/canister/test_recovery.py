"""Recovering from states a user cannot fix by hand: a failed `setup_model` changes
nothing, another file's bytes in an upload, damaged stable memory."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from gpt2_chat.client.canister import (
    CanisterError,
    InvalidModel,
    NoModel,
    Sampling,
    StoredModelCorrupt,
)
from gpt2_chat.client.upload import Progress, upload_model
from tests.canister.malformed import rename
from tests.support import OpenCanister, model_bytes, upload


def test_a_failed_setup_model_changes_nothing(open_canister: OpenCanister) -> None:
    data = model_bytes("small64")
    c = open_canister()
    c.upload_model_bytes_chunks(data[:100_000])  # the seed's flow, interrupted
    before = c.upload_state()
    with pytest.raises(CanisterError, match="truncated"):
        c.setup_model()
    assert c.upload_state() == before
    assert not before.complete and before.sha256 is None
    c.upload_model_bytes_chunks(data[100_000:])  # the upload goes on
    assert c.setup_model().done
    assert c.model_inference(2, [1, 2])


def test_upload_recovers_from_another_files_bytes(
    open_canister: OpenCanister, tmp_path: Path
) -> None:
    data, other = model_bytes("small64"), model_bytes("head8")
    path = tmp_path / "a.safetensors"
    path.write_bytes(data)
    c = open_canister()
    c.upload_begin(len(data), hashlib.sha256(data).hexdigest())
    c.upload_chunk(0, data[:100_000])
    c.upload_model_bytes_chunks(other[:50_000])  # another file's bytes appended
    phases: list[str] = []

    def seen(p: Progress) -> None:
        phases.append(p.phase)

    result = upload_model(c, path, seen)
    assert result.restarted and "restart" in phases
    assert c.model_info().loaded
    again = upload_model(c, path)  # and from then on all is well
    assert again.already_uploaded and not again.restarted


def _stable(tmp_path: Path) -> Path:
    return tmp_path / "state" / "stable.bin"


@pytest.mark.parametrize("damage", ["garbage-record", "garbage-length", "truncated"])
def test_damaged_stable_memory_comes_up_empty_and_recovers(
    open_canister: OpenCanister, tmp_path: Path, damage: str
) -> None:
    data = model_bytes("head8")
    c = open_canister()
    upload(c, data)
    c.backend.close()
    stable = bytearray(_stable(tmp_path).read_bytes())
    if damage == "garbage-record":
        stable[4:400] = bytes(range(256)) + bytes(140)
    elif damage == "garbage-length":
        stable[0:4] = b"\xff\xff\xff\x7f"
    else:
        del stable[2 * 64 * 1024 :]
        # The runtime itself refuses a stable.bin shorter than it recorded (DamagedState);
        # record the shorter size, so what is left to catch it is the canister's own record.
        meta_path = tmp_path / "state" / "canister.json"
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps({**meta, "stable_bytes": len(stable)}))
    _stable(tmp_path).write_bytes(bytes(stable))

    c = open_canister()  # post_upgrade must not trap
    info = c.model_info()
    kind = "Truncated" if damage == "truncated" else "UnreadableRecord"
    assert info.upload.damage is not None and info.upload.damage.kind == kind
    assert not info.loaded and info.upload.received_bytes == 0
    c.upload_clear()
    assert c.upload_state().damage is None
    upload(c, data)
    assert c.model_info().loaded


def test_a_damaged_model_file_is_caught_by_its_sha256(
    open_canister: OpenCanister, tmp_path: Path
) -> None:
    data = model_bytes("head8")
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    c = open_canister()
    upload(c, data)
    c.backend.close()
    stable = bytearray(_stable(tmp_path).read_bytes())
    stable[64 * 1024 + len(data) - 7] ^= 0x01  # one bit of the last weight
    _stable(tmp_path).write_bytes(bytes(stable))

    c = open_canister()
    info = c.model_info()
    assert info.upload.damage is not None and info.upload.damage.kind == "Sha256Mismatch"
    assert not info.loaded
    with pytest.raises(StoredModelCorrupt):
        c.load_model()
    with pytest.raises(NoModel):
        c.session_create(Sampling())
    c.upload_finalize()  # not a way around the damage
    assert c.upload_state().damage is not None
    with pytest.raises(StoredModelCorrupt):
        c.load_model()
    result = upload_model(c, path)  # the client starts over by itself
    assert result.restarted and c.model_info().loaded
    assert c.upload_state().damage is None


def test_model_info_reports_the_cycle_balance(open_canister: OpenCanister) -> None:
    # The embedded runtime holds no cycles; the field is there and decodes.
    assert open_canister().model_info().cycles == 0


def test_a_huge_layer_index_is_a_prompt_clean_error(open_canister: OpenCanister) -> None:
    c = open_canister()
    data = rename(model_bytes("head8"), "h.0.ln_1.weight", "h.4000000000.ln_1.weight")
    upload(c, data, load=False)
    started = time.monotonic()
    with pytest.raises(InvalidModel):
        c.load_model()
    assert time.monotonic() - started < 2
