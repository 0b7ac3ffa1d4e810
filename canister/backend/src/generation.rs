//! Prefill and generate: pushing a session's tokens through the model within an
//! instruction budget, so each update call stays under the IC's limit.

use candid::{CandidType, Decode, Encode};
use gpt2_engine::{sample, BestKernels, KvLayout, Model, SamplingParams, END_OF_TEXT};
use serde::de::DeserializeOwned;

use crate::api::{Error, GenerateArgs, GenerateReply, PrefillArgs, PrefillReply, StopReason};
use crate::sessions::{from_api, Session};

/// Instructions per update call: the IC's limit is 40B; leave room for the reply and the
/// error of our per-token estimate.
pub const DEFAULT_BUDGET: u64 = 30_000_000_000;
pub const MAX_BUDGET: u64 = 39_000_000_000;
/// Prompt tokens pushed through the network together (the kernels share each weight load
/// across the block's tokens); also the granularity of the budget check in prefill.
const PREFILL_BLOCK: usize = 16;

/// Instructions used so far in this message.
pub type Counter<'a> = &'a dyn Fn() -> u64;

pub fn budget(requested: Option<u64>) -> Result<u64, Error> {
    match requested {
        None => Ok(DEFAULT_BUDGET),
        Some(b) if b <= MAX_BUDGET => Ok(b),
        Some(b) => Err(Error::InvalidArgument(format!(
            "instruction budget {b} is over the maximum {MAX_BUDGET}"
        ))),
    }
}

/// The one estimate of IC instructions (the replica's cost table) for one token's pass
/// through `model` at `position` (plus the LM head when `with_head`), used for budget
/// checks until a measurement replaces it. Per multiply-add, ×10: a little above what the
/// kernels measure (`gpt2-chat bench`: ~1.9 in f32, ~0.7 in int8); attention's integer or
/// f32 dot products over cached positions at 3.
pub fn estimate_per_token(model: &Model, position: usize, with_head: bool) -> u64 {
    let c = &model.config;
    let per_mac_x10: u64 = match model.kv_layout() {
        KvLayout::F32 => 22,
        KvLayout::Int16 => 8,
    };
    let (e, f) = (c.n_embd as u64, c.n_inner as u64);
    let weights = c.n_layer as u64 * (4 * e * e + 2 * e * f)
        + if with_head { e * c.vocab_size as u64 } else { 0 };
    let attention = c.n_layer as u64 * 2 * e * position as u64;
    weights * per_mac_x10 / 10 + 3 * attention + 1_000_000
}

/// Instructions per token for budget checks: a pessimistic guess until the first
/// measurement replaces it; later measurements only raise it (attention grows with the
/// position). The 10% margin covers that growth within a block.
struct PerToken {
    value: u64,
    measured: bool,
}

impl PerToken {
    fn guess(value: u64) -> Self {
        PerToken { value, measured: false }
    }

    fn observe(&mut self, instructions: u64, tokens: usize) {
        let m = instructions / tokens.max(1) as u64 * 11 / 10;
        self.value = if self.measured { self.value.max(m) } else { m };
        self.measured = true;
    }
}

/// The reply to an identical earlier call, or an error when `position` is not the
/// session's. A repeated call is thereby answered once, never executed twice.
fn replay<A: CandidType, R: CandidType + DeserializeOwned>(
    session: &Session,
    position: u32,
    args: &A,
) -> Result<Option<R>, Error> {
    let at = session.tokens.len() as u32;
    if position == at {
        return Ok(None);
    }
    if let Some((last_args, last_reply)) = &session.last_call {
        if Encode!(args).ok().as_ref() == Some(last_args) {
            if let Ok(reply) = Decode!(last_reply, R) {
                return Ok(Some(reply));
            }
        }
    }
    Err(Error::PositionMismatch { expected: at })
}

fn remember<A: CandidType, R: CandidType>(session: &mut Session, args: &A, reply: &R) {
    session.last_call = Encode!(args).ok().zip(Encode!(reply).ok());
}

pub fn prefill(
    model: &Model,
    session: &mut Session,
    args: &PrefillArgs,
    counter: Counter,
) -> Result<PrefillReply, Error> {
    if let Some(reply) = replay(session, args.position, args)? {
        return Ok(reply);
    }
    let budget = budget(args.instruction_budget)?;
    model.check_tokens(session.tokens.len(), &args.tokens)?;
    let mut per_token = PerToken::guess(estimate_per_token(model, session.tokens.len(), false));
    let mut consumed = 0;
    while consumed < args.tokens.len() {
        let used = counter();
        let affordable = (budget.saturating_sub(used) / per_token.value.max(1)) as usize;
        // At least one block per call, so a prefill always advances.
        let n = if consumed == 0 { affordable.max(1) } else { affordable };
        let n = n.min(PREFILL_BLOCK).min(args.tokens.len() - consumed);
        if n == 0 {
            break;
        }
        let block = &args.tokens[consumed..consumed + n];
        let hidden = model.forward(&BestKernels::default(), &mut session.cache, block)?;
        session.tokens.extend_from_slice(block);
        session.hidden = Some(hidden);
        consumed += n;
        per_token.observe(counter().saturating_sub(used), n);
    }
    let reply = PrefillReply {
        consumed: consumed as u32,
        position: session.tokens.len() as u32,
        instructions: counter(),
    };
    remember(session, args, &reply);
    Ok(reply)
}

pub fn generate(
    model: &Model,
    session: &mut Session,
    args: &GenerateArgs,
    counter: Counter,
) -> Result<GenerateReply, Error> {
    if let Some(reply) = replay(session, args.position, args)? {
        return Ok(reply);
    }
    let budget = budget(args.instruction_budget)?;
    let sampling = args.sampling.map(from_api).transpose()?.unwrap_or(session.sampling);
    if session.hidden.is_none() {
        return Err(Error::NoContext);
    }
    session.sampling = sampling;
    let k = BestKernels::default();
    let n_ctx = model.config.n_ctx;
    let mut per_token = PerToken::guess(estimate_per_token(model, session.tokens.len(), true));
    let mut new_tokens = Vec::new();
    let stop = loop {
        if new_tokens.len() >= args.max_tokens as usize {
            break StopReason::MaxTokens;
        }
        let used = counter();
        if !new_tokens.is_empty() && used.saturating_add(per_token.value) > budget {
            break StopReason::InstructionBudget;
        }
        let hidden = session.hidden.as_ref().expect("checked above");
        let token = sample(&sampling, &model.logits(&k, hidden), session.tokens.len() as u64);
        if token == END_OF_TEXT {
            break StopReason::EndOfText;
        }
        if session.tokens.len() >= n_ctx {
            // A full context still predicts its next token; it has no position to be
            // processed at, so it ends the reply without entering the context (a repeated
            // call at this position returns it again).
            new_tokens.push(token);
            break StopReason::ContextFull;
        }
        let hidden = model.forward(&k, &mut session.cache, &[token])?;
        session.hidden = Some(hidden);
        session.tokens.push(token);
        new_tokens.push(token);
        per_token.observe(counter().saturating_sub(used), 1);
    };
    let reply = GenerateReply {
        tokens: new_tokens,
        position: session.tokens.len() as u32,
        stop,
        instructions: counter(),
    };
    remember(session, args, &reply);
    Ok(reply)
}

/// The seed's `model_inference`: greedy continuation of `prompt` without a kept session,
/// stopping at end-of-text; returns only the new ids. It runs the sessions' own prefill
/// and generate in a session that is dropped afterwards.
pub fn seed_inference(
    model: &Model,
    max_new: u8,
    prompt: &[i64],
    counter: Counter,
) -> Result<Vec<i64>, Error> {
    let vocab = model.config.vocab_size;
    let ids = prompt
        .iter()
        .map(|&id| {
            u32::try_from(id).ok().filter(|&t| (t as usize) < vocab).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "token id {id} is out of range: the vocabulary has {vocab} ids (0..{})",
                    vocab - 1
                ))
            })
        })
        .collect::<Result<Vec<u32>, Error>>()?;
    model.check_tokens(0, &ids)?;
    let mut session = Session::detached(SamplingParams::GREEDY, &model.config, model.kv_layout())?;
    // The prompt may use what the first output token leaves of one call's budget.
    let first_token = estimate_per_token(model, ids.len(), true);
    let prompt_budget = MAX_BUDGET.saturating_sub(first_token);
    let prefill_args = PrefillArgs {
        session: 0,
        position: 0,
        tokens: ids,
        instruction_budget: Some(prompt_budget),
    };
    let filled = prefill(model, &mut session, &prefill_args, counter)?;
    if (filled.consumed as usize) < prefill_args.tokens.len() {
        return Err(Error::InstructionLimit(format!(
            "a {}-token prompt does not fit one call's instruction budget ({} tokens did); \
             use session_prefill, which spreads a prompt over several calls",
            prefill_args.tokens.len(),
            filled.consumed
        )));
    }
    if max_new == 0 {
        return Ok(Vec::new());
    }
    let generate_args = GenerateArgs {
        session: 0,
        position: filled.position,
        max_tokens: max_new.into(),
        instruction_budget: Some(MAX_BUDGET),
        sampling: None,
    };
    let reply = generate(model, &mut session, &generate_args, counter)?;
    Ok(reply.tokens.into_iter().map(i64::from).collect())
}
