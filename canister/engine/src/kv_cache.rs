//! Keys and values of every processed token, per layer, kept between calls so each new
//! token only attends over stored state instead of recomputing the prefix.

use crate::config::Config;
use crate::error::{bad_input, EngineError};

pub struct KvCache {
    n_embd: usize,
    len: usize,
    /// Per layer: keys and values, row-major `[position][n_embd]`.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl KvCache {
    /// A cache with room for the whole context, allocated once: growing by doubling would
    /// copy the cache again and again (tens of millions of instructions at long contexts)
    /// and fragment the heap. Sessions already reserve a full context in their accounting.
    pub fn new(config: &Config) -> Self {
        Self::try_new(config).expect("heap for the KV cache")
    }

    /// `new` that reports a heap too small for the cache as an error instead of aborting.
    pub fn try_new(config: &Config) -> Result<Self, EngineError> {
        let room = config.n_ctx * config.n_embd;
        let vector = || {
            let mut v = Vec::new();
            v.try_reserve_exact(room).map(|()| v)
        };
        let layers = (0..config.n_layer)
            .map(|_| Ok((vector()?, vector()?)))
            .collect::<Result<Vec<_>, std::collections::TryReserveError>>()
            .map_err(|_| {
                bad_input(format!(
                    "not enough heap memory for a session: a context's keys and values need {} MB",
                    (config.n_layer * 2 * room * 4).div_ceil(1_000_000)
                ))
            })?;
        Ok(KvCache { n_embd: config.n_embd, len: 0, layers })
    }

    /// Tokens whose keys and values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes the cache holds now.
    pub fn heap_bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| (k.capacity() + v.capacity()) * 4).sum()
    }

    /// Appends one token's key and value to layer `l` (visible once `commit` is called).
    pub(crate) fn push(&mut self, l: usize, key: &[f32], value: &[f32]) {
        let (k, v) = &mut self.layers[l];
        k.extend_from_slice(key);
        v.extend_from_slice(value);
    }

    /// Marks `n` pushed tokens as part of the context.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.layers.iter().all(|(k, _)| k.len() == self.len * self.n_embd));
    }

    /// Keys and values of layer `l`, including tokens pushed but not yet committed.
    pub(crate) fn layer(&self, l: usize) -> (&[f32], &[f32]) {
        let (k, v) = &self.layers[l];
        (k, v)
    }

    /// Forgets every token from position `len` on.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            for (k, v) in &mut self.layers {
                k.truncate(len * self.n_embd);
                v.truncate(len * self.n_embd);
            }
        }
    }
}
