"""Which principal the client speaks as: a PEM file, a dfx identity, or a local default."""

from __future__ import annotations

import json
import os
from pathlib import Path

from icp_identity.identity import Identity

from gpt2_chat.backends.base import BackendError


def dfx_identity_dir() -> Path:
    return Path(os.environ.get("DFX_CONFIG_ROOT", Path.home())) / ".config" / "dfx" / "identity"


def load_identity(spec: str | None, default_pem: Path | None = None) -> Identity:
    """`spec` is "anonymous", a PEM path or a dfx identity name. Without one: `default_pem`
    (created on first use) when given, else dfx's selected identity."""
    if spec == "anonymous":
        return Identity(anonymous=True)
    if spec is None and default_pem is not None:
        if not default_pem.exists():
            default_pem.parent.mkdir(parents=True, exist_ok=True)
            default_pem.write_bytes(Identity().to_pem())
            default_pem.chmod(0o600)
        return _from_pem(default_pem)
    if spec is not None and (Path(spec).is_file() or spec.endswith(".pem")):
        return _from_pem(Path(spec))
    name = spec or _dfx_selected_identity()
    return _from_pem(dfx_identity_dir() / name / "identity.pem", name)


def _dfx_selected_identity() -> str:
    try:
        data = json.loads((dfx_identity_dir().parent / "identity.json").read_text())
        return str(data.get("default", "default"))
    except (OSError, ValueError):
        return "default"


def _from_pem(path: Path, name: str | None = None) -> Identity:
    try:
        pem = path.read_text()
    except OSError as e:
        what = f"dfx identity {name!r}" if name else f"identity file {path}"
        raise BackendError(f"cannot read {what}: {e.strerror} ({path})") from e
    try:
        return Identity.from_pem(pem)
    except Exception as e:  # the library raises assorted errors for unusable keys
        raise BackendError(f"{path} is not a usable PEM identity: {e}") from e
