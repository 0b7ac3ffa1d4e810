//! Errors the engine reports. Every message says what is wrong in the caller's terms.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum EngineError {
    /// The model file is malformed, truncated or not a GPT-2 checkpoint.
    BadModel(String),
    /// A request is invalid: token id out of range, context exceeded, bad sampling setting.
    BadInput(String),
    /// The tokens do not fit the model's context of `n_ctx` positions.
    ContextFull { n_ctx: usize },
    /// The heap cannot hold what the request needs (a session's KV cache).
    OutOfMemory(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::BadModel(msg) => write!(f, "invalid model file: {msg}"),
            EngineError::BadInput(msg) | EngineError::OutOfMemory(msg) => write!(f, "{msg}"),
            EngineError::ContextFull { n_ctx } => {
                write!(f, "context is full: the model has {n_ctx} positions")
            }
        }
    }
}

impl std::error::Error for EngineError {}

pub(crate) fn bad_model(msg: impl Into<String>) -> EngineError {
    EngineError::BadModel(msg.into())
}

pub(crate) fn bad_input(msg: impl Into<String>) -> EngineError {
    EngineError::BadInput(msg.into())
}
