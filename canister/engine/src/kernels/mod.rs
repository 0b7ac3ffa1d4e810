//! The numeric kernels the forward pass is made of, behind one small interface.
//!
//! `Portable` is plain scalar Rust, the reference. `Simd128` is the same arithmetic in
//! four-lane vectors, shaped for the IC's instruction metering; it is what the canister
//! runs. Native tests run both and compare them. The element-wise steps (softmax, layer
//! norm, GELU, activation quantization) have no layout to get wrong and are one shared
//! four-lane implementation each, so the two sets' int8 forward passes agree bit for bit.

mod gelu;
mod lanes;
mod norm;
pub mod packed;
mod portable;
pub mod quant;
mod simd;
mod softmax;

pub use gelu::gelu;
pub use norm::layer_norm;
pub use packed::PackedMatrix;
pub use quant::QuantMatrix;
pub use softmax::softmax;

use crate::kv_cache::{QuantHead, VALUE_PAIR_BLOCK};

pub trait Kernels {
    /// `y[t][o] = bias[o] + Σ_i x[t][i]·W[i][o]` for every token row `t` of `x`.
    fn matmul(&self, w: &PackedMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]);
    /// The same with int8 weights: activations are quantized per token, multiplied and
    /// summed in integers, and scaled back.
    fn matmul_q(&self, w: &QuantMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]);
    /// One attention head for one query: `out = softmax(scale · q·Kᵀ) · V` over the first
    /// `heads.positions` cached rows. `scores` is scratch space.
    fn attend(
        &self,
        q: &[f32],
        heads: &HeadCache,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    );
    /// `attend` over a cache of 12-bit integer keys and values: q is quantized like an
    /// activation, scores are integer dot products, and the softmax weights (times each
    /// value's scale) are quantized too, so both products are `dot_i16x8` work.
    /// `scores` and `weights` are scratch space.
    fn attend_q(
        &self,
        q: &[f32],
        heads: &QuantHeadCache,
        scale: f32,
        scores: &mut Vec<f32>,
        weights: &mut Vec<i16>,
        out: &mut [f32],
    );
}

/// One head's keys and values in a KV cache laid out as rows of `stride` floats (all heads
/// side by side); the head's columns start at `offset`.
pub struct HeadCache<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub stride: usize,
    pub offset: usize,
    pub positions: usize,
}

impl HeadCache<'_> {
    fn check(&self, head_size: usize) {
        let end = (self.positions.max(1) - 1) * self.stride + self.offset + head_size;
        assert!(self.positions > 0, "attention over no positions");
        assert!(self.keys.len() >= end && self.values.len() >= end, "head cache out of range");
    }
}

/// One head's keys and values in the integer KV layout (see `kv_cache::QuantHead`), over
/// its first `positions` positions: keys as rows, values in position pairs
/// (`[pair][head_size][2]`, whole blocks of `VALUE_PAIR_BLOCK` pairs), each with one scale
/// per position.
pub struct QuantHeadCache<'a> {
    pub keys: &'a [i16],
    pub key_scales: &'a [f32],
    pub values: &'a [i16],
    pub value_scales: &'a [f32],
    pub positions: usize,
}

impl<'a> QuantHeadCache<'a> {
    pub fn new(head: &'a QuantHead, positions: usize) -> Self {
        QuantHeadCache {
            keys: &head.keys,
            key_scales: &head.key_scales,
            values: &head.values,
            value_scales: &head.value_scales,
            positions,
        }
    }

    /// Position pairs the kernels read: whole blocks.
    fn pairs(&self) -> usize {
        self.positions.div_ceil(2 * VALUE_PAIR_BLOCK) * VALUE_PAIR_BLOCK
    }

    fn check(&self, head_size: usize) {
        let p = self.positions;
        assert!(p > 0, "attention over no positions");
        assert!(self.keys.len() >= p * head_size, "keys out of range");
        assert!(self.values.len() >= self.pairs() * 2 * head_size, "values out of range");
        assert!(self.key_scales.len() >= p && self.value_scales.len() >= p, "scales out of range");
    }
}

/// Position pairs whose weighted values are summed in i32 before the sum moves to f32:
/// 256 positions × 2047 × 2047 < 2³¹, whatever the weights.
const FLUSH_PAIRS: usize = 128;

/// The integer attention weights from the scores: each softmax probability times its
/// value's scale, quantized (`weights` gets `2 * pairs` entries, the padding zero); returns
/// their scale. The softmax's division by the sum is folded into that scale.
fn attention_weights(
    scores: &mut [f32],
    value_scales: &[f32],
    pairs: usize,
    weights: &mut Vec<i16>,
) -> f32 {
    let sum = softmax::exp_shifted(scores);
    softmax::multiply(scores, value_scales);
    // Only the padding needs zeros; the rest is overwritten (a fill is metered per byte).
    weights.resize(2 * pairs, 0);
    weights[scores.len()..].fill(0);
    quant::quantize_into(scores, &mut weights[..scores.len()]) / sum
}

/// Scalar reference kernels.
#[derive(Clone, Copy, Debug, Default)]
pub struct Portable;

/// Four-lane vector kernels (wasm simd128 in the canister, emulated natively).
#[derive(Clone, Copy, Debug, Default)]
pub struct Simd128;

/// The kernels a build uses: SIMD where the target has simd128, scalar otherwise.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub type BestKernels = Simd128;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub type BestKernels = Portable;

/// Checks the shapes every `matmul` implementation relies on; returns the token count.
fn matmul_tokens(rows: usize, cols: usize, bias: Option<&[f32]>, x: &[f32], y: &[f32]) -> usize {
    let tokens = x.len() / rows;
    assert!(x.len() == tokens * rows, "matmul: x is not whole rows of {rows}");
    assert!(y.len() == tokens * cols, "matmul: y has the wrong length");
    if let Some(b) = bias {
        assert_eq!(b.len(), cols, "matmul: bias has the wrong length");
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn simd_matmul_equals_portable_for_ragged_shapes() {
        for (rows, cols, tokens) in [(16, 4, 1), (33, 9, 1), (64, 50, 3), (7, 3, 5), (48, 131, 15)]
        {
            let w = PackedMatrix::from_in_out(rows, cols, &noise(rows * cols, 1));
            let x = noise(rows * tokens, 2);
            let bias = noise(cols, 3);
            for b in [None, Some(bias.as_slice())] {
                let mut y_ref = vec![0.0; cols * tokens];
                let mut y_simd = vec![0.0; cols * tokens];
                Portable.matmul(&w, b, &x, &mut y_ref);
                Simd128.matmul(&w, b, &x, &mut y_simd);
                assert_close(&y_simd, &y_ref, 1e-5);
                // Independent check of the reference itself against the plain definition.
                for t in 0..tokens {
                    for o in 0..cols {
                        let want: f32 = b.map_or(0.0, |b| b[o])
                            + (0..rows).map(|i| x[t * rows + i] * w.get(i, o)).sum::<f32>();
                        assert!((y_ref[t * cols + o] - want).abs() < 1e-4);
                    }
                }
            }
        }
    }

    #[test]
    fn simd_int8_matmul_equals_portable_exactly() {
        for (rows, cols, tokens) in [
            (16, 4, 1),
            (130, 9, 1),
            (200, 50, 3),
            (7, 3, 5),
            (300, 131, 9),
            (600, 21, 15),
            (1600, 9, 11),
        ] {
            let q: Vec<i8> = noise(rows * cols, 7).iter().map(|v| (v * 127.0) as i8).collect();
            let scales: Vec<f32> = noise(cols, 8).iter().map(|v| 0.01 + v.abs() * 0.02).collect();
            let w = QuantMatrix::from_in_out(rows, cols, &q, scales);
            let x = noise(rows * tokens, 9);
            let bias = noise(cols, 10);
            for b in [None, Some(bias.as_slice())] {
                let mut y_ref = vec![0.0; cols * tokens];
                let mut y_simd = vec![0.0; cols * tokens];
                Portable.matmul_q(&w, b, &x, &mut y_ref);
                Simd128.matmul_q(&w, b, &x, &mut y_simd);
                assert_eq!(y_simd, y_ref);
                // And both approximate the real-valued product.
                for t in 0..tokens {
                    for o in 0..cols {
                        let exact: f32 = b.map_or(0.0, |b| b[o])
                            + (0..rows).map(|i| x[t * rows + i] * w.get(i, o)).sum::<f32>();
                        let bound = 1e-3 * (0..rows).map(|i| w.get(i, o).abs()).sum::<f32>();
                        assert!((y_ref[t * cols + o] - exact).abs() <= bound + 1e-6);
                    }
                }
            }
        }
    }

    #[test]
    fn simd_int_attention_equals_portable_exactly_and_approximates_f32() {
        for (head_size, heads, positions) in [(64, 3, 1), (64, 2, 38), (64, 2, 301), (24, 3, 9)] {
            let stride = head_size * heads;
            let keys = noise(positions * stride, 21);
            let values = noise(positions * stride, 22);
            let q = noise(head_size, 23);
            let config = crate::Config {
                n_layer: 1,
                n_head: heads,
                n_embd: stride,
                n_inner: 4 * stride,
                vocab_size: 8,
                n_ctx: positions,
                layer_norm_epsilon: 1e-5,
            };
            let mut cache =
                crate::kv_cache::KvCache::try_new(&config, crate::kv_cache::KvLayout::Int16)
                    .unwrap();
            for j in 0..positions {
                let row = j * stride..(j + 1) * stride;
                cache.push(0, &keys[row.clone()], &values[row]);
            }
            let crate::kv_cache::Layer::Int16(layer) = cache.layer(0) else { unreachable!() };
            for (h, head) in layer.iter().enumerate() {
                let offset = h * head_size;
                let qc = QuantHeadCache::new(head, positions);
                let (mut a, mut b, mut f) =
                    (vec![0.0; head_size], vec![0.0; head_size], vec![0.0; head_size]);
                Portable.attend_q(&q, &qc, 0.3, &mut Vec::new(), &mut Vec::new(), &mut a);
                Simd128.attend_q(&q, &qc, 0.3, &mut Vec::new(), &mut Vec::new(), &mut b);
                assert_eq!(a, b);
                let fc = HeadCache { keys: &keys, values: &values, stride, offset, positions };
                Portable.attend(&q, &fc, 0.3, &mut Vec::new(), &mut f);
                assert_close(&a, &f, 2e-3);
            }
        }
    }

    #[test]
    fn simd_attention_equals_portable() {
        for (head_size, heads, positions) in [(64, 3, 1), (64, 2, 37), (24, 3, 9), (8, 4, 5)] {
            let stride = head_size * heads;
            let keys = noise(positions * stride, 11);
            let values = noise(positions * stride, 12);
            let q = noise(head_size, 13);
            for offset in (0..heads).map(|h| h * head_size) {
                let cache = HeadCache { keys: &keys, values: &values, stride, offset, positions };
                let (mut a, mut b) = (vec![0.0; head_size], vec![0.0; head_size]);
                Portable.attend(&q, &cache, 0.125, &mut Vec::new(), &mut a);
                Simd128.attend(&q, &cache, 0.125, &mut Vec::new(), &mut b);
                assert_close(&b, &a, 1e-5);
            }
        }
    }
}
