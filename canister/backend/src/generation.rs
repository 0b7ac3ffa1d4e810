//! Prefill and generate: pushing a session's tokens through the model within an
//! instruction budget, so each update call stays under the IC's limit.

use candid::{CandidType, Decode, Encode};
use gpt2_engine::sampling::argmax;
use gpt2_engine::{sample, BestKernels, Config, KvCache, Model, END_OF_TEXT};
use serde::de::DeserializeOwned;

use crate::api::{GenerateArgs, GenerateReply, PrefillArgs, PrefillReply, StopReason};
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

pub fn budget(requested: Option<u64>) -> Result<u64, String> {
    match requested {
        None => Ok(DEFAULT_BUDGET),
        Some(b) if b <= MAX_BUDGET => Ok(b),
        Some(b) => Err(format!("instruction budget {b} is over the maximum {MAX_BUDGET}")),
    }
}

/// A pessimistic instruction cost of one token's forward pass (plus the LM head when
/// `with_head`), used until a measurement replaces it.
fn estimate_per_token(config: &Config, position: usize, with_head: bool) -> u64 {
    let (e, f) = (config.n_embd as u64, config.n_inner as u64);
    let macs = config.n_layer as u64 * (4 * e * e + 2 * e * f + 2 * e * position as u64)
        + if with_head { e * config.vocab_size as u64 } else { 0 };
    3 * macs + 1_000_000
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
) -> Result<Option<R>, String> {
    let at = session.tokens.len() as u32;
    if position == at {
        return Ok(None);
    }
    if let Some((last_args, last_reply)) = &session.last_call {
        if Encode!(args).ok().as_ref() == Some(last_args) {
            return Decode!(last_reply, R).map(Some).map_err(|e| e.to_string());
        }
    }
    Err(format!("session {} is at position {at}, not {position}", session.id))
}

fn remember<A: CandidType, R: CandidType>(session: &mut Session, args: &A, reply: &R) {
    session.last_call = Encode!(args).ok().zip(Encode!(reply).ok());
}

pub fn prefill(
    model: &Model,
    session: &mut Session,
    args: &PrefillArgs,
    counter: Counter,
) -> Result<PrefillReply, String> {
    if let Some(reply) = replay(session, args.position, args)? {
        return Ok(reply);
    }
    let budget = budget(args.instruction_budget)?;
    model.check_tokens(session.tokens.len(), &args.tokens).map_err(|e| e.to_string())?;
    let mut per_token =
        PerToken::guess(estimate_per_token(&model.config, session.tokens.len(), false));
    let mut consumed = 0;
    while consumed < args.tokens.len() {
        let used = counter();
        let affordable = (budget.saturating_sub(used) / per_token.value) as usize;
        // At least one block per call, so a prefill always advances.
        let n = if consumed == 0 { affordable.max(1) } else { affordable };
        let n = n.min(PREFILL_BLOCK).min(args.tokens.len() - consumed);
        if n == 0 {
            break;
        }
        let block = &args.tokens[consumed..consumed + n];
        let hidden = model
            .forward(&BestKernels::default(), &mut session.cache, block)
            .map_err(|e| e.to_string())?;
        session.tokens.extend_from_slice(block);
        session.hidden = Some(hidden);
        consumed += n;
        per_token.observe(counter() - used, n);
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
) -> Result<GenerateReply, String> {
    if let Some(reply) = replay(session, args.position, args)? {
        return Ok(reply);
    }
    let budget = budget(args.instruction_budget)?;
    let sampling = args.sampling.map(from_api).transpose()?.unwrap_or(session.sampling);
    if session.hidden.is_none() {
        return Err(format!(
            "session {} has no context to continue: prefill a prompt first",
            session.id
        ));
    }
    session.sampling = sampling;
    let k = BestKernels::default();
    let n_ctx = model.config.n_ctx;
    let mut per_token =
        PerToken::guess(estimate_per_token(&model.config, session.tokens.len(), true));
    let mut new_tokens = Vec::new();
    let stop = loop {
        if new_tokens.len() >= args.max_tokens as usize {
            break StopReason::MaxTokens;
        }
        let used = counter();
        if !new_tokens.is_empty() && used + per_token.value > budget {
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
        let hidden = model.forward(&k, &mut session.cache, &[token]).map_err(|e| e.to_string())?;
        session.hidden = Some(hidden);
        session.tokens.push(token);
        new_tokens.push(token);
        per_token.observe(counter() - used, 1);
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

/// The seed's `model_inference`: greedy continuation of `prompt` without a session,
/// stopping at end-of-text; returns only the new ids.
pub fn seed_inference(
    model: &Model,
    max_new: u8,
    prompt: &[i64],
    counter: Counter,
) -> Result<Vec<i64>, String> {
    let vocab = model.config.vocab_size;
    let ids = prompt
        .iter()
        .map(|&id| {
            u32::try_from(id).ok().filter(|&t| (t as usize) < vocab).ok_or_else(|| {
                format!(
                    "token id {id} is out of range: the vocabulary has {vocab} ids (0..{})",
                    vocab - 1
                )
            })
        })
        .collect::<Result<Vec<u32>, String>>()?;
    model.check_tokens(0, &ids).map_err(|e| e.to_string())?;
    let k = BestKernels::default();
    let mut cache =
        KvCache::try_new(&model.config, model.kv_layout()).map_err(|e| e.to_string())?;
    // The prompt in blocks, so that one too long for a single call ends in a clear error
    // instead of the IC's instruction-limit trap.
    let mut hidden = Vec::new();
    let mut per_token = PerToken::guess(estimate_per_token(&model.config, 0, false));
    for block in ids.chunks(PREFILL_BLOCK) {
        let used = counter();
        if used + per_token.value * block.len() as u64 > MAX_BUDGET {
            return Err(format!(
                "a {}-token prompt does not fit one call's instruction budget ({} tokens did); \
                 use session_prefill, which spreads a prompt over several calls",
                ids.len(),
                cache.len()
            ));
        }
        hidden = model.forward(&k, &mut cache, block).map_err(|e| e.to_string())?;
        per_token.observe(counter() - used, block.len());
    }
    // Each output token costs the LM head; each but the last also a pass through the model.
    let head_cost = model.logits_instructions_estimate();
    let mut out = Vec::new();
    while out.len() < max_new as usize {
        if counter() + head_cost > MAX_BUDGET {
            if out.is_empty() {
                return Err(format!(
                    "the {}-token prompt used the call's instruction budget before the first \
                     output token; use a shorter prompt or the session methods",
                    ids.len()
                ));
            }
            break;
        }
        let token = argmax(&model.logits(&k, &hidden));
        if token == END_OF_TEXT {
            break;
        }
        out.push(token as i64);
        let used = counter();
        let more = out.len() < max_new as usize && cache.len() < model.config.n_ctx;
        if !more || used + per_token.value + head_cost > MAX_BUDGET {
            break;
        }
        hidden = model.forward(&k, &mut cache, &[token]).map_err(|e| e.to_string())?;
        per_token.observe(counter() - used, 1);
    }
    Ok(out)
}
