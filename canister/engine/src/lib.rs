//! GPT-2 inference, with no Internet Computer dependency.
//!
//! Data path: a safetensors file → [`safetensors::parse_header`] → [`LoadPlan`] (validated
//! config and tensor list) → [`ModelBuilder`] (tensor by tensor) → [`Model`]. Then
//! [`Model::forward`] pushes tokens through the network into a [`KvCache`] and returns the
//! last hidden state; [`Model::logits`] turns it into next-token scores and [`sampling`]
//! picks a token.

pub mod config;
pub mod error;
pub mod kernels;
pub mod kv_cache;
pub mod loader;
pub mod model;
pub mod safetensors;
pub mod sampling;

pub use config::{Config, END_OF_TEXT};
pub use error::EngineError;
pub use kernels::{BestKernels, Kernels, Portable, Simd128};
pub use kv_cache::{KvCache, KvLayout};
pub use loader::{LoadPlan, LoadStep, ModelBuilder};
pub use model::Model;
pub use sampling::{sample, SamplingParams};

/// Loads a whole safetensors file held in memory (tests, tools; the canister streams).
pub fn load_model(file: &[u8]) -> Result<Model, EngineError> {
    let n = safetensors::header_len(file, file.len() as u64)? as usize;
    let header = safetensors::parse_header(&file[8..8 + n], file.len() as u64)?;
    let plan = LoadPlan::new(&header)?;
    let mut builder = ModelBuilder::new(&plan);
    for step in &plan.steps {
        builder.add(step, &file[step.tensor.start as usize..step.tensor.end as usize])?;
    }
    builder.finish()
}
