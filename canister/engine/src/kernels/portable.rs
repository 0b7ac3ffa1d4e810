//! Scalar reference kernels: the plain definitions, no layout tricks.

use super::quant::{dequantize, quantize_into, quantize_rows};
use super::{
    attention_weights, matmul_tokens, softmax, HeadCache, Kernels, PackedMatrix, Portable,
    QuantHeadCache, QuantMatrix, FLUSH_PAIRS,
};

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

    fn attend(
        &self,
        q: &[f32],
        heads: &HeadCache,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let hs = q.len();
        heads.check(hs);
        let row = |m: &'_ [f32], j: usize| -> Vec<f32> {
            m[j * heads.stride + heads.offset..][..hs].to_vec()
        };
        scores.clear();
        for j in 0..heads.positions {
            let k = row(heads.keys, j);
            scores.push(q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>() * scale);
        }
        softmax(scores);
        out.fill(0.0);
        for (j, &a) in scores.iter().enumerate() {
            for (o, v) in out.iter_mut().zip(row(heads.values, j)) {
                *o += a * v;
            }
        }
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
        let hs = q.len();
        heads.check(hs);
        let mut qq = vec![0i16; hs];
        let q_scale = quantize_into(q, &mut qq);
        scores.clear();
        for j in 0..heads.positions {
            let k = &heads.keys[j * hs..][..hs];
            let acc =
                qq.iter().zip(k).fold(0i32, |a, (&x, &y)| a.wrapping_add(x as i32 * y as i32));
            scores.push(acc as f32 * (q_scale * scale) * heads.key_scales[j]);
        }
        let pairs = heads.pairs();
        let w_scale = attention_weights(scores, heads.value_scales, pairs, weights);
        for (d, o) in out.iter_mut().enumerate() {
            let mut total = 0.0f32;
            for first in (0..pairs).step_by(FLUSH_PAIRS) {
                let mut acc = 0i32;
                for m in first..(first + FLUSH_PAIRS).min(pairs) {
                    for slot in 0..2 {
                        let v = heads.values[(m * hs + d) * 2 + slot];
                        acc = acc.wrapping_add(weights[2 * m + slot] as i32 * v as i32);
                    }
                }
                total += acc as f32;
            }
            *o = total * w_scale;
        }
    }
}
