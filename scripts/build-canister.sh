#!/usr/bin/env bash
# Build the gpt2_backend canister into assets/gpt2_backend.wasm.gz (+ .sha256).
#
#   scripts/build-canister.sh            build (rustup wasm target if installed, else Debian)
#   scripts/build-canister.sh --debian   build by the canonical route (Debian rustc-web,
#                                        -Zbuild-std); this is what the committed wasm uses
#   scripts/build-canister.sh --check    rebuild by the canonical route and fail if the result
#                                        differs from the committed assets
#   scripts/build-canister.sh --dfx      what `dfx deploy` runs: build with rustup's wasm target
#                                        when installed, else keep the committed wasm
#                                        (verified against its sha256; nothing installed)
#   --target-dir DIR                     cargo target dir (default: canister/target/wasm-<route>)
#
# Installs what it needs (Debian packages via apt-get, ic-wasm via npm into .tools/).
set -euo pipefail

# ---- pinned inputs ---------------------------------------------------------------------
IC_WASM_VERSION=0.11.1
IC_WASM_NPM_PKG="@icp-sdk/ic-wasm-linux-x64"
# npm tarballs are immutable; pinning the hash guards the one binary we run unverified.
IC_WASM_TGZ_SHA256=91bf40fbc6f5465484bc767236fbc1e63bd1113f4929b80d8710ed3e632c1b51
CRATE=gpt2_backend
WASM_TARGET=wasm32-unknown-unknown
# Only MVP + these proposals: all are accepted by the IC's validator (it rejects threads,
# tail calls, memory64, multi-memory, exceptions, GC, relaxed SIMD). Pinning them instead
# of relying on rustc's default CPU keeps the module stable across compiler upgrades.
# LLVM's loop strength reduction turns `base + constant` addresses into separate adds that
# wasm cannot fold into a load's offset immediate; under IC metering each costs 2 more
# instructions per vector load in the matmul kernels (~25% of all instructions).
CODEGEN_FLAGS=(-C llvm-args=-disable-lsr)
DEBIAN_TARGET_FLAGS=(-C target-cpu=mvp
  -C "target-feature=+simd128,+bulk-memory,+sign-ext,+mutable-globals,+nontrapping-fptoint")

# ---- paths (physical, so --remap-path-prefix matches what cargo passes to rustc) --------
ROOT="$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
WORKSPACE="$ROOT/canister"
DID="$WORKSPACE/$CRATE.did"
ASSETS="$ROOT/assets"
OUT_NAME="$CRATE.wasm.gz"
TOOLS="$ROOT/.tools"

log() { printf '[build-canister] %s\n' "$*" >&2; }
die() { printf '[build-canister] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

MODE=build
FORCE_DEBIAN=0
TARGET_DIR=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --debian) FORCE_DEBIAN=1 ;;
    --check) MODE=check; FORCE_DEBIAN=1 ;;
    --dfx) MODE=dfx ;;
    --target-dir) [[ $# -ge 2 ]] || die "--target-dir needs a directory"; TARGET_DIR="$2"; shift ;;
    --target-dir=*) TARGET_DIR="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

[[ -f "$WORKSPACE/Cargo.toml" ]] || die "no Cargo workspace at $WORKSPACE"
[[ -f "$DID" ]] || die "missing Candid interface $DID"
FIX="run scripts/build-canister.sh --debian and commit assets/$OUT_NAME assets/$OUT_NAME.sha256"
# Fail fast in --check mode rather than after a long build.
if [[ $MODE == check ]] && ! [[ -f "$ASSETS/$OUT_NAME" && -f "$ASSETS/$OUT_NAME.sha256" ]]; then
  die "assets/$OUT_NAME or its .sha256 is missing; $FIX"
fi

# ---- dfx: prefer the committed wasm to installing a toolchain ------------------------------
if [[ $MODE == dfx ]]; then
  if command -v rustup >/dev/null &&
    (cd "$WORKSPACE" && rustup target list --installed 2>/dev/null) | grep -qx "$WASM_TARGET"; then
    MODE=build
  else
    (cd "$ASSETS" && sha256sum --check --quiet "$OUT_NAME.sha256") ||
      die "assets/$OUT_NAME does not match its sha256; $FIX"
    log "no rustup wasm32 target: deploying the committed assets/$OUT_NAME"
    exit 0
  fi
fi

# ---- package installation ----------------------------------------------------------------
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $*"; fi
}

APT_UPDATED=0
# Install Debian packages that are not installed yet (no-op when all are present).
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get: install them by hand"
  log "installing Debian packages: ${missing[*]}"
  if [[ $APT_UPDATED -eq 0 ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Tools every route needs: wabt for the import/feature checks, gzip/sha256sum for output.
need_common_tools() {
  if ! command -v wasm-objdump >/dev/null || ! command -v wasm-validate >/dev/null; then
    apt_ensure wabt
  fi
  command -v gzip >/dev/null || apt_ensure gzip
}

# ic-wasm from npm, unpacked into .tools/ic-wasm-<version>/ (npm pack + tar: no node_modules).
IC_WASM=""
need_ic_wasm() {
  local dir="$TOOLS/ic-wasm-$IC_WASM_VERSION"
  IC_WASM="$dir/package/bin/ic-wasm"
  if [[ -x "$IC_WASM" ]] && "$IC_WASM" --version 2>/dev/null | grep -qx "ic-wasm $IC_WASM_VERSION"; then
    return 0
  fi
  [[ "$(uname -s)-$(uname -m)" == Linux-x86_64 ]] \
    || die "the pinned ic-wasm package is linux-x64 only; on $(uname -sm) install ic-wasm $IC_WASM_VERSION at $IC_WASM by hand"
  command -v npm >/dev/null || apt_ensure npm
  log "fetching $IC_WASM_NPM_PKG@$IC_WASM_VERSION with npm"
  local tmp tgz
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$IC_WASM_NPM_PKG@$IC_WASM_VERSION" >/dev/null)
  tgz="$(ls "$tmp"/*.tgz)"
  echo "$IC_WASM_TGZ_SHA256  $tgz" | sha256sum -c --quiet - \
    || die "$IC_WASM_NPM_PKG@$IC_WASM_VERSION tarball hash mismatch (expected $IC_WASM_TGZ_SHA256)"
  rm -rf "$dir" && mkdir -p "$dir"
  tar -xzf "$tgz" -C "$dir"
  rm -rf "$tmp"
  "$IC_WASM" --version | grep -qx "ic-wasm $IC_WASM_VERSION" || die "ic-wasm at $IC_WASM does not run"
}

# ---- toolchain routes ----------------------------------------------------------------------
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
[[ -d "$CARGO_HOME_DIR" ]] && CARGO_HOME_DIR="$(cd -P -- "$CARGO_HOME_DIR" && pwd -P)"

# Emit "--remap-path-prefix=FROM=TO" flags, most specific (longest FROM) last, because rustc
# applies the last matching mapping. Keeps absolute build paths out of panic messages.
remap_flags() {
  printf '%s\n' "$@" | awk -F'\t' '{ print length($1) "\t" $0 }' | sort -n -s -k1,1 | cut -f2- |
    while IFS=$'\t' read -r from to; do
      if [[ -n "$from" ]]; then printf -- '--remap-path-prefix=%s=%s\n' "$from" "$to"; fi
    done
}

has_rustup_wasm_target() {
  command -v rustup >/dev/null &&
    (cd "$WORKSPACE" && rustup target list --installed 2>/dev/null) | grep -qx "$WASM_TARGET"
}

ROUTE=""
declare -a CARGO_CMD=() RUST_FLAGS=()
TOOLCHAIN_DESC=""

setup_debian_route() {
  ROUTE=debian
  # rustc-web/cargo-web: Debian's current Rust; rust-web-src: std sources for -Zbuild-std.
  apt_ensure rustc-web cargo-web rust-web-src
  local rustc=/usr/bin/rustc cargo=/usr/bin/cargo
  [[ -x $rustc && -x $cargo ]] || die "$rustc / $cargo missing after installing rustc-web cargo-web"
  local sysroot src llvm_major commit
  sysroot="$("$rustc" --print sysroot)"
  src="$sysroot/lib/rustlib/src/rust"
  [[ -f "$src/library/Cargo.lock" ]] || die "std sources not found at $src/library (is rust-web-src installed?)"
  llvm_major="$("$rustc" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
  commit="$("$rustc" -vV | sed -n 's/^commit-hash: //p')"
  [[ -n "$llvm_major" ]] || die "cannot read the LLVM version of $rustc"
  # Link with the lld that matches rustc's LLVM (Debian ships no rust-lld).
  local linker="wasm-ld-$llvm_major"
  command -v "$linker" >/dev/null || apt_ensure "lld-$llvm_major"
  command -v "$linker" >/dev/null || die "$linker not found after installing lld-$llvm_major"

  # rustup's ~/.cargo/bin shadows Debian's tools, hence absolute paths and RUSTC=.
  # RUSTC_BOOTSTRAP=1 unlocks -Zbuild-std on this stable compiler (there is no prebuilt
  # wasm32 std for it). Wrappers (sccache...) are dropped so the canonical build is plain.
  # Profile overrides from the caller's environment would change the output, so drop them.
  local unset_profile=() v
  for v in $(compgen -e | grep '^CARGO_PROFILE_' || true); do unset_profile+=(-u "$v"); done
  CARGO_CMD=(env -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER -u RUSTFLAGS "${unset_profile[@]}"
    RUSTC="$rustc" RUSTC_BOOTSTRAP=1
    "$cargo" build "-Zbuild-std=std,panic_abort")
  RUST_FLAGS=("${DEBIAN_TARGET_FLAGS[@]}" "${CODEGEN_FLAGS[@]}" -C "linker=$linker")
  mapfile -t -O "${#RUST_FLAGS[@]}" RUST_FLAGS < <(remap_flags \
    "$src"$'\t'"/rustc/$commit" \
    "$CARGO_HOME_DIR"$'\t'"/cargo" \
    "$ROOT"$'\t'"/gpt2-chat" \
    "$TARGET_DIR"$'\t'"/target")
  TOOLCHAIN_DESC="$("$rustc" --version) [Debian $(dpkg-query -W -f='${Version}' rustc-web)], $("$linker" --version | head -1)"
}

setup_rustup_route() {
  ROUTE=rustup
  CARGO_CMD=(env -u RUSTFLAGS cargo build)
  RUST_FLAGS=(-C target-feature=+simd128 "${CODEGEN_FLAGS[@]}")
  mapfile -t -O "${#RUST_FLAGS[@]}" RUST_FLAGS < <(remap_flags \
    "$CARGO_HOME_DIR"$'\t'"/cargo" \
    "$ROOT"$'\t'"/gpt2-chat" \
    "$TARGET_DIR"$'\t'"/target")
  TOOLCHAIN_DESC="$(cd "$WORKSPACE" && rustc --version) [rustup]"
}

if [[ $FORCE_DEBIAN -eq 1 ]]; then ROUTE=debian
elif has_rustup_wasm_target; then ROUTE=rustup
else ROUTE=debian; fi
[[ -n "$TARGET_DIR" ]] || TARGET_DIR="$WORKSPACE/target/wasm-$ROUTE"
mkdir -p "$TARGET_DIR"
TARGET_DIR="$(cd -P -- "$TARGET_DIR" && pwd -P)"

need_common_tools
need_ic_wasm
if [[ $ROUTE == debian ]]; then setup_debian_route; else setup_rustup_route; fi

# ---- compile ------------------------------------------------------------------------------
log "route: $ROUTE ($TOOLCHAIN_DESC)"
log "target dir: $TARGET_DIR"
start=$SECONDS
# CARGO_ENCODED_RUSTFLAGS (0x1f-separated) survives spaces in paths and overrides any
# RUSTFLAGS / build.rustflags the caller may have set.
(
  cd "$WORKSPACE"
  CARGO_ENCODED_RUSTFLAGS="$(IFS=$'\x1f'; printf '%s' "${RUST_FLAGS[*]}")" \
    "${CARGO_CMD[@]}" --release --locked --target "$WASM_TARGET" -p "$CRATE" \
    --target-dir "$TARGET_DIR"
)
log "cargo build: $((SECONDS - start))s"
RAW="$TARGET_DIR/$WASM_TARGET/release/$CRATE.wasm"
[[ -f "$RAW" ]] || die "cargo did not produce $RAW"

# ---- post-process -----------------------------------------------------------------------
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
WASM="$WORK/$CRATE.wasm"

"$IC_WASM" "$RAW" -o "$WASM" shrink
"$IC_WASM" "$WASM" -o "$WASM" metadata candid:service -f "$DID" -v public
# check-endpoints compares only Candid methods; system entry points and ic-cdk's
# get_candid_pointer (export_candid!, for candid-extractor) must be listed as "hidden", and
# only if actually exported (it also rejects hidden names the module lacks).
exports="$(wasm-objdump -x -j Export "$WASM" | sed -n 's/^ - func\[[0-9]*\] .* -> "\(.*\)"$/\1/p')"
grep -xE 'canister_(init|pre_upgrade|post_upgrade|heartbeat|global_timer|inspect_message|on_low_wasm_memory)|get_candid_pointer' \
  <<<"$exports" > "$WORK/hidden.txt" || true
RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 "$IC_WASM" "$WASM" check-endpoints --candid "$DID" --hidden "$WORK/hidden.txt" >/dev/null \
  || die "exported endpoints do not match $DID (see above)"

# The IC links only the ic0 System API; any other import (e.g. wasm-bindgen's
# __wbindgen_placeholder__, env.*) makes install fail, so catch it here.
imports="$(wasm-objdump -x -j Import "$WASM" 2>/dev/null | sed -n 's/.* <- //p' || true)"
bad_imports="$(grep -v '^ic0\.' <<<"$imports" | grep -v '^$' || true)"
[[ -z "$bad_imports" ]] || die "module imports from outside ic0: $(tr '\n' ' ' <<<"$bad_imports")"

# wabt validates with exactly the proposals the IC accepts enabled by default (MVP, SIMD,
# bulk memory, reference types, multi-value, sign-ext, sat. float-to-int, mutable globals);
# anything newer (threads, tail calls, memory64, exceptions...) fails here.
wasm-validate "$WASM" || die "module uses wasm features outside the IC-accepted set"
features=()
for f in simd bulk-memory reference-types multi-value sign-extension saturating-float-to-int mutable-globals; do
  wasm-validate --disable-"$f" "$WASM" >/dev/null 2>&1 || features+=("$f")
done

OUT_DIR="$ASSETS"
[[ $MODE == check ]] && OUT_DIR="$TARGET_DIR/check"
mkdir -p "$OUT_DIR"
# gzip -n: no name/mtime in the header, so the .gz is a pure function of the wasm.
gzip -n -9 -c "$WASM" > "$WORK/$OUT_NAME"
(cd "$WORK" && sha256sum "$OUT_NAME" > "$OUT_NAME.sha256")
mv -f "$WORK/$OUT_NAME" "$WORK/$OUT_NAME.sha256" "$OUT_DIR/"

size() { stat -c %s "$1"; }
log "wasm: $(size "$RAW") B raw -> $(size "$WASM") B shrunk -> $(size "$OUT_DIR/$OUT_NAME") B gzipped"
log "imports: $(tr '\n' ' ' <<<"$imports")"
log "features used (beyond MVP): ${features[*]:-none}"
if [[ $(size "$OUT_DIR/$OUT_NAME") -gt $((2 * 1024 * 1024 - 64 * 1024)) ]]; then
  log "WARNING: gzipped module is close to/over the 2 MiB ingress limit; install needs chunked upload"
fi
new_hash="$(cut -d' ' -f1 "$OUT_DIR/$OUT_NAME.sha256")"
log "sha256 $new_hash  $OUT_NAME"

if [[ $MODE == build ]]; then
  log "wrote ${OUT_DIR#"$ROOT"/}/$OUT_NAME and $OUT_NAME.sha256 in $((SECONDS - start))s"
  [[ $ROUTE == rustup ]] && log "note: not the canonical route; the committed wasm is built with --debian"
  exit 0
fi

# ---- --check: compare with the committed assets -------------------------------------------
committed_hash="$(cut -d' ' -f1 "$ASSETS/$OUT_NAME.sha256")"
actual_hash="$(sha256sum "$ASSETS/$OUT_NAME" | cut -d' ' -f1)"
[[ "$actual_hash" == "$committed_hash" ]] \
  || die "assets/$OUT_NAME (sha256 $actual_hash) does not match assets/$OUT_NAME.sha256 ($committed_hash); $FIX"
if [[ "$new_hash" != "$committed_hash" ]]; then
  {
    printf '[build-canister] ERROR: committed canister wasm is stale or not reproducible.\n'
    printf '  committed assets/%s  sha256 %s\n' "$OUT_NAME" "$committed_hash"
    printf '  fresh build  %s  sha256 %s\n' "${OUT_DIR#"$ROOT"/}/$OUT_NAME" "$new_hash"
    printf '  toolchain: %s, ic-wasm %s\n' "$TOOLCHAIN_DESC" "$IC_WASM_VERSION"
    printf '  fix: %s\n' "$FIX"
    printf '  (if the sources did not change, the Debian toolchain did: rebuild and commit too)\n'
  } >&2
  exit 1
fi
log "OK: assets/$OUT_NAME matches a fresh canonical build"
