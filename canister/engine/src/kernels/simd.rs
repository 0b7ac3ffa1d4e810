//! Four-lane kernels shaped for IC metering (see docs/design.md, "IC limits and costs":
//! every wasm instruction, including each `local.get` and address computation, is charged).
//!
//! The f32 matrix kernel walks one row block (`TILE_ROWS` inputs) at a time. For each
//! block it splats the input values of up to eight tokens once, then streams the
//! block's tiles: each tile (`TILE_ROWS` inputs × 4 outputs) is loaded once and applied to
//! every token in the group, accumulating in a register chain. In decode (one token) the
//! inner step is one load, one multiply and one add per four multiply-accumulates; in
//! prefill the weight load is shared by the group. The int8 kernels (`q_groups_*`) chain
//! `i32x4.dot_i16x8_s` (eight multiply-adds: four outputs × two inputs) over up to 256
//! inputs, with up to eight prefill tokens sharing each group's weights.

use super::lanes::{F32x4, I16x8, I32x4};
use super::packed::{LANES, TILE_LEN, TILE_ROWS};
use super::quant::{dequantize, quantize_into, quantize_rows, QuantRows, Q_CHUNK, Q_GROUP};
use std::cell::RefCell;

use crate::kv_cache::VALUE_PAIR_BLOCK;

use super::{
    attention_weights, matmul_tokens, softmax, HeadCache, Kernels, PackedMatrix, Portable,
    QuantHeadCache, QuantMatrix, Simd128, FLUSH_PAIRS,
};

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
            let group = [8, 4, 2, 1].into_iter().find(|&g| g <= tokens - t).expect("1 fits");
            let (x, y) = (&x[t * w.rows()..], &mut y[t * cols..]);
            for ib in 0..w.row_blocks() {
                match group {
                    8 => row_block::<8>(w, ib, x, y, f32_tiles_8),
                    4 => row_block::<4>(w, ib, x, y, f32_tiles_4),
                    2 => row_block::<2>(w, ib, x, y, f32_tiles_2),
                    _ => row_block::<1>(w, ib, x, y, f32_tiles_1),
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
                let per_call = (X_REGISTERS / (group * SUB)).min(8) * SUB;
                for (first, len) in w.blocks() {
                    for p0 in (0..len / 2).step_by(per_call) {
                        let n = per_call.min(len / 2 - p0);
                        let overwrite = first == 0 && p0 == 0;
                        q_pairs(w, (first, len), (p0, n), &xq, t, group, overwrite, partial);
                    }
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
        // Every score is written below: resizing without clearing zeroes only new room
        // (a fill is metered per byte).
        scores.resize(heads.positions, 0.0);
        // SAFETY: `check` proved rows 0..positions of 64 keys and their scales exist.
        unsafe { scores_q64(&qv, heads.keys.as_ptr(), q_scale * scale, heads.key_scales, scores) };
        let pairs = heads.pairs();
        let w_scale = attention_weights(scores, heads.value_scales, pairs, weights);
        // SAFETY: `check` proved `pairs` pairs of 64 values exist, `weights` has two per
        // pair and `out` holds 64 floats (asserted).
        unsafe { weighted_sum_q64(weights, heads.values.as_ptr(), out) };
        out.iter_mut().for_each(|o| *o *= w_scale);
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

/// The f32 inner loop for `G` tokens (see `f32_tiles`).
type F32Tiles<const G: usize> =
    unsafe fn(*const f32, usize, &[[F32x4; TILE_ROWS]; G], *mut f32, usize);

/// Adds row block `ib`'s contribution to the first `G` token rows of `y`.
#[inline(always)]
fn row_block<const G: usize>(
    w: &PackedMatrix,
    ib: usize,
    x: &[f32],
    y: &mut [f32],
    tiles_kernel: F32Tiles<G>,
) {
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
    // SAFETY: tiles 0..full lie within `tiles` (col_blocks >= full), and each token row
    // g has `cols` outputs, so lanes ob*4..ob*4+4 of rows 0..G are inside `y` (asserted).
    unsafe { tiles_kernel(tiles.as_ptr(), full, &xs, y.as_mut_ptr(), cols) };
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

/// The f32 inner loops, one per token-group size: each tile (`TILE_ROWS` inputs × 4
/// outputs) is loaded once and applied to every token of the group in a register chain
/// (multiply, add per four multiply-adds), on top of the outputs so far. The tokens are
/// listed, not looped over, so that their input splats stay in registers.
macro_rules! f32_tiles {
    ($name:ident, $tokens:literal, [$($t:literal),*]) => {
        /// # Safety
        /// `tiles` must hold `n_tiles` tiles, and `y` the group's rows of `cols` outputs,
        /// `cols >= 4 * n_tiles`.
        #[inline(never)]
        unsafe fn $name(
            tiles: *const f32,
            n_tiles: usize,
            xs: &[[F32x4; TILE_ROWS]; $tokens],
            y: *mut f32,
            cols: usize,
        ) {
            let xs = *xs;
            let (mut tile, mut out) = (tiles, y);
            for _ in 0..n_tiles {
                let wv: [F32x4; TILE_ROWS] =
                    core::array::from_fn(|k| F32x4::load(tile.add(k * LANES)));
                $({
                    let o = out.add($t * cols);
                    let mut acc = F32x4::load(o);
                    for k in 0..TILE_ROWS {
                        acc = acc.add(xs[$t][k].mul(wv[k]));
                    }
                    acc.store(o);
                })*
                tile = tile.add(TILE_LEN);
                out = out.add(LANES);
            }
        }
    };
}

f32_tiles!(f32_tiles_1, 1, [0]);
f32_tiles!(f32_tiles_2, 2, [0, 1]);
f32_tiles!(f32_tiles_4, 4, [0, 1, 2, 3]);
f32_tiles!(f32_tiles_8, 8, [0, 1, 2, 3, 4, 5, 6, 7]);

/// Tokens that share one pass over an int8 matrix's weights in prefill.
const Q_TOKEN_GROUP: usize = 8;
/// Input pairs per sub-chain, the unit the int8 kernels are unrolled in.
const SUB: usize = 16;
/// Activation vectors a kernel call keeps in registers, at most.
const X_REGISTERS: usize = 512;

thread_local! {
    /// The int8 kernels' partial sums, kept between calls: a fresh zeroed buffer per
    /// matmul would cost a `memory.fill` of its whole size every time.
    static PARTIAL: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f(0)`, `f(1)`, … `f(n - 1)` for a constant `n` ≤ 16, written out rather than
/// looped so that `f`'s argument is a constant in each call (arrays indexed by it stay in
/// registers).
macro_rules! unrolled {
    ($n:expr, $f:expr) => {{
        let mut f = $f;
        unrolled!(@ $n, f, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    }};
    (@ $n:expr, $f:ident, $($i:literal)*) => {
        $(if $i < $n {
            $f($i)
        })*
    };
}

/// Adds input pairs `p0..p0+n` of the block starting at input `first` (`len` inputs) to
/// the partial sums of tokens `t..t+group` (laid out `[output group][token][4 outputs]`);
/// with `overwrite` the sums start from zero instead.
#[allow(clippy::too_many_arguments)]
fn q_pairs(
    w: &QuantMatrix,
    (first, len): (usize, usize),
    (p0, n): (usize, usize),
    xq: &QuantRows,
    t: usize,
    group: usize,
    overwrite: bool,
    partial: &mut [i32],
) {
    let block = w.block(first);
    let groups = w.padded_cols() / Q_GROUP;
    let stride = len * Q_GROUP;
    assert!(block.len() == groups * stride && p0 + n <= len / 2 && n % SUB == 0);
    assert!(partial.len() >= groups * group * 4);
    assert!(xq.values.len() >= (t + group) * xq.stride && first + len <= xq.stride);
    // SAFETY: pair p0 of the first group lies within the block (asserted).
    let weights = unsafe { block.as_ptr().add(p0 * 8) };
    // SAFETY: rows t..t+group hold `stride` values each (asserted); this is pair p0 of
    // the block's inputs in row t.
    let x = unsafe { xq.values.as_ptr().add(t * xq.stride + first + 2 * p0) };
    macro_rules! run {
        ($g:literal, $s:literal, $f:ident) => {{
            // SAFETY: each of the `groups` groups, `stride` bytes apart, has pairs
            // p0..p0+n, and so do the activation rows from `x`, `xq.stride` apart;
            // `partial` holds $g × 4 sums per group (asserted).
            unsafe {
                if overwrite {
                    $f::<$s, true>(weights, stride, groups, x, xq.stride, partial.as_mut_ptr())
                } else {
                    $f::<$s, false>(weights, stride, groups, x, xq.stride, partial.as_mut_ptr())
                }
            }
        }};
        ($g:literal, $f:ident) => {
            match n / SUB {
                8 => run!($g, 8, $f),
                6 => run!($g, 6, $f),
                4 => run!($g, 4, $f),
                _ => run!($g, 2, $f),
            }
        };
    }
    match group {
        8 => match n / SUB {
            4 => run!(8, 4, q_groups_8),
            _ => run!(8, 2, q_groups_8),
        },
        4 => run!(4, q_groups_4),
        2 => run!(2, q_groups_2),
        _ => run!(1, q_groups_1),
    }
}

/// One sub-chain with the weights loaded straight into it: load, dot, add per eight
/// multiply-adds.
///
/// # Safety
/// `w` must point at `SUB` weight vectors of 8 bytes.
#[inline(always)]
unsafe fn sub_chain_loading(mut acc: I32x4, w: *const i8, x: &[I16x8; SUB]) -> I32x4 {
    for (k, xk) in x.iter().enumerate() {
        acc = acc.add(I32x4::dot(I16x8::load_i8(w.add(k * 8)), *xk));
    }
    acc
}

/// One sub-chain with weights and activations both in registers.
#[inline(always)]
fn sub_chain(mut acc: I32x4, w: &[I16x8; SUB], x: &[I16x8; SUB]) -> I32x4 {
    for (wk, xk) in w.iter().zip(x) {
        acc = acc.add(I32x4::dot(*wk, *xk));
    }
    acc
}

/// The int8 inner loops, one per token-group size: for each group of four outputs, one
/// `dot`+`add` chain per token over `S` sub-chains of input pairs, its four lanes the four
/// outputs. Kept out of line and written with advancing pointers (the form in which LLVM
/// folds each load's constant offset into the instruction). With one token (decode) each
/// weight vector is loaded straight into its chain; with more, a group's weights are loaded
/// into registers once and shared by the tokens' chains. The tokens are listed, not looped
/// over, so that their activations stay in registers (a loop the compiler does not unroll
/// would index them in memory: two more instructions per eight multiply-adds).
macro_rules! q_groups {
    ($name:ident, $tokens:literal, [$($t:literal),*]) => {
        /// # Safety
        /// `weights` must point at `groups` groups' pairs, `stride` bytes apart, each with
        /// `S * SUB` pairs of 8 bytes; `x` at as many activation pairs in each of the
        /// group's rows, `x_stride` values apart; `partial` must hold
        #[doc = concat!("`groups * ", $tokens, " * 4` i32s.")]
        #[inline(never)]
        unsafe fn $name<const S: usize, const FIRST: bool>(
            weights: *const i8,
            stride: usize,
            groups: usize,
            x: *const i16,
            x_stride: usize,
            partial: *mut i32,
        ) {
            // The activation pairs, each repeated four times, straight into registers.
            let mut xs = [[[I16x8::splat(0); SUB]; S]; $tokens];
            $({
                let row = x.add($t * x_stride);
                unrolled!(S, |s: usize| {
                    xs[$t][s] = core::array::from_fn(|k| {
                        I16x8::load_pair_splat(row.add(2 * (s * SUB + k)))
                    })
                });
            })*
            let start = |out: *mut i32| if FIRST { I32x4::splat(0) } else { I32x4::load(out) };
            let (mut w, mut out) = (weights, partial);
            for _ in 0..groups {
                if $tokens == 1 {
                    let mut acc = start(out);
                    unrolled!(S, |s: usize| {
                        acc = sub_chain_loading(acc, w.add(s * SUB * 8), &xs[0][s])
                    });
                    acc.store(out);
                } else {
                    // Filled a sub-chain at a time, unrolled like the chains (a loop
                    // here would keep the weights in memory).
                    let mut wv = [[I16x8::splat(0); SUB]; S];
                    unrolled!(S, |s: usize| {
                        wv[s] = core::array::from_fn(|k| I16x8::load_i8(w.add((s * SUB + k) * 8)))
                    });
                    $({
                        let o = out.add($t * 4);
                        let mut acc = start(o);
                        unrolled!(S, |s: usize| acc = sub_chain(acc, &wv[s], &xs[$t][s]));
                        acc.store(o);
                    })*
                }
                w = w.add(stride);
                out = out.add($tokens * 4);
            }
        }
    };
}

q_groups!(q_groups_1, 1, [0]);
q_groups!(q_groups_2, 2, [0, 1]);
q_groups!(q_groups_4, 4, [0, 1, 2, 3]);
q_groups!(q_groups_8, 8, [0, 1, 2, 3, 4, 5, 6, 7]);

/// Turns the group's partial sums into outputs, four at a time: the integer sums scaled
/// in one vector (the same operations, in the same order, as `dequantize`).
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
    assert!(bias.is_none_or(|b| b.len() == cols));
    for g in 0..group {
        let x_scale = xq.scales[t + g];
        let xs = F32x4::splat(x_scale);
        let y = &mut y[g * cols..(g + 1) * cols];
        for o in (0..full).step_by(Q_GROUP) {
            // SAFETY: outputs o..o+4 exist (o + 4 <= full <= cols), and so do their sums
            // (group o/4, token g), scales, biases and outputs (asserted).
            unsafe {
                let acc = I32x4::load(partial.as_ptr().add((o / Q_GROUP * group + g) * 4));
                let scale = F32x4::load(scales.as_ptr().add(o)).mul(xs);
                let b = bias.map_or(F32x4::splat(0.0), |b| F32x4::load(b.as_ptr().add(o)));
                acc.to_f32().mul(scale).add(b).store(y.as_mut_ptr().add(o));
            }
        }
        for o in full..cols {
            let acc = partial[(o / Q_GROUP * group + g) * 4 + o % Q_GROUP];
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
/// `keys` must point at `scores.len()` rows of 64 i16s, one after another, and
/// `key_scales` hold `scores.len()` scales.
#[inline(never)]
unsafe fn scores_q64(
    q: &[I16x8; HEAD_Q_CHUNKS],
    keys: *const i16,
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
            chain(row.add(HEAD_64)),
            chain(row.add(2 * HEAD_64)),
            chain(row.add(3 * HEAD_64)),
        );
        let ks = F32x4::load(key_scales.as_ptr().add(j));
        sums.to_f32().mul(s).mul(ks).store(scores.as_mut_ptr().add(j));
        row = row.add(4 * HEAD_64);
    }
    let zero = I32x4::splat(0);
    for j in quads..n {
        let sum = I32x4::sums(chain(row), zero, zero, zero).to_f32().to_array()[0];
        scores[j] = sum * scale * key_scales[j];
        row = row.add(HEAD_64);
    }
}

/// `out = Σ_j weights[j] · v_j` in integers, a block of `VALUE_PAIR_BLOCK` position pairs
/// at a time: the block's weights (each pair's two repeated four times) in registers, then
/// for each four outputs a chain of one `dot` per pair (its lanes the four outputs, each
/// the sum over the pair's two positions) onto that output's i32 sum, also in a register.
/// The sums move to f32 every `FLUSH_PAIRS` pairs.
///
/// # Safety
/// `values` must point at `weights.len() / 2` (a multiple of `VALUE_PAIR_BLOCK`) pairs of
/// 64 interleaved values, one after another; `out` must hold 64 floats.
#[inline(never)]
unsafe fn weighted_sum_q64(weights: &[i16], values: *const i16, out: &mut [f32]) {
    const PAIR: usize = 2 * HEAD_64;
    let blocks = weights.len() / 2 / VALUE_PAIR_BLOCK;
    let flush_every = FLUSH_PAIRS / VALUE_PAIR_BLOCK;
    let mut total = [F32x4::splat(0.0); HEAD_VECTORS];
    let mut acc = [I32x4::splat(0); HEAD_VECTORS];
    let (mut v, mut w) = (values, weights.as_ptr());
    for b in 0..blocks {
        let ws: [I16x8; VALUE_PAIR_BLOCK] =
            core::array::from_fn(|m| I16x8::load_pair_splat(w.add(2 * m)));
        // One pointer per pair, so each load is that pointer plus a constant offset.
        let rows: [*const i16; VALUE_PAIR_BLOCK] = core::array::from_fn(|m| v.add(m * PAIR));
        unrolled!(HEAD_VECTORS, |g: usize| {
            let mut a = acc[g];
            for (row, wm) in rows.iter().zip(&ws) {
                a = a.add(I32x4::dot(I16x8::load(row.add(g * Q_CHUNK)), *wm));
            }
            acc[g] = a;
        });
        if (b + 1) % flush_every == 0 || b + 1 == blocks {
            for (t, a) in total.iter_mut().zip(&mut acc) {
                *t = t.add(a.to_f32());
                *a = I32x4::splat(0);
            }
        }
        v = v.add(VALUE_PAIR_BLOCK * PAIR);
        w = w.add(2 * VALUE_PAIR_BLOCK);
    }
    for (g, t) in total.iter().enumerate() {
        t.store(out.as_mut_ptr().add(g * LANES));
    }
}
