//! The learning-rate schedule: linear warm-up, then a half cosine down to a floor (GPT-3 §B,
//! nanoGPT's `get_lr`). A pure function of the step, so a resumed run needs no schedule state.

use std::f64::consts::PI;

use crate::config::TrainerConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// The LR reached at the end of warm-up.
    pub peak: f64,
    /// The floor, as a fraction of `peak`, reached at `total`.
    pub min_ratio: f64,
    pub warmup: u64,
    pub total: u64,
}

impl LrSchedule {
    pub fn new(cfg: &TrainerConfig) -> Self {
        Self {
            peak: cfg.lr,
            min_ratio: cfg.min_lr_ratio,
            warmup: cfg.warmup_steps,
            total: cfg.max_steps,
        }
    }

    /// The LR of the update with 0-based index `step`. Warm-up starts at `peak / warmup`, not 0,
    /// so that the first update is not wasted.
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let floor = self.peak * self.min_ratio;
        if step >= self.total {
            return floor;
        }
        let progress = (step - self.warmup) as f64 / (self.total - self.warmup) as f64;
        floor + 0.5 * (1.0 + (PI * progress).cos()) * (self.peak - floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let s = LrSchedule {
            peak: 1.0,
            min_ratio: 0.1,
            warmup: 10,
            total: 110,
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(s.at(0), 0.1), "first warm-up step: peak / warmup");
        assert!(close(s.at(4), 0.5));
        assert!(close(s.at(9), 1.0), "warm-up ends at the peak");
        assert!(close(s.at(10), 1.0), "cosine starts at the peak");
        assert!(
            close(s.at(60), 0.55),
            "half-way: floor + (peak - floor) / 2"
        );
        // progress 0.75: 0.1 + 0.5 * (1 - sqrt(2)/2) * 0.9
        assert!(close(s.at(85), 0.1 + 0.45 * (1.0 - 0.5f64.sqrt())));
        assert!(close(s.at(110), 0.1));
        assert!(close(s.at(10_000), 0.1), "past the end: the floor");
    }

    #[test]
    fn no_warmup_starts_at_the_peak() {
        let s = LrSchedule {
            peak: 3e-4,
            min_ratio: 0.0,
            warmup: 0,
            total: 4,
        };
        let got: Vec<f64> = (0..5).map(|i| s.at(i)).collect();
        let want = [3e-4, 3e-4 * (0.5 + 0.5 * (PI / 4.0).cos()), 1.5e-4];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{got:?}");
        }
        assert_eq!(got[4], 0.0);
    }
}
