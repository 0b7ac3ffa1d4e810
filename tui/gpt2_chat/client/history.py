"""Saved conversations: every chat, stored as it happens, in SQLite in the user's data dir
(`GPT2_CHAT_DATA_DIR` overrides it).

A chat keeps its transcript, the model it ran on, the sampling settings of its last turn,
where it ran (network and canister) and the state to continue it: the session id and the
tokens that session should hold. Continuing reuses the session if the canister still holds
exactly those tokens, else reads them into a new one (see `Conversation.resume`).

The schema is versioned with `PRAGMA user_version`: each entry of `MIGRATIONS` brings a
database from the version before it to the next, in one transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs

from gpt2_chat.client.canister import ModelInfo
from gpt2_chat.client.chat import ChatSettings
from gpt2_chat.errors import UserError
from gpt2_chat.settings import APP, Settings

DATA_DIR_ENV = "GPT2_CHAT_DATA_DIR"

MIGRATIONS: tuple[str, ...] = (
    # 1: chats and their messages.
    """
    CREATE TABLE chats (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        network TEXT NOT NULL,
        canister TEXT NOT NULL,
        model TEXT NOT NULL,
        model_sha256 TEXT,
        sampling TEXT NOT NULL,
        session INTEGER,
        tokens TEXT NOT NULL DEFAULT '[]',
        turn_starts TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE messages (
        chat INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        text TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (chat, seq)
    );
    """,
)


class HistoryError(UserError):
    """The saved chats cannot be read or written, or the one asked for does not exist."""


def default_path() -> Path:
    override = os.environ.get(DATA_DIR_ENV)
    data = Path(override) if override else Path(platformdirs.user_data_dir(APP))
    return data / "chats.sqlite3"


def model_label(info: ModelInfo | None) -> str:
    """The loaded model in a few words: 'GPT-2 12×768 int8'."""
    if info is None or not info.loaded or info.config is None:
        return "no model"
    c = info.config
    return f"GPT-2 {c.n_layer}×{c.n_embd} {info.dtype or ''}".rstrip()


@dataclass(frozen=True)
class ChatOrigin:
    """Where a chat runs: sessions live in one canister, so continuing in the same one can
    reuse the session; the model is recorded to say what the replies came from."""

    network: str
    canister: str
    model: str
    model_sha256: str | None

    @staticmethod
    def of(settings: Settings, info: ModelInfo | None) -> ChatOrigin:
        canister = (
            str(settings.resolved_state_dir().resolve())
            if settings.network == "embedded"
            else settings.canister or "gpt2_backend"
        )
        sha = info.upload.sha256 if info is not None else None
        return ChatOrigin(settings.network, canister, model_label(info), sha)

    def same_canister(self, other: ChatOrigin) -> bool:
        return (self.network, self.canister) == (other.network, other.canister)


@dataclass(frozen=True)
class SavedMessage:
    role: str  # "user" or "model"
    text: str
    note: str = ""


@dataclass(frozen=True)
class ChatSummary:
    id: int
    title: str | None
    updated: float
    origin: ChatOrigin
    first_words: str

    @property
    def label(self) -> str:
        return self.title or self.first_words or "(empty)"


@dataclass(frozen=True)
class SavedChat:
    summary: ChatSummary
    messages: list[SavedMessage]
    sampling: dict[str, object]
    session: int | None
    tokens: list[int]
    turn_starts: list[int]


def sampling_record(settings: ChatSettings) -> dict[str, object]:
    return {
        **asdict(settings.sampling),
        "max_new_tokens": settings.max_new_tokens,
        "tokens_per_call": settings.tokens_per_call,
    }


class ChatHistory:
    """The saved chats. Each method opens the database for its own short transaction, so
    it may be used from any thread and by several processes at once."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        with self._db():
            pass  # creates and migrates it now: a problem shows at startup, once

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5)
        except (OSError, sqlite3.Error) as e:
            raise HistoryError(f"cannot open the saved chats in {self.path}: {e}") from e
        try:
            db.execute("PRAGMA foreign_keys = ON")
            _migrate(db, self.path)
            with db:  # one transaction: committed, or rolled back on an error
                yield db
        except sqlite3.Error as e:
            raise HistoryError(f"the saved chats in {self.path}: {e}") from e
        finally:
            db.close()

    def create(self, origin: ChatOrigin, settings: ChatSettings) -> int:
        now = time.time()
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO chats (created, updated, network, canister, model, model_sha256, "
                "sampling) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    now,
                    origin.network,
                    origin.canister,
                    origin.model,
                    origin.model_sha256,
                    json.dumps(sampling_record(settings)),
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def add_message(self, chat: int, message: SavedMessage) -> None:
        with self._db() as db:
            (seq,) = db.execute(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM messages WHERE chat = ?", (chat,)
            ).fetchone()
            db.execute(
                "INSERT INTO messages (chat, seq, role, text, note) VALUES (?, ?, ?, ?, ?)",
                (chat, seq, message.role, message.text, message.note),
            )
            db.execute("UPDATE chats SET updated = ? WHERE id = ?", (time.time(), chat))

    def save_state(
        self,
        chat: int,
        origin: ChatOrigin,
        settings: ChatSettings,
        session: int | None,
        tokens: list[int],
        turn_starts: list[int],
    ) -> None:
        """After a turn: what continuing the chat needs, and what the turn ran on."""
        with self._db() as db:
            db.execute(
                "UPDATE chats SET updated = ?, network = ?, canister = ?, model = ?, "
                "model_sha256 = ?, sampling = ?, session = ?, tokens = ?, turn_starts = ? "
                "WHERE id = ?",
                (
                    time.time(),
                    origin.network,
                    origin.canister,
                    origin.model,
                    origin.model_sha256,
                    json.dumps(sampling_record(settings)),
                    session,
                    json.dumps(tokens),
                    json.dumps(turn_starts),
                    chat,
                ),
            )

    def summaries(self) -> list[ChatSummary]:
        """Every saved chat, the most recently used first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT c.id, c.title, c.updated, c.network, c.canister, c.model, "
                "c.model_sha256, (SELECT text FROM messages m WHERE m.chat = c.id AND "
                "m.role = 'user' ORDER BY seq LIMIT 1) FROM chats c "
                "ORDER BY c.updated DESC, c.id DESC"
            ).fetchall()
        return [_summary(row) for row in rows]

    def load(self, chat: int) -> SavedChat:
        with self._db() as db:
            row = db.execute(
                "SELECT c.id, c.title, c.updated, c.network, c.canister, c.model, "
                "c.model_sha256, (SELECT text FROM messages m WHERE m.chat = c.id AND "
                "m.role = 'user' ORDER BY seq LIMIT 1), c.sampling, c.session, c.tokens, "
                "c.turn_starts FROM chats c WHERE c.id = ?",
                (chat,),
            ).fetchone()
            if row is None:
                raise HistoryError(f"there is no saved chat {chat} (gpt2-chat chat --list)")
            messages = [
                SavedMessage(role, text, note)
                for role, text, note in db.execute(
                    "SELECT role, text, note FROM messages WHERE chat = ? ORDER BY seq", (chat,)
                )
            ]
        return SavedChat(
            summary=_summary(row[:8]),
            messages=messages,
            sampling=json.loads(row[8]),
            session=row[9],
            tokens=json.loads(row[10]),
            turn_starts=json.loads(row[11]),
        )

    def rename(self, chat: int, title: str) -> None:
        with self._db() as db:
            db.execute("UPDATE chats SET title = ? WHERE id = ?", (title.strip() or None, chat))

    def delete(self, chat: int) -> None:
        with self._db() as db:
            db.execute("DELETE FROM chats WHERE id = ?", (chat,))


def _summary(row: tuple[object, ...]) -> ChatSummary:
    chat, title, updated, network, canister, model, sha, first = row
    words = " ".join(str(first or "").split()[:8])
    return ChatSummary(
        id=int(str(chat)),
        title=str(title) if title else None,
        updated=float(str(updated)),
        origin=ChatOrigin(str(network), str(canister), str(model), str(sha) if sha else None),
        first_words=words,
    )


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise HistoryError(
            f"the saved chats in {path} were written by a newer gpt2-chat (schema "
            f"{version}; this one knows up to {len(MIGRATIONS)})"
        )
    for number in range(version + 1, len(MIGRATIONS) + 1):
        # executescript commits first; BEGIN..COMMIT makes each step all or nothing.
        db.executescript(f"BEGIN; {MIGRATIONS[number - 1]} PRAGMA user_version = {number}; COMMIT;")
