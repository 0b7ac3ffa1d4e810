//! GPT-2's GELU, the tanh approximation ("gelu_new"), shared by both kernel sets.
//!
//! tanh is a rational function (the [13/6] approximation Eigen uses for f32), four lanes
//! at a time: within a few ulp of `f32::tanh` at a fraction of libm's instruction count,
//! which matters as GELU runs n_inner times per layer per token. (Measured: this is
//! cheaper than the same GELU written as x / (1 + e^(−2u)) with the softmax's exp.)

use super::lanes::F32x4;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const CUBIC: f32 = 0.044715;
/// Beyond ±CLAMP the rational tanh is ±1 in f32.
const CLAMP: f32 = 7.905_311;
const P: [f32; 7] = [
    -2.760_768_5e-16,
    2.000_188e-13,
    -8.604_672e-11,
    5.122_297e-8,
    1.485_722_4e-5,
    6.372_619e-4,
    4.893_524_6e-3,
];
const Q: [f32; 4] = [1.198_258_4e-6, 1.185_347e-4, 2.268_434_7e-3, 4.893_525e-3];

/// GELU in place, four lanes at a time.
pub fn gelu(x: &mut [f32]) {
    let quads = x.len() / 4 * 4;
    for q in x[..quads].chunks_exact_mut(4) {
        // SAFETY: the chunk holds four f32s.
        unsafe { gelu_lanes(F32x4::load(q.as_ptr())).store(q.as_mut_ptr()) };
    }
    let tail = &mut x[quads..];
    if !tail.is_empty() {
        let mut lanes = [0.0f32; 4];
        lanes[..tail.len()].copy_from_slice(tail);
        // SAFETY: `lanes` holds four f32s.
        let y = gelu_lanes(unsafe { F32x4::load(lanes.as_ptr()) }).to_array();
        tail.copy_from_slice(&y[..tail.len()]);
    }
}

fn gelu_lanes(x: F32x4) -> F32x4 {
    let s = F32x4::splat;
    let inner = s(SQRT_2_OVER_PI).mul(x.add(s(CUBIC).mul(x).mul(x).mul(x)));
    s(0.5).mul(x).mul(s(1.0).add(tanh_lanes(inner)))
}

fn tanh_lanes(x: F32x4) -> F32x4 {
    let s = F32x4::splat;
    let x = x.clamp(s(-CLAMP), s(CLAMP));
    let x2 = x.mul(x);
    let p = P[1..].iter().fold(s(P[0]), |p, &c| p.mul(x2).add(s(c)));
    let q = Q[1..].iter().fold(s(Q[0]), |q, &c| q.mul(x2).add(s(c)));
    x.mul(p).div(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rational_tanh_matches_libm() {
        let mut worst = 0.0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let got = tanh_lanes(F32x4::splat(x)).to_array()[0];
            worst = worst.max((got - x.tanh()).abs());
        }
        assert!(worst < 5e-7, "max abs error {worst}");
        assert!((tanh_lanes(F32x4::splat(50.0)).to_array()[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn matches_the_tanh_formula() {
        let mut x: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 1e-3).collect();
        x.extend([-1e4, -100.0, 100.0, 1e4, 0.0]);
        let mut got = x.clone();
        gelu(&mut got);
        for (&v, &g) in x.iter().zip(&got) {
            let v64 = v as f64;
            let want = 0.5 * v64 * (1.0 + (0.7978845608 * (v64 + 0.044715 * v64.powi(3))).tanh());
            // Relative to the input: far out, 1 + tanh is a few ulp of 1 away from 0 or 2.
            assert!((g as f64 - want).abs() <= 2e-6 * (1.0 + v64.abs()), "{v}: {g} vs {want}");
        }
    }
}
