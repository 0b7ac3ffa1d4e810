//! Four-lane kernels shaped for IC metering (see DESIGN.md §4: every wasm instruction,
//! including each `local.get` and address computation, is charged).
//!
//! The f32 matrix kernel walks one row block (`TILE_ROWS` inputs) at a time. For each
//! block it splats the input values of up to `TOKEN_GROUP` tokens once, then streams the
//! block's tiles: each tile (`TILE_ROWS` inputs × 4 outputs) is loaded once and applied to
//! every token in the group, accumulating in a register chain. In decode (one token) the
//! inner step is one load, one multiply and one add per four multiply-accumulates; in
//! prefill the weight load is shared by the group. The int8 kernel has the same shape with
//! `i32x4.dot_i16x8_s` (eight multiply-adds) as its step.

use super::lanes::{F32x4, I16x8, I32x4};
use super::packed::{LANES, TILE_LEN, TILE_ROWS};
use super::quant::{
    dequantize, quantize_rows, QuantRows, Q_BLOCK, Q_CHUNK, Q_CHUNKS_PER_BLOCK, Q_GROUP, Q_TILE_LEN,
};
use super::{
    matmul_tokens, softmax, HeadCache, Kernels, PackedMatrix, Portable, QuantMatrix, Simd128,
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
        // Per token and output, four i32 lanes of partial sums; added up at the end.
        let lanes = w.groups() * Q_GROUP * 4;
        let mut partial = vec![0i32; tokens * lanes];
        let mut t = 0;
        while t < tokens {
            let group = (tokens - t).min(TOKEN_GROUP);
            let acc = &mut partial[t * lanes..];
            for b in 0..w.blocks() {
                match group {
                    2 => q_block::<2>(w, b, &xq, t, acc),
                    _ => q_block_one(w, b, &xq, t, acc),
                }
            }
            t += group;
        }
        for t in 0..tokens {
            for o in 0..cols {
                let p = &partial[t * lanes + o * 4..t * lanes + o * 4 + 4];
                let acc = p[0].wrapping_add(p[1]).wrapping_add(p[2]).wrapping_add(p[3]);
                let b = bias.map_or(0.0, |b| b[o]);
                y[t * cols + o] = dequantize(acc, w.scales()[o], xq.scales[t], b);
            }
        }
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

/// Adds input block `b` of int8 matrix `w` to the partial sums of tokens `t..t+G`.
///
/// For each group of four outputs the tile's 64 weight vectors are read once; each token's
/// sixteen activation chunks stay in registers, and every output's sum is one chain of
/// `dot` and `add` — two instructions per eight multiply-adds.
#[inline(always)]
fn q_block<const G: usize>(
    w: &QuantMatrix,
    b: usize,
    xq: &QuantRows,
    t: usize,
    partial: &mut [i32],
) {
    let lanes = w.groups() * Q_GROUP * 4;
    let tiles = w.block(b);
    assert!(partial.len() >= G * lanes && tiles.len() == w.groups() * Q_TILE_LEN);
    assert!(xq.values.len() >= (t + G) * xq.stride && xq.stride >= (b + 1) * Q_BLOCK);
    let xs: [[I16x8; Q_CHUNKS_PER_BLOCK]; G] = core::array::from_fn(|g| {
        // SAFETY: row t+g holds `stride` values and block b ends within it (asserted).
        core::array::from_fn(|k| unsafe {
            I16x8::load(xq.values.as_ptr().add((t + g) * xq.stride + b * Q_BLOCK + k * Q_CHUNK))
        })
    });
    for og in 0..w.groups() {
        // SAFETY: tile og lies within `tiles`; its chunk (k, r) is 8 i16s at (k*4+r)*8.
        // Outputs og*4..og*4+4 of each token row have their 4 lanes within `partial`.
        unsafe {
            let tile = tiles.as_ptr().add(og * Q_TILE_LEN);
            let wv: [[I16x8; Q_GROUP]; Q_CHUNKS_PER_BLOCK] = core::array::from_fn(|k| {
                core::array::from_fn(|r| I16x8::load(tile.add((k * Q_GROUP + r) * Q_CHUNK)))
            });
            for (g, x) in xs.iter().enumerate() {
                for r in 0..Q_GROUP {
                    let out = partial.as_mut_ptr().add(g * lanes + (og * Q_GROUP + r) * 4);
                    let mut acc = I32x4::load(out);
                    for k in 0..Q_CHUNKS_PER_BLOCK {
                        acc = acc.add(I32x4::dot(wv[k][r], x[k]));
                    }
                    acc.store(out);
                }
            }
        }
    }
}

/// `q_block` for a single token (decode): each weight vector is loaded straight into its
/// chain — load, dot, add — instead of being kept for other tokens.
#[inline(always)]
fn q_block_one(w: &QuantMatrix, b: usize, xq: &QuantRows, t: usize, partial: &mut [i32]) {
    let tiles = w.block(b);
    assert!(partial.len() >= w.groups() * Q_GROUP * 4 && tiles.len() == w.groups() * Q_TILE_LEN);
    assert!(xq.values.len() >= (t + 1) * xq.stride && xq.stride >= (b + 1) * Q_BLOCK);
    // SAFETY: row t holds `stride` values and block b ends within it (asserted).
    let x: [I16x8; Q_CHUNKS_PER_BLOCK] = core::array::from_fn(|k| unsafe {
        I16x8::load(xq.values.as_ptr().add(t * xq.stride + b * Q_BLOCK + k * Q_CHUNK))
    });
    // SAFETY: `tiles` holds `groups` tiles and `partial` 4 lanes per output (asserted).
    unsafe { q_tiles_one(tiles.as_ptr(), w.groups(), &x, partial.as_mut_ptr()) }
}

/// The decode inner loop, kept out of line and written with advancing pointers: that is
/// the form in which LLVM folds each load's constant offset into the instruction (other
/// forms cost two more instructions per eight multiply-adds).
///
/// # Safety
/// `tiles` must hold `groups` tiles and `partial` `groups * 16` i32s.
#[inline(never)]
unsafe fn q_tiles_one(
    tiles: *const i16,
    groups: usize,
    x: &[I16x8; Q_CHUNKS_PER_BLOCK],
    partial: *mut i32,
) {
    let x = *x;
    let (mut tile, mut out) = (tiles, partial);
    for _ in 0..groups {
        for r in 0..Q_GROUP {
            let row = tile.add(r * Q_CHUNK);
            let mut acc = I32x4::load(out);
            for (k, xk) in x.iter().enumerate() {
                acc = acc.add(I32x4::dot(I16x8::load(row.add(k * Q_GROUP * Q_CHUNK)), *xk));
            }
            acc.store(out);
            out = out.add(4);
        }
        tile = tile.add(Q_TILE_LEN);
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
