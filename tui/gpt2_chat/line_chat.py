"""`gpt2-chat chat`: the line-mode chat (also with piped input), saved like the app's
chats; `--list` prints the saved chats, `--resume ID` continues one."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING

from gpt2_chat.client.chat import Conversation, Trimmed, TurnEvents
from gpt2_chat.client.history import ChatHistory, ChatOrigin, SavedChat, SavedMessage
from gpt2_chat.client.tokenizer import Gpt2Tokenizer
from gpt2_chat.errors import UserError
from gpt2_chat.settings import Settings, chat_settings

if TYPE_CHECKING:
    from gpt2_chat.connect import Connection

STOP_NOTES = {"Cancelled": "stopped", "ContextFull": "the context is full"}


class NoModelLoaded(UserError):
    """The canister has no model to chat with."""


def print_saved_chats(history: ChatHistory) -> int:
    """One line per saved chat: id, last used, model, title or first words."""
    for chat in history.summaries():
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.updated))
        sha = (chat.origin.model_sha256 or "")[:8]
        print(f"{chat.id:>4}  {used}  {chat.origin.model} {sha}".rstrip() + f"  {chat.label}")
    return 0


def run_chat(
    settings: Settings, connection: Connection, history: ChatHistory, saved: SavedChat | None
) -> int:
    from gpt2_chat.cli import check_utf8

    canister = connection.canister
    info = canister.model_info()
    if not info.loaded:
        raise NoModelLoaded(
            "no model is loaded; run `gpt2-chat prepare gpt2 -o gpt2.safetensors` and "
            "`gpt2-chat upload gpt2.safetensors` first"
        )
    turn_settings = chat_settings(settings, time_sliced=connection.backend.time_sliced)
    conversation = Conversation(canister, Gpt2Tokenizer(), turn_settings)
    origin = ChatOrigin.of(settings, info)
    chat_id = _resume(conversation, saved, origin) if saved is not None else None
    resumed = saved is not None  # its first turn reads the saved chat (unless cached)
    print(f"gpt2-chat on {connection.backend.description}. Empty line or Ctrl-D to quit.")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            break
        if not line.strip():
            break
        check_utf8(line, "the message")
        if chat_id is None:
            chat_id = history.create(origin, turn_settings)
        history.add_message(chat_id, SavedMessage("user", line.strip()))
        reply, note = _turn(conversation, line, resumed)
        resumed = False
        history.add_message(chat_id, SavedMessage("model", reply, note))
        history.save_state(
            chat_id,
            origin,
            turn_settings,
            conversation.session,
            conversation.tokens,
            conversation.turn_starts,
        )
    if chat_id is not None:
        print(f"saved as chat {chat_id}: gpt2-chat chat --resume {chat_id}", file=sys.stderr)
    return 0


def _resume(conversation: Conversation, saved: SavedChat, origin: ChatOrigin) -> int:
    """Shows the saved transcript and sets the conversation up to continue it."""
    then = saved.summary.origin
    for message in saved.messages:
        who = "you> " if message.role == "user" else "gpt2>"
        note = f" [{message.note}]" if message.note else ""
        print(f"{who}{message.text}{note}")
    if then.model_sha256 != origin.model_sha256:
        print(f"(this chat ran on {then.model}; the canister now has {origin.model})")
    session = saved.session if then.same_canister(origin) else None
    conversation.resume(saved.tokens, saved.turn_starts, session)
    return saved.summary.id


def _turn(conversation: Conversation, line: str, resumed: bool) -> tuple[str, str]:
    """One turn, streamed to stdout; the reply and its note. Reading the context again (a
    resumed chat, or after old turns left it) shows its progress on stderr."""
    from gpt2_chat.cli import StatusLine

    started = False
    rereading = resumed

    def text(piece: str) -> None:
        nonlocal started
        if not started:
            StatusLine.end()
            print("gpt2>", end="", flush=True)
            started = True
        print(piece, end="", flush=True)

    def trimmed(t: Trimmed) -> None:
        nonlocal rereading
        rereading = True
        print(
            f"(the conversation outgrew the context: the oldest {t.turns} turn(s), {t.tokens} "
            f"tokens, left it; reading the last {t.kept} again)",
            file=sys.stderr,
        )

    def reading(done: int, total: int) -> None:
        if rereading:
            StatusLine.show(f"reading the context: {done}/{total} tokens")

    cancel = threading.Event()
    try:
        result = conversation.send(line, TurnEvents(text, None, trimmed, reading), cancel)
    except KeyboardInterrupt:
        cancel.set()
        StatusLine.end()
        print("\n(stopped)")
        return "", "stopped"
    except BaseException:
        StatusLine.end()
        print(flush=True)  # end the streamed line before the error
        raise
    StatusLine.end()
    if not started:
        print("gpt2>", end="")
    calls = len(result.calls)
    print(
        f"\n  [{len(result.token_ids)} tokens, {result.tokens_per_second:.1f} tok/s, "
        f"{calls} call{'' if calls == 1 else 's'}, {result.cycles:,} cycles]"
    )
    return result.text, STOP_NOTES.get(result.stop, "")
