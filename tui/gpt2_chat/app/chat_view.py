"""The chat tab: transcript, prompt, status line. Generation runs in a thread worker; the
reply streams in as each generate call returns; Esc stops it between calls. Every chat is
saved as it happens (`client.history`); Ctrl+L lists the saved ones, to reopen one."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Input, Static

from gpt2_chat.client.chat import Conversation, Trimmed, TurnEvents, TurnResult
from gpt2_chat.client.cycles import balance_is_low, shown_balance
from gpt2_chat.client.history import (
    ChatHistory,
    ChatOrigin,
    HistoryError,
    SavedChat,
    SavedMessage,
)
from gpt2_chat.client.tokenizer import Gpt2Tokenizer
from gpt2_chat.connect import Connection, ConnectionClosed
from gpt2_chat.errors import EXPECTED_ERRORS, BackendError
from gpt2_chat.network import parse_network
from gpt2_chat.settings import chat_settings

from .confirm import ConfirmScreen
from .fmt import connection_label, si
from .history_screen import HistoryScreen
from .widgets import OneLine, Pane

STOP_NOTES = {
    "Cancelled": "stopped",
    "ContextFull": "the context is full: start a new chat (Ctrl+N)",
    "InstructionBudget": "stopped at the instruction budget",
}


def calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


@dataclass
class TurnStats:
    tokens: int
    tokens_per_second: float
    calls: int
    instructions_per_token: float | None
    context: int
    n_ctx: int
    #: Cycles the turn cost, and 1,000 tokens at its rate (client/cycles.py).
    cycles: int | None = None
    cycles_per_1000_tokens: int | None = None
    #: The canister's cycle balance, when it reports one, and whether it would not pay for
    #: the next 100 calls like this turn's.
    balance: int | None = None
    low_balance: bool = False

    @staticmethod
    def of(result: TurnResult, context: int, n_ctx: int, balance: int | None) -> TurnStats:
        tokens = len(result.token_ids)
        per_call = result.cycles // len(result.calls) if result.calls else 0
        low = balance is not None and per_call > 0 and balance_is_low(balance, per_call)
        return TurnStats(
            tokens=tokens,
            tokens_per_second=result.tokens_per_second,
            calls=len(result.calls),
            instructions_per_token=result.generate_instructions / tokens if tokens else None,
            context=context,
            n_ctx=n_ctx,
            cycles=result.cycles,
            cycles_per_1000_tokens=result.cycles_per_1000_tokens,
            balance=balance,
            low_balance=low,
        )

    def __str__(self) -> str:
        per_token = si(self.instructions_per_token) if self.instructions_per_token else "-"
        text = (
            f"{self.tokens} tokens · {self.tokens_per_second:.1f} tok/s · {calls(self.calls)} · "
            f"{per_token} instr/tok · context {self.context}/{self.n_ctx}"
        )
        if self.cycles is not None:
            text += f" · {si(self.cycles)} cycles"
        if self.cycles_per_1000_tokens is not None:
            text += f" ({si(self.cycles_per_1000_tokens)}/1k tok)"
        if self.balance is not None:
            text += f" · balance {si(self.balance)} cycles"
            if self.low_balance:
                text += " (low: top up the canister)"
        return text


class PromptInput(Input):
    """The message box. Up and Down recall the messages sent before, as a shell does (the
    text being typed comes back after the latest); `?` in an empty box opens the help."""

    BINDINGS = [
        Binding("up", "recall(-1)", "Earlier message", show=False),
        Binding("down", "recall(1)", "Later message", show=False),
    ]

    def __init__(self, *, id: str | None = None, placeholder: str = "") -> None:
        # Focus keeps the cursor where it was (typing in the transcript continues here).
        super().__init__(id=id, placeholder=placeholder, select_on_focus=False)
        self.sent: list[str] = []
        self._recalled: int | None = None
        self._draft = ""

    def remember(self, text: str) -> None:
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
        self._recalled = None

    def action_recall(self, step: int) -> None:
        if not self.sent:
            return
        at = len(self.sent) if self._recalled is None else self._recalled
        if at == len(self.sent):
            self._draft = self.value
        at = max(0, min(len(self.sent), at + step))
        self._recalled = at
        self.value = self.sent[at] if at < len(self.sent) else self._draft
        self.cursor_position = len(self.value)

    async def _on_key(self, event: events.Key) -> None:
        if event.character == "?" and not self.value:
            event.stop()
            event.prevent_default()
            await self.run_action("app.help")
            return
        await super()._on_key(event)


class ChatMessage(Static):
    """One turn in the transcript: plain text (selectable, copied as typed)."""

    DEFAULT_CSS = """
    ChatMessage {
        width: 1fr;
        padding: 0 1;
        margin-bottom: 1;
    }
    ChatMessage.user { border-left: outer $primary; background: $boost; }
    ChatMessage.model { border-left: outer $success; }
    ChatMessage.note { color: $text-muted; border-left: none; }
    """

    LABELS = {"user": "You", "model": "GPT-2"}

    def __init__(self, role: str, text: str = "") -> None:
        super().__init__(classes=role)
        self.role = role
        self.text = text
        self.note = ""
        self._render_text()

    def append(self, piece: str) -> None:
        self.text += piece
        self._render_text()

    def set_note(self, note: str) -> None:
        self.note = note
        self._render_text()

    def _render_text(self) -> None:
        label = self.LABELS.get(self.role)
        body = Text()
        if label:
            body.append(f"{label}\n", style="bold")
        if self.role == "model" and not self.text and not self.note:
            body.append("…", style="dim")
        body.append(self.text)
        if self.note:
            body.append(f"{' ' if self.text else ''}[{self.note}]", style="dim italic")
        self.update(body)


class ChatView(Pane):
    BINDINGS = [
        Binding("escape", "stop", "Stop reply", tooltip="Stop the reply after the current call"),
        Binding("ctrl+n", "new_chat", "New chat", tooltip="Start a new conversation"),
        Binding("ctrl+l", "saved_chats", "Saved chats", tooltip="Reopen, rename or delete one"),
        Binding("ctrl+y", "copy_reply", "Copy reply", tooltip="Copy the last reply as text"),
    ]

    busy: reactive[bool] = reactive(False, bindings=True)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tokenizer: Gpt2Tokenizer | None = None
        self.conversation: Conversation | None = None
        self._conversation_connection: Connection | None = None
        self._cancel: threading.Event | None = None
        #: The reply being generated (None when idle).
        self._active_reply: ChatMessage | None = None
        self._calls = 0
        self._tokens = 0
        self._sent_text = ""
        self.last_stats: TurnStats | None = None
        #: Where chats are saved (None if the data dir is unusable: chats go unsaved).
        self.history: ChatHistory | None = None
        #: The saved chat shown (None until the first message of a new chat).
        self.chat_id: int | None = None
        #: A saved chat to continue: the next conversation starts from its tokens.
        self._resume: SavedChat | None = None
        #: The chat (and connection) each reply in progress is saved to.
        self._reply_chat: dict[ChatMessage, tuple[int, Connection]] = {}

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="transcript")
        yield OneLine(id="chat-status")
        yield PromptInput(id="prompt", placeholder="Message GPT-2 · Enter sends · ? help")

    def on_mount(self) -> None:
        self.watch(self.gpt2_app, "model_info", self._model_info_changed)
        self.watch(self.gpt2_app, "connection", self._connection_changed, init=False)
        self.watch(self.gpt2_app, "settings", self._update_idle_status, init=False)
        self.watch(self.gpt2_app, "connection_error", self._update_idle_status, init=False)
        # Follows the latest reply until the reader scrolls up (and again from the bottom).
        self.transcript.anchor()
        try:
            self.history = ChatHistory()
        except HistoryError as e:
            self.report(f"chats will not be saved: {e}")
        self._show_welcome()
        self._load_tokenizer()

    def on_tab_shown(self) -> None:
        self.prompt.focus()

    def on_key(self, event: events.Key) -> None:
        """Typing while the transcript has focus goes to the message box, not nowhere."""
        if self.prompt.has_focus or not event.is_printable or event.character in (None, "?"):
            return
        event.stop()
        self.prompt.focus()
        self.prompt.insert_text_at_cursor(event.character or "")

    # ------------------------------------------------------------------ state

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one("#transcript", VerticalScroll)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one("#prompt", PromptInput)

    def _messages(self) -> list[ChatMessage]:
        return list(self.transcript.query(ChatMessage))

    def last_reply(self) -> str | None:
        replies = [m for m in self._messages() if m.role == "model" and m.text]
        return replies[-1].text if replies else None

    def _show_welcome(self) -> None:
        self.transcript.remove_children()
        self.transcript.mount(
            ChatMessage(
                "note",
                "Say something to GPT-2. Enter sends · Esc stops a reply · Ctrl+N new chat · "
                "Ctrl+L saved chats · Ctrl+Y copies the last reply · ? help. Every chat is "
                "saved as it goes.",
            )
        )
        self._update_idle_status()

    def _model_info_changed(self) -> None:
        self._update_idle_status()

    def _connection_changed(self) -> None:
        # The conversation lived in the old backend's canister: the next message reads the
        # saved chat into the new one.
        connection = self.gpt2_app.connection
        if self.conversation is not None and self._conversation_connection is not connection:
            if self._cancel is not None:
                self._cancel.set()
            self.conversation = None
            self._conversation_connection = None
            self.last_stats = None
            self._resume = self._load_saved(self.chat_id) if self.chat_id is not None else None
            where = (
                f"Now on {connection_label(connection.settings)}"
                if connection
                else "The backend changed"
            )
            self.transcript.mount(
                ChatMessage("note", f"{where}: the next message continues this chat there.")
            )
        self._update_idle_status()

    def _status(self, text: str) -> None:
        self.query_one("#chat-status", OneLine).update(Text(text))

    def _update_idle_status(self) -> None:
        if self.busy:
            return
        app = self.gpt2_app
        info = app.model_info
        if app.connection is None:
            self._status(
                "connecting…" if app.connecting else app.connection_error or "not connected"
            )
            return
        if app.connection_error is not None:
            self._status(f"cannot reach the canister: {app.connection_error}")
            return
        if info is not None and not info.loaded:
            self._status("no model is loaded in the canister: F2 to upload one")
            return
        if self.last_stats is not None:
            self._status(str(self.last_stats))
            return
        n_ctx = info.config.n_ctx if info is not None and info.config else None
        s = app.settings
        used = (
            len(self.conversation.tokens)
            if self.conversation is not None
            else len(self._resume.tokens)
            if self._resume is not None
            else 0
        )
        ctx = f"context {used}/{n_ctx} · " if n_ctx else ""
        self._status(
            f"{ctx}temperature {s.temperature:g} · top-k {s.top_k} · top-p {s.top_p:g} · "
            f"up to {s.max_new_tokens} tokens"
        )

    def show_stats(self, stats: TurnStats) -> None:
        self.last_stats = stats
        self._status(str(stats))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.busy
        return True

    # ------------------------------------------------------------------ saving

    def _save(self, what: str, save: Callable[[ChatHistory], object]) -> None:
        """Saves through `save`; a failure is said once per kind, and the chat goes on."""
        if self.history is None:
            return
        try:
            save(self.history)
        except HistoryError as e:
            self.report(f"{what} not saved: {e}")

    def _load_saved(self, chat_id: int) -> SavedChat | None:
        if self.history is None:
            return None
        try:
            return self.history.load(chat_id)
        except HistoryError as e:
            self.report(e)
            return None

    def _origin(self, connection: Connection) -> ChatOrigin:
        return ChatOrigin.of(connection.settings, self.gpt2_app.model_info)

    def _save_user_message(
        self, connection: Connection, conversation: Conversation, text: str
    ) -> None:
        if self.history is None:
            return
        if self.chat_id is None:
            try:
                self.chat_id = self.history.create(self._origin(connection), conversation.settings)
            except HistoryError as e:
                self.report(f"this chat is not saved: {e}")
                return
        chat_id = self.chat_id
        self._save("the message", lambda h: h.add_message(chat_id, SavedMessage("user", text)))

    def _save_turn(self, conversation: Conversation, reply: ChatMessage) -> None:
        """Saves the reply to the chat it belongs to (also when another is shown now)."""
        where = self._reply_chat.pop(reply, None)
        if where is None:
            return
        chat_id, connection = where
        origin = self._origin(connection)

        def save(history: ChatHistory) -> None:
            history.add_message(chat_id, SavedMessage("model", reply.text, reply.note))
            history.save_state(
                chat_id,
                origin,
                conversation.settings,
                conversation.session,
                conversation.tokens,
                conversation.turn_starts,
            )

        self._save("the reply", save)

    # ------------------------------------------------------------------ actions

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "prompt":
            return
        event.stop()
        text = event.value.strip()
        if text:
            self.send(text)

    def send(self, text: str) -> None:
        app = self.gpt2_app
        if self.busy:
            app.notify("GPT-2 is still replying: wait, or press Esc to stop it", severity="warning")
            return
        connection = app.connection
        if connection is None:
            self.report(
                app.connection_error or "not connected yet: wait a moment or check Settings (F4)"
            )
            return
        info = app.model_info
        if info is not None and not info.loaded:
            self.report("no model is loaded in the canister: upload one on the Model tab (F2)")
            return
        self.prompt.value = ""
        self.prompt.remember(text)
        conversation = self._conversation(connection)
        conversation.settings = chat_settings(
            app.settings, time_sliced=conversation.canister.backend.time_sliced
        )
        self._save_user_message(connection, conversation, text)
        self.transcript.mount(ChatMessage("user", text))
        reply = ChatMessage("model")
        if self.chat_id is not None:
            self._reply_chat[reply] = (self.chat_id, connection)
        self.transcript.mount(reply)
        self.transcript.anchor()  # a new message brings the view back to the end
        self._cancel = threading.Event()
        self._calls = self._tokens = 0
        self._active_reply = reply
        self.busy = True
        self._status("GPT-2 is replying… Esc stops")
        self._generate(conversation, text, reply, self._cancel)
        self._sent_text = text

    @work(thread=True, group="tokenizer")
    def _load_tokenizer(self) -> None:
        """Reads the BPE files off the UI thread, before the first message needs them."""
        tokenizer = Gpt2Tokenizer()
        self.later(self._tokenizer_loaded, tokenizer)

    def _tokenizer_loaded(self, tokenizer: Gpt2Tokenizer) -> None:
        if self.tokenizer is None:
            self.tokenizer = tokenizer

    def _conversation(self, connection: Connection) -> Conversation:
        if self.conversation is None or self._conversation_connection is not connection:
            if self.tokenizer is None:  # a message typed faster than the files load
                self.tokenizer = Gpt2Tokenizer()
            self.conversation = Conversation(
                connection.canister,
                self.tokenizer,
                chat_settings(self.gpt2_app.settings, time_sliced=connection.backend.time_sliced),
            )
            self._conversation_connection = connection
            saved, self._resume = self._resume, None
            if saved is not None:
                same = saved.summary.origin.same_canister(self._origin(connection))
                self.conversation.resume(
                    saved.tokens, saved.turn_starts, saved.session if same else None
                )
        return self.conversation

    def action_stop(self) -> None:
        if self._cancel is not None and self.busy:
            self._cancel.set()
            self._status("stopping after the current call…")

    def action_new_chat(self) -> None:
        """Nothing is lost (the chat is saved), so only a reply in progress is asked about."""
        if not self.busy:
            self._new_chat()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._new_chat()

        self.app.push_screen(
            ConfirmScreen(
                "GPT-2 is still replying. Stop the reply and start a new chat? This chat is "
                "saved (Ctrl+L reopens it).",
                yes="New chat",
            ),
            answered,
        )

    def _new_chat(self) -> None:
        if self.busy and self._cancel is not None:
            self._cancel.set()
        saved = self.chat_id is not None
        # The old session stays in the canister, so reopening the chat soon is quick.
        self.conversation = None
        self._conversation_connection = None
        self._resume = None
        self.chat_id = None
        self.last_stats = None
        self._active_reply = None
        self.busy = False
        self._show_welcome()
        self.prompt.focus()
        self.app.notify(
            "New chat · the last one is saved (Ctrl+L)" if saved else "New chat", timeout=3
        )

    def action_saved_chats(self) -> None:
        if self.history is None:
            self.report("chats are not saved: the data directory is unusable")
            return

        def chosen(chat_id: int | None) -> None:
            if chat_id is not None:
                self.open_saved(chat_id)

        self.app.push_screen(HistoryScreen(self.history, self.chat_id, self._deleted), chosen)

    def _deleted(self, chat_id: int) -> None:
        if chat_id == self.chat_id:  # the chat on screen goes on unsaved, as a new one
            self.chat_id = None

    def open_saved(self, chat_id: int) -> None:
        """Shows a saved chat; the next message continues it."""
        if self.busy:
            self.app.notify("GPT-2 is still replying: wait, or press Esc", severity="warning")
            return
        saved = self._load_saved(chat_id)
        if saved is None:
            return
        self.conversation = None
        self._conversation_connection = None
        self._resume = saved
        self.chat_id = chat_id
        self.last_stats = None
        self.transcript.remove_children()
        for message in saved.messages:
            shown = ChatMessage(message.role, message.text)
            shown.set_note(message.note)
            self.transcript.mount(shown)
        then = saved.summary.origin
        now = self.gpt2_app.model_info
        note = f"Saved chat {chat_id} ({then.model}). The next message continues it."
        if now is not None and now.upload.sha256 != then.model_sha256:
            note += " The canister's model is not the one this chat ran on."
        self.transcript.mount(ChatMessage("note", note))
        self.transcript.anchor()
        for message in saved.messages:
            if message.role == "user":
                self.prompt.remember(message.text)
        self.prompt.focus()
        self._update_idle_status()

    def start_over(self, why: str) -> None:
        """Drop the conversation (the model changed, say), keeping the transcript."""
        if self.conversation is None:
            return
        if not self.busy:
            self._forget(self.conversation)
        self.conversation = None
        self.chat_id = None
        self._resume = None
        self.last_stats = None
        self.transcript.mount(ChatMessage("note", why))
        self._update_idle_status()

    def action_copy_reply(self) -> None:
        text = self.last_reply()
        if not text:
            self.app.notify("There is no reply to copy yet", severity="warning")
            return
        self.app.copy_to_clipboard(text)
        self.app.notify(f"Copied the last reply ({len(text)} characters)", timeout=3)

    # ------------------------------------------------------------------ workers

    @work(thread=True, group="chat")
    def _generate(
        self, conversation: Conversation, text: str, reply: ChatMessage, cancel: threading.Event
    ) -> None:
        try:
            events = TurnEvents(
                text=lambda piece: self.later(self._piece, reply, piece),
                call=lambda call: self.later(self._call_done, call.kind, call.tokens),
                trimmed=lambda trimmed: self.later(self._trimmed, reply, trimmed),
                reading=lambda done, total: self.later(self._reading, done, total),
            )
            result = conversation.send(text, events, cancel)
        except ConnectionClosed:
            self.later(self._turn_failed, conversation, reply, None)
        except EXPECTED_ERRORS as e:
            self.later(self._turn_failed, conversation, reply, e)
        else:
            app = self.gpt2_app
            balance = shown_balance(app.model_info, parse_network(app.settings.network).embedded)
            stats = TurnStats.of(result, len(conversation.context), conversation.n_ctx, balance)
            self.later(self._turn_done, conversation, reply, result, stats)

    @work(thread=True, group="chat-cleanup")
    def _forget(self, conversation: Conversation) -> None:
        """Deletes the conversation's session in the canister (best effort: the canister
        evicts old sessions by itself)."""
        with contextlib.suppress(BackendError):
            conversation.reset()

    # ------------------------------------------------------------------ on the UI thread

    def _piece(self, reply: ChatMessage, piece: str) -> None:
        reply.append(piece)

    def _call_done(self, kind: str, tokens: int) -> None:
        if not self.busy:
            return
        self._calls += 1
        if kind == "generate":
            self._tokens += tokens
            self._status(
                f"GPT-2 is replying… {self._tokens} tokens · {calls(self._calls)} · Esc stops"
            )

    def _reading(self, done: int, total: int) -> None:
        if self.busy:
            self._status(
                f"GPT-2 is reading the context {done}/{total} tokens · {calls(self._calls)} · "
                "Esc stops"
            )

    def _trimmed(self, reply: ChatMessage, trimmed: Trimmed) -> None:
        """Says which turns left the context before the kept ones are read again."""
        turns = "turn is" if trimmed.turns == 1 else "turns are"
        note = ChatMessage(
            "note",
            f"The conversation outgrew the model's context: the oldest {trimmed.turns} "
            f"{turns} ({trimmed.tokens} tokens) no longer in it. GPT-2 reads the last "
            f"{trimmed.kept} tokens again first (Esc stops).",
        )
        if reply.parent is self.transcript:
            self.transcript.mount(note, before=reply)

    def _end_turn(self, reply: ChatMessage) -> bool:
        """Marks the turn of `reply` ended; whether it was the one the view waited for."""
        if reply is not self._active_reply:
            return False
        self._active_reply = None
        self.busy = False
        return True

    def _turn_done(
        self, conversation: Conversation, reply: ChatMessage, result: TurnResult, stats: TurnStats
    ) -> None:
        note = STOP_NOTES.get(result.stop)
        if note:
            reply.set_note(note)
        elif not result.text:
            reply.set_note("no reply")
        current = self._end_turn(reply)
        self._save_turn(conversation, reply)
        if conversation is not self.conversation:
            self._update_idle_status()
            return
        if current:
            self.show_stats(stats)

    def _turn_failed(
        self, conversation: Conversation, reply: ChatMessage, error: BaseException | None
    ) -> None:
        reply.set_note("failed" if error is not None else "interrupted")
        current = self._end_turn(reply)
        self._save_turn(conversation, reply)
        if current:
            self.last_stats = None  # they were the previous turn's
        if current and error is not None and conversation is self.conversation:
            prompt = self.prompt
            if not prompt.value:  # nothing typed since: give the message back to edit
                prompt.value = self._sent_text
            self.report(error)
        self._update_idle_status()
