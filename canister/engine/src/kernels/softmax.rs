//! Softmax, shared by both kernel sets, with an exp written for the IC's cost table: four
//! lanes at a time in f32 vector arithmetic (libm's scalar `expf` costs several times more
//! per value, as every scalar float operation is metered at 2).

use super::lanes::{F32x4, I32x4};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts, the first exact in few bits, so that `n·ln2` subtracts exactly.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds to an integer, read back from the bits.
const MAGIC: f32 = 12_582_912.0;
/// Arguments are raised to this: e^-87 is near the bottom of f32's normal range, and in a
/// softmax (arguments ≤ 0) anything that small is a zero weight anyway.
const LOWEST: f32 = -87.0;
/// Cephes' `expf` polynomial for e^r on |r| ≤ ln2/2 (beyond 1 + r + r²·P(r)).
const P: [f32; 6] =
    [1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// e^x for x ≤ 0 in each lane (relative error ~1e-7): x = n·ln2 + r, e^r by a polynomial,
/// 2ⁿ added into the exponent bits.
pub fn exp_lanes(x: F32x4) -> F32x4 {
    let s = F32x4::splat;
    let x = x.max(s(LOWEST));
    let t = x.mul(s(LOG2E)).add(s(MAGIC));
    let n = t.sub(s(MAGIC));
    let r = x.sub(n.mul(s(LN2_HI))).sub(n.mul(s(LN2_LO)));
    let p = P[1..].iter().fold(s(P[0]), |p, &c| p.mul(r).add(s(c)));
    let y = p.mul(r.mul(r)).add(r).add(s(1.0));
    let n = t.to_bits().sub(I32x4::splat(MAGIC.to_bits() as i32));
    F32x4::from_bits(y.to_bits().add(n.shl(23)))
}

/// Numerically stable softmax in place.
pub fn softmax(v: &mut [f32]) {
    let inv = 1.0 / exp_shifted(v);
    scale(v, inv);
}

/// Replaces each value by e^(value − max) and returns their sum: a softmax without the
/// final division, for callers that can fold the division into a later scale.
pub fn exp_shifted(v: &mut [f32]) -> f32 {
    let quads = v.len() / 4 * 4;
    let mut m = F32x4::splat(f32::NEG_INFINITY);
    for q in v[..quads].chunks_exact(4) {
        // SAFETY: the chunk holds four f32s.
        m = m.max(unsafe { F32x4::load(q.as_ptr()) });
    }
    // Compare-and-select: `f32::max` costs 18 instructions under IC metering.
    let max = m
        .to_array()
        .into_iter()
        .chain(v[quads..].iter().copied())
        .fold(f32::NEG_INFINITY, |m, x| if m < x { x } else { m });
    let shift = F32x4::splat(max);
    let mut sums = F32x4::splat(0.0);
    for q in v[..quads].chunks_exact_mut(4) {
        // SAFETY: the chunk holds four f32s.
        unsafe {
            let e = exp_lanes(F32x4::load(q.as_ptr()).sub(shift));
            e.store(q.as_mut_ptr());
            sums = sums.add(e);
        }
    }
    let mut sum = sums.sum();
    let tail = &mut v[quads..];
    if !tail.is_empty() {
        let mut lanes = [max; 4];
        lanes[..tail.len()].copy_from_slice(tail);
        // SAFETY: `lanes` holds four f32s.
        let e = exp_lanes(unsafe { F32x4::load(lanes.as_ptr()) }.sub(shift)).to_array();
        for (x, e) in tail.iter_mut().zip(e) {
            *x = e;
            sum += e;
        }
    }
    sum
}

/// Multiplies each value by `by`, lane-wise where it can.
pub fn scale(v: &mut [f32], by: f32) {
    scale_by(v, |_| F32x4::splat(by), |_| by);
}

/// Multiplies `v` element-wise by `by` (at least as long).
pub fn multiply(v: &mut [f32], by: &[f32]) {
    assert!(by.len() >= v.len());
    // SAFETY: quad i of `v` exists, so does quad i of the longer `by`.
    scale_by(v, |i| unsafe { F32x4::load(by.as_ptr().add(i)) }, |i| by[i]);
}

fn scale_by(v: &mut [f32], lanes: impl Fn(usize) -> F32x4, one: impl Fn(usize) -> f32) {
    let quads = v.len() / 4 * 4;
    for (i, q) in v[..quads].chunks_exact_mut(4).enumerate() {
        // SAFETY: the chunk holds four f32s.
        unsafe { F32x4::load(q.as_ptr()).mul(lanes(4 * i)).store(q.as_mut_ptr()) };
    }
    for (i, x) in v.iter_mut().enumerate().skip(quads) {
        *x *= one(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut worst = 0.0f32;
        for i in 0..200_000 {
            let x = -(i as f32) * 4e-4;
            let got = exp_lanes(F32x4::splat(x)).to_array()[0];
            worst = worst.max((got - x.exp()).abs() / x.exp());
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert!(exp_lanes(F32x4::splat(-1e4)).to_array()[0] < 1e-37);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        for n in [1, 3, 4, 7, 64, 1001] {
            let mut v: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32) * 0.7 - 3.0).collect();
            let want: Vec<f64> = {
                let m = v.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
                let e: Vec<f64> = v.iter().map(|&x| (x as f64 - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|x| x / s).collect()
            };
            softmax(&mut v);
            for (got, want) in v.iter().zip(want) {
                assert!((*got as f64 - want).abs() < 1e-6 * (1.0 + want), "n={n}");
            }
        }
    }
}
