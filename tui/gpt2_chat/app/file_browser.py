"""The model file browser: directories and .safetensors files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.widgets import DirectoryTree


class SafetensorsTree(DirectoryTree):
    """Directories and .safetensors files, no hidden entries."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        for path in paths:
            if path.name.startswith("."):
                continue
            try:
                if path.is_dir() or path.suffix == ".safetensors":
                    yield path
            except OSError:
                continue
