"""IC certificates, verified: hash tree, BLS signature, subnet delegation, time.

As the IC interface specification ("Certification", "Canister ranges", "Delegation")
defines it and agent-js implements it (dfinity/agent-js packages/agent/src/certificate.ts):

* the tree's root hash is rebuilt from the tree (domain-separated SHA-256 per node kind);
* the signature is BLS12-381 min-sig (48-byte G1 signature, 96-byte G2 public key, DST
  `BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_`) over `\\x0dic-state-root` ‖ root hash;
* the key is the root key, or, with a delegation, the subnet's key: the delegation's own
  certificate is verified against the root key, must not be delegated itself, must list the
  canister in the subnet's canister ranges (`/subnet/<id>/canister_ranges`, or the sharded
  `/canister_ranges/<id>/<shard>` the v4 endpoints send), and holds the subnet's
  DER-encoded key at `/subnet/<id>/public_key`;
* `/time` must be within MAX_CLOCK_SKEW_S of this computer's clock (not checked for the
  delegation, which the replica refreshes only every few minutes).

BLS binding: `py-arkworks-bls12381` (crate-crypto's Python bindings of arkworks' BLS12-381)
ships manylinux/macOS/Windows wheels, exposes RFC 9380 hash-to-G1 with a caller-chosen DST,
subgroup-checked point decoding and a multi-pairing check, which is the whole min-sig
verification. `pyblst` also installs as a wheel but exposes bare `miller_loop` and
`final_verify` with no documented subgroup checks, so more of the scheme would live here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
from py_arkworks_bls12381 import GT, G1Point, G2Point

from gpt2_chat.backends.replica.errors import CertificateInvalid

#: The IC mainnet's root public key (DER), public and fixed since genesis; the same bytes
#: as `IC_ROOT_KEY` in dfinity/agent-js packages/agent/src/agent/http/index.ts and
#: dfinity/agent-rs ic-agent/src/agent/mod.rs.
MAINNET_ROOT_KEY = bytes.fromhex(
    "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100814c0e6ec71fab"
    "583b08bd81373c255c3c371b2e84863c98a4f1e08b74235d14fb5d9c0cd546d9685f913a0c0b2cc5341583bf"
    "4b4392e467db96d65b9bb4cb717112f8472e0d5a4d14505ffd7484b01291091c5f87b98883463f98091a0baaae"
)
#: DER prefix of a BLS12-381 G2 public key (interface spec, "Certificate"); 96 key bytes follow.
BLS_KEY_DER_PREFIX = bytes.fromhex(
    "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100"
)
BLS_DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
#: agent-js and agent-rs accept certificates up to 5 minutes from the local clock.
MAX_CLOCK_SKEW_S = 5 * 60

#: cbor2 decodes arrays as lists, or as tuples inside an immutable (tagged) map.
Tree = list[Any] | tuple[Any, ...]


# ---------------------------------------------------------------------- hash trees


def _domain(name: bytes) -> bytes:
    return bytes([len(name)]) + name


def root_hash(tree: Tree) -> bytes:
    """The tree's root hash (interface spec, "Encoding of certificates": `reconstruct`)."""
    kind = _node_kind(tree)
    if kind == 0:
        return hashlib.sha256(_domain(b"ic-hashtree-empty")).digest()
    if kind == 1:
        return hashlib.sha256(
            _domain(b"ic-hashtree-fork") + root_hash(tree[1]) + root_hash(tree[2])
        ).digest()
    if kind == 2:
        return hashlib.sha256(
            _domain(b"ic-hashtree-labeled") + _blob(tree[1]) + root_hash(tree[2])
        ).digest()
    if kind == 3:
        return hashlib.sha256(_domain(b"ic-hashtree-leaf") + _blob(tree[1])).digest()
    pruned = _blob(tree[1])
    if len(pruned) != 32:
        raise CertificateInvalid("a pruned hash-tree node that is not a SHA-256 hash")
    return pruned


def _node_kind(tree: Any) -> int:
    arity = {0: 1, 1: 3, 2: 3, 3: 2, 4: 2}
    if not isinstance(tree, list | tuple) or not tree or tree[0] not in arity:
        raise CertificateInvalid("a malformed hash tree")
    kind: int = tree[0]
    if len(tree) != arity[kind]:
        raise CertificateInvalid("a malformed hash tree")
    return kind


def _blob(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise CertificateInvalid("a hash-tree label or leaf that is not a blob")
    return bytes(value)


def _children(tree: Tree) -> Iterator[Tree]:
    """The labeled nodes (and leaves) directly under `tree`, through its forks."""
    kind = _node_kind(tree)
    if kind == 1:
        yield from _children(tree[1])
        yield from _children(tree[2])
    elif kind in (2, 3):
        yield tree


def subtree(tree: Tree, path: Sequence[bytes]) -> Tree | None:
    """The node at `path`, or None when it is absent or pruned away."""
    node = tree
    for label in path:
        for child in _children(node):
            if child[0] == 2 and _blob(child[1]) == label:
                node = child[2]
                break
        else:
            return None
    return node


def lookup(tree: Tree, path: Sequence[bytes]) -> bytes | None:
    """The leaf value at `path`, or None when the tree does not hold one there."""
    node = subtree(tree, path)
    if node is None or _node_kind(node) != 3:
        return None
    return _blob(node[1])


def labeled_children(tree: Tree, path: Sequence[bytes]) -> Iterator[tuple[bytes, Tree]]:
    """(label, subtree) of each labeled child of the node at `path` (none when absent)."""
    node = subtree(tree, path)
    if node is None:
        return
    for child in _children(node):
        if child[0] == 2:
            yield _blob(child[1]), child[2]


def leb128(data: bytes) -> int:
    value = 0
    for i, byte in enumerate(data):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value
    raise CertificateInvalid("a truncated LEB128 number")


# ---------------------------------------------------------------------- BLS


def bls_public_key(der: bytes) -> bytes:
    """The 96-byte G2 key inside a DER-encoded IC BLS public key."""
    if len(der) != len(BLS_KEY_DER_PREFIX) + 96 or not der.startswith(BLS_KEY_DER_PREFIX):
        raise CertificateInvalid("a public key that is not a DER-encoded BLS12-381 key")
    return der[len(BLS_KEY_DER_PREFIX) :]


def bls_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Min-sig BLS: e(signature, g2) == e(H(message), public_key)."""
    try:
        sig = G1Point.from_compressed_bytes(signature)
        key = G2Point.from_compressed_bytes(public_key)
    except (ValueError, TypeError):
        return False
    if key == G2Point.identity():
        return False
    hashed = G1Point.hash_to_curve(message, BLS_DST)
    return bool(GT.pairing_check([sig, -hashed], [G2Point(), key]))


# ---------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class VerifiedCertificate:
    tree: Tree
    time_ns: int
    #: The subnet the root key delegated to, or None when the root key signed it.
    subnet_id: bytes | None = None

    def lookup(self, *path: bytes) -> bytes | None:
        return lookup(self.tree, path)


def verify_certificate(
    raw: bytes, root_key_der: bytes, canister_id: bytes, now_ns: int | None = None
) -> VerifiedCertificate:
    """The certificate in `raw`, verified for `canister_id` against the root key; raises
    CertificateInvalid naming what failed."""
    fields = _decode(raw, "certificate")
    tree, signature = _tree(fields.get("tree")), fields.get("signature")
    if not isinstance(signature, bytes | bytearray):
        raise CertificateInvalid("a certificate without a signature")
    delegation = fields.get("delegation")
    subnet_id = None
    if delegation is None:
        key_der, signer = root_key_der, "the root key"
    else:
        subnet_id, key_der = _delegated_key(delegation, root_key_der, canister_id)
        signer = "the delegated subnet key"
    _check_signature(tree, bytes(signature), key_der, f"the certificate's signature ({signer})")
    time_ns = _time(tree)
    now = time.time_ns() if now_ns is None else now_ns
    skew_s = (time_ns - now) / 1e9
    if abs(skew_s) > MAX_CLOCK_SKEW_S:
        when = "ahead of" if skew_s > 0 else "behind"
        raise CertificateInvalid(
            f"the certificate's time is {abs(skew_s) / 60:.0f} minutes {when} this "
            "computer's clock: check the clock, or the replica is serving stale state"
        )
    return VerifiedCertificate(tree, time_ns, subnet_id)


def _decode(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, bytes | bytearray):
        raise CertificateInvalid(f"a {what} that is not a blob")
    try:
        decoded = cbor2.loads(bytes(raw))
    except Exception as e:  # cbor2 errors are not ValueErrors
        raise CertificateInvalid(f"a {what} that is not CBOR") from e
    if not isinstance(decoded, Mapping):
        raise CertificateInvalid(f"a {what} that is not a CBOR map")
    return {str(k): v for k, v in decoded.items()}


def _tree(value: Any) -> Tree:
    _node_kind(value)
    tree: Tree = value
    return tree


def _check_signature(tree: Tree, signature: bytes, key_der: bytes, what: str) -> None:
    message = _domain(b"ic-state-root") + root_hash(tree)
    if not bls_verify(bls_public_key(key_der), signature, message):
        raise CertificateInvalid(f"{what} does not verify")


def _time(tree: Tree) -> int:
    value = lookup(tree, [b"time"])
    if value is None:
        raise CertificateInvalid("a certificate without a time")
    return leb128(value)


def _delegated_key(delegation: Any, root_key_der: bytes, canister_id: bytes) -> tuple[bytes, bytes]:
    """The delegation's (subnet id, subnet key), once it checks out."""
    if not isinstance(delegation, Mapping):
        raise CertificateInvalid("a malformed subnet delegation")
    subnet_id = delegation.get("subnet_id")
    if not isinstance(subnet_id, bytes | bytearray):
        raise CertificateInvalid("a subnet delegation without a subnet id")
    subnet_id = bytes(subnet_id)
    inner = _decode(delegation.get("certificate"), "delegation certificate")
    if inner.get("delegation") is not None:
        raise CertificateInvalid("a delegation that is itself delegated")
    tree, signature = _tree(inner.get("tree")), inner.get("signature")
    if not isinstance(signature, bytes | bytearray):
        raise CertificateInvalid("a delegation certificate without a signature")
    _check_signature(tree, bytes(signature), root_key_der, "the subnet delegation's signature")
    if not in_canister_ranges(tree, subnet_id, canister_id):
        raise CertificateInvalid(
            f"the canister is not in the delegated subnet's canister ranges "
            f"(subnet {subnet_id.hex()})"
        )
    key = lookup(tree, [b"subnet", subnet_id, b"public_key"])
    if key is None:
        raise CertificateInvalid("a subnet delegation without the subnet's public key")
    return subnet_id, key


def in_canister_ranges(tree: Tree, subnet_id: bytes, canister_id: bytes) -> bool:
    """Whether the tree assigns `canister_id` to the subnet (flat or sharded ranges)."""
    encoded: list[bytes] = []
    flat = lookup(tree, [b"subnet", subnet_id, b"canister_ranges"])
    if flat is not None:
        encoded.append(flat)
    for _, shard in labeled_children(tree, [b"canister_ranges", subnet_id]):
        value = lookup(shard, [])
        if value is not None:
            encoded.append(value)
    for blob in encoded:
        try:
            ranges = cbor2.loads(blob)
        except Exception as e:  # cbor2 errors are not ValueErrors
            raise CertificateInvalid("canister ranges that are not CBOR") from e
        for pair in ranges if isinstance(ranges, list | tuple) else []:
            if (
                isinstance(pair, list | tuple)
                and len(pair) == 2
                and all(isinstance(end, bytes) for end in pair)
                and pair[0] <= canister_id <= pair[1]
            ):
                return True
    return False
