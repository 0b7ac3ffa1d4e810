"""A conversation with the canister: text in, streamed text out.

The data path of one turn: the user's text is appended to the transcript and tokenized;
the new tokens are prefilled into the session's KV cache in the canister (as many calls
as the instruction budget needs); then generate calls each return a few token ids, which
are decoded together with the earlier ones so multi-byte characters come out whole.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gpt2_chat.client.canister import CanisterError, Gpt2Canister, Sampling
from gpt2_chat.client.cycles import chat_call_cost, cost_per_1000_tokens
from gpt2_chat.client.dts import ONE_SLICE_BUDGET, tokens_fitting
from gpt2_chat.client.tokenizer import Gpt2Tokenizer

USER_PREFIX = "\n\nUser: "
MODEL_PREFIX = "\nGPT-2:"
#: GPT-2 is not chat-tuned: it tends to write the user's next line itself. Stop there.
STOP_STRINGS = ("\nUser:", "\n\n\n")


@dataclass
class CallStats:
    kind: str  # "prefill" or "generate"
    tokens: int
    instructions: int
    #: Prefill: the prompt tokens still to read after this call (for progress).
    remaining: int = 0


@dataclass
class TurnResult:
    text: str
    token_ids: list[int]
    prompt_ids: list[int]
    stop: str
    calls: list[CallStats] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def generate_instructions(self) -> int:
        return sum(c.instructions for c in self.calls if c.kind == "generate")

    @property
    def tokens_per_second(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else 0.0

    @property
    def cycles(self) -> int:
        """What the turn's calls cost the canister in cycles (client/cycles.py)."""
        return sum(chat_call_cost(c.kind, c.tokens, c.instructions) for c in self.calls)

    @property
    def cycles_per_1000_tokens(self) -> int | None:
        """1,000 tokens at this turn's instructions per token and tokens per call."""
        generate = [c for c in self.calls if c.kind == "generate" and c.tokens]
        tokens = sum(c.tokens for c in generate)
        if not tokens:
            return None
        per_token = sum(c.instructions for c in generate) / tokens
        return cost_per_1000_tokens(per_token, round(tokens / len(generate)))


@dataclass
class ChatSettings:
    sampling: Sampling = field(default_factory=Sampling)
    max_new_tokens: int = 64
    tokens_per_call: int = 8
    #: Instructions per call; None = the canister's default, or one slice when time_sliced.
    instruction_budget: int | None = None
    #: The backend runs long updates in slices, one per round (a replica, see client/dts.py):
    #: unless instruction_budget says otherwise, every call is sized to one slice.
    time_sliced: bool = False

    @property
    def one_slice_per_call(self) -> bool:
        return self.time_sliced and self.instruction_budget is None

    def tokens_per_call_at(self, instructions_per_token: float | None) -> int:
        """Tokens to ask of one generate call, given the measured cost of a token."""
        if self.one_slice_per_call and instructions_per_token is not None:
            return min(
                self.tokens_per_call, tokens_fitting(ONE_SLICE_BUDGET, instructions_per_token)
            )
        return self.tokens_per_call

    @property
    def call_budget(self) -> int | None:
        """The instruction budget each prefill and generate call passes to the canister."""
        return ONE_SLICE_BUDGET if self.one_slice_per_call else self.instruction_budget


@dataclass(frozen=True)
class Trimmed:
    """The oldest turns left the context so a turn fits; the kept ones are read again."""

    turns: int
    tokens: int
    kept: int


@dataclass
class TurnEvents:
    """What a turn reports as it goes, each on the thread running the turn."""

    #: New reply text, as it streams in.
    text: Callable[[str], None] | None = None
    #: Every canister call, as it returns.
    call: Callable[[CallStats], None] | None = None
    #: The oldest turns were dropped (before the context is read again).
    trimmed: Callable[[Trimmed], None] | None = None
    #: Context tokens read so far, of how many (after each prefill call).
    reading: Callable[[int, int], None] | None = None


class Conversation:
    """One chat: a canister session plus the transcript it holds.

    `tokens` is the conversation as the model sees it (the turns that fit its window);
    `context` mirrors what the canister's session has cached. They differ only while a
    turn brings the cache up to date: after dropping old turns (GPT-2's positions are
    absolute, so every kept token is computed again) or when continuing a saved chat whose
    session the canister no longer holds.
    """

    def __init__(
        self, canister: Gpt2Canister, tokenizer: Gpt2Tokenizer, settings: ChatSettings
    ) -> None:
        self.canister = canister
        self.tokenizer = tokenizer
        self.settings = settings
        self.session: int | None = None
        self.n_ctx = 1024
        self.tokens: list[int] = []
        #: Turn boundaries in `tokens`, so the oldest turns can be dropped.
        self.turn_starts: list[int] = []
        #: Instructions per generated token in the last generate call (calls included).
        self.generate_cost: float | None = None
        self.context: list[int] = []
        #: A saved chat's session, adopted at the next turn if it still holds `tokens`.
        self._saved_session: int | None = None

    def resume(self, tokens: list[int], turn_starts: list[int], session: int | None) -> None:
        """Continues a saved conversation. Its session is reused if the canister still
        holds exactly these tokens; otherwise the next turn reads them into a new one."""
        self.tokens = list(tokens)
        self.turn_starts = list(turn_starts)
        self._saved_session = session

    def reset(self) -> None:
        if self.session is not None:
            self.canister.session_delete(self.session)
        self.session = None
        self.tokens = []
        self.turn_starts = []
        self.context = []

    def _ensure_session(self) -> int:
        if self.session is None and self._saved_session is not None:
            saved, self._saved_session = self._saved_session, None
            try:
                info = self.canister.session_info(saved)
            except CanisterError:  # evicted, or the canister was reinstalled
                info = None
            if info is not None and info.tokens == self.tokens:
                self.session, self.n_ctx, self.context = info.id, info.n_ctx, list(info.tokens)
        if self.session is None:
            info = self.canister.session_create(self.settings.sampling)
            self.session, self.n_ctx, self.context = info.id, info.n_ctx, []
        return self.session

    def send(
        self,
        user_text: str,
        events: TurnEvents | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnResult:
        """Adds a user turn and streams the model's reply (see `TurnEvents`)."""
        new_ids = self.tokenizer.encode(USER_PREFIX + user_text.strip() + MODEL_PREFIX)
        return self._turn(new_ids, True, events or TurnEvents(), cancel)

    def complete(
        self,
        prompt: str,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnResult:
        """Plain continuation of `prompt` (no chat transcript, no stop strings)."""
        return self._turn(self.tokenizer.encode(prompt), False, TurnEvents(text=on_text), cancel)

    def _turn(
        self,
        new_ids: list[int],
        chat: bool,
        events: TurnEvents,
        cancel: threading.Event | None,
    ) -> TurnResult:
        started = time.monotonic()
        session = self._ensure_session()
        max_new = self.settings.max_new_tokens
        if len(new_ids) + 1 > self.n_ctx:
            raise ValueError(
                f"the prompt is {len(new_ids)} tokens; the model's context holds {self.n_ctx}"
            )
        calls = _CallLog(events.call)
        trimmed = self._trim(len(new_ids) + max_new)
        if trimmed is not None and events.trimmed:
            events.trimmed(trimmed)
        prompt = self.tokens + new_ids
        if not self._prefill(session, prompt, calls, events, cancel):
            return TurnResult("", [], new_ids, "Cancelled", calls.calls, time.monotonic() - started)
        self.turn_starts.append(len(self.tokens))
        self.tokens = prompt

        decoder = self.tokenizer.stream_decoder()
        generated: list[int] = []
        text = ""
        emitted = 0
        stop = "MaxTokens"
        while len(generated) < max_new:
            if cancel is not None and cancel.is_set():
                stop = "Cancelled"
                break
            reply = self.canister.session_generate(
                session,
                len(self.context),
                min(self.settings.tokens_per_call_at(self.generate_cost), max_new - len(generated)),
                self.settings.call_budget,
                self.settings.sampling,
            )
            calls.add(CallStats("generate", len(reply.tokens), reply.instructions))
            if reply.tokens:
                self.generate_cost = reply.instructions / len(reply.tokens)
            generated += reply.tokens
            # The session's context ends at the reply's position: when the context is full,
            # the last token is the one it predicts, which is not added to it.
            self.context = (self.context + reply.tokens)[: reply.position]
            self.tokens = list(self.context)
            text += decoder.push(reply.tokens)
            cut = _stop_index(text) if chat else None
            if cut is not None:
                text = text[:cut]
                stop = "StopString"
            # Hold back a tail that may grow into a stop string in the next call.
            visible = text if cut is not None or not chat else text[: len(text) - _held(text)]
            if events.text and len(visible) > emitted:
                events.text(visible[emitted:])
            emitted = max(emitted, len(visible))
            if cut is not None:
                break
            # A call cut at its instruction budget (one slice, or the user's or canister's
            # budget) only ends the call: the next one goes on. One that fits no token ends
            # the turn.
            budget_cut = reply.stop == "InstructionBudget" and reply.tokens
            if reply.stop != "MaxTokens" and not budget_cut:
                stop = reply.stop
                break
        if stop != "StopString":
            text += decoder.flush()
            if events.text and len(text) > emitted:
                events.text(text[emitted:])
        return TurnResult(
            text=text,
            token_ids=generated,
            prompt_ids=new_ids,
            stop=stop,
            calls=calls.calls,
            seconds=time.monotonic() - started,
        )

    def _prefill(
        self,
        session: int,
        prompt: list[int],
        calls: _CallLog,
        events: TurnEvents,
        cancel: threading.Event | None,
    ) -> bool:
        """Brings the session's cache to `prompt`, keeping the prefix it already holds.
        False when cancelled (between calls; the cache then holds part of it)."""
        common = 0
        for cached, wanted in zip(self.context, prompt, strict=False):
            if cached != wanted:
                break
            common += 1
        if common < len(self.context):
            self.canister.session_truncate(session, common)
            self.context = self.context[:common]
        total = len(prompt) - common
        if events.reading and total:
            events.reading(0, total)  # a big model may read for many seconds in one call
        while len(self.context) < len(prompt):
            if cancel is not None and cancel.is_set():
                return False
            reply = self.canister.session_prefill(
                session,
                len(self.context),
                prompt[len(self.context) :],
                self.settings.call_budget,
            )
            self.context += prompt[len(self.context) : len(self.context) + reply.consumed]
            remaining = len(prompt) - len(self.context)
            calls.add(CallStats("prefill", reply.consumed, reply.instructions, remaining))
            if events.reading:
                events.reading(len(self.context) - common, total)
        return True

    def _trim(self, needed: int) -> Trimmed | None:
        """Drops the oldest turns when `needed` more tokens do not fit. Every kept token
        is computed again, so it keeps at most half the context: the next drop is then
        many turns away."""
        if len(self.tokens) + needed <= self.n_ctx:
            return None
        budget = min(self.n_ctx // 2, self.n_ctx - needed)
        keep_from = len(self.tokens)
        for start in self.turn_starts:
            if len(self.tokens) - start <= budget:
                keep_from = start
                break
        dropped_turns = sum(1 for s in self.turn_starts if s < keep_from)
        self.tokens = self.tokens[keep_from:]
        self.turn_starts = [s - keep_from for s in self.turn_starts if s >= keep_from]
        return Trimmed(turns=dropped_turns, tokens=keep_from, kept=len(self.tokens))


class _CallLog:
    """The calls of one turn, each also reported to an optional listener."""

    def __init__(self, listener: Callable[[CallStats], None] | None) -> None:
        self.calls: list[CallStats] = []
        self.listener = listener

    def add(self, call: CallStats) -> None:
        self.calls.append(call)
        if self.listener is not None:
            self.listener(call)


def _held(text: str) -> int:
    """Length of the longest suffix of `text` that starts a stop string."""
    return max(
        (n for s in STOP_STRINGS for n in range(1, len(s)) if text.endswith(s[:n])), default=0
    )


def _stop_index(text: str) -> int | None:
    hits = [i for s in STOP_STRINGS if (i := text.find(s)) >= 0]
    return min(hits) if hits else None
