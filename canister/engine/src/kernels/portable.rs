//! Scalar reference kernels: the plain definitions, no layout tricks.

use super::quant::{dequantize, quantize_rows};
use super::{matmul_tokens, Kernels, PackedMatrix, Portable, QuantMatrix};

impl Kernels for Portable {
    fn matmul(&self, w: &PackedMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        let (rows, cols) = (w.rows(), w.cols());
        let tokens = matmul_tokens(rows, cols, bias, x, y);
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

    fn matmul_q(&self, w: &QuantMatrix, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        let (rows, cols) = (w.rows(), w.cols());
        let tokens = matmul_tokens(rows, cols, bias, x, y);
        let xq = quantize_rows(x, rows, rows);
        for t in 0..tokens {
            let xt = &xq.values[t * rows..(t + 1) * rows];
            for o in 0..cols {
                let acc: i32 = xt.iter().enumerate().map(|(i, &v)| v as i32 * w.q(i, o)).sum();
                let b = bias.map_or(0.0, |b| b[o]);
                y[t * cols + o] = dequantize(acc, w.scales()[o], xq.scales[t], b);
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
