//! The canister's Candid types: everything a client sends or receives (beyond the seed's
//! plain methods). `canister/gpt2_backend.did` is generated from these and checked by a test.

use candid::CandidType;
use serde::{Deserialize, Serialize};

/// Declares the file about to be uploaded so the canister can check it when complete.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct UploadBegin {
    pub size: u64,
    /// Lower-case hex sha256 of the whole file.
    pub sha256: String,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct UploadChunk {
    /// Byte offset of `data` in the file; must be the number of bytes received so far
    /// (or earlier, for a retried chunk with the same bytes).
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct UploadState {
    /// Bytes received so far: where the next chunk starts.
    pub received_bytes: u64,
    pub declared_size: Option<u64>,
    pub declared_sha256: Option<String>,
    /// sha256 of the received bytes, known once the upload is complete.
    pub sha256: Option<String>,
    /// The file is complete (and matched the declared sha256, if one was declared).
    pub complete: bool,
    /// A model parsed from this file is in the heap.
    pub loaded: bool,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct LoadProgress {
    pub loaded_tensors: u32,
    pub total_tensors: u32,
    pub loaded_bytes: u64,
    pub total_bytes: u64,
    pub done: bool,
    pub instructions: u64,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub n_layer: u32,
    pub n_head: u32,
    pub n_embd: u32,
    pub n_inner: u32,
    pub vocab_size: u32,
    pub n_ctx: u32,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub loaded: bool,
    pub config: Option<ModelConfig>,
    /// Weight type of the file ("F32", "F16", "BF16").
    pub dtype: Option<String>,
    pub weights_heap_bytes: u64,
    pub upload: UploadState,
    /// Loading in progress (several `load_model` calls for a big model).
    pub loading: Option<LoadProgress>,
    pub sessions: u32,
    pub kv_bytes_reserved: u64,
    pub kv_bytes_limit: u64,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = no top-k cut.
    pub top_k: u32,
    /// 1 = no nucleus cut.
    pub top_p: f32,
    pub seed: u64,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct SessionInfo {
    pub id: u64,
    /// Tokens in the session's context (its KV cache).
    pub position: u32,
    pub n_ctx: u32,
    pub kv_bytes: u64,
    pub sampling: Sampling,
    /// Tokens of the context, oldest first.
    pub tokens: Vec<u32>,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct PrefillArgs {
    pub session: u64,
    /// The session position this call expects (makes retries idempotent).
    pub position: u32,
    pub tokens: Vec<u32>,
    /// Stop before this many instructions are used (default 30B, at most 39B; the first
    /// block of tokens is always processed, so each call advances).
    pub instruction_budget: Option<u64>,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct PrefillReply {
    /// How many of `tokens` were processed; call again with the rest.
    pub consumed: u32,
    pub position: u32,
    pub instructions: u64,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct GenerateArgs {
    pub session: u64,
    pub position: u32,
    pub max_tokens: u32,
    /// As in `PrefillArgs`; at least one token is generated per call.
    pub instruction_budget: Option<u64>,
    /// New sampling settings for the session, applied before generating.
    pub sampling: Option<Sampling>,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    EndOfText,
    /// The context holds `n_ctx` tokens; the reply's last token is the one the full context
    /// predicts, which is not added to it.
    ContextFull,
    InstructionBudget,
}

#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct GenerateReply {
    /// New token ids (an end-of-text token is not included and not added to the context).
    pub tokens: Vec<u32>,
    pub position: u32,
    pub stop: StopReason,
    pub instructions: u64,
}
