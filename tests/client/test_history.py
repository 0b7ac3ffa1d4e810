"""Saved chats in SQLite: the versioned schema, and what a chat keeps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gpt2_chat.client.canister import Sampling
from gpt2_chat.client.chat import ChatSettings
from gpt2_chat.client.history import (
    MIGRATIONS,
    ChatHistory,
    ChatOrigin,
    HistoryError,
    SavedMessage,
    default_path,
)

ORIGIN = ChatOrigin("embedded", "/state", "GPT-2 2×16 F32", "ab" * 32)
SETTINGS = ChatSettings(Sampling(temperature=0.5, top_k=7), max_new_tokens=9)


def test_the_data_dir_comes_from_the_environment(saved_chats_dir: Path) -> None:
    assert default_path() == saved_chats_dir / "chats.sqlite3"
    ChatHistory()
    assert (saved_chats_dir / "chats.sqlite3").is_file()


def test_a_chat_keeps_its_transcript_model_sampling_and_session(tmp_path: Path) -> None:
    history = ChatHistory(tmp_path / "chats.sqlite3")
    first = history.create(ORIGIN, SETTINGS)
    history.add_message(
        first, SavedMessage("user", "Hello there,   how are you doing today my friend?")
    )
    history.add_message(first, SavedMessage("model", "Fine.", "stopped"))
    history.save_state(first, ORIGIN, SETTINGS, 3, [1, 2, 3], [0])
    second = history.create(ORIGIN, SETTINGS)

    chat = history.load(first)
    assert chat.messages == [
        SavedMessage("user", "Hello there,   how are you doing today my friend?"),
        SavedMessage("model", "Fine.", "stopped"),
    ]
    assert (chat.session, chat.tokens, chat.turn_starts) == (3, [1, 2, 3], [0])
    assert chat.sampling["temperature"] == 0.5 and chat.sampling["max_new_tokens"] == 9
    assert chat.summary.origin == ORIGIN
    assert chat.summary.label == "Hello there, how are you doing today my"  # first words

    history.add_message(second, SavedMessage("user", "Later"))
    assert [c.id for c in history.summaries()] == [second, first]  # last used first
    history.rename(first, "  Greetings ")
    assert history.load(first).summary.label == "Greetings"
    history.delete(first)
    assert [c.id for c in history.summaries()] == [second]
    with pytest.raises(HistoryError, match=f"there is no saved chat {first}"):
        history.load(first)
    with sqlite3.connect(tmp_path / "chats.sqlite3") as db:  # its messages went with it
        assert db.execute("SELECT COUNT(*) FROM messages WHERE chat = ?", (first,)).fetchone() == (
            0,
        )


def test_the_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chats.sqlite3"
    sqlite3.connect(path).close()  # an empty database: version 0
    ChatHistory(path).create(ORIGIN, SETTINGS)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    assert len(ChatHistory(path).summaries()) == 1  # reopening migrates nothing, keeps all

    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(HistoryError, match="written by a newer gpt2-chat"):
        ChatHistory(path)


def test_an_unusable_data_dir_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HistoryError, match="cannot open the saved chats"):
        ChatHistory(blocker / "chats.sqlite3")
