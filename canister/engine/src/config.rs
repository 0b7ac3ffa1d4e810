//! GPT-2 hyper-parameters, as read from a checkpoint.

use serde::Serialize;

/// Token id of `<|endoftext|>` in GPT-2's vocabulary.
pub const END_OF_TEXT: u32 = 50256;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Width of the MLP's hidden layer (4 * n_embd in every released GPT-2).
    pub n_inner: usize,
    pub vocab_size: usize,
    /// Context length: the number of learned position embeddings.
    pub n_ctx: usize,
    pub layer_norm_epsilon: f32,
}

impl Config {
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }
}
