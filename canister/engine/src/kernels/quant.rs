//! Int8 weight matrices (per-output-channel scales) and per-token activation quantization.
//!
//! The weights are stored as int8 and widened to i16 by the load itself
//! (`v128.load8x8_s`, metered like any load), because the cheapest multiply-add the IC
//! meters is `i32x4.dot_i16x8_s`: eight multiply-adds for one instruction, on i16 lanes.
//!
//! Activations are quantized per token to 12-bit integers (±2047): with weights in ±127 a
//! dot-product lane stays far from i32 overflow even for GPT-2 xl's 6400-wide MLP
//! (800 lanes × 2 × 127 × 2047 < 2³¹), and 12 bits keep the activation error negligible
//! next to the weights' 8.
//!
//! Layout: inputs are zero-padded to a multiple of `Q_SEGMENT` and cut into blocks of
//! `Q_BLOCK` (the last block may be shorter); outputs are zero-padded to a multiple of
//! `Q_GROUP` and taken four at a time. Within a block, a group of four outputs stores, for
//! each pair of inputs (k, k+1), the eight weights `[o0k, o0k+1, o1k, o1k+1, … o3k+1]`: one
//! `dot` of them with the activation pair `(x_k, x_k+1)` repeated four times gives the four
//! outputs' partial sums in its four lanes, so no lanes need adding up at the end.

use super::lanes::{F32x4, I16x8, I32x4};

/// Inputs per dot-product step.
pub const Q_CHUNK: usize = 8;
/// Inputs are padded to a multiple of this; a block's length is one of its multiples.
pub const Q_SEGMENT: usize = 64;
/// Inputs per block: what a kernel holds in registers at once.
pub const Q_BLOCK: usize = 256;
/// Outputs are padded to a multiple of this.
pub const Q_GROUP: usize = 4;
/// Largest magnitude of a quantized activation.
pub const X_MAX: f32 = 2047.0;

#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    data: Vec<i8>,
    scales: Vec<f32>,
}

impl QuantMatrix {
    /// Packs the matrix whose element (input `i`, output `o`) is `f(i, o) * scales[o]`.
    pub fn from_fn(
        rows: usize,
        cols: usize,
        scales: Vec<f32>,
        f: impl Fn(usize, usize) -> i8,
    ) -> Self {
        assert_eq!(scales.len(), cols);
        let mut m = QuantMatrix { rows, cols, data: Vec::new(), scales };
        m.data = vec![0; m.padded_rows() * m.padded_cols()];
        for i in 0..rows {
            for o in 0..cols {
                let at = m.index(i, o);
                m.data[at] = f(i, o);
            }
        }
        m
    }

    /// From row-major `[rows][cols]` int8 values (a Conv1D weight, `[in, out]`).
    pub fn from_in_out(rows: usize, cols: usize, q: &[i8], scales: Vec<f32>) -> Self {
        assert_eq!(q.len(), rows * cols);
        Self::from_fn(rows, cols, scales, |i, o| q[i * cols + o])
    }

    /// From row-major `[cols][rows]` int8 values (an embedding or `nn.Linear`, `[out, in]`).
    pub fn from_out_in(rows: usize, cols: usize, q: &[i8], scales: Vec<f32>) -> Self {
        assert_eq!(q.len(), rows * cols);
        Self::from_fn(rows, cols, scales, |i, o| q[o * rows + i])
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Input length with padding: what a quantized activation row holds.
    pub fn padded_rows(&self) -> usize {
        self.rows.div_ceil(Q_SEGMENT) * Q_SEGMENT
    }

    /// Output count with padding: what a kernel computes.
    pub fn padded_cols(&self) -> usize {
        self.cols.div_ceil(Q_GROUP) * Q_GROUP
    }

    /// The input blocks as (first input, length); all but the last are `Q_BLOCK` long.
    pub fn blocks(&self) -> impl Iterator<Item = (usize, usize)> {
        let padded = self.padded_rows();
        (0..padded).step_by(Q_BLOCK).map(move |first| (first, (padded - first).min(Q_BLOCK)))
    }

    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    pub fn heap_bytes(&self) -> usize {
        self.data.len() + self.scales.len() * 4
    }

    fn index(&self, i: usize, o: usize) -> usize {
        let first = i / Q_BLOCK * Q_BLOCK;
        let len = (self.padded_rows() - first).min(Q_BLOCK);
        let k = i - first;
        first * self.padded_cols()
            + o / Q_GROUP * len * Q_GROUP
            + k / 2 * 8
            + o % Q_GROUP * 2
            + k % 2
    }

    /// The integer weight (input `i`, output `o`).
    pub fn q(&self, i: usize, o: usize) -> i32 {
        assert!(i < self.rows && o < self.cols);
        self.data[self.index(i, o)] as i32
    }

    /// The weight's real value.
    pub fn get(&self, i: usize, o: usize) -> f32 {
        self.q(i, o) as f32 * self.scales[o]
    }

    /// The block starting at input `first`: each group of four outputs' weights for its
    /// inputs, one group after another (`len * 4` bytes each).
    pub fn block(&self, first: usize) -> &[i8] {
        let len = (self.padded_rows() - first).min(Q_BLOCK) * self.padded_cols();
        &self.data[first * self.padded_cols()..][..len]
    }
}

/// Quantized activations: each token row scaled to ±`X_MAX` and zero-padded.
pub struct QuantRows {
    pub values: Vec<i16>,
    pub scales: Vec<f32>,
    pub stride: usize,
}

/// Quantizes each `rows`-long row of `x` with its own scale into rows of `stride` values
/// (the rest zero).
pub fn quantize_rows(x: &[f32], rows: usize, stride: usize) -> QuantRows {
    let tokens = x.len() / rows;
    let mut values = vec![0i16; tokens * stride];
    let scales = x
        .chunks_exact(rows)
        .zip(values.chunks_exact_mut(stride))
        .map(|(row, out)| quantize_into(row, &mut out[..rows]))
        .collect();
    QuantRows { values, scales, stride }
}

/// Quantizes `x` into `out` as integers in ±`X_MAX` and returns their scale (real value =
/// integer × scale).
///
/// Written for the IC's cost table, where `f32.max` costs 18 and a float-to-int conversion
/// 20: four lanes at a time, a compare-and-select finds the largest magnitude, and rounding
/// adds 1.5·2²³ so the FPU rounds to the nearest integer (ties to even, as
/// `round_ties_even`), read back from the bits.
pub fn quantize_into(x: &[f32], out: &mut [i16]) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: integers up to 2^22 land in the mantissa
    assert_eq!(x.len(), out.len());
    let (quads, tail) = x.split_at(x.len() / 4 * 4);
    let mut m = F32x4::splat(0.0);
    for q in quads.chunks_exact(4) {
        // SAFETY: the chunk holds four f32s.
        m = m.max(unsafe { F32x4::load(q.as_ptr()) }.abs());
    }
    let max = m.to_array().into_iter().chain(tail.iter().map(|v| v.abs())).fold(0.0f32, |m, v| {
        if v > m {
            v
        } else {
            m
        }
    });
    let scale = if max > 0.0 { max / X_MAX } else { 1.0 };
    let inv = 1.0 / scale;
    // |v * inv| <= X_MAX by the choice of scale, so no clamp is needed.
    let round = |v: F32x4| {
        v.mul(F32x4::splat(inv))
            .add(F32x4::splat(MAGIC))
            .to_bits()
            .sub(I32x4::splat(MAGIC.to_bits() as i32))
    };
    let eights = x.len() / 8 * 8;
    for (q, o) in x[..eights].chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        // SAFETY: both chunks hold eight values.
        unsafe {
            let (a, b) = (F32x4::load(q.as_ptr()), F32x4::load(q.as_ptr().add(4)));
            I16x8::narrow(round(a), round(b)).store(o.as_mut_ptr());
        }
    }
    for (o, v) in out[eights..].iter_mut().zip(&x[eights..]) {
        *o = ((v * inv + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as i16;
    }
    scale
}

/// `bias + Σ q_w·q_x · s_w · s_x`: the one place integer sums become floats, shared by both
/// kernel sets so they agree bit for bit.
#[inline(always)]
pub fn dequantize(acc: i32, w_scale: f32, x_scale: f32, bias: f32) -> f32 {
    bias + acc as f32 * (w_scale * x_scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        let (rows, cols) = (300, 7);
        let q: Vec<i8> = (0..rows * cols).map(|v| (v % 255) as i8).collect();
        let scales: Vec<f32> = (0..cols).map(|o| 0.5 + o as f32).collect();
        let m = QuantMatrix::from_in_out(rows, cols, &q, scales.clone());
        let t = QuantMatrix::from_out_in(cols, rows, &q, vec![1.0; rows]);
        for i in 0..rows {
            for o in 0..cols {
                assert_eq!(m.q(i, o), q[i * cols + o] as i32);
                assert_eq!(m.get(i, o), q[i * cols + o] as f32 * scales[o]);
                assert_eq!(t.q(o, i), q[i * cols + o] as i32);
            }
        }
        assert_eq!((m.padded_rows(), m.padded_cols()), (320, 8));
        assert_eq!(m.blocks().collect::<Vec<_>>(), [(0, 256), (256, 64)]);
    }

    #[test]
    fn rounding_trick_equals_round_ties_even() {
        let x: Vec<f32> =
            (-5000..5000).map(|i| i as f32 * 0.4093).chain([0.5, 1.5, 2.5, -0.5, -2.5]).collect();
        let q = quantize_rows(&x, x.len(), x.len());
        let inv = 1.0 / q.scales[0];
        for (v, got) in x.iter().zip(&q.values) {
            assert_eq!(*got as f32, (v * inv).round_ties_even(), "{v}");
        }
    }

    #[test]
    fn activations_keep_twelve_bits() {
        let x: Vec<f32> = (0..256).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let q = quantize_rows(&x, 128, 136);
        assert_eq!(q.values.len(), 2 * 136);
        for t in 0..2 {
            for i in 0..128 {
                let back = q.values[t * 136 + i] as f32 * q.scales[t];
                assert!((back - x[t * 128 + i]).abs() <= q.scales[t] / 2.0 + 1e-6);
            }
            assert!(q.values[t * 136 + 128..(t + 1) * 136].iter().all(|&v| v == 0));
        }
    }
}
