"""Measurements through the embedded runtime: the shipped canister wasm under IC metering.

Every instruction count here is the runtime's metering of a whole message (what the IC
would charge against the per-call limit: Candid decoding, the model, the reply), taken
from the backend's `Reply`, not the canister's own counter.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gpt2_chat.backends.base import Reply
from gpt2_chat.backends.embedded.backend import EmbeddedBackend
from gpt2_chat.backends.embedded.runtime import Limits
from gpt2_chat.bench.tables import (
    Budget,
    Call,
    CostModel,
    Figure,
    context_cap,
    figure,
    figure_cost,
)
from gpt2_chat.client.canister import CanisterError, Gpt2Canister, ModelInfo, Sampling
from gpt2_chat.client.random_model import Shape, prepare_random
from gpt2_chat.client.upload import upload_model
from gpt2_chat.errors import BackendError, InstructionLimitExceeded
from gpt2_chat.identity import default_identity

Log = Callable[[str], None]


def prompt_tokens(n: int, vocab: int) -> list[int]:
    """A fixed pseudo-random prompt; never the last id (GPT-2's end-of-text)."""
    return [(i * 7919 + 13) % (vocab - 1) for i in range(n)]


class MeteredBackend:
    """Forwards calls to the embedded backend, keeping the metered cost of the last update."""

    parallel_updates = False

    def __init__(self, inner: EmbeddedBackend) -> None:
        self.inner = inner
        self.description = inner.description
        self.last = 0

    def query(self, method: str, arg: bytes) -> Reply:
        return self.inner.query(method, arg)

    def update(self, method: str, arg: bytes) -> Reply:
        self.last = 0
        reply = self.inner.update(method, arg)
        self.last = reply.instructions or 0
        return reply

    def close(self) -> None:
        self.inner.close()


@dataclass
class Generated:
    calls: list[Call]
    tokens: list[int]
    stop: str

    @property
    def instructions(self) -> int:
        return sum(c.instructions for c in self.calls)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.calls)


class BenchCanister:
    """A fresh canister in `state_dir`, called by a key made there (its controller)."""

    def __init__(self, state_dir: Path, wasm: bytes | None = None) -> None:
        identity = default_identity(state_dir / "identity.pem")
        self.backend = EmbeddedBackend(state_dir / "canister", identity.sender(), wasm=wasm)
        self.metered = MeteredBackend(self.backend)
        self.canister = Gpt2Canister(self.metered)

    def set_limit(self, limit: int) -> None:
        """The per-call instruction limit of update calls from now on."""
        self.backend.canister.limits = Limits(update=limit)

    def upload(self, path: Path) -> float:
        """Uploads and loads `path`; seconds taken."""
        began = time.perf_counter()
        upload_model(self.canister, path)
        return time.perf_counter() - began

    def info(self) -> ModelInfo:
        return self.canister.model_info()

    def memory_bytes(self) -> int | None:
        """The size of the canister's wasm memory (all its heap pages) now."""
        runtime: Any = self.backend.canister
        try:
            return int(runtime._memory.data_len(runtime._store))
        except AttributeError:
            return None

    def session(self) -> int:
        return self.canister.session_create(Sampling()).id

    def delete(self, session: int) -> None:
        self.canister.session_delete(session)

    def prefill(self, session: int, start: int, tokens: list[int], budget: int) -> list[Call]:
        """Prefills all of `tokens`, in as many calls as the canister takes."""
        calls: list[Call] = []
        done = 0
        while done < len(tokens):
            began = time.perf_counter()
            r = self.canister.session_prefill(session, start + done, tokens[done:], budget)
            calls.append(
                Call(start + done, r.consumed, self.metered.last, time.perf_counter() - began)
            )
            done += r.consumed
        return calls

    def generate(self, session: int, start: int, n: int, budget: int) -> Generated:
        """Generates up to `n` greedy tokens, in further calls when one stops at its budget."""
        out = Generated([], [], "MaxTokens")
        position = start
        while len(out.tokens) < n:
            began = time.perf_counter()
            r = self.canister.session_generate(session, position, n - len(out.tokens), budget)
            out.calls.append(
                Call(position, len(r.tokens), self.metered.last, time.perf_counter() - began)
            )
            out.tokens += r.tokens
            out.stop = r.stop
            position = r.position
            if r.stop != "InstructionBudget" or not r.tokens:
                break
        return out

    def model_inference(self, max_new: int, prompt: list[int]) -> tuple[list[int], int]:
        """The seed's one-call method: (new tokens, metered instructions)."""
        tokens = self.canister.model_inference(max_new, prompt)
        return tokens, self.metered.last

    def close(self) -> None:
        self.backend.close()


# --- the per-token costs ------------------------------------------------------------------


@dataclass
class Calibration:
    """The calls the cost model is fitted to, and the headline per-token figures."""

    prefill_calls: list[Call]
    generate_calls: list[Call]
    head_instructions: int
    prefill_instructions_per_token: float
    decode_instructions_per_token: float
    decode_tokens: list[int]
    #: What the canister reserves for one session: a full context's keys and values.
    kv_bytes_full_context: int
    model: CostModel = field(init=False)

    def fit(self, n_ctx: int) -> CostModel:
        self.model = CostModel.fit(n_ctx, self.prefill_calls, self.generate_calls, self.head)
        return self.model

    @property
    def head(self) -> float:
        return float(self.head_instructions)


def calibrate(
    bc: BenchCanister,
    n_ctx: int,
    vocab: int,
    budgets: tuple[Budget, ...],
    prefill_tokens: int = 128,
    decode_prompt: int = 16,
    decode_tokens: int = 32,
    log: Log | None = None,
) -> Calibration:
    """Measures prefill (a `prefill_tokens` prompt, then on to the longest prompt the largest
    budget may take), generation at short positions and at that long one, and the LM head."""
    say = log or (lambda _m: None)
    biggest = max(budgets, key=lambda b: b.budget)
    bc.set_limit(biggest.limit)
    budget = biggest.budget
    prompt = prompt_tokens(n_ctx, vocab)

    say(f"prefill {prefill_tokens} tokens")
    sid = bc.session()
    prefill_calls = bc.prefill(sid, 0, prompt[:prefill_tokens], budget)
    per_token = sum(c.instructions for c in prefill_calls) / prefill_tokens
    # On to a bit past the longest prompt the biggest budget can take, in calls of
    # different lengths (the fit separates the per-call, per-token and attention costs).
    reach = int(budget / per_token * 1.15) // 16 * 16 + 16
    reach = max(min(reach, n_ctx - 16), min(prefill_tokens + 48, n_ctx - 16))
    say(f"prefill on to {reach} tokens")
    position = prefill_tokens
    step = 16
    while position < reach:
        n = min(step, reach - position)
        prefill_calls += bc.prefill(sid, position, prompt[position : position + n], budget)
        position += n
        step = 256
    say(f"generate 8 tokens at position {position}")
    far = bc.generate(sid, position, 8, budget)
    bc.delete(sid)

    say(f"generate {decode_tokens} tokens after a {decode_prompt}-token prompt")
    sid = bc.session()
    kv_bytes = bc.info().kv_bytes_reserved
    short = bc.prefill(sid, 0, prompt[:decode_prompt], budget)
    near = bc.generate(sid, decode_prompt, decode_tokens, budget)
    more = bc.generate(sid, decode_prompt + len(near.tokens), 8, budget)
    bc.delete(sid)
    _, one = bc.model_inference(1, prompt[:decode_prompt])
    head = one - sum(c.instructions for c in short)
    return Calibration(
        prefill_calls=prefill_calls,
        generate_calls=near.calls + more.calls + far.calls,
        head_instructions=head,
        prefill_instructions_per_token=per_token,
        decode_instructions_per_token=near.instructions / max(len(near.tokens), 1),
        decode_tokens=near.tokens,
        kv_bytes_full_context=kv_bytes,
    )


def timed_decode(bc: BenchCanister, prompt: list[int], n: int) -> tuple[list[int], float]:
    """Greedy tokens after `prompt` and the wall-clock seconds of the generate call."""
    sid = bc.session()
    try:
        bc.prefill(sid, 0, prompt, 30_000_000_000)
        gen = bc.generate(sid, len(prompt), n, 30_000_000_000)
    finally:
        bc.delete(sid)
    return gen.tokens, gen.seconds


# --- checking figures with real calls ---------------------------------------------------------


@dataclass
class Validation:
    """A table figure run for real under its limit."""

    key: str
    value: int
    vehicle: str
    limit: int
    budget: int
    calls: int
    tokens_expected: int
    tokens_returned: int
    #: None when the call ran past the limit.
    measured_instructions: int | None
    predicted_instructions: int
    #: What one more token would add, from the cost model.
    next_token_instructions: int
    #: The context is full: no room for another token whatever it costs.
    capped_by_context: bool = False
    note: str = ""

    @property
    def within_budget(self) -> bool:
        m = self.measured_instructions
        return m is not None and m <= self.budget

    @property
    def delivered(self) -> bool:
        return self.tokens_returned == self.tokens_expected

    @property
    def fits(self) -> bool:
        """The figure held: every token came back and the instructions are within budget."""
        return self.within_budget and self.delivered

    @property
    def next_fits(self) -> bool:
        """Whether the measurement leaves room for one more token: the figure is too low."""
        m = self.measured_instructions
        if not self.fits or m is None or self.capped_by_context:
            return False
        return m + self.next_token_instructions <= self.budget

    @property
    def error(self) -> float | None:
        """(measured - predicted) / predicted."""
        m = self.measured_instructions
        if m is None or not self.predicted_instructions:
            return None
        return (m - self.predicted_instructions) / self.predicted_instructions

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        err = self.error
        d.update(
            within_budget=self.within_budget,
            delivered=self.delivered,
            fits=self.fits,
            next_fits=self.next_fits,
            model_error=None if err is None else round(err, 5),
        )
        return d


def validate(bc: BenchCanister, model: CostModel, fig: Figure, b: Budget, vocab: int) -> Validation:
    """Runs `fig` for real under `b.limit` and measures what it costs."""
    bc.set_limit(b.limit)
    prompt_len = fig.value if fig.kind == "max_prompt" else fig.prompt
    prompt = prompt_tokens(prompt_len, vocab)
    step = figure_cost(model, fig.kind, fig.prompt, fig.value + 1) - figure_cost(
        model, fig.kind, fig.prompt, fig.value
    )
    base: dict[str, Any] = {
        "key": fig.key,
        "value": fig.value,
        "limit": b.limit,
        "budget": b.budget,
        "predicted_instructions": round(fig.predicted),
        "next_token_instructions": 0 if fig.capped_by_context else round(step),
        "capped_by_context": fig.capped_by_context,
    }
    if fig.kind == "max_prompt":
        note = ""
        try:
            tokens, used = bc.model_inference(1, prompt)
        except InstructionLimitExceeded:
            tokens, used, note = [], None, "ran past the limit"
        except CanisterError as e:  # the canister declined within the call
            tokens, used, note = [], bc.metered.last, f"refused: {e}"
        if used is not None and not tokens and not note:
            note = "no token returned: model_inference stopped before the output token"
            if fig.value >= model.n_ctx:
                note += " (the prompt fills the context)"
        return Validation(
            vehicle="model_inference(1, prompt)",
            calls=1,
            tokens_expected=1,
            tokens_returned=len(tokens),
            measured_instructions=used,
            note=note,
            **base,
        )
    if fig.kind == "kv":
        sid = bc.session()
        gen: Generated | None = None
        try:
            calls = bc.prefill(sid, 0, prompt, b.budget)
            if fig.value:
                gen = bc.generate(sid, fig.prompt, fig.value, b.budget)
                calls += gen.calls
        finally:
            bc.delete(sid)
        return Validation(
            vehicle="session_prefill + session_generate, summed",
            calls=len(calls),
            tokens_expected=fig.value,
            tokens_returned=len(gen.tokens) if gen else 0,
            measured_instructions=sum(c.instructions for c in calls),
            note="" if gen is None or gen.stop == "MaxTokens" else f"stopped: {gen.stop}",
            **base,
        )
    # Without the KV cache: each output token is a fresh call over the whole prefix.
    sequence = list(prompt)
    used = 0
    note = ""
    for _ in range(fig.value):
        try:
            tokens, cost = bc.model_inference(1, sequence)
        except CanisterError as e:
            tokens, cost, note = [], bc.metered.last, f"refused: {e}"
        used += cost
        if not tokens:
            break
        sequence.append(tokens[0])
    return Validation(
        vehicle="model_inference(1, prompt + outputs so far) per token, summed",
        calls=fig.value,
        tokens_expected=fig.value,
        tokens_returned=len(sequence) - len(prompt),
        measured_instructions=used,
        note=note,
        **base,
    )


def checked_figure(
    bc: BenchCanister,
    model: CostModel,
    fig: Figure,
    b: Budget,
    vocab: int,
    log: Log | None = None,
    attempts: int = 8,
) -> tuple[Figure, list[Validation]]:
    """Checks `fig` with real calls and corrects it until a value that `fits` (delivered its
    tokens within the budget) sits next to one that does not, or the context is full.

    Each check brackets the answer: a fit raises the floor, anything else (over the budget,
    past the limit, refused, fewer tokens) lowers the ceiling. The next value comes from the
    model anchored on a fitting measurement, and from halving the bracket otherwise; at most
    `attempts` checks. Returns the largest value that fit (0 if none did: the table then
    claims nothing it did not see) and every check, the final figure's check last."""
    say = log or (lambda _m: None)
    tried: dict[int, tuple[Figure, Validation]] = {}
    checks: list[Validation] = []
    floor: int | None = None  # the most tokens seen to fit
    ceiling: int | None = None  # the fewest tokens seen not to
    current = fig
    for attempt in range(attempts):
        how = "with real calls" if attempt == 0 else f"(corrected from {checks[-1].value})"
        say(f"checking {current.key} = {current.value} {how}")
        v = validate(bc, model, current, b, vocab)
        checks.append(v)
        tried[current.value] = (current, v)
        if v.fits:
            floor = current.value
            if not v.next_fits:
                break
        else:
            ceiling = current.value
        if floor is not None and ceiling is not None and ceiling - floor <= 1:
            break
        n = _next_value(model, b, current, v, floor, ceiling)
        if n is None or n in tried:
            break
        current = _plus(model, current, n - current.value)
    if floor is None:
        final = replace(fig, value=0, predicted=0.0)
        return final, checks
    final, v = tried[floor]
    over = tried.get(floor + 1)
    if over is not None and v.measured_instructions is not None:
        # One more token was measured too: what it really adds, instead of the model's guess.
        m_next = over[1].measured_instructions
        if m_next is not None and over[1].delivered:
            v.next_token_instructions = m_next - v.measured_instructions
        else:
            v.next_token_instructions = b.limit  # it ran past the limit or was refused
    if checks[-1] is not v:
        checks.remove(v)
        checks.append(v)  # the final check last
    return final, checks


def _next_value(
    model: CostModel,
    b: Budget,
    current: Figure,
    v: Validation,
    floor: int | None,
    ceiling: int | None,
) -> int | None:
    """The value to check next, strictly inside the bracket; None when there is none."""
    lo = -1 if floor is None else floor
    hi = current.value + 2 * max(1, current.value // 16) if ceiling is None else ceiling
    if hi - lo <= 1:
        return None
    m = v.measured_instructions
    guess: int | None = None
    if m is not None and v.delivered:  # a whole measurement: the model supplies increments
        guess = figure(model, b, current.kind, current.prompt, anchor=(current.value, m)).value
    elif floor is None:
        # Nothing fit yet: a little lower than what failed (a refusal's partial
        # measurement says nothing about the whole figure).
        guess = current.value - max(1, current.value // 32)
    if guess is None or not lo < guess < hi:
        guess = (lo + hi) // 2 if floor is not None or ceiling is None else hi - 1
        guess = max(lo + 1, min(guess, hi - 1))
    return guess if guess >= 0 else None


def _plus(model: CostModel, fig: Figure, k: int) -> Figure:
    n = fig.value + k
    return replace(
        fig,
        value=n,
        predicted=figure_cost(model, fig.kind, fig.prompt, n),
        capped_by_context=n >= context_cap(model, fig.kind, fig.prompt),
    )


# --- bigger shapes: do they load? -----------------------------------------------------------


def check_shape(
    work: Path, shape: Shape, wasm: bytes | None, seed: int, log: Log | None = None
) -> dict[str, Any]:
    """Writes `shape` in int8, uploads it to a fresh canister and, if it loads, measures
    instructions per prompt and generated token."""
    say = log or (lambda _m: None)
    path = work / f"{shape.name}-int8.safetensors"
    state = work / f"state-{shape.name}"
    out: dict[str, Any] = {
        "model": shape.name,
        "dtype": "int8",
        "n_layer": shape.n_layer,
        "n_head": shape.n_head,
        "n_embd": shape.n_embd,
        "parameters": shape.parameters,
    }
    began = time.perf_counter()
    try:
        say(f"{shape.name}: writing the int8 file")
        prepared = prepare_random(shape, path, "int8", seed)
        out["file_bytes"] = prepared.size
        out["write_seconds"] = round(time.perf_counter() - began, 1)
        bc = BenchCanister(state, wasm)
        try:
            say(f"{shape.name}: upload and load ({prepared.size / 1e6:.0f} MB)")
            try:
                out["upload_seconds"] = round(bc.upload(path), 1)
            except BackendError as e:
                out.update(fits=False, error=_short_error(str(e)), memory_bytes=bc.memory_bytes())
                return out
            info = bc.info()
            out.update(fits=True, weights_heap_bytes=info.weights_heap_bytes)
            out["memory_bytes"] = bc.memory_bytes()
            say(f"{shape.name}: prefill 32 tokens, generate 8")
            prompt = prompt_tokens(32, shape.vocab_size)
            try:
                sid = bc.session()
            except (BackendError, CanisterError) as e:  # loaded, but no room for a session
                out.update(fits=False, error=_short_error(str(e)))
                return out
            kv = bc.info().kv_bytes_reserved
            pre = bc.prefill(sid, 0, prompt, 30_000_000_000)
            gen = bc.generate(sid, len(prompt), 8, 30_000_000_000)
            bc.delete(sid)
            out["prefill_instructions_per_token"] = round(
                sum(c.instructions for c in pre) / len(prompt)
            )
            out["decode_instructions_per_token"] = round(gen.instructions / max(len(gen.tokens), 1))
            out["tokens_per_second"] = round(len(gen.tokens) / gen.seconds, 2)
            out["kv_bytes_full_context"] = kv
            out["heap_bytes"] = info.weights_heap_bytes + kv
        finally:
            bc.close()
    finally:
        path.unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)
        out["seconds"] = round(time.perf_counter() - began, 1)
    return out


def _short_error(text: str) -> str:
    """A trap's first line and its cause, without wasmtime's backtrace."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return text
    first = lines[0].split(": error while executing at wasm backtrace")[0]
    cause = next((line for line in lines[1:] if line.startswith("wasm trap")), None)
    return f"{first}: {cause}" if cause else first
