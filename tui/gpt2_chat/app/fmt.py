"""Small text formatters shared by the views (pure functions, no UI)."""

from __future__ import annotations

import os
from pathlib import Path

from gpt2_chat.connect import DEFAULT_CANISTER_NAME
from gpt2_chat.network import parse_network
from gpt2_chat.settings import Settings


def mb(n: float) -> str:
    """Bytes as MB with one decimal (decimal megabytes, as the CLI prints them)."""
    return f"{n / 1e6:.1f} MB"


def count(n: int) -> str:
    """An integer with thousands separators: 3,253,432."""
    return f"{n:,}"


def si(n: float) -> str:
    """A large count, short: 950, 12.3K, 286M, 1.2B."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            value = n / div
            return f"{value:.0f}{unit}" if value >= 100 else f"{value:.1f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float | None) -> str:
    """Seconds as m:ss (or h:mm:ss); '?' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02}:{s:02}" if h else f"{m}:{s:02}"


def short_sha(sha: str | None) -> str:
    if not sha:
        return "-"
    return f"{sha[:12]}…{sha[-4:]}" if len(sha) > 16 else sha


def short_path(path: str | Path) -> str:
    """A path as a person wants to read it: relative to the working directory when it is
    under it, else with the home directory as ~."""
    p = Path(path).expanduser()
    try:
        absolute = p.resolve()
    except OSError:
        absolute = p.absolute()
    try:
        cwd = Path.cwd().resolve()
        if absolute == cwd:
            return "."
        if absolute.is_relative_to(cwd):
            return str(absolute.relative_to(cwd))
    except OSError:
        pass
    home = Path(os.path.expanduser("~")).resolve()
    if absolute.is_relative_to(home) and home != Path("/"):
        return "~/" + str(absolute.relative_to(home)) if absolute != home else "~"
    return str(absolute)


def connection_label(settings: Settings) -> str:
    """The backend these settings select, as the app shows it (one short line)."""
    network = parse_network(settings.network)
    if network.embedded:
        return f"{network.label} · {short_path(settings.resolved_state_dir())}"
    return f"{network.label} · {settings.canister or DEFAULT_CANISTER_NAME}"
