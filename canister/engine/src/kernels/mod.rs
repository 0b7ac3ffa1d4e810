//! The numeric kernels the forward pass is made of, behind one small interface.
//!
//! `Portable` is plain scalar Rust, the reference. `Simd128` is the same arithmetic in
//! four-lane vectors, shaped for the IC's instruction metering; it is what the canister
//! runs. Native tests run both and compare them.

mod gelu;
mod lanes;
pub mod packed;
mod portable;
pub mod quant;
mod simd;

pub use packed::PackedMatrix;
pub use quant::QuantMatrix;

pub trait Kernels {
    /// `y[t][o] = bias[o] + Σ_i x[t][i]·W[i][o]` for every token row `t` of `x`.
    fn matmul(&self, w: &PackedMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]);
    /// The same with int8 weights: activations are quantized per token, multiplied and
    /// summed in integers, and scaled back.
    fn matmul_q(&self, w: &QuantMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]);
    /// GPT-2's GELU (tanh approximation) applied in place.
    fn gelu(&self, x: &mut [f32]);
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

/// Numerically stable softmax in place.
pub fn softmax(v: &mut [f32]) {
    // Compare-and-select: `f32::max` costs 18 instructions under IC metering.
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    v.iter_mut().for_each(|x| *x *= inv);
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
        for (rows, cols, tokens) in [(16, 4, 1), (33, 9, 1), (64, 50, 3), (7, 3, 5), (48, 131, 9)] {
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
        for (rows, cols, tokens) in
            [(16, 4, 1), (130, 9, 1), (200, 50, 3), (7, 3, 5), (300, 131, 9), (600, 21, 15)]
        {
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
    fn simd_gelu_equals_portable_exactly() {
        let x: Vec<f32> = noise(1031, 14).iter().map(|v| v * 9.0).collect();
        let (mut a, mut b) = (x.clone(), x);
        Portable.gelu(&mut a);
        Simd128.gelu(&mut b);
        assert_eq!(a, b);
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
