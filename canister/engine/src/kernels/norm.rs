//! Layer normalization, shared by both kernel sets (its float sums are done four lanes
//! at a time, so both agree bit for bit).

use super::lanes::F32x4;

/// Normalises each row of `x` (rows of `weight.len()`) into `out`:
/// `(x − mean) / sqrt(var + eps) · weight + bias`.
pub fn layer_norm(x: &[f32], out: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let c = weight.len();
    assert!(bias.len() == c && out.len() == x.len() && x.len().is_multiple_of(c));
    let quads = c / 4 * 4;
    // SAFETY: callers pass i < quads, so i + 4 <= c <= v.len().
    let lanes = |v: &[f32], i: usize| unsafe { F32x4::load(v.as_ptr().add(i)) };
    for (xr, or) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        let mut sums = F32x4::splat(0.0);
        for i in (0..quads).step_by(4) {
            sums = sums.add(lanes(xr, i));
        }
        let mean = xr[quads..].iter().fold(sums.sum(), |s, v| s + v) / c as f32;
        let m = F32x4::splat(mean);
        let mut squares = F32x4::splat(0.0);
        for i in (0..quads).step_by(4) {
            let d = lanes(xr, i).sub(m);
            squares = squares.add(d.mul(d));
        }
        let var = xr[quads..].iter().fold(squares.sum(), |s, v| s + (v - mean) * (v - mean));
        let inv = 1.0 / (var / c as f32 + eps).sqrt();
        let iv = F32x4::splat(inv);
        for i in (0..quads).step_by(4) {
            let y = lanes(xr, i).sub(m).mul(iv).mul(lanes(weight, i)).add(lanes(bias, i));
            // SAFETY: i + 4 <= c = or.len().
            unsafe { y.store(or.as_mut_ptr().add(i)) };
        }
        for i in quads..c {
            or[i] = (xr[i] - mean) * inv * weight[i] + bias[i];
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalises_rows_of_any_width() {
        for c in [4, 7, 64, 66] {
            let x: Vec<f32> =
                (0..3 * c).map(|i| ((i * 31 % 17) as f32).sin() * 3.0 + 1.0).collect();
            let weight: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.01).collect();
            let bias: Vec<f32> = (0..c).map(|i| i as f32 * -0.02).collect();
            let mut out = vec![0.0; x.len()];
            super::layer_norm(&x, &mut out, &weight, &bias, 1e-5);
            for (xr, or) in x.chunks(c).zip(out.chunks(c)) {
                let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
                let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
                for i in 0..c {
                    let want = (xr[i] as f64 - mean) / (var + 1e-5).sqrt() * weight[i] as f64
                        + bias[i] as f64;
                    assert!((or[i] as f64 - want).abs() < 1e-5, "c={c} i={i}");
                }
            }
        }
    }
}
