//! Four-lane kernels shaped for IC metering (see DESIGN.md §4: every wasm instruction,
//! including each `local.get` and address computation, is charged).
//!
//! The f32 matrix kernel walks one row block (`TILE_ROWS` inputs) at a time. For each
//! block it splats the input values of up to `TOKEN_GROUP` tokens once, then streams the
//! block's tiles: each tile (`TILE_ROWS` inputs × 4 outputs) is loaded once and applied to
//! every token in the group, accumulating in a register chain. In decode (one token) the
//! inner step is one load, one multiply and one add per four multiply-accumulates; in
//! prefill the weight load is shared by the group. The int8 kernels (`q_rows_*`) chain
//! `i32x4.dot_i16x8_s` (eight multiply-adds) over up to 256 inputs per output, with up to
//! eight prefill tokens sharing each output's weights.

use super::gelu::{gelu, gelu_lanes};
use super::lanes::{F32x4, I16x8, I32x4};
use super::packed::{LANES, TILE_LEN, TILE_ROWS};
use super::quant::{dequantize, quantize_into, quantize_rows, QuantRows, Q_CHUNK, Q_GROUP};
use std::cell::RefCell;

use super::{
    attention_weights, matmul_tokens, softmax, HeadCache, Kernels, PackedMatrix, Portable,
    QuantHeadCache, QuantMatrix, Simd128, FLUSH_PAIRS,
};

/// Tokens that share one pass over the weights in prefill. Measured: larger groups need
/// more registers than the code generator keeps, and their spills cost more instructions
/// than the shared loads save.
const TOKEN_GROUP: usize = 2;

impl Kernels for Simd128 {
    fn matmul(&self, w: &PackedMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        let cols = w.cols();
        let tokens = matmul_tokens(w.rows(), cols, bias, x, y);
        for t in 0..tokens {
            let row = &mut y[t * cols..(t + 1) * cols];
            match bias {
                Some(b) => row.copy_from_slice(b),
                None => row.fill(0.0),
            }
        }
        let mut t = 0;
        while t < tokens {
            let group = (tokens - t).min(TOKEN_GROUP);
            let (x, y) = (&x[t * w.rows()..], &mut y[t * cols..]);
            for ib in 0..w.row_blocks() {
                match group {
                    2 => row_block::<2>(w, ib, x, y),
                    _ => row_block::<1>(w, ib, x, y),
                }
            }
            t += group;
        }
    }

    fn matmul_q(&self, w: &QuantMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        let cols = w.cols();
        let tokens = matmul_tokens(w.rows(), cols, bias, x, y);
        let xq = quantize_rows(x, w.rows(), w.padded_rows());
        PARTIAL.with_borrow_mut(|partial| {
            let need = tokens.min(Q_TOKEN_GROUP) * w.padded_cols() * 4;
            if partial.len() < need {
                partial.resize(need, 0);
            }
            let mut t = 0;
            while t < tokens {
                let group = [8, 4, 2, 1].into_iter().find(|&g| g <= tokens - t).expect("1 fits");
                for (first, len) in w.blocks() {
                    q_block(w, first, len, &xq, t, group, partial);
                }
                q_finish(w, bias, &xq, t, group, partial, &mut y[t * cols..]);
                t += group;
            }
        });
    }

    fn attend_q(
        &self,
        q: &[f32],
        heads: &QuantHeadCache,
        scale: f32,
        scores: &mut Vec<f32>,
        weights: &mut Vec<i16>,
        out: &mut [f32],
    ) {
        heads.check(q.len());
        assert_eq!(out.len(), q.len());
        if q.len() != HEAD_64 {
            // Other head sizes (test models) take the reference path.
            return Portable.attend_q(q, heads, scale, scores, weights, out);
        }
        let mut qq = [0i16; HEAD_64];
        let q_scale = quantize_into(q, &mut qq);
        // SAFETY: `qq` holds 64 i16s.
        let qv: [I16x8; HEAD_Q_CHUNKS] =
            core::array::from_fn(|i| unsafe { I16x8::load(qq.as_ptr().add(i * Q_CHUNK)) });
        scores.clear();
        scores.resize(heads.positions, 0.0);
        // SAFETY: `check` proved rows 0..positions of this head and their scales exist.
        unsafe {
            scores_q64(
                &qv,
                heads.keys.as_ptr().add(heads.offset),
                heads.stride,
                q_scale * scale,
                heads.key_scales,
                scores,
            )
        };
        softmax(scores);
        let w_scale = attention_weights(scores, heads.value_scales, weights);
        // SAFETY: `check` proved the pairs of this head's columns exist; `weights` has two
        // per pair; `out` holds 64 floats (asserted).
        unsafe {
            weighted_sum_q64(
                weights,
                heads.values.as_ptr().add(2 * heads.offset),
                heads.stride,
                out,
            )
        };
        out.iter_mut().for_each(|o| *o *= w_scale);
    }

    fn gelu(&self, x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(LANES);
        for c in &mut chunks {
            // SAFETY: each chunk holds exactly four f32s.
            unsafe { gelu_lanes(F32x4::load(c.as_ptr())).store(c.as_mut_ptr()) };
        }
        chunks.into_remainder().iter_mut().for_each(|v| *v = gelu(*v));
    }

    fn attend(
        &self,
        q: &[f32],
        heads: &HeadCache,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        heads.check(q.len());
        assert_eq!(out.len(), q.len());
        if q.len() == HEAD_64 {
            let (k, v) = (&heads.keys[heads.offset..], &heads.values[heads.offset..]);
            scores.clear();
            scores.resize(heads.positions, 0.0);
            // SAFETY: `check` proved rows 0..positions of this head lie in keys and values.
            unsafe { scores_64(q, k.as_ptr(), heads.stride, scale, scores) };
            softmax(scores);
            // SAFETY: as above; `out` holds 64 floats (asserted).
            unsafe { weighted_sum_64(scores, v.as_ptr(), heads.stride, out) };
        } else {
            // Other head sizes (test models) take the reference path.
            Portable.attend(q, heads, scale, scores, out);
        }
    }
}

/// Adds row block `ib`'s contribution to the first `G` token rows of `y`.
#[inline(always)]
fn row_block<const G: usize>(w: &PackedMatrix, ib: usize, x: &[f32], y: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    let first = ib * TILE_ROWS;
    let k_len = (rows - first).min(TILE_ROWS);
    // Inputs past the last row stay zero; their padded weights are zero too.
    let mut xs = [[F32x4::splat(0.0); TILE_ROWS]; G];
    for (g, splats) in xs.iter_mut().enumerate() {
        for (k, s) in splats.iter_mut().take(k_len).enumerate() {
            *s = F32x4::splat(x[g * rows + first + k]);
        }
    }
    let tiles = w.row_block(ib);
    let full = cols / LANES;
    assert!(y.len() >= G * cols && tiles.len() >= w.col_blocks() * TILE_LEN);
    for ob in 0..full {
        // SAFETY: tile ob lies within `tiles` (col_blocks >= full), and each token row g
        // has `cols` outputs, so lanes ob*4..ob*4+4 of row g are inside `y` (asserted).
        unsafe {
            let tile = tiles.as_ptr().add(ob * TILE_LEN);
            let wv: [F32x4; TILE_ROWS] = core::array::from_fn(|k| F32x4::load(tile.add(k * LANES)));
            for (g, splats) in xs.iter().enumerate() {
                let out = y.as_mut_ptr().add(g * cols + ob * LANES);
                let mut acc = F32x4::load(out);
                for k in 0..TILE_ROWS {
                    acc = acc.add(splats[k].mul(wv[k]));
                }
                acc.store(out);
            }
        }
    }
    let tail = cols - full * LANES;
    if tail > 0 {
        let tile = &tiles[full * TILE_LEN..(full + 1) * TILE_LEN];
        for (g, splats) in xs.iter().enumerate() {
            let mut acc = F32x4::splat(0.0);
            for (k, s) in splats.iter().enumerate() {
                // SAFETY: k * 4 + 4 <= TILE_LEN = tile.len().
                acc = acc.add(s.mul(unsafe { F32x4::load(tile.as_ptr().add(k * LANES)) }));
            }
            let out = &mut y[g * cols + full * LANES..g * cols + cols];
            for (o, v) in out.iter_mut().zip(acc.to_array()) {
                *o += v;
            }
        }
    }
}

/// Tokens that share one pass over an int8 matrix's weights in prefill.
const Q_TOKEN_GROUP: usize = 8;

thread_local! {
    /// The int8 kernels' partial sums, kept between calls: a fresh zeroed buffer per
    /// matmul would cost a `memory.fill` of its whole size every time.
    static PARTIAL: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// Adds the inputs `first..first+len` of `w` to the partial sums of tokens `t..t+group`
/// (laid out `[padded output][token in group][4 lanes]`); the first block overwrites them.
fn q_block(
    w: &QuantMatrix,
    first: usize,
    len: usize,
    xq: &QuantRows,
    t: usize,
    group: usize,
    partial: &mut [i32],
) {
    let weights = w.block(first);
    let outputs = w.padded_cols();
    assert!(weights.len() == outputs * len && partial.len() >= outputs * group * 4);
    assert!(xq.values.len() >= (t + group) * xq.stride && first + len <= xq.stride);
    macro_rules! run {
        ($c:literal, $g:literal, $f:ident) => {{
            // SAFETY: row t+g holds `stride` values and inputs first..first+len lie within
            // it (asserted); `len` is $c chunks.
            let x: [[I16x8; $c]; $g] = core::array::from_fn(|g| {
                core::array::from_fn(|k| unsafe {
                    I16x8::load(xq.values.as_ptr().add((t + g) * xq.stride + first + k * Q_CHUNK))
                })
            });
            // SAFETY: `weights` holds `outputs` rows of $c chunks and `partial` $g × 4 lanes
            // per output (asserted).
            unsafe {
                if first == 0 {
                    $f::<$c, true>(weights.as_ptr(), outputs, &x, partial.as_mut_ptr())
                } else {
                    $f::<$c, false>(weights.as_ptr(), outputs, &x, partial.as_mut_ptr())
                }
            }
        }};
        ($c:literal) => {
            match group {
                8 => run!($c, 8, q_rows_8),
                4 => run!($c, 4, q_rows_4),
                2 => run!($c, 2, q_rows_2),
                _ => run!($c, 1, q_rows_1),
            }
        };
    }
    match len / Q_CHUNK {
        32 => run!(32),
        24 => run!(24),
        16 => run!(16),
        _ => run!(8),
    }
}

/// One token's chain for one output: `dot`+`add` over the block's `C` chunks.
///
/// # Safety
/// `out` must be 4 writable i32s.
#[inline(always)]
unsafe fn q_chain<const C: usize, const FIRST: bool>(
    w: &[I16x8; C],
    x: &[I16x8; C],
    out: *mut i32,
) {
    let mut acc = I32x4::dot(w[0], x[0]);
    if !FIRST {
        acc = acc.add(I32x4::load(out));
    }
    for k in 1..C {
        acc = acc.add(I32x4::dot(w[k], x[k]));
    }
    acc.store(out);
}

/// The int8 inner loops, one per token-group size, kept out of line and written with
/// advancing pointers (the form in which LLVM folds each load's constant offset into the
/// instruction). With one token (decode) each weight vector is loaded straight into its
/// chain: load, dot, add per eight multiply-adds. With more, each output's weights are
/// loaded once into registers and shared by the group's chains. The tokens are listed,
/// not looped over, so that their activations stay in registers (a loop the compiler does
/// not unroll would index them in memory, two more instructions per eight multiply-adds).
macro_rules! q_rows_group {
    ($name:ident, $tokens:literal, [$($t:literal),*]) => {
        /// # Safety
        /// `weights` must hold `outputs` rows of `C` chunks and `partial`
        #[doc = concat!("`outputs * ", $tokens, " * 4` i32s.")]
        #[inline(never)]
        unsafe fn $name<const C: usize, const FIRST: bool>(
            weights: *const i8,
            outputs: usize,
            x: &[[I16x8; C]; $tokens],
            partial: *mut i32,
        ) {
            let x = *x;
            let (mut row, mut out) = (weights, partial);
            for _ in 0..outputs {
                let w: [I16x8; C] =
                    core::array::from_fn(|k| I16x8::load_i8(row.add(k * Q_CHUNK)));
                $(q_chain::<C, FIRST>(&w, &x[$t], out.add($t * 4));)*
                row = row.add(C * Q_CHUNK);
                out = out.add($tokens * 4);
            }
        }
    };
}

/// `q_rows_group` for one token (decode), four outputs per step: the loop's own
/// instructions are a tenth of a 256-input chain's, worth sharing.
///
/// # Safety
/// `weights` must hold `outputs` (a multiple of 4) rows of `C` chunks and `partial`
/// `outputs * 4` i32s.
#[inline(never)]
unsafe fn q_rows_1<const C: usize, const FIRST: bool>(
    weights: *const i8,
    outputs: usize,
    x: &[[I16x8; C]; 1],
    partial: *mut i32,
) {
    let x = x[0];
    let chain = |row: *const i8, out: *mut i32| {
        let w: [I16x8; C] = core::array::from_fn(|k| I16x8::load_i8(row.add(k * Q_CHUNK)));
        q_chain::<C, FIRST>(&w, &x, out);
    };
    let (mut row, mut out) = (weights, partial);
    for _ in 0..outputs / Q_GROUP {
        chain(row, out);
        chain(row.add(C * Q_CHUNK), out.add(4));
        chain(row.add(2 * C * Q_CHUNK), out.add(8));
        chain(row.add(3 * C * Q_CHUNK), out.add(12));
        row = row.add(Q_GROUP * C * Q_CHUNK);
        out = out.add(Q_GROUP * 4);
    }
}

q_rows_group!(q_rows_2, 2, [0, 1]);
q_rows_group!(q_rows_4, 4, [0, 1, 2, 3]);
q_rows_group!(q_rows_8, 8, [0, 1, 2, 3, 4, 5, 6, 7]);

/// Turns the group's partial sums into outputs: four outputs at a time, their lanes summed
/// by shuffles and scaled in one vector (the same operations, in the same order, as
/// `dequantize`).
fn q_finish(
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    xq: &QuantRows,
    t: usize,
    group: usize,
    partial: &[i32],
    y: &mut [f32],
) {
    let cols = w.cols();
    let full = cols / Q_GROUP * Q_GROUP;
    let scales = w.scales();
    assert!(y.len() >= group * cols && partial.len() >= w.padded_cols() * group * 4);
    let lanes = |o: usize, g: usize| &partial[(o * group + g) * 4..][..4];
    for g in 0..group {
        let x_scale = xq.scales[t + g];
        let xs = F32x4::splat(x_scale);
        let y = &mut y[g * cols..(g + 1) * cols];
        for o in (0..full).step_by(Q_GROUP) {
            // SAFETY: outputs o..o+4 exist (o + 4 <= full <= cols), so their scales, biases
            // and outputs are in bounds; `lanes` checks the partial sums.
            unsafe {
                let acc = |r: usize| I32x4::load(lanes(o + r, g).as_ptr());
                let sums = I32x4::sums(acc(0), acc(1), acc(2), acc(3));
                let scale = F32x4::load(scales.as_ptr().add(o)).mul(xs);
                let b = bias.map_or(F32x4::splat(0.0), |b| F32x4::load(b.as_ptr().add(o)));
                sums.to_f32().mul(scale).add(b).store(y.as_mut_ptr().add(o));
            }
        }
        for o in full..cols {
            let p = lanes(o, g);
            let acc = p[0].wrapping_add(p[2]).wrapping_add(p[1].wrapping_add(p[3]));
            y[o] = dequantize(acc, scales[o], x_scale, bias.map_or(0.0, |b| b[o]));
        }
    }
}

/// GPT-2's head size, whose attention has a register-resident fast path.
const HEAD_64: usize = 64;
const HEAD_VECTORS: usize = HEAD_64 / LANES;

/// `scores[j] = scale · q·k_j` with q (pre-scaled) held in sixteen registers and each key
/// row streamed from one advancing pointer.
///
/// # Safety
/// `keys` must point at `scores.len()` rows of at least 64 floats, `stride` floats apart.
#[inline(never)]
unsafe fn scores_64(q: &[f32], keys: *const f32, stride: usize, scale: f32, scores: &mut [f32]) {
    let s = F32x4::splat(scale);
    let qv: [F32x4; HEAD_VECTORS] =
        core::array::from_fn(|i| F32x4::load(q.as_ptr().add(i * LANES)).mul(s));
    let mut row = keys;
    for score in scores.iter_mut() {
        let mut acc = F32x4::splat(0.0);
        for (i, qi) in qv.iter().enumerate() {
            acc = acc.add(F32x4::load(row.add(i * LANES)).mul(*qi));
        }
        *score = acc.sum();
        row = row.add(stride);
    }
}

/// `out = Σ_j weights[j] · v_j` with the sixteen output vectors held in registers.
///
/// # Safety
/// `values` must point at `weights.len()` rows of at least 64 floats, `stride` floats
/// apart, and `out` must hold 64 floats.
#[inline(never)]
unsafe fn weighted_sum_64(weights: &[f32], values: *const f32, stride: usize, out: &mut [f32]) {
    let mut acc = [F32x4::splat(0.0); HEAD_VECTORS];
    let mut row = values;
    for &w in weights {
        let wv = F32x4::splat(w);
        for (i, a) in acc.iter_mut().enumerate() {
            *a = a.add(F32x4::load(row.add(i * LANES)).mul(wv));
        }
        row = row.add(stride);
    }
    for (i, a) in acc.iter().enumerate() {
        a.store(out.as_mut_ptr().add(i * LANES));
    }
}

const HEAD_Q_CHUNKS: usize = HEAD_64 / Q_CHUNK;

/// `scores[j] = (q·k_j) · scale · key_scale[j]` in integers: the key rows four at a time,
/// each a chain of eight `dot`s against q in registers, their lanes summed together.
///
/// # Safety
/// `keys` must point at `scores.len()` rows of at least 64 i16s, `stride` apart, and
/// `key_scales` hold `scores.len()` scales.
#[inline(never)]
unsafe fn scores_q64(
    q: &[I16x8; HEAD_Q_CHUNKS],
    keys: *const i16,
    stride: usize,
    scale: f32,
    key_scales: &[f32],
    scores: &mut [f32],
) {
    let q = *q;
    let chain = |row: *const i16| {
        let mut acc = I32x4::dot(I16x8::load(row), q[0]);
        for (i, qi) in q.iter().enumerate().skip(1) {
            acc = acc.add(I32x4::dot(I16x8::load(row.add(i * Q_CHUNK)), *qi));
        }
        acc
    };
    let n = scores.len();
    assert!(key_scales.len() >= n);
    let quads = n / 4 * 4;
    let s = F32x4::splat(scale);
    let mut row = keys;
    for j in (0..quads).step_by(4) {
        let sums = I32x4::sums(
            chain(row),
            chain(row.add(stride)),
            chain(row.add(2 * stride)),
            chain(row.add(3 * stride)),
        );
        let ks = F32x4::load(key_scales.as_ptr().add(j));
        sums.to_f32().mul(s).mul(ks).store(scores.as_mut_ptr().add(j));
        row = row.add(4 * stride);
    }
    let zero = I32x4::splat(0);
    for j in quads..n {
        let sum = I32x4::sums(chain(row), zero, zero, zero).to_f32().to_array()[0];
        scores[j] = sum * scale * key_scales[j];
        row = row.add(stride);
    }
}

/// `out = Σ_j weights[j] · v_j` in integers: each step weighs a pair of positions (their
/// values interleaved) with one `dot` per four outputs, sixteen i32 sums held in registers
/// and moved to f32 every `FLUSH_PAIRS` pairs.
///
/// # Safety
/// `values` must point at `weights.len() / 2` pairs of 64 interleaved value pairs, each
/// pair `2 * stride` i16s apart; `out` must hold 64 floats.
#[inline(never)]
unsafe fn weighted_sum_q64(weights: &[i16], values: *const i16, stride: usize, out: &mut [f32]) {
    let pairs = weights.len() / 2;
    let mut total = [F32x4::splat(0.0); HEAD_VECTORS];
    let mut row = values;
    let mut first = 0;
    while first < pairs {
        let end = (first + FLUSH_PAIRS).min(pairs);
        let mut acc = [I32x4::splat(0); HEAD_VECTORS];
        for m in first..end {
            let w = I16x8::load_pair_splat(weights.as_ptr().add(2 * m));
            for (g, a) in acc.iter_mut().enumerate() {
                *a = a.add(I32x4::dot(I16x8::load(row.add(g * Q_CHUNK)), w));
            }
            row = row.add(2 * stride);
        }
        for (t, a) in total.iter_mut().zip(acc) {
            *t = t.add(a.to_f32());
        }
        first = end;
    }
    for (g, t) in total.iter().enumerate() {
        t.store(out.as_mut_ptr().add(g * LANES));
    }
}
