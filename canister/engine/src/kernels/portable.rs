//! Scalar reference kernels: the plain definitions, no layout tricks.

use super::{matmul_tokens, Kernels, PackedMatrix, Portable};

impl Kernels for Portable {
    fn matmul(&self, w: &PackedMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        let tokens = matmul_tokens(w, bias, x, y);
        let (rows, cols) = (w.rows(), w.cols());
        for t in 0..tokens {
            let x = &x[t * rows..(t + 1) * rows];
            for o in 0..cols {
                let mut acc = bias.map_or(0.0, |b| b[o]);
                for (i, xi) in x.iter().enumerate() {
                    acc += xi * w.get(i, o);
                }
                y[t * cols + o] = acc;
            }
        }
    }

    fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn axpy(&self, y: &mut [f32], a: f32, x: &[f32]) {
        assert_eq!(y.len(), x.len());
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi += a * xi;
        }
    }
}
