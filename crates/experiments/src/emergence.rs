//! E2, emergence as a metric effect (Wei et al. 2022; Schaeffer et al. 2023): a family of tiny
//! models of log-spaced sizes learns 4-digit addition from the same data for the same steps, and
//! the same greedy outputs are scored four ways: exact match (all digits right), per-digit
//! accuracy, edit distance, and the answer's log-likelihood. An "emergent" ability looks sharp
//! under exact match and smooth under the per-token metrics.
//!
//! Per seed, the test additions are drawn first and no training example uses the same operand
//! pair (in either order). Tokens are single bytes.
//!
//! Not here: the training loop (`tiny.rs`), the addition data (`format.rs`).

use std::path::Path;

use rlhf_model::PromptFormat;
use rlhf_report::{LineChart, md_table};
use rlhf_train::TrainerConfig;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::common::{
    Observer, ci_series, flops, pct, read_results, run_seeds, seeds_ci, write_text,
};
use crate::error::{ExperimentError, Result};
use crate::format::additions;
use crate::tiny::{TinyLm, TinySpec, TrainStats, train_tokenizer};

/// `rlhf experiment emergence`'s settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmergenceConfig {
    /// The model family, smallest first.
    pub sizes: Vec<TinySpec>,
    pub digits: u32,
    pub train_problems: usize,
    pub test_problems: usize,
    /// The same optimiser and steps for every size (`seed` is replaced by the run's seed).
    pub trainer: TrainerConfig,
    pub rows: usize,
}

fn spec(hidden: i64, layers: i64, heads: i64) -> TinySpec {
    TinySpec {
        hidden,
        layers,
        heads,
        kv_heads: heads,
        max_positions: 32,
    }
}

impl Default for EmergenceConfig {
    fn default() -> Self {
        Self {
            // ~7k to ~0.8M parameters, about ×2.5 apart.
            sizes: vec![
                spec(16, 1, 2),
                spec(32, 1, 2),
                spec(48, 2, 4),
                spec(64, 3, 4),
                spec(96, 3, 4),
                spec(128, 4, 4),
            ],
            digits: 4,
            train_problems: 20000,
            test_problems: 500,
            trainer: TrainerConfig {
                lr: 3e-3,
                warmup_steps: 50,
                // ~3 epochs of the 20000 additions; the whole row (18 runs) stays near 15 min.
                max_steps: 1000,
                batch_size: 64,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
            rows: 500,
        }
    }
}

/// Scores of one output against the right sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub exact: f64,
    /// Share of the sum's digits the output has right in the same position.
    pub per_digit: f64,
    /// 1 − Levenshtein distance / length of the sum (floored at 0).
    pub edit_similarity: f64,
}

/// Scores `output` against `gold` (both digit strings).
pub fn score(output: &str, gold: &str) -> Scores {
    let (o, g): (Vec<char>, Vec<char>) = (output.trim().chars().collect(), gold.chars().collect());
    let n = g.len().max(1) as f64;
    let same = g.iter().zip(&o).filter(|(a, b)| a == b).count() as f64;
    Scores {
        exact: f64::from(u8::from(o == g)),
        per_digit: same / n,
        edit_similarity: (1.0 - levenshtein(&o, &g) as f64 / n).max(0.0),
    }
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// One model size on one seed: per-item scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeRun {
    pub spec: TinySpec,
    pub params: i64,
    pub exact: Vec<f64>,
    pub per_digit: Vec<f64>,
    pub edit_similarity: Vec<f64>,
    /// Mean log-probability per token of the right answer.
    pub answer_logprob: Vec<f64>,
    pub train: TrainStats,
    pub eval_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRun {
    pub seed: u64,
    pub runs: Vec<SizeRun>,
}

/// Re-renders `out/e2.md` and the plots from `out/results.json` (after a change to the report
/// only, without training again).
pub fn report_only(cfg: &EmergenceConfig, out: &Path) -> Result<Vec<SeedRun>> {
    let (path, all): (_, Vec<SeedRun>) = read_results(out)?;
    if all.is_empty() || all.iter().any(|s| s.runs.len() != cfg.sizes.len()) {
        return Err(ExperimentError::Invalid(format!(
            "{} does not hold {} sizes per seed: run the experiment with the same config first",
            path.display(),
            cfg.sizes.len()
        )));
    }
    let seconds: f64 = all
        .iter()
        .flat_map(|s| &s.runs)
        .map(|r| r.train.seconds + r.eval_seconds)
        .sum();
    let text = report(cfg, &all, seconds, out)?;
    write_text(&out.join("e2.md"), &text)?;
    Ok(all)
}

/// Runs E2 and writes `out/e2.md`, `out/results.json` and the plots.
pub fn run(
    cfg: &EmergenceConfig,
    seeds: &[u64],
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<Vec<SeedRun>> {
    if cfg.sizes.is_empty() {
        return Err(ExperimentError::Invalid(
            "at least one model size is needed".into(),
        ));
    }
    let (all, seconds) = run_seeds(seeds, out, obs, |seed, label, obs| {
        run_seed(cfg, seed, label, device, obs)
    })?;
    let text = report(cfg, &all, seconds, out)?;
    write_text(&out.join("e2.md"), &text)?;
    Ok(all)
}

fn run_seed(
    cfg: &EmergenceConfig,
    seed: u64,
    label: &str,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<SeedRun> {
    let (test, pool) = additions(seed, cfg.digits, cfg.test_problems, cfg.train_problems)?;
    let tokenizer = train_tokenizer(&["0123456789+=".to_string()], 260)?;
    let prompt = |a: i64, b: i64| format!("{a}+{b}=");
    let pairs: Vec<(String, String)> = pool
        .iter()
        .map(|&(a, b)| (prompt(a, b), (a + b).to_string()))
        .collect();
    let test_pairs: Vec<(String, String)> = test
        .iter()
        .map(|&(a, b)| (prompt(a, b), (a + b).to_string()))
        .collect();
    let prompts: Vec<String> = test_pairs.iter().map(|(p, _)| p.clone()).collect();
    let mut trainer = cfg.trainer.clone();
    trainer.seed = seed;
    let mut runs = Vec::new();
    for spec in &cfg.sizes {
        let mut model = TinyLm::new(tokenizer.clone(), spec, PromptFormat::Raw, seed, device)?;
        let params = model.params();
        obs.phase(
            &format!(
                "{label}: {params} parameters (d={}, {} layers)",
                spec.hidden, spec.layers
            ),
            trainer.max_steps,
        );
        let train = model.train(&pairs, &trainer, |s| obs.advance(s))?;
        let t = std::time::Instant::now();
        let outputs = model.complete(&prompts, cfg.digits as usize + 3, cfg.rows)?;
        let scores: Vec<Scores> = outputs
            .iter()
            .zip(&test_pairs)
            .map(|(o, (_, g))| score(o, g))
            .collect();
        let answer_logprob = model.completion_logprob(&test_pairs, cfg.rows)?;
        let run = SizeRun {
            spec: *spec,
            params,
            exact: scores.iter().map(|s| s.exact).collect(),
            per_digit: scores.iter().map(|s| s.per_digit).collect(),
            edit_similarity: scores.iter().map(|s| s.edit_similarity).collect(),
            answer_logprob,
            train,
            eval_seconds: t.elapsed().as_secs_f64(),
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        obs.note(&format!(
            "{label}: {params} parameters: exact {:.1}%, per-digit {:.1}%",
            100.0 * mean(&run.exact),
            100.0 * mean(&run.per_digit)
        ));
        runs.push(run);
    }
    Ok(SeedRun { seed, runs })
}

/// How abrupt a curve over the sizes is: the largest rise between neighbouring sizes as a share
/// of the whole rise from the smallest to the largest model (1 = all of it in one step).
pub fn sharpness(curve: &[f64]) -> f64 {
    let (Some(first), Some(last)) = (curve.first(), curve.last()) else {
        return f64::NAN;
    };
    let total = last - first;
    if total <= 0.0 {
        return f64::NAN;
    }
    let jump = curve
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::NEG_INFINITY, f64::max);
    jump / total
}

type Metric = (&'static str, fn(&SizeRun) -> &Vec<f64>);

/// Exact match must reach this at some size before its sharpness means anything.
pub const MIN_EXACT: f64 = 0.05;

const METRICS: [Metric; 4] = [
    ("exact match", |r| &r.exact),
    ("per-digit accuracy", |r| &r.per_digit),
    ("1 − normalised edit distance", |r| &r.edit_similarity),
    ("answer token probability", |r| &r.answer_logprob),
];

fn report(cfg: &EmergenceConfig, all: &[SeedRun], seconds: f64, out: &Path) -> Result<String> {
    let n_sizes = cfg.sizes.len();
    let per_seed = |i: usize, m: &Metric| -> Vec<Vec<f64>> {
        all.iter()
            .map(|s| {
                let v = (m.1)(&s.runs[i]).clone();
                // The log-likelihood is shown as the geometric-mean probability per token.
                if m.0.starts_with("answer") {
                    v.into_iter().map(f64::exp).collect()
                } else {
                    v
                }
            })
            .collect()
    };
    let params: Vec<i64> = all[0].runs.iter().map(|r| r.params).collect();
    let mut rows = Vec::new();
    let mut curves: Vec<Vec<f64>> = vec![Vec::new(); METRICS.len()];
    for (i, (p, spec)) in params.iter().zip(&cfg.sizes).enumerate() {
        let runs: Vec<&SizeRun> = all.iter().map(|s| &s.runs[i]).collect();
        let mut row = vec![
            p.to_string(),
            format!("d={} × {}", spec.hidden, spec.layers),
        ];
        for (k, m) in METRICS.iter().enumerate() {
            let ci = seeds_ci(&per_seed(i, m));
            curves[k].push(ci.mean);
            row.push(pct(&ci));
        }
        let k = runs.len() as f64;
        row.push(flops(runs.iter().map(|r| r.train.flops).sum::<f64>() / k));
        row.push(format!(
            "{:.0}",
            runs.iter()
                .map(|r| r.train.seconds + r.eval_seconds)
                .sum::<f64>()
                / k
        ));
        rows.push(row);
    }
    let table = md_table(
        &[
            "parameters",
            "shape",
            "exact match %",
            "per-digit %",
            "1 − edit distance %",
            "answer token probability %",
            "train FLOPs",
            "seconds",
        ],
        &rows,
    );
    let sharp: Vec<f64> = curves.iter().map(|c| sharpness(c)).collect();
    // Sharpness of a curve that never leaves the floor is noise: exact match must reach
    // MIN_EXACT somewhere before it can be called sharp.
    let exact_max = curves[0].iter().copied().fold(0.0, f64::max);
    let sharper = exact_max >= MIN_EXACT && sharp[0] > sharp[1] && sharp[0] > sharp[2];
    let flops_per_size: Vec<f64> = (0..n_sizes)
        .map(|i| all.iter().map(|s| s.runs[i].train.flops).sum::<f64>() / all.len() as f64)
        .collect();
    for (name, xs, file) in [
        (
            "parameters",
            params.iter().map(|&p| p as f64).collect::<Vec<_>>(),
            "e2_vs_params",
        ),
        ("training FLOPs", flops_per_size, "e2_vs_flops"),
    ] {
        let chart = LineChart {
            title: format!("E2: 4-digit addition vs {name}, four metrics of the same outputs"),
            x_label: name.into(),
            y_label: "score".into(),
            log_x: true,
            series: METRICS
                .iter()
                .map(|m| {
                    let cis: Vec<_> = (0..n_sizes)
                        .map(|i| (xs[i], seeds_ci(&per_seed(i, m))))
                        .collect();
                    ci_series(m.0, &cis)
                })
                .collect(),
            ..Default::default()
        };
        chart.save(&out.join(file))?;
    }
    let seeds: Vec<String> = all.iter().map(|s| s.seed.to_string()).collect();
    let mut text = format!(
        "# E2: emergence as a metric effect (`rlhf experiment emergence`)\n\n\
         Claim (Wei et al. 2022: 3-digit addition \"emerges\" at 13B parameters in GPT-3; \
         Schaeffer et al. 2023: exact match makes curves sharp, per-token metrics make the same \
         outputs smooth).\n\n\
         Setup: seeds {}; {} models from {} to {} parameters (Llama, byte tokens) trained on the \
         same {} {}-digit additions for {} steps of {} (lr {}); {} test additions whose operand \
         pairs never occur in training; each model's greedy outputs scored four ways. \
         Intervals: 95% two-level bootstrap (seeds, then additions).\n\n{table}\n\
         ![vs parameters](e2_vs_params.svg) ![vs FLOPs](e2_vs_flops.svg)\n\n",
        seeds.join(", "),
        n_sizes,
        params.first().copied().unwrap_or(0),
        params.last().copied().unwrap_or(0),
        cfg.train_problems,
        cfg.digits,
        cfg.trainer.max_steps,
        cfg.trainer.batch_size,
        cfg.trainer.lr,
        cfg.test_problems,
    );
    text += "Sharpness (largest rise between neighbouring sizes, as a share of the whole rise; 1 = \
             all in one step):\n\n";
    text += &md_table(
        &["metric", "sharpness"],
        &METRICS
            .iter()
            .zip(&sharp)
            .map(|(m, s)| vec![m.0.to_string(), format!("{s:.2}")])
            .collect::<Vec<_>>(),
    );
    text += &format!(
        "\n**Verdict: {}.** (Counts as not reproduced: exact match no sharper than per-digit.)\n\n\
         Wall time: {seconds:.0} s in all.\n",
        if sharper {
            "reproduced: exact match rises more abruptly than per-digit accuracy and edit \
             distance on the same outputs"
                .to_string()
        } else if exact_max < MIN_EXACT {
            format!(
                "not reproduced at this scale: no size gets {:.0}% of the sums exactly right \
                 (at most {:.1}%), so exact match shows no ability at all, emergent or not, while \
                 the per-token metrics of the same outputs improve with size",
                100.0 * MIN_EXACT,
                100.0 * exact_max
            )
        } else {
            "not reproduced at this scale: exact match is not sharper than the per-token \
             metrics"
                .to_string()
        }
    );
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_scores_of_one_output() {
        let s = score("1234", "1234");
        assert_eq!((s.exact, s.per_digit, s.edit_similarity), (1.0, 1.0, 1.0));
        let s = score("1294", "1234");
        assert_eq!((s.exact, s.per_digit, s.edit_similarity), (0.0, 0.75, 0.75));
        // A dropped digit shifts the rest: per-digit punishes it, edit distance much less.
        let s = score("124", "1234");
        assert_eq!(s.per_digit, 0.5);
        assert_eq!(s.edit_similarity, 0.75);
        assert_eq!(score("", "12").edit_similarity, 0.0);
        assert_eq!(levenshtein(&['a', 'b'], &['b', 'a']), 2);
    }

    #[test]
    fn sharpness_of_a_step_and_of_a_ramp() {
        assert_eq!(sharpness(&[0.0, 0.0, 0.0, 1.0]), 1.0);
        assert!((sharpness(&[0.0, 0.25, 0.5, 0.75, 1.0]) - 0.25).abs() < 1e-12);
        assert!(sharpness(&[0.5, 0.4]).is_nan(), "no rise, no sharpness");
    }
}
