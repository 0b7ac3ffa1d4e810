"""Which principal the client speaks as: a PEM file, a dfx identity, or a local default.

PEMs as dfx writes them: Ed25519 PKCS#8 (v1, and v2 with the public key; early dfx's v0
with a public key too), secp256k1 SEC1 (`EC PRIVATE KEY`, optionally after an
`EC PARAMETERS` block); P-256 works too.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

from icp_identity.identity import Identity

from gpt2_chat.errors import BackendError


class IdentityError(BackendError):
    """The identity could not be loaded; the message says which file and why."""


def default_identity(state_pem: Path) -> Identity:
    """The embedded runtime's default caller: a key kept in its state dir, made once."""
    if not state_pem.exists():
        state_pem.parent.mkdir(parents=True, exist_ok=True)
        state_pem.write_bytes(Identity().to_pem())
        state_pem.chmod(0o600)
    return identity_from_pem_file(state_pem)


def dfx_selected_identity() -> str | None:
    """The identity dfx uses by default (`dfx identity use`), if dfx has one set up."""
    root = dfx_identity_dir()
    try:
        name = str(
            json.loads((root.parent / "identity.json").read_text()).get("default", "default")
        )
    except (OSError, ValueError, AttributeError):
        name = "default"
    return name if (root / name).is_dir() else None


def dfx_identity_dir() -> Path:
    """Where dfx keeps identities (`$DFX_CONFIG_ROOT` moves it, as it does for dfx)."""
    base = os.environ.get("DFX_CONFIG_ROOT")
    return (Path(base) if base else Path.home()) / ".config" / "dfx" / "identity"


def load_identity(spec: str | Identity | None) -> Identity:
    """`anonymous` (or None), a PEM file path, or a dfx identity name -> an Identity."""
    if isinstance(spec, Identity):
        return spec
    if spec is None or spec == "anonymous":
        return Identity(anonymous=True)
    path = Path(spec).expanduser()
    if path.is_file() or spec.endswith(".pem") or os.sep in spec or "/" in spec:
        return identity_from_pem_file(path)
    return _dfx_identity(spec)


def _dfx_identity(name: str) -> Identity:
    folder = dfx_identity_dir() / name
    pem = folder / "identity.pem"
    if pem.is_file():
        return identity_from_pem_file(pem, label=f"dfx identity `{name}`")
    export = f"`dfx identity export {name} > {name}.pem` and pass that file as the identity"
    if (folder / "identity.pem.encrypted").is_file():
        raise IdentityError(
            f"dfx identity `{name}` is password-protected, which this app cannot decrypt: "
            f"export it with {export}"
        )
    try:
        config = json.loads((folder / "identity.json").read_text())
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict) and "hsm" in config:
        raise IdentityError(f"dfx identity `{name}` lives on a hardware security module: {export}")
    if isinstance(config, dict) or folder.is_dir():
        # Newer dfx keeps keys in the system keyring and writes only identity.json.
        raise IdentityError(
            f"dfx identity `{name}` has no identity.pem (it is probably kept in the system "
            f"keyring): export it with {export}"
        )
    raise IdentityError(
        f"no dfx identity named `{name}` (looked for {pem}); `dfx identity list` shows them, "
        "or pass a PEM file or `anonymous`"
    )


def identity_from_pem_file(path: Path, label: str | None = None) -> Identity:
    what = label or f"identity file {path}"
    try:
        text = path.read_text()
    except OSError as e:
        raise IdentityError(f"cannot read {what}: {e.strerror or e} ({path})") from e
    try:
        return identity_from_pem(text)
    except IdentityError as e:
        raise IdentityError(f"{what} ({path}): {e}") from e


def identity_from_pem(text: str) -> Identity:
    if "ENCRYPTED" in text:
        raise IdentityError("the key is encrypted; export an unencrypted PEM")
    if "-----BEGIN" not in text:
        raise IdentityError("not a PEM file")
    try:
        identity = Identity.from_pem(text)
    except Exception as first:  # ecdsa raises assorted types for keys it cannot parse
        seed = _ed25519_seed(text)
        if seed is None:
            raise IdentityError(
                f"not an Ed25519, secp256k1 or P-256 private key ({first})"
            ) from first
        identity = Identity(privkey=seed.hex(), type="ed25519")
    return identity


_ED25519_OID = bytes.fromhex("06032b6570")


def _ed25519_seed(text: str) -> bytes | None:
    """The 32-byte seed of an Ed25519 PKCS#8 key the strict parser refused (early dfx wrote
    version 0 with an attached public key). The seed is the OCTET STRING inside the
    privateKey OCTET STRING: 04 22 04 20 <32 bytes>."""
    match = re.search(r"-----BEGIN PRIVATE KEY-----(.*?)-----END PRIVATE KEY-----", text, re.S)
    if not match:
        return None
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
    except ValueError:
        return None
    at = der.find(_ED25519_OID)
    if at < 0:
        return None
    inner = der.find(b"\x04\x22\x04\x20", at)
    if inner < 0 or len(der) < inner + 4 + 32:
        return None
    return der[inner + 4 : inner + 36]
