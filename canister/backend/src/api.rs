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
    /// Stable memory was found damaged after an upgrade; the canister came up empty.
    /// `upload_clear` or `upload_begin` (which then starts afresh) acknowledges it.
    pub damage: Option<StableDamage>,
}

/// What was wrong with stable memory when the canister last started.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub enum StableDamage {
    /// The upload record page does not decode.
    UnreadableRecord,
    /// The record says the file has `received` bytes, but stable memory ends before them.
    Truncated { stable_bytes: u64, needed_bytes: u64 },
    /// The model file no longer hashes to the sha256 recorded when its upload completed.
    Sha256Mismatch { recorded: String, found: String },
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
    /// The canister's cycle balance (0 in the embedded runtime, which holds no cycles).
    pub cycles: candid::Nat,
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

/// Why a call was refused. Every method but the seed's returns it in `Err`, and an `Err`
/// leaves the canister's state exactly as it was.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub enum Error {
    /// Only a controller of the canister may upload, clear, finalize or load.
    NotController,
    /// Sessions belong to a principal: the anonymous one cannot own them.
    AnonymousCaller,
    /// No model is loaded (and none is loading).
    NoModel,
    /// The model is still loading: call `load_model` again.
    ModelLoading { loaded_tensors: u32, total_tensors: u32 },
    /// An argument is out of range (the text says which and why).
    InvalidArgument(String),
    /// The chunk starts past the bytes received: send the one at `expected` first.
    Gap { expected: u64 },
    /// The chunk repeats received bytes with different contents.
    ChunkMismatch { expected: u64 },
    /// The chunk runs past the declared file size.
    PastDeclaredSize { size: u64 },
    /// The upload is complete: begin a new one or clear it first.
    UploadComplete,
    /// The upload is not complete (`size` is the declared size, if one was declared).
    UploadIncomplete { received: u64, size: Option<u64> },
    /// The received bytes do not hash to the declared sha256: clear and upload again.
    Sha256Mismatch { received: String, declared: String },
    /// The uploaded file is not a GPT-2 safetensors model the engine can load.
    InvalidModel(String),
    /// The model in stable memory no longer hashes to what was recorded when its upload
    /// completed (stable memory was damaged): upload it again.
    StoredModelCorrupt { recorded: String, found: String },
    /// No such session for this caller (deleted, evicted, or another principal's).
    UnknownSession { session: u64 },
    /// The session is at position `expected`, not the one the call named.
    PositionMismatch { expected: u32 },
    /// Every one of the canister's `limit` sessions is in recent use by a principal that
    /// holds only that one: none is evicted for a newcomer; try again later.
    SessionsFull { limit: u32 },
    /// `session_generate` before any prompt: prefill first.
    NoContext,
    /// The tokens do not fit the model's context of `n_ctx` positions.
    ContextFull { n_ctx: u32 },
    /// Not enough memory (heap for a session's KV cache, or stable memory for the upload).
    OutOfMemory(String),
    /// The request cannot be done within one call's instruction limit.
    InstructionLimit(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotController => write!(f, "only a controller of this canister may do this"),
            Error::AnonymousCaller => {
                write!(f, "sessions need an identity: the anonymous principal cannot own one")
            }
            Error::NoModel => write!(
                f,
                "no model is loaded: upload a model file, then call load_model (or setup_model)"
            ),
            Error::ModelLoading { loaded_tensors, total_tensors } => write!(
                f,
                "the model is still loading ({loaded_tensors} of {total_tensors} tensors): \
                 call load_model again"
            ),
            Error::InvalidArgument(m) | Error::OutOfMemory(m) | Error::InstructionLimit(m) => {
                write!(f, "{m}")
            }
            Error::InvalidModel(m) => write!(f, "invalid model file: {m}"),
            Error::Gap { expected } => {
                write!(f, "the chunk leaves a gap: expected offset {expected}")
            }
            Error::ChunkMismatch { expected } => write!(
                f,
                "the chunk differs from the bytes already received: expected offset {expected}"
            ),
            Error::PastDeclaredSize { size } => {
                write!(f, "the chunk runs past the declared size {size}")
            }
            Error::UploadComplete => {
                write!(f, "the upload is complete; begin a new upload or clear it first")
            }
            Error::UploadIncomplete { received, size: Some(size) } => {
                write!(f, "upload incomplete: received {received} of {size} bytes")
            }
            Error::UploadIncomplete { received, size: None } => {
                write!(f, "upload incomplete: received {received} bytes")
            }
            Error::Sha256Mismatch { received, declared } => write!(
                f,
                "sha256 mismatch: the received bytes hash to {received}, but {declared} was \
                 declared; clear the upload and send the file again"
            ),
            Error::StoredModelCorrupt { recorded, found } => write!(
                f,
                "the model in stable memory hashes to {found}, not {recorded} as recorded: \
                 it was damaged; upload it again"
            ),
            Error::UnknownSession { session } => write!(
                f,
                "no session {session} for this caller (it was deleted, evicted, or belongs to \
                 another principal)"
            ),
            Error::PositionMismatch { expected } => {
                write!(f, "the session is at position {expected}")
            }
            Error::SessionsFull { limit } => write!(
                f,
                "all {limit} sessions are in recent use by other principals; try again later"
            ),
            Error::NoContext => {
                write!(f, "the session has no context to continue: prefill a prompt first")
            }
            Error::ContextFull { n_ctx } => {
                write!(f, "context is full: the model has {n_ctx} positions")
            }
        }
    }
}

impl From<gpt2_engine::EngineError> for Error {
    fn from(e: gpt2_engine::EngineError) -> Self {
        use gpt2_engine::EngineError as E;
        match e {
            E::BadModel(m) => Error::InvalidModel(m),
            E::BadInput(m) => Error::InvalidArgument(m),
            E::ContextFull { n_ctx } => Error::ContextFull { n_ctx: n_ctx as u32 },
            E::OutOfMemory(m) => Error::OutOfMemory(m),
        }
    }
}
