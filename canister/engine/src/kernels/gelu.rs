//! GPT-2's GELU, the tanh approximation ("gelu_new"), for one value and for four lanes:
//! the same operations in the same order, so both kernel sets agree bit for bit.
//!
//! tanh is a rational function (the [13/6] approximation Eigen uses for f32): within a
//! few ulp of `f32::tanh` at a fraction of libm's instruction count, which matters as GELU
//! runs n_inner times per layer per token.

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

pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x)))
}

fn tanh(x: f32) -> f32 {
    // Compare-and-select in the order of `F32x4::clamp`.
    let x = if -CLAMP < x { x } else { -CLAMP };
    let x = if x < CLAMP { x } else { CLAMP };
    let x2 = x * x;
    let p = P[1..].iter().fold(P[0], |p, &c| p * x2 + c);
    let q = Q[1..].iter().fold(Q[0], |q, &c| q * x2 + c);
    x * p / q
}

pub fn gelu_lanes(x: F32x4) -> F32x4 {
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
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 5e-7, "max abs error {worst}");
        assert_eq!(tanh(50.0), tanh(CLAMP));
        assert!((tanh(50.0) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn lanes_equal_scalar_exactly() {
        for i in -4000..4000 {
            let v = [i as f32 * 3e-3, i as f32 * 0.1, -(i as f32) * 7e-4, i as f32 * 1e-7];
            let got = gelu_lanes(F32x4::from_array(v)).to_array();
            assert_eq!(got, v.map(gelu));
        }
    }
}
