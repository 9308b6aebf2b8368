//! Best-of-n against a proxy (WebGPT's rejection sampling, and the over-optimisation curve of
//! Gao et al. 2022): sample n_max responses per prompt, then for each n let the proxy (a reward
//! model) pick its favourite of every disjoint group of n, and report how the proxy and the gold
//! judge score the picks. The proxy's score of its pick can only grow with n; the gold score
//! falls once the proxy is over-optimised.
//!
//! Not here: the judges (`judge.rs`).

use rlhf_model::{Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use rlhf_report::{LineChart, Series};
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::judge::Scorer;

/// For each disjoint group of `n` consecutive items (a trailing partial group is dropped), the
/// index of the item `proxy` scores highest (the last of equals, in `f64::total_cmp` order).
pub fn best_indices(proxy: &[f64], n: usize) -> Vec<usize> {
    let n = n.max(1);
    (0..proxy.len() / n)
        .map(|g| {
            (g * n..(g + 1) * n)
                .reduce(|best, i| {
                    if proxy[i].total_cmp(&proxy[best]).is_ge() {
                        i
                    } else {
                        best
                    }
                })
                .expect("a group of n >= 1")
        })
        .collect()
}

/// One point of the curve: the mean proxy and gold score of the proxy's pick among n.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BestOfNPoint {
    pub n: usize,
    pub proxy: f64,
    pub gold: f64,
}

/// The best-of-n curve at n = 1, 2, 4, … up to `n_max`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BestOfN {
    pub prompts: usize,
    pub n_max: usize,
    pub points: Vec<BestOfNPoint>,
}

/// How the responses are sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestOfNConfig {
    pub n_max: usize,
    pub temperature: f64,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Sequences sampled together.
    pub rows: usize,
}

/// Samples `cfg.n_max` chat responses per prompt from `policy`, scores each with `proxy` (one
/// prompt's responses per call) and `gold`, and picks by the proxy at every power of two.
pub fn best_of_n(
    policy: &Pretrained,
    proxy: &dyn Scorer,
    gold: &dyn Scorer,
    prompts: &[String],
    cfg: &BestOfNConfig,
) -> Result<BestOfN> {
    if cfg.n_max == 0 || prompts.is_empty() {
        return Err(EvalError::Invalid(
            "best-of-n needs n_max >= 1 and at least one prompt".into(),
        ));
    }
    gold.check(prompts)?;
    let sampling = TextGenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: Sampling::new(cfg.temperature, None, None)?,
        seed: Some(cfg.seed),
        stop: vec![],
    };
    let gens = policy.sample_k(
        prompts,
        cfg.n_max,
        PromptFormat::Chat,
        &sampling,
        cfg.rows,
        |_, _| {},
    )?;
    let mut scored = Vec::with_capacity(prompts.len()); // per prompt: (proxy, gold) per sample
    for (prompt, gens) in prompts.iter().zip(&gens) {
        let texts: Vec<String> = gens.iter().map(|g| g.text.trim().to_string()).collect();
        let repeated = vec![prompt.clone(); texts.len()];
        let p = proxy.score(&repeated, &texts)?;
        let g = gold.score(&repeated, &texts)?;
        scored.push((p, g));
    }
    let mut points = Vec::new();
    let mut n = 1;
    while n <= cfg.n_max {
        let (mut p_sum, mut g_sum, mut count) = (0.0, 0.0, 0usize);
        for (p, g) in &scored {
            for i in best_indices(p, n) {
                p_sum += p[i];
                g_sum += g[i];
                count += 1;
            }
        }
        points.push(BestOfNPoint {
            n,
            proxy: p_sum / count.max(1) as f64,
            gold: g_sum / count.max(1) as f64,
        });
        n *= 2;
    }
    Ok(BestOfN {
        prompts: prompts.len(),
        n_max: cfg.n_max,
        points,
    })
}

impl BestOfN {
    /// The curve as a chart: the proxy's and the gold judge's score of the pick against n.
    pub fn chart(&self, title: &str, proxy: &str, gold: &str) -> LineChart {
        let series = |name: &str, f: fn(&BestOfNPoint) -> f64| Series {
            name: name.into(),
            points: self.points.iter().map(|p| (p.n as f64, f(p))).collect(),
            band: None,
        };
        LineChart {
            title: title.into(),
            x_label: "n".into(),
            y_label: "score of the proxy's choice".into(),
            series: vec![series(proxy, |p| p.proxy), series(gold, |p| p.gold)],
            log_x: true,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_picks_its_favourite_of_each_disjoint_group() {
        let proxy = [0.1, 0.9, 0.5, 0.5, 0.7, 0.2, 0.3];
        assert_eq!(best_indices(&proxy, 1), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(best_indices(&proxy, 2), [1, 3, 4]);
        assert_eq!(best_indices(&proxy, 4), [1]);
        assert_eq!(best_indices(&proxy, 8), Vec::<usize>::new());
    }
}
