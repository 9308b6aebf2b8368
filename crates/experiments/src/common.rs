//! What every experiment shares: progress reporting, seed-level statistics, the small RNG
//! helpers, and writing the report files.

use std::path::Path;

use rand::RngCore;
use rlhf_report::{Interval, Series, bootstrap_seeds_ci, fmt_interval};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ExperimentError, Result};

pub use rlhf_eval::{Observer, Quiet};

/// Bootstrap resamples for every interval in the reports.
pub const RESAMPLES: usize = 2000;

/// Mean over seeds with the two-level 95% bootstrap interval (seeds, then test items).
pub fn seeds_ci(per_seed: &[Vec<f64>]) -> Interval {
    bootstrap_seeds_ci(per_seed, RESAMPLES, 0.95, 0)
}

/// A plot curve through the intervals' means, with their 95% band.
pub fn ci_series(name: &str, points: &[(f64, Interval)]) -> Series {
    Series {
        name: name.into(),
        points: points.iter().map(|(x, c)| (*x, c.mean)).collect(),
        band: Some(points.iter().map(|(x, c)| (*x, c.lo, c.hi)).collect()),
    }
}

/// An accuracy interval in percent, e.g. `63.5 [60.0, 66.8]`.
pub fn pct(ci: &Interval) -> String {
    fmt_interval(
        &Interval {
            mean: 100.0 * ci.mean,
            lo: 100.0 * ci.lo,
            hi: 100.0 * ci.hi,
        },
        1,
    )
}

/// Per-item differences `a − b` of paired outcomes, seed by seed.
pub fn paired_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p - q).collect())
        .collect()
}

/// The online methods at equal budget (`experiment align` and `experiment verifiable`):
/// `iterations` × 64 samples (PPO 64 prompts × 1, GRPO/RLOO 8 prompts × G = 8), `epochs` ×
/// `minibatches` optimizer steps per iteration at one learning rate, no periodic evaluation and
/// a checkpoint only at the end.
#[derive(Debug, Clone, Copy)]
pub struct OnlineBudget {
    pub iterations: u64,
    pub epochs: u64,
    pub minibatches: usize,
    pub lr: f64,
    pub seed: u64,
}

impl OnlineBudget {
    /// PPO with the KL penalty `kl_coef` on the reward.
    pub fn ppo(&self, kl_coef: f64) -> rlhf_train::PpoConfig {
        rlhf_train::PpoConfig {
            iterations: self.iterations,
            rollout_batch: 64,
            minibatches: self.minibatches,
            ppo_epochs: self.epochs,
            lr: self.lr,
            kl_coef,
            seed: self.seed,
            eval_every: 0,
            checkpoint_every: 0,
            ..Default::default()
        }
    }

    /// GRPO or RLOO with β on the KL as `kl_mode` says.
    pub fn grpo(
        &self,
        algo: rlhf_train::grpo::Algo,
        beta: f64,
        kl_mode: rlhf_train::grpo::KlMode,
    ) -> rlhf_train::grpo::GrpoConfig {
        rlhf_train::grpo::GrpoConfig {
            algo,
            iterations: self.iterations,
            prompts_per_iteration: 8,
            group: 8,
            epochs: self.epochs as usize,
            minibatches: self.minibatches,
            lr: self.lr,
            beta,
            kl_mode,
            seed: self.seed,
            checkpoint_every: 0,
            ..Default::default()
        }
    }
}

/// Uniform in `lo..=hi`.
pub fn uniform<R: RngCore + ?Sized>(rng: &mut R, lo: i64, hi: i64) -> i64 {
    let span = (hi - lo + 1) as u64;
    // Rejection keeps it exactly uniform (spans here are tiny next to 2^64).
    let zone = u64::MAX - (u64::MAX % span);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return lo + (x % span) as i64;
        }
    }
}

/// `1.2e15`-style FLOPs.
pub fn flops(x: f64) -> String {
    format!("{x:.2e}")
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).map_err(|e| ExperimentError::io("write", path, e))
}

/// The per-seed results an earlier run wrote to `out/results.json`, and that file's path (for
/// `--report-only`, which re-renders a report without training again).
pub fn read_results<T: DeserializeOwned>(out: &Path) -> Result<(std::path::PathBuf, Vec<T>)> {
    let path = out.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ExperimentError::io("read", &path, e))?;
    let all = serde_json::from_str(&text)?;
    Ok((path, all))
}

/// Writes a text file.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| ExperimentError::io("write", path, e))
}

/// Creates the output directory.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io("create", dir, e))
}

/// The loop every experiment shares: creates `out`, runs `one(seed, label, obs)` per seed
/// (label: "seed 3 (2/3)"), rewrites `out/results.json` after each seed so that a crash loses at
/// most the seed in progress, and returns the runs with the wall time in seconds.
pub fn run_seeds<T: Serialize>(
    seeds: &[u64],
    out: &Path,
    obs: &mut dyn Observer,
    mut one: impl FnMut(u64, &str, &mut dyn Observer) -> Result<T>,
) -> Result<(Vec<T>, f64)> {
    if seeds.is_empty() {
        return Err(ExperimentError::Invalid(
            "at least one seed is needed".into(),
        ));
    }
    create_dir(out)?;
    let t0 = std::time::Instant::now();
    let mut all = Vec::with_capacity(seeds.len());
    for (i, &seed) in seeds.iter().enumerate() {
        let label = format!("seed {} ({}/{})", seed, i + 1, seeds.len());
        all.push(one(seed, &label, obs)?);
        write_json(&out.join("results.json"), &all)?;
    }
    Ok((all, t0.elapsed().as_secs_f64()))
}

/// Whether a paired-difference interval lies above zero, in the report's words.
pub fn verdict(ci: &Interval) -> &'static str {
    if ci.lo > 0.0 {
        "better (interval above 0)"
    } else if ci.hi < 0.0 {
        "worse (interval below 0)"
    } else {
        "no clear difference (interval contains 0)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_differences_and_percent_format() {
        let d = paired_diff(&[vec![1.0, 0.0, 1.0]], &[vec![0.0, 0.0, 1.0]]);
        assert_eq!(d, vec![vec![1.0, 0.0, 0.0]]);
        let ci = Interval {
            mean: 0.5,
            lo: 0.25,
            hi: 0.75,
        };
        assert_eq!(pct(&ci), "50.0 [25.0, 75.0]");
        assert_eq!(verdict(&ci), "better (interval above 0)");
        assert!(
            verdict(&Interval {
                mean: 0.0,
                lo: -0.1,
                hi: 0.1
            })
            .starts_with("no clear")
        );
    }

    #[test]
    fn uniform_covers_its_range_only() {
        let mut rng = rlhf_data::world_rng(1, 0);
        let draws: Vec<i64> = (0..2000).map(|_| uniform(&mut rng, 100, 104)).collect();
        for v in 100..=104 {
            assert!(draws.contains(&v), "{v} never drawn");
        }
        assert!(draws.iter().all(|v| (100..=104).contains(v)));
    }
}
