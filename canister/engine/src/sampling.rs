//! Choosing the next token from logits: greedy, or temperature with top-k and top-p.
//!
//! Randomness comes from the seed and the token's position only, so a run can be
//! reproduced exactly and does not depend on how generation was split into calls.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{bad_input, EngineError};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 keeps all.
    pub top_k: u32,
    /// Keep the smallest set of most likely tokens whose probability reaches top_p; 1 keeps all.
    pub top_p: f32,
    pub seed: u64,
}

impl SamplingParams {
    pub const GREEDY: SamplingParams =
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 };

    pub fn validate(&self) -> Result<(), EngineError> {
        if !(self.temperature.is_finite() && (0.0..=100.0).contains(&self.temperature)) {
            return Err(bad_input(format!(
                "temperature {} must be between 0 and 100",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(bad_input(format!("top_p {} must be in (0, 1]", self.top_p)));
        }
        Ok(())
    }
}

/// Picks the token at `position` (the index it will occupy in the context).
pub fn sample(params: &SamplingParams, logits: &[f32], position: u64) -> u32 {
    if params.temperature == 0.0 || params.top_k == 1 {
        return argmax(logits);
    }
    let mut candidates: Vec<(f32, u32)> =
        logits.iter().enumerate().map(|(i, &l)| (l, i as u32)).collect();
    let by_score = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let k = params.top_k as usize;
    if k > 0 && k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, by_score);
        candidates.truncate(k);
    }
    if k > 0 || params.top_p < 1.0 {
        candidates.sort_unstable_by(by_score);
    }
    let max = candidates.iter().map(|c| c.0).fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> =
        candidates.iter().map(|c| (((c.0 - max) / params.temperature) as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut keep = weights.len();
    if params.top_p < 1.0 {
        let target = params.top_p as f64 * total;
        let mut cumulative = 0.0;
        for (i, w) in weights.iter().enumerate() {
            cumulative += w;
            if cumulative >= target {
                keep = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = weights[..keep].iter().sum();
    let mut r = uniform(params.seed, position) * kept_total;
    for (c, w) in candidates[..keep].iter().zip(&weights) {
        if r < *w {
            return c.1;
        }
        r -= w;
    }
    candidates[keep - 1].1
}

/// Index of the largest logit; the first one on ties (as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if l.total_cmp(&logits[best]) == Ordering::Greater {
            best = i;
        }
    }
    best as u32
}

/// A uniform number in [0, 1) from (seed, position): SplitMix64 of their mix.
fn uniform(seed: u64, position: u64) -> f64 {
    let mut z = seed ^ position.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: u32, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, seed }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(sample(&SamplingParams::GREEDY, &[0.1, 3.0, -1.0, 3.0], 0), 1);
    }

    #[test]
    fn same_seed_and_position_reproduce() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = params(1.0, 0, 1.0, 42);
        let a: Vec<u32> = (0..50).map(|pos| sample(&p, &logits, pos)).collect();
        let b: Vec<u32> = (0..50).map(|pos| sample(&p, &logits, pos)).collect();
        assert_eq!(a, b);
        let other: Vec<u32> =
            (0..50).map(|pos| sample(&params(1.0, 0, 1.0, 43), &logits, pos)).collect();
        assert_ne!(a, other);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_choice() {
        let logits = [5.0, 4.0, 3.0, 0.0, -1.0, 2.0];
        for pos in 0..200 {
            assert!([0, 1].contains(&sample(&params(2.0, 2, 1.0, 7), &logits, pos)));
            // p(0) ≈ 0.64 at T=1: top_p 0.5 keeps only token 0.
            assert_eq!(sample(&params(1.0, 0, 0.5, 7), &logits, pos), 0);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let ones =
            (0..4000).filter(|&pos| sample(&params(1.0, 0, 1.0, 1), &logits, pos) == 1).count();
        assert!((2850..3150).contains(&ones), "{ones}");
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(params(-1.0, 0, 1.0, 0).validate().is_err());
        assert!(params(f32::NAN, 0, 1.0, 0).validate().is_err());
        assert!(params(1.0, 0, 0.0, 0).validate().is_err());
        assert!(params(1.0, 0, 1.5, 0).validate().is_err());
        assert!(params(0.7, 40, 0.9, 0).validate().is_ok());
    }
}
