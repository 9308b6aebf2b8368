//! Statistics for comparing models on a set of items: the mean with a percentile-bootstrap
//! confidence interval, and per-item win outcomes (1 win, ½ tie, 0 loss) whose mean is the win
//! rate. Deterministic given the seed.
//!
//! Not here: judging (the caller scores the items), paired tests beyond the bootstrap.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize};

/// Two scores closer than this are a tie: scores that went through f32 (a reward model) or a sum
/// of rounded constants (the oracle) should not decide a win by rounding noise.
pub const TIE_EPS: f64 = 1e-9;

/// A point estimate with a confidence interval. NaN everywhere when there was no data
/// (serialised as `null` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub lo: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub hi: f64,
}

/// Reads back the `null` that serde_json writes for NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Interval {
    /// Width of the interval, `hi − lo`.
    pub fn width(&self) -> f64 {
        self.hi - self.lo
    }

    /// Whether `x` lies in `[lo, hi]`.
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// Arithmetic mean; NaN for no values.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Per-item outcomes of A against B: 1 when A scores higher, 0.5 on a tie (`|a − b| <= TIE_EPS`),
/// 0 when lower. Their mean is A's win rate with ties counted half, as in AlpacaEval and
/// InstructGPT's preference rates. The slices are paired by index; a longer one's extra items
/// are ignored.
pub fn win_rate(a_scores: &[f64], b_scores: &[f64]) -> Vec<f64> {
    debug_assert_eq!(a_scores.len(), b_scores.len(), "unpaired scores");
    a_scores
        .iter()
        .zip(b_scores)
        .map(|(&a, &b)| {
            if (a - b).abs() <= TIE_EPS {
                0.5
            } else if a > b {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// The mean of `values` with a percentile-bootstrap interval at confidence `level` (e.g. 0.95):
/// `resamples` times, draw n items with replacement and take their mean; the interval is the
/// `(1 − level)/2` and `(1 + level)/2` quantiles of those means (Efron & Tibshirani, ch. 13),
/// interpolated linearly like numpy's default. Resampling items, not tokens, is what makes it an
/// interval over prompts. The same seed gives the same interval on every platform (ChaCha8 and
/// an unbiased index draw built on `next_u64` only).
///
/// No values give NaN everywhere; a single value or `resamples == 0` gives the degenerate
/// interval at the mean. `level` is clamped to [0, 1].
pub fn bootstrap_mean_ci(values: &[f64], resamples: usize, level: f64, seed: u64) -> Interval {
    let n = values.len();
    let m = mean(values);
    if n == 0 {
        return Interval {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    if resamples == 0 || n == 1 {
        return Interval {
            mean: m,
            lo: m,
            hi: m,
        };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[below(&mut rng, n)]).sum::<f64>() / n as f64)
        .collect();
    percentile_interval(m, means, level)
}

/// The percentile interval at `level` of resampled means around the point estimate `mean`.
fn percentile_interval(mean: f64, mut means: Vec<f64>, level: f64) -> Interval {
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    Interval {
        mean,
        lo: quantile(&means, alpha),
        hi: quantile(&means, 1.0 - alpha),
    }
}

/// The mean over seeds of each seed's mean item score, with a two-level percentile bootstrap
/// interval: each resample draws the seeds with replacement, then each drawn seed's items with
/// replacement, so the interval covers both the seed-to-seed spread (initialisation, data) and
/// the finite test set. With one seed it is [`bootstrap_mean_ci`] over that seed's items; seeds
/// without items are ignored.
pub fn bootstrap_seeds_ci(
    per_seed: &[Vec<f64>],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Interval {
    let seeds: Vec<&Vec<f64>> = per_seed.iter().filter(|s| !s.is_empty()).collect();
    match seeds.len() {
        0 => {
            return Interval {
                mean: f64::NAN,
                lo: f64::NAN,
                hi: f64::NAN,
            };
        }
        1 => return bootstrap_mean_ci(seeds[0], resamples, level, seed),
        _ => {}
    }
    let m = mean(&seeds.iter().map(|s| mean(s)).collect::<Vec<_>>());
    if resamples == 0 {
        return Interval {
            mean: m,
            lo: m,
            hi: m,
        };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = seeds.len();
    let means: Vec<f64> = (0..resamples)
        .map(|_| {
            (0..k)
                .map(|_| {
                    let items = seeds[below(&mut rng, k)];
                    let n = items.len();
                    (0..n).map(|_| items[below(&mut rng, n)]).sum::<f64>() / n as f64
                })
                .sum::<f64>()
                / k as f64
        })
        .collect();
    percentile_interval(m, means, level)
}

/// The `q` quantile of sorted values, interpolating between neighbours (numpy's "linear").
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + frac * (next - sorted[i]),
        None => sorted[i],
    }
}

/// Uniform in `0..n` by rejection (no modulo bias); `n > 0`.
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    let n = n as u64;
    // Largest multiple of n that fits in u64; values above it would favour small results.
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return (x % n) as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_bootstrap_means_seed_means_and_widens_with_seed_spread() {
        // Seeds of unequal size: the point estimate weights seeds, not items.
        let a = vec![1.0; 10];
        let b = vec![0.0; 30];
        let ci = bootstrap_seeds_ci(&[a.clone(), b.clone()], 2000, 0.95, 1);
        assert!((ci.mean - 0.5).abs() < 1e-12, "{ci:?}");
        // Items within a seed agree, so all the width comes from drawing seeds: {a,a} -> 1,
        // {b,b} -> 0 each have probability 1/4, so the 95% interval reaches both ends.
        assert!(ci.lo < 1e-9 && ci.hi > 1.0 - 1e-9, "{ci:?}");
        // Identical seeds: only the item-level spread remains, as with one seed.
        let items: Vec<f64> = (0..40).map(|i| f64::from(i % 2)).collect();
        let one = bootstrap_seeds_ci(std::slice::from_ref(&items), 2000, 0.95, 3);
        assert_eq!(one, bootstrap_mean_ci(&items, 2000, 0.95, 3));
        let three = bootstrap_seeds_ci(&[items.clone(), items.clone(), items], 2000, 0.95, 3);
        assert!((three.mean - 0.5).abs() < 1e-12);
        assert!(
            three.width() < one.width(),
            "3 seeds of 40 items: {three:?} vs {one:?}"
        );
        assert!(
            bootstrap_seeds_ci(&[vec![], vec![]], 10, 0.95, 0)
                .mean
                .is_nan()
        );
    }

    #[test]
    fn constant_values_give_a_degenerate_interval() {
        let ci = bootstrap_mean_ci(&[0.3; 50], 500, 0.95, 7);
        assert!((ci.mean - 0.3).abs() < 1e-12, "{ci:?}");
        assert!(
            (ci.lo - 0.3).abs() < 1e-12 && (ci.hi - 0.3).abs() < 1e-12,
            "{ci:?}"
        );
    }

    #[test]
    fn bernoulli_interval_matches_the_normal_approximation() {
        // 280 ones and 120 zeros: p = 0.7, n = 400.
        let v: Vec<f64> = (0..400).map(|i| f64::from(u8::from(i % 10 < 7))).collect();
        let ci = bootstrap_mean_ci(&v, 4000, 0.95, 0);
        assert!((ci.mean - 0.7).abs() < 1e-12);
        assert!(ci.contains(0.7), "{ci:?}");
        let expected = 2.0 * 1.96 * (0.21f64 / 400.0).sqrt();
        let ratio = ci.width() / expected;
        assert!(
            (0.8..=1.2).contains(&ratio),
            "width {} vs {expected}",
            ci.width()
        );
    }

    #[test]
    fn same_seed_same_interval_and_different_seed_differs() {
        let v: Vec<f64> = (0..100).map(|i| ((i * 37) % 11) as f64).collect();
        let a = bootstrap_mean_ci(&v, 300, 0.9, 42);
        assert_eq!(a, bootstrap_mean_ci(&v, 300, 0.9, 42));
        assert_ne!(a, bootstrap_mean_ci(&v, 300, 0.9, 43));
    }

    #[test]
    fn edge_cases() {
        let e = bootstrap_mean_ci(&[], 100, 0.95, 0);
        assert!(e.mean.is_nan() && e.lo.is_nan() && e.hi.is_nan());
        let one = bootstrap_mean_ci(&[2.5], 100, 0.95, 0);
        assert_eq!((one.mean, one.lo, one.hi), (2.5, 2.5, 2.5));
        let none = bootstrap_mean_ci(&[1.0, 3.0], 0, 0.95, 0);
        assert_eq!((none.lo, none.hi), (2.0, 2.0));
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        // numpy.quantile([1, 2, 3, 4], 0.25) == 1.75
        assert!((quantile(&[1.0, 2.0, 3.0, 4.0], 0.25) - 1.75).abs() < 1e-12);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 1.0), 4.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.0), 1.0);
    }

    #[test]
    fn win_rate_outcomes() {
        let a = [1.0, 0.5, 0.2, 0.3 + 1e-12];
        let b = [0.0, 0.5, 0.7, 0.3];
        assert_eq!(win_rate(&a, &b), vec![1.0, 0.5, 0.0, 0.5]);
        assert_eq!(mean(&win_rate(&a, &a)), 0.5);
    }
}
