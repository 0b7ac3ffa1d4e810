//! Weight matrices in the tiled layout the kernels stream through.
//!
//! A matrix W with `rows` inputs and `cols` outputs (y = x·W, the layout of GPT-2's Conv1D
//! weights) is cut into tiles of `TILE_ROWS` inputs × `LANES` outputs. Each tile is stored
//! contiguously, input-major, and tiles of one row block follow each other by output.
//! So the matrix-vector kernel reads every weight exactly once from one advancing
//! pointer with constant offsets — the cheapest access pattern under IC metering, where
//! each address computation is an instruction. Rows and columns are zero-padded to whole
//! tiles, which keeps remainders out of the inner loop.

/// 32 inputs per tile: long enough that the per-tile bookkeeping (output load/store,
/// pointer and loop updates) is a small share of the multiply-adds (measured: 16 costs
/// 7% more instructions per decoded token).
pub const TILE_ROWS: usize = 32;
pub const LANES: usize = 4;
pub const TILE_LEN: usize = TILE_ROWS * LANES;

#[derive(Clone, Debug, PartialEq)]
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl PackedMatrix {
    /// Packs the matrix whose element (input `i`, output `o`) is `f(i, o)`.
    pub fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f32) -> Self {
        let mut m = PackedMatrix { rows, cols, data: Vec::new() };
        m.data = vec![0.0; m.row_blocks() * m.col_blocks() * TILE_LEN];
        for i in 0..rows {
            for o in 0..cols {
                let at = m.index(i, o);
                m.data[at] = f(i, o);
            }
        }
        m
    }

    /// From a row-major `[rows][cols]` slice (a Conv1D weight, `[in, out]`).
    pub fn from_in_out(rows: usize, cols: usize, src: &[f32]) -> Self {
        assert_eq!(src.len(), rows * cols);
        Self::from_fn(rows, cols, |i, o| src[i * cols + o])
    }

    /// From a row-major `[cols][rows]` slice (an `nn.Linear` / embedding layout, `[out, in]`).
    pub fn from_out_in(rows: usize, cols: usize, src: &[f32]) -> Self {
        assert_eq!(src.len(), rows * cols);
        Self::from_fn(rows, cols, |i, o| src[o * rows + i])
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn row_blocks(&self) -> usize {
        self.rows.div_ceil(TILE_ROWS)
    }

    pub fn col_blocks(&self) -> usize {
        self.cols.div_ceil(LANES)
    }

    pub fn heap_bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }

    fn index(&self, i: usize, o: usize) -> usize {
        let tile = (i / TILE_ROWS) * self.col_blocks() + o / LANES;
        tile * TILE_LEN + (i % TILE_ROWS) * LANES + o % LANES
    }

    pub fn get(&self, i: usize, o: usize) -> f32 {
        assert!(i < self.rows && o < self.cols);
        self.data[self.index(i, o)]
    }

    /// All inputs' weights for output `o`: the embedding row of token `o` when this is
    /// the tied GPT-2 LM head.
    pub fn column(&self, o: usize) -> Vec<f32> {
        (0..self.rows).map(|i| self.get(i, o)).collect()
    }

    /// The tiles of row block `ib`, one after another by output block.
    pub fn row_block(&self, ib: usize) -> &[f32] {
        let len = self.col_blocks() * TILE_LEN;
        &self.data[ib * len..(ib + 1) * len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip() {
        let (rows, cols) = (TILE_ROWS + 3, 7);
        let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let a = PackedMatrix::from_in_out(rows, cols, &src);
        let b = PackedMatrix::from_out_in(cols, rows, &src);
        for i in 0..rows {
            for o in 0..cols {
                assert_eq!(a.get(i, o), src[i * cols + o]);
                assert_eq!(b.get(o, i), src[i * cols + o]);
            }
        }
        assert_eq!(b.column(3), src[3 * cols..4 * cols].to_vec());
        assert_eq!(a.row_block(1).len(), 2 * TILE_LEN);
    }
}
