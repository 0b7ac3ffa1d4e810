//! Keys and values of every processed token, per layer, kept between calls so each new
//! token only attends over stored state instead of recomputing the prefix.
//!
//! Two layouts: f32 (exact; what f32 models use), and 12-bit integers in i16 with one
//! scale per (position, head) (what int8 models use: attention becomes `dot_i16x8` work,
//! at half the memory). In the integer layout the values of two consecutive positions are
//! interleaved (`[pair][n_embd][2]`), so that one dot product step weighs both positions.

use crate::config::Config;
use crate::error::{bad_input, EngineError};
use crate::kernels::quant::quantize_into;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvLayout {
    F32,
    Int16,
}

impl KvLayout {
    /// Bytes of keys and values (and scales) one cached token occupies, all layers.
    pub fn bytes_per_token(self, config: &Config) -> usize {
        let per_layer = match self {
            KvLayout::F32 => 2 * config.n_embd * 4,
            KvLayout::Int16 => 2 * (config.n_embd * 2 + config.n_head * 4),
        };
        config.n_layer * per_layer
    }
}

/// One layer's keys and values in the integer layout.
pub struct QuantLayer {
    /// `[position][n_embd]`.
    pub keys: Vec<i16>,
    /// `[head][n_ctx]`: a key's real value is its integer times this.
    pub key_scales: Vec<f32>,
    /// `[position pair][n_embd][2]`; the odd slot of a pair with one position is zero.
    pub values: Vec<i16>,
    /// `[head][n_ctx]`.
    pub value_scales: Vec<f32>,
}

/// One layer's keys and values.
pub enum Layer {
    /// Keys and values, each `[position][n_embd]`.
    F32(Vec<f32>, Vec<f32>),
    Int16(QuantLayer),
}

pub struct KvCache {
    n_embd: usize,
    n_head: usize,
    n_ctx: usize,
    len: usize,
    /// Tokens pushed to each layer since the last commit.
    pending: Vec<usize>,
    layers: Vec<Layer>,
}

impl KvCache {
    /// An f32 cache (see `try_new`).
    pub fn new(config: &Config) -> Self {
        Self::try_new(config, KvLayout::F32).expect("heap for the KV cache")
    }

    /// A cache with room for the whole context, allocated once: growing by doubling would
    /// copy the cache again and again (tens of millions of instructions at long contexts)
    /// and fragment the heap. A heap too small for it is an error, not an abort.
    pub fn try_new(config: &Config, layout: KvLayout) -> Result<Self, EngineError> {
        let room = config.n_ctx * config.n_embd;
        let scales = config.n_ctx * config.n_head;
        let layers = (0..config.n_layer)
            .map(|_| {
                Ok(match layout {
                    KvLayout::F32 => Layer::F32(reserve(room)?, reserve(room)?),
                    KvLayout::Int16 => Layer::Int16(QuantLayer {
                        keys: reserve(room)?,
                        key_scales: zeroed(scales)?,
                        values: reserve(room + config.n_embd)?,
                        value_scales: zeroed(scales)?,
                    }),
                })
            })
            .collect::<Result<Vec<_>, std::collections::TryReserveError>>()
            .map_err(|_| {
                bad_input(format!(
                    "not enough heap memory for a session: a context's keys and values need {} MB",
                    (config.n_ctx * layout.bytes_per_token(config)).div_ceil(1_000_000)
                ))
            })?;
        Ok(KvCache {
            n_embd: config.n_embd,
            n_head: config.n_head,
            n_ctx: config.n_ctx,
            len: 0,
            pending: vec![0; config.n_layer],
            layers,
        })
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
        self.layers
            .iter()
            .map(|layer| match layer {
                Layer::F32(k, v) => (k.capacity() + v.capacity()) * 4,
                Layer::Int16(q) => {
                    (q.keys.capacity() + q.values.capacity()) * 2
                        + (q.key_scales.capacity() + q.value_scales.capacity()) * 4
                }
            })
            .sum()
    }

    /// Appends one token's key and value to layer `l` (visible once `commit` is called).
    pub(crate) fn push(&mut self, l: usize, key: &[f32], value: &[f32]) {
        let position = self.len + self.pending[l];
        assert!(position < self.n_ctx, "KV cache full");
        self.pending[l] += 1;
        let (c, hs) = (self.n_embd, self.n_embd / self.n_head);
        match &mut self.layers[l] {
            Layer::F32(k, v) => {
                k.extend_from_slice(key);
                v.extend_from_slice(value);
            }
            Layer::Int16(q) => {
                q.keys.resize((position + 1) * c, 0);
                let slot = position % 2;
                if slot == 0 {
                    q.values.resize((position / 2 + 1) * 2 * c, 0);
                }
                let mut v = vec![0i16; c];
                for h in 0..self.n_head {
                    let cols = h * hs..(h + 1) * hs;
                    let at = h * self.n_ctx + position;
                    q.key_scales[at] = quantize_into(
                        &key[cols.clone()],
                        &mut q.keys[position * c..][cols.clone()],
                    );
                    q.value_scales[at] = quantize_into(&value[cols.clone()], &mut v[cols]);
                }
                let pair = &mut q.values[position / 2 * 2 * c..][..2 * c];
                for (d, x) in v.into_iter().enumerate() {
                    pair[2 * d + slot] = x;
                }
            }
        }
    }

    /// Marks the pushed tokens (the same number in every layer) as part of the context.
    pub(crate) fn commit(&mut self) {
        let n = self.pending[0];
        assert!(self.pending.iter().all(|&p| p == n), "layers pushed unevenly");
        self.len += n;
        self.pending.fill(0);
    }

    /// Layer `l`, including tokens pushed but not yet committed.
    pub(crate) fn layer(&self, l: usize) -> &Layer {
        &self.layers[l]
    }

    /// Forgets every token from position `len` on.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            let c = self.n_embd;
            for layer in &mut self.layers {
                match layer {
                    Layer::F32(k, v) => {
                        k.truncate(len * c);
                        v.truncate(len * c);
                    }
                    Layer::Int16(q) => {
                        q.keys.truncate(len * c);
                        q.values.truncate(len.div_ceil(2) * 2 * c);
                        if len % 2 == 1 {
                            // The pair's second slot held a forgotten position.
                            let pair = &mut q.values[len / 2 * 2 * c..];
                            pair.iter_mut().skip(1).step_by(2).for_each(|x| *x = 0);
                        }
                    }
                }
            }
        }
    }
}

fn reserve<T>(n: usize) -> Result<Vec<T>, std::collections::TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)?;
    Ok(v)
}

fn zeroed<T: Clone + Default>(n: usize) -> Result<Vec<T>, std::collections::TryReserveError> {
    let mut v = reserve(n)?;
    v.resize(n, T::default());
    Ok(v)
}
