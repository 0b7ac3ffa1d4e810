"""Certificate verification: a real mainnet certificate with its public root key, and
certificates signed here with generated BLS keys, tampered every way that matters."""

from __future__ import annotations

import time
from typing import Any

import cbor2
import pytest
from icp_principal.principal import Principal
from replica_fakes import ROOT, FakeKey, fork, labeled, leaf

from gpt2_chat.backends.replica.certificate import (
    MAINNET_ROOT_KEY,
    root_hash,
    verify_certificate,
)
from gpt2_chat.backends.replica.errors import CertificateInvalid

# A mainnet certificate (a read_state reply for a call to ivg37-qiaaa-aaaab-aaaga-cai,
# delegated by the root key to subnet pae4o-…), recorded by dfinity/agent-rs and reused as
# SAMPLE_CERT in dfinity/agent-js packages/agent/src/certificate.test.ts. Signed
# 2022-02-23T07:38:00.652Z; its delegation covers canisters 00000000002000000101 through
# 00000000002fffff0101.
MAINNET_CERTIFICATE = bytes.fromhex(
    "d9d9f7a364747265658301830182045820250f5e26868d9c1ea7ab29cbe9c15bf1c47c0d7605e803e39e375a7f"
    "e09c6ebb830183024e726571756573745f7374617475738301820458204b268227774ec77ff2b37ecb12157329"
    "d54cf376694bdd59ded7803efd82386f83025820edad510eaaa08ed2acd4781324e6446269da6753ec17760f20"
    "6bbe81c465ff528301830183024b72656a6563745f636f64658203410383024e72656a6563745f6d6573736167"
    "658203584443616e69737465722069766733372d71696161612d61616161622d61616167612d63616920686173"
    "206e6f20757064617465206d6574686f64202772656769737465722783024673746174757382034872656a6563"
    "7465648204582097232f31f6ab7ca4fe53eb6568fc3e02bc22fe94ab31d010e5fb3c642301f1608301820458"
    "203a48d1fc213d49307103104f7d72c2b5930edba8787b90631f343b3aa68a5f0a83024474696d65820349e2"
    "dc939091c696eb16697369676e6174757265583089a2be21b5fa8ac9fab1527e041327ce899d7da971436a1f"
    "2165393947b4d942365bfe5488710e61a619ba48388a21b16a64656c65676174696f6ea2697375626e65745f"
    "6964581dd77b2a2f7199b9a8aec93fe6fb588661358cf12223e9a3af7b4ebac4026b63657274696669636174"
    "65590231d9d9f7a26474726565830182045820ae023f28c3b9d966c8fb09f9ed755c828aadb5152e00aaf700"
    "b18c9c067294b483018302467375626e6574830182045820e83bb025f6574c8f31233dc0fe289ff546dfa1e4"
    "9bd6116dd6e8896d90a4946e830182045820e782619092d69d5bebf0924138bd4116b0156b5a95e25c358ea8"
    "cf7e7161a661830183018204582062513fa926c9a9ef803ac284d620f303189588e1d3904349ab63b6470856"
    "fc4883018204582060e9a344ced2c9c4a96a0197fd585f2d259dbd193e4eada56239cac26087f9c58302581d"
    "d77b2a2f7199b9a8aec93fe6fb588661358cf12223e9a3af7b4ebac402830183024f63616e69737465725f72"
    "616e6765738203581bd9d9f781824a000000000020000001014a00000000002fffff010183024a7075626c69"
    "635f6b657982035885308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c0503020103"
    "61009933e1f89e8a3c4d7fdcccdbd518089e2bd4d8180a261f18d9c247a52768ebce98dc7328a39814a8f911"
    "086a1dd50cbe015e2a53b7bf78b55288893daa15c346640e8831d72a12bdedd979d28470c34823b8d1c3f479"
    "5d9c3984a247132e94fe82045820996f17bb926be3315745dea7282005a793b58e76afeb5d43d1a28ce29d2d"
    "158583024474696d6582034995b8aac0e4eda2ea16697369676e61747572655830ace9fcdd9bc977e05d6328"
    "f889dc4e7c99114c737a494653cb27a1f55c06f4555e0f160980af5ead098acc195010b2f7"
)
MAINNET_SIGNED_AT_NS = 1_645_601_880_652_705_378  # 2022-02-23T07:38:00.652Z
MAINNET_CANISTER = Principal.from_str("ivg37-qiaaa-aaaab-aaaga-cai").bytes

CANISTER = bytes.fromhex("00000000001000010101")
SUBNET_ID = b"\x2a" * 29
SUBNET = FakeKey(0xC0FFEE)


def _reencoded(raw: bytes, **changes: Any) -> bytes:
    fields = {str(k): v for k, v in cbor2.loads(raw).items()}
    fields.update(changes)
    return bytes(cbor2.dumps(fields))


def _reply_tree(value: bytes = b"DIDL\x00\x00") -> list[Any]:
    return labeled(b"request_status", labeled(b"\x01" * 32, labeled(b"reply", leaf(value))))


# ---------------------------------------------------------------------- mainnet


def test_a_real_mainnet_certificate_verifies() -> None:
    certificate = verify_certificate(
        MAINNET_CERTIFICATE, MAINNET_ROOT_KEY, MAINNET_CANISTER, now_ns=MAINNET_SIGNED_AT_NS
    )
    assert certificate.time_ns == MAINNET_SIGNED_AT_NS
    request_id = bytes.fromhex("edad510eaaa08ed2acd4781324e6446269da6753ec17760f206bbe81c465ff52")
    assert certificate.lookup(b"request_status", request_id, b"status") == b"rejected"
    assert certificate.lookup(b"request_status", request_id, b"reject_code") == b"\x03"


@pytest.mark.parametrize(
    "canister_hex", ["00000000002000000101", "000000000020000c0101", "00000000002fffff0101"]
)
def test_the_mainnet_delegation_covers_its_range(canister_hex: str) -> None:
    verify_certificate(
        MAINNET_CERTIFICATE,
        MAINNET_ROOT_KEY,
        bytes.fromhex(canister_hex),
        now_ns=MAINNET_SIGNED_AT_NS,
    )


@pytest.mark.parametrize("canister_hex", ["00000000000000020101", "00000000003000020101"])
def test_the_mainnet_delegation_refuses_other_canisters(canister_hex: str) -> None:
    with pytest.raises(CertificateInvalid, match="not in the delegated subnet's canister ranges"):
        verify_certificate(
            MAINNET_CERTIFICATE,
            MAINNET_ROOT_KEY,
            bytes.fromhex(canister_hex),
            now_ns=MAINNET_SIGNED_AT_NS,
        )


def test_the_mainnet_certificate_with_a_zeroed_signature_is_refused() -> None:
    forged = _reencoded(MAINNET_CERTIFICATE, signature=b"\x00" * 48)
    with pytest.raises(CertificateInvalid, match="signature .*does not verify"):
        verify_certificate(forged, MAINNET_ROOT_KEY, MAINNET_CANISTER, now_ns=MAINNET_SIGNED_AT_NS)


def test_the_mainnet_certificate_is_refused_against_another_root_key() -> None:
    with pytest.raises(CertificateInvalid, match="the subnet delegation's signature does not"):
        verify_certificate(
            MAINNET_CERTIFICATE, ROOT.public_der, MAINNET_CANISTER, now_ns=MAINNET_SIGNED_AT_NS
        )


@pytest.mark.parametrize(("minutes", "word"), [(10, "behind"), (-10, "ahead of")])
def test_the_mainnet_certificate_is_stale_ten_minutes_away(minutes: int, word: str) -> None:
    with pytest.raises(CertificateInvalid, match=f"10 minutes {word} this computer's clock"):
        verify_certificate(
            MAINNET_CERTIFICATE,
            MAINNET_ROOT_KEY,
            MAINNET_CANISTER,
            now_ns=MAINNET_SIGNED_AT_NS + minutes * 60 * 10**9,
        )


# ---------------------------------------------------------------------- generated keys


def test_a_root_signed_certificate_verifies() -> None:
    certificate = verify_certificate(ROOT.certificate(_reply_tree()), ROOT.public_der, CANISTER)
    assert certificate.lookup(b"request_status", b"\x01" * 32, b"reply") == b"DIDL\x00\x00"
    assert abs(certificate.time_ns - time.time_ns()) < 60 * 10**9


def test_a_changed_tree_breaks_the_signature() -> None:
    raw = ROOT.certificate(_reply_tree(b"honest"))
    fields = cbor2.loads(raw)
    tampered_tree = fork(_reply_tree(b"forged"), fields["tree"][2])
    forged = _reencoded(raw, tree=tampered_tree)
    with pytest.raises(CertificateInvalid, match="signature \\(the root key\\) does not verify"):
        verify_certificate(forged, ROOT.public_der, CANISTER)


def test_a_pruned_copy_of_the_tree_still_verifies() -> None:
    """Pruning a subtree to its hash keeps the root hash: verifiers must accept it."""
    tree = fork(_reply_tree(), labeled(b"other", leaf(b"x")))
    raw = ROOT.certificate(tree)
    full = cbor2.loads(raw)["tree"]
    pruned = [1, [1, full[1][1], [4, root_hash(full[1][2])]], full[2]]
    verify_certificate(_reencoded(raw, tree=pruned), ROOT.public_der, CANISTER)


def test_a_certificate_signed_by_another_key_is_refused() -> None:
    with pytest.raises(CertificateInvalid, match="does not verify"):
        verify_certificate(SUBNET.certificate(_reply_tree()), ROOT.public_der, CANISTER)


@pytest.mark.parametrize(("offset_s", "word"), [(-6 * 60, "behind"), (6 * 60, "ahead of")])
def test_stale_or_future_certificates_are_refused(offset_s: int, word: str) -> None:
    raw = ROOT.certificate(_reply_tree(), time_ns=time.time_ns() + offset_s * 10**9)
    with pytest.raises(CertificateInvalid, match=f"6 minutes {word}"):
        verify_certificate(raw, ROOT.public_der, CANISTER)


@pytest.mark.parametrize("sharded", [False, True])
def test_a_delegated_certificate_verifies(sharded: bool) -> None:
    delegation = SUBNET.delegation(
        ROOT, SUBNET_ID, [(CANISTER[:-3] + b"\x00\x01\x01", CANISTER)], sharded=sharded
    )
    raw = SUBNET.certificate(_reply_tree(), delegation=delegation)
    verify_certificate(raw, ROOT.public_der, CANISTER)


@pytest.mark.parametrize("sharded", [False, True])
def test_a_delegation_for_other_canisters_is_refused(sharded: bool) -> None:
    other = bytes.fromhex("00000000005000000101")
    delegation = SUBNET.delegation(ROOT, SUBNET_ID, [(other, other)], sharded=sharded)
    raw = SUBNET.certificate(_reply_tree(), delegation=delegation)
    with pytest.raises(CertificateInvalid, match="not in the delegated subnet's canister ranges"):
        verify_certificate(raw, ROOT.public_der, CANISTER)


def test_a_delegation_not_signed_by_the_root_is_refused() -> None:
    impostor = FakeKey(0xBAD)
    delegation = SUBNET.delegation(impostor, SUBNET_ID, [(CANISTER, CANISTER)])
    raw = SUBNET.certificate(_reply_tree(), delegation=delegation)
    with pytest.raises(CertificateInvalid, match="the subnet delegation's signature does not"):
        verify_certificate(raw, ROOT.public_der, CANISTER)


def test_a_certificate_signed_by_a_key_other_than_the_delegated_one_is_refused() -> None:
    delegation = SUBNET.delegation(ROOT, SUBNET_ID, [(CANISTER, CANISTER)])
    raw = FakeKey(0xBAD).certificate(_reply_tree(), delegation=delegation)
    with pytest.raises(CertificateInvalid, match="signature \\(the delegated subnet key\\)"):
        verify_certificate(raw, ROOT.public_der, CANISTER)


def test_a_delegation_that_is_itself_delegated_is_refused() -> None:
    inner = SUBNET.delegation(ROOT, SUBNET_ID, [(CANISTER, CANISTER)])
    nested_certificate = SUBNET.certificate(
        labeled(b"subnet", labeled(SUBNET_ID, labeled(b"public_key", leaf(SUBNET.public_der)))),
        delegation=inner,
    )
    raw = SUBNET.certificate(
        _reply_tree(), delegation={"subnet_id": SUBNET_ID, "certificate": nested_certificate}
    )
    with pytest.raises(CertificateInvalid, match="a delegation that is itself delegated"):
        verify_certificate(raw, ROOT.public_der, CANISTER)


def test_a_subnet_key_that_is_not_der_is_refused() -> None:
    tree = fork(
        labeled(
            b"canister_ranges",
            labeled(SUBNET_ID, labeled(CANISTER, leaf(bytes(cbor2.dumps([[CANISTER, CANISTER]]))))),
        ),
        labeled(
            b"subnet", labeled(SUBNET_ID, labeled(b"public_key", leaf(SUBNET.public_der[-96:])))
        ),
    )
    delegation = {"subnet_id": SUBNET_ID, "certificate": ROOT.certificate(tree)}
    raw = SUBNET.certificate(_reply_tree(), delegation=delegation)
    with pytest.raises(CertificateInvalid, match="not a DER-encoded BLS12-381 key"):
        verify_certificate(raw, ROOT.public_der, CANISTER)


@pytest.mark.parametrize(
    "raw",
    [b"\xff\x00", bytes(cbor2.dumps([1, 2])), bytes(cbor2.dumps({"tree": [9], "signature": b""}))],
)
def test_malformed_certificates_are_refused(raw: bytes) -> None:
    with pytest.raises(CertificateInvalid):
        verify_certificate(raw, ROOT.public_der, CANISTER)
