#!/usr/bin/env bash
# Creates .venv with gpt2-chat and its dependencies (editable), unless it is up to date.
#   scripts/setup-python.sh          runtime dependencies
#   scripts/setup-python.sh --test   plus the test and lint tools
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
extra=""
[[ "${1:-}" == "--test" ]] && extra="[test]"

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "gpt2-chat needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))" >&2; exit 1; }
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
# Reinstall only when pyproject.toml changed or the extras are new: keeps launches fast.
stamp=".venv/.installed$extra"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "[setup] installing gpt2-chat$extra into .venv" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".$extra"
  touch "$stamp"
fi
