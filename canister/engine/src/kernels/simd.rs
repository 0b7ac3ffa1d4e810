//! Four-lane kernels shaped for IC metering (see DESIGN.md §4: every wasm instruction,
//! including each `local.get` and address computation, is charged).
//!
//! The matrix kernel walks one row block (16 inputs) at a time. For each block it splats
//! the 16 input values of up to four tokens once, then streams the block's tiles: each
//! tile (16 inputs × 4 outputs) is loaded once and applied to every token in the group,
//! accumulating in a register chain. In decode (one token) the inner step is one load,
//! one multiply and one add per four multiply-accumulates; in prefill the weight load is
//! shared by four tokens.

use super::lanes::F32x4;
use super::packed::{LANES, TILE_LEN, TILE_ROWS};
use super::{matmul_tokens, Kernels, PackedMatrix, Simd128};

/// Tokens that share one pass over the weights in prefill.
const TOKEN_GROUP: usize = 4;

impl Kernels for Simd128 {
    fn matmul(&self, w: &PackedMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        let tokens = matmul_tokens(w, bias, x, y);
        let cols = w.cols();
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
                    4 => row_block::<4>(w, ib, x, y),
                    3 => row_block::<3>(w, ib, x, y),
                    2 => row_block::<2>(w, ib, x, y),
                    _ => row_block::<1>(w, ib, x, y),
                }
            }
            t += group;
        }
    }

    fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let n = a.len() / LANES * LANES;
        let mut acc = F32x4::splat(0.0);
        for i in (0..n).step_by(LANES) {
            // SAFETY: i + 4 <= n <= len of both slices.
            unsafe {
                acc = acc.add(F32x4::load(a.as_ptr().add(i)).mul(F32x4::load(b.as_ptr().add(i))))
            };
        }
        acc.sum() + a[n..].iter().zip(&b[n..]).map(|(x, y)| x * y).sum::<f32>()
    }

    fn axpy(&self, y: &mut [f32], a: f32, x: &[f32]) {
        assert_eq!(y.len(), x.len());
        let n = y.len() / LANES * LANES;
        let av = F32x4::splat(a);
        for i in (0..n).step_by(LANES) {
            // SAFETY: i + 4 <= n <= len of both slices.
            unsafe {
                let p = y.as_mut_ptr().add(i);
                F32x4::load(p)
                    .add(av.mul(F32x4::load(x.as_ptr().add(i))))
                    .store(p);
            }
        }
        for (yi, xi) in y[n..].iter_mut().zip(&x[n..]) {
            *yi += a * xi;
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
