//! Keys and values of every processed token, per layer, kept between calls so each new
//! token only attends over stored state instead of recomputing the prefix.
//!
//! Two layouts: f32 (exact; what f32 models use), and 12-bit integers in i16 with one
//! scale per (position, head) (what int8 models use: attention becomes `dot_i16x8` work,
//! at half the memory). The integer layout is head-major, so a head's rows are a constant
//! distance apart and the kernels address them with constant offsets; its values of two
//! consecutive positions are interleaved (`[pair][head_size][2]`), so that one dot
//! product step weighs both positions.

use crate::config::Config;
use crate::error::EngineError;
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

/// One head's keys and values in the integer layout, for the positions so far.
pub struct QuantHead {
    /// `[position][head_size]`.
    pub keys: Vec<i16>,
    /// One per position: a key's real value is its integers times this.
    pub key_scales: Vec<f32>,
    /// `[position pair][head_size][2]`, padded to a multiple of `VALUE_PAIR_BLOCK` pairs
    /// (the kernel reads whole blocks; the padding's weights are zero).
    pub values: Vec<i16>,
    pub value_scales: Vec<f32>,
}

/// The integer layout's values come in blocks of this many position pairs.
pub const VALUE_PAIR_BLOCK: usize = 8;

/// One layer's keys and values.
pub enum Layer {
    /// Keys and values, each `[position][n_embd]`.
    F32(Vec<f32>, Vec<f32>),
    Int16(Vec<QuantHead>),
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
        let hs = config.head_size();
        let head = || -> Result<QuantHead, std::collections::TryReserveError> {
            let pairs = config.n_ctx.div_ceil(2 * VALUE_PAIR_BLOCK) * VALUE_PAIR_BLOCK;
            Ok(QuantHead {
                keys: reserve(config.n_ctx * hs)?,
                key_scales: reserve(config.n_ctx)?,
                values: reserve(pairs * 2 * hs)?,
                value_scales: reserve(config.n_ctx)?,
            })
        };
        let layers = (0..config.n_layer)
            .map(|_| {
                Ok(match layout {
                    KvLayout::F32 => Layer::F32(reserve(room)?, reserve(room)?),
                    KvLayout::Int16 => {
                        Layer::Int16((0..config.n_head).map(|_| head()).collect::<Result<_, _>>()?)
                    }
                })
            })
            .collect::<Result<Vec<_>, std::collections::TryReserveError>>()
            .map_err(|_| {
                EngineError::OutOfMemory(format!(
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
                Layer::Int16(heads) => heads
                    .iter()
                    .map(|q| {
                        (q.keys.capacity() + q.values.capacity()) * 2
                            + (q.key_scales.capacity() + q.value_scales.capacity()) * 4
                    })
                    .sum(),
            })
            .sum()
    }

    /// Appends one token's key and value to layer `l` (visible once `commit` is called).
    pub(crate) fn push(&mut self, l: usize, key: &[f32], value: &[f32]) {
        let position = self.len + self.pending[l];
        assert!(position < self.n_ctx, "KV cache full");
        self.pending[l] += 1;
        let hs = self.n_embd / self.n_head;
        match &mut self.layers[l] {
            Layer::F32(k, v) => {
                k.extend_from_slice(key);
                v.extend_from_slice(value);
            }
            Layer::Int16(heads) => {
                let slot = position % 2;
                let mut v = vec![0i16; hs];
                for (h, q) in heads.iter_mut().enumerate() {
                    let cols = h * hs..(h + 1) * hs;
                    q.keys.resize((position + 1) * hs, 0);
                    q.key_scales
                        .push(quantize_into(&key[cols.clone()], &mut q.keys[position * hs..]));
                    q.value_scales.push(quantize_into(&value[cols], &mut v));
                    if position.is_multiple_of(2 * VALUE_PAIR_BLOCK) {
                        q.values.resize((position / 2 + VALUE_PAIR_BLOCK) * 2 * hs, 0);
                    }
                    let pair = &mut q.values[position / 2 * 2 * hs..][..2 * hs];
                    for (d, x) in v.iter().enumerate() {
                        pair[2 * d + slot] = *x;
                    }
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
                    Layer::Int16(heads) => {
                        let hs = c / self.n_head;
                        let pairs = len.div_ceil(2 * VALUE_PAIR_BLOCK) * VALUE_PAIR_BLOCK;
                        for q in heads {
                            q.keys.truncate(len * hs);
                            q.key_scales.truncate(len);
                            q.values.truncate(pairs * 2 * hs);
                            q.value_scales.truncate(len);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{Kernels, Portable, QuantHeadCache, Simd128};

    fn config() -> Config {
        Config {
            n_layer: 1,
            n_head: 2,
            n_embd: 128,
            n_inner: 512,
            vocab_size: 8,
            n_ctx: 64,
            layer_norm_epsilon: 1e-5,
        }
    }

    fn row(j: usize, salt: f32) -> Vec<f32> {
        (0..128).map(|i| ((i * 7 + j * 13) as f32 * 0.37 + salt).sin()).collect()
    }

    fn attend_all(cache: &KvCache, positions: usize) -> Vec<f32> {
        let Layer::Int16(heads) = cache.layer(0) else { unreachable!() };
        let q = row(99, 0.5);
        let mut out = Vec::new();
        for (h, head) in heads.iter().enumerate() {
            let view = QuantHeadCache::new(head, positions);
            let (mut a, mut b) = (vec![0.0; 64], vec![0.0; 64]);
            let q = &q[h * 64..(h + 1) * 64];
            Portable.attend_q(q, &view, 0.125, &mut Vec::new(), &mut Vec::new(), &mut a);
            Simd128.attend_q(q, &view, 0.125, &mut Vec::new(), &mut Vec::new(), &mut b);
            assert_eq!(a, b);
            out.extend(a);
        }
        out
    }

    #[test]
    fn integer_layout_truncates_and_grows_back_to_the_same_state() {
        let fill = |cache: &mut KvCache, from: usize, to: usize, salt: f32| {
            for j in from..to {
                cache.push(0, &row(j, salt), &row(j, salt + 1.0));
                cache.commit();
            }
        };
        for cut in [0, 1, 15, 16, 17, 30] {
            let mut fresh = KvCache::try_new(&config(), KvLayout::Int16).unwrap();
            fill(&mut fresh, 0, cut, 0.0);
            fill(&mut fresh, cut, 40, 2.0);
            let mut rewound = KvCache::try_new(&config(), KvLayout::Int16).unwrap();
            fill(&mut rewound, 0, 35, 0.0);
            rewound.truncate(cut);
            assert_eq!(rewound.len(), cut);
            fill(&mut rewound, cut, 40, 2.0);
            assert_eq!(attend_all(&rewound, 40), attend_all(&fresh, 40), "cut at {cut}");
        }
    }
}
