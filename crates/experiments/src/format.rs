//! E4, output format and sample efficiency (Lee et al. 2023, "Teaching arithmetic to small
//! transformers"; Nye et al. 2021): the same 3-digit additions written as the plain sum, as the
//! sum with its digits reversed (least significant first, the order in which carries are
//! computed), or with a scratchpad of per-digit steps, each trained on N examples for several N.
//!
//! Per seed, the test additions are drawn first and no training example uses the same operand
//! pair (in either order); every training set is a prefix of one shuffled pool, so a larger N
//! contains the smaller ones. Tokens are single bytes (no digit merges). Every run trains the same
//! number of steps from the same initial weights.
//!
//! Not here: the training loop (`tiny.rs`).

use std::collections::HashSet;
use std::path::Path;

use rlhf_data::world_rng;
use rlhf_model::PromptFormat;
use rlhf_report::{LineChart, md_table};
use rlhf_train::TrainerConfig;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::common::{
    Observer, ci_series, flops, paired_diff, pct, run_seeds, seeds_ci, uniform, verdict, write_text,
};
use crate::error::{ExperimentError, Result};
use crate::tiny::{TinyLm, TinySpec, TrainStats, train_tokenizer};

/// How the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `579`
    Plain,
    /// `975`: the sum's digits, least significant first.
    Reversed,
    /// `3+6+0=9;2+5+0=7;1+4+0=5;=579`: each column with its incoming carry, then the sum.
    Scratchpad,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Plain, Format::Reversed, Format::Scratchpad];

    pub fn name(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Reversed => "reversed",
            Format::Scratchpad => "scratchpad",
        }
    }

    /// The target text for `a + b`.
    pub fn target(self, a: i64, b: i64) -> String {
        let sum = (a + b).to_string();
        match self {
            Format::Plain => sum,
            Format::Reversed => sum.chars().rev().collect(),
            Format::Scratchpad => {
                let (mut x, mut y, mut carry) = (a, b, 0);
                let mut out = String::new();
                while x > 0 || y > 0 {
                    let (da, db) = (x % 10, y % 10);
                    let s = da + db + carry;
                    out += &format!("{da}+{db}+{carry}={s};");
                    carry = s / 10;
                    x /= 10;
                    y /= 10;
                }
                format!("{out}={sum}")
            }
        }
    }

    /// The number an output states, if it states one in this format.
    pub fn parse(self, text: &str) -> Option<i64> {
        let text = text.trim();
        let digits = match self {
            Format::Plain => text.to_string(),
            Format::Reversed => text.chars().rev().collect(),
            Format::Scratchpad => text.rsplit_once(";=")?.1.to_string(),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// `rlhf experiment format`'s settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FormatConfig {
    /// Training-set sizes N.
    pub sizes: Vec<usize>,
    pub test_problems: usize,
    /// Operands have this many digits.
    pub digits: u32,
    pub model: TinySpec,
    /// The same steps for every N and format (`seed` is replaced by the run's seed).
    pub trainer: TrainerConfig,
    pub rows: usize,
}

impl Default for FormatConfig {
    fn default() -> Self {
        Self {
            // Log-spaced over EXPERIMENTS.md's 0.5k–10k; three sizes keep the row (3 formats ×
            // 3 sizes × 3 seeds = 27 runs) under ~15 minutes on 2 cores.
            sizes: vec![500, 2000, 8000],
            test_problems: 500,
            digits: 3,
            model: TinySpec {
                hidden: 64,
                layers: 2,
                heads: 4,
                kv_heads: 4,
                max_positions: 64,
            },
            trainer: TrainerConfig {
                lr: 3e-3,
                warmup_steps: 50,
                // ~5 epochs of the largest set; the scratchpad reaches 100% at N = 5000 in
                // 1500 steps (a one-seed probe while the defaults were chosen), so 600 is
                // enough to see which formats learn at all.
                max_steps: 600,
                batch_size: 64,
                weight_decay: 0.1,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
            rows: 500,
        }
    }
}

/// One (format, N) run on one seed.
#[derive(Debug, Clone, Serialize)]
pub struct SizeRun {
    pub format: Format,
    pub n: usize,
    /// 1.0 / 0.0 per test addition.
    pub correct: Vec<f64>,
    pub train: TrainStats,
    pub eval_seconds: f64,
    /// (question, output) of the first test items.
    pub samples: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    pub params: i64,
    pub runs: Vec<SizeRun>,
}

/// Operand pairs (a, b) of `a + b`.
pub type Pairs = Vec<(i64, i64)>;

/// The test pairs and a training pool disjoint from them at the operand-pair level.
pub fn additions(seed: u64, digits: u32, test: usize, pool: usize) -> Result<(Pairs, Pairs)> {
    let lo = 10i64.pow(digits.saturating_sub(1));
    let hi = 10i64.pow(digits) - 1;
    let space = ((hi - lo + 1) * (hi - lo + 1)) as usize;
    if test + pool > space / 2 {
        return Err(ExperimentError::Invalid(format!(
            "{test} test + {pool} training additions do not fit in the {space} {digits}-digit \
             operand pairs with room to spare"
        )));
    }
    let mut rng = world_rng(seed, 40);
    let mut seen = HashSet::new();
    let mut draw = |n: usize, seen: &mut HashSet<(i64, i64)>| {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let (a, b) = (uniform(&mut rng, lo, hi), uniform(&mut rng, lo, hi));
            // An unordered pair is used once: a test sum never appears with swapped operands.
            if seen.insert((a.min(b), a.max(b))) {
                out.push((a, b));
            }
        }
        out
    };
    let test = draw(test, &mut seen);
    let pool = draw(pool, &mut seen);
    Ok((test, pool))
}

fn prompt(a: i64, b: i64) -> String {
    format!("{a}+{b}=")
}

/// Runs E4 and writes `out/e4.md`, `out/results.json` and the plot.
pub fn run(
    cfg: &FormatConfig,
    seeds: &[u64],
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<Vec<SeedRun>> {
    if cfg.sizes.is_empty() {
        return Err(ExperimentError::Invalid(
            "at least one size is needed".into(),
        ));
    }
    let (all, seconds) = run_seeds(seeds, out, obs, |seed, label, obs| {
        run_seed(cfg, seed, label, device, obs)
    })?;
    let text = report(cfg, &all, seconds, out)?;
    write_text(&out.join("e4.md"), &text)?;
    Ok(all)
}

fn run_seed(
    cfg: &FormatConfig,
    seed: u64,
    label: &str,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<SeedRun> {
    let max_n = cfg.sizes.iter().copied().max().unwrap_or(0);
    let (test, pool) = additions(seed, cfg.digits, cfg.test_problems, max_n)?;
    // 260 tokens: the special tokens and the 256 bytes, no merges.
    let tokenizer = train_tokenizer(&["0123456789+=;".to_string()], 260)?;
    let prompts: Vec<String> = test.iter().map(|&(a, b)| prompt(a, b)).collect();
    let mut trainer = cfg.trainer.clone();
    trainer.seed = seed;
    let mut runs = Vec::new();
    let mut params = 0;
    for format in Format::ALL {
        for &n in &cfg.sizes {
            let mut model = TinyLm::new(
                tokenizer.clone(),
                &cfg.model,
                PromptFormat::Raw,
                seed,
                device,
            )?;
            params = model.params();
            let pairs: Vec<(String, String)> = pool[..n]
                .iter()
                .map(|&(a, b)| (prompt(a, b), format.target(a, b)))
                .collect();
            obs.phase(
                &format!("{label}: {} N={n}", format.name()),
                trainer.max_steps,
            );
            let train = model.train(&pairs, &trainer, |s| obs.advance(s))?;
            let t = std::time::Instant::now();
            let max_new = format.target(999, 999).len() + 4;
            let outputs = model.complete(&prompts, max_new, cfg.rows)?;
            let correct: Vec<f64> = outputs
                .iter()
                .zip(&test)
                .map(|(o, &(a, b))| f64::from(u8::from(format.parse(o) == Some(a + b))))
                .collect();
            let acc = correct.iter().sum::<f64>() / correct.len().max(1) as f64;
            obs.note(&format!(
                "{label}: {} N={n}: accuracy {:.1}%",
                format.name(),
                100.0 * acc
            ));
            runs.push(SizeRun {
                format,
                n,
                correct,
                train,
                eval_seconds: t.elapsed().as_secs_f64(),
                samples: prompts.iter().cloned().zip(outputs).take(3).collect(),
            });
        }
    }
    Ok(SeedRun { seed, params, runs })
}

fn per_seed(all: &[SeedRun], f: Format, n: usize) -> Vec<Vec<f64>> {
    all.iter()
        .map(|s| {
            s.runs
                .iter()
                .find(|r| r.format == f && r.n == n)
                .map(|r| r.correct.clone())
                .unwrap_or_default()
        })
        .collect()
}

fn report(cfg: &FormatConfig, all: &[SeedRun], seconds: f64, out: &Path) -> Result<String> {
    let mut headers: Vec<String> = vec!["format".into()];
    headers.extend(cfg.sizes.iter().map(|n| format!("N = {n}")));
    headers.extend(["train FLOPs per run".into(), "seconds per run".into()]);
    let mut rows = Vec::new();
    for f in Format::ALL {
        let mut row = vec![f.name().to_string()];
        for &n in &cfg.sizes {
            row.push(pct(&seeds_ci(&per_seed(all, f, n))));
        }
        let runs: Vec<&SizeRun> = all
            .iter()
            .flat_map(|s| &s.runs)
            .filter(|r| r.format == f)
            .collect();
        let k = runs.len().max(1) as f64;
        row.push(flops(runs.iter().map(|r| r.train.flops).sum::<f64>() / k));
        row.push(format!(
            "{:.1}",
            runs.iter()
                .map(|r| r.train.seconds + r.eval_seconds)
                .sum::<f64>()
                / k
        ));
        rows.push(row);
    }
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let table = md_table(&header_refs, &rows);

    let mut diff_rows = Vec::new();
    let mut gap = false;
    for f in [Format::Reversed, Format::Scratchpad] {
        for &n in &cfg.sizes {
            let ci = seeds_ci(&paired_diff(
                &per_seed(all, f, n),
                &per_seed(all, Format::Plain, n),
            ));
            gap |= ci.lo > 0.0;
            diff_rows.push(vec![
                format!("{} − plain", f.name()),
                n.to_string(),
                pct(&ci),
                verdict(&ci).to_string(),
            ]);
        }
    }
    let chart = LineChart {
        title: "E4: 3-digit addition, accuracy vs training examples".into(),
        x_label: "training examples N".into(),
        y_label: "test accuracy (exact sum)".into(),
        log_x: true,
        series: Format::ALL
            .iter()
            .map(|&f| {
                let cis: Vec<_> = cfg
                    .sizes
                    .iter()
                    .map(|&n| (n as f64, seeds_ci(&per_seed(all, f, n))))
                    .collect();
                ci_series(f.name(), &cis)
            })
            .collect(),
        ..Default::default()
    };
    chart.save(&out.join("e4_accuracy_vs_n"))?;
    let seeds: Vec<String> = all.iter().map(|s| s.seed.to_string()).collect();
    let mut text = format!(
        "# E4: output format and sample efficiency (`rlhf experiment format`)\n\n\
         Claim (Lee et al. 2023; Nye et al. 2021): how the answer is written decides how many \
         examples a small transformer needs to learn addition; reversed output (least \
         significant digit first) and scratchpads learn from far fewer examples than the plain \
         sum.\n\n\
         Setup: seeds {}; {}-digit operands; {} test additions per seed whose operand pairs \
         (either order) never occur in training; training sets are nested prefixes of one pool. \
         Each run trains a fresh {}-parameter Llama (d={}, {} layers, byte tokens) from the same \
         initial weights for {} steps of {} examples (lr {}), then answers greedily; accuracy is \
         the exact sum. Intervals: 95% two-level bootstrap (seeds, then additions). Settings \
         fixed before the run.\n\n\
         - `plain`: `123+456=` → `579`\n- `reversed`: `123+456=` → `975`\n\
         - `scratchpad`: `123+456=` → `{}`\n\n",
        seeds.join(", "),
        cfg.digits,
        cfg.test_problems,
        all.first().map_or(0, |s| s.params),
        cfg.model.hidden,
        cfg.model.layers,
        cfg.trainer.max_steps,
        cfg.trainer.batch_size,
        cfg.trainer.lr,
        Format::Scratchpad.target(123, 456),
    );
    text += &format!(
        "Test accuracy, % [95% CI]:\n\n{table}\n![accuracy vs N](e4_accuracy_vs_n.svg)\n\n"
    );
    text += "Paired differences against plain on the same test additions, in points:\n\n";
    text += &md_table(
        &["comparison", "N", "difference [95% CI]", "reading"],
        &diff_rows,
    );
    text += &format!(
        "\n**Verdict: {}.** (Counts as not reproduced: no sample-efficiency gap.) The scratchpad \
         also costs more compute per example (longer targets): see the FLOPs column.\n\n",
        if gap {
            "reproduced: at some N a reversed or scratchpad format is more accurate than plain, \
             with the interval above 0"
        } else {
            "not reproduced at this scale"
        }
    );
    text += "Sample outputs (first seed, largest N):\n\n";
    if let Some(s) = all.first() {
        let max_n = cfg.sizes.iter().copied().max().unwrap_or(0);
        for r in s.runs.iter().filter(|r| r.n == max_n) {
            for (q, o) in &r.samples {
                text += &format!("- `{}`: `{q}` → `{o}`\n", r.format.name());
            }
        }
    }
    text += &format!("\nWall time: {seconds:.0} s in all.\n");
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_parsing_round_trip() {
        assert_eq!(Format::Plain.target(123, 456), "579");
        assert_eq!(Format::Reversed.target(123, 456), "975");
        assert_eq!(
            Format::Scratchpad.target(123, 456),
            "3+6+0=9;2+5+0=7;1+4+0=5;=579"
        );
        // Carries ripple into a fourth digit.
        assert_eq!(
            Format::Scratchpad.target(999, 999),
            "9+9+0=18;9+9+1=19;9+9+1=19;=1998"
        );
        assert_eq!(Format::Reversed.target(999, 999), "8991");
        for f in Format::ALL {
            for (a, b) in [(123, 456), (999, 999), (100, 100), (505, 495)] {
                assert_eq!(f.parse(&f.target(a, b)), Some(a + b), "{f:?} {a}+{b}");
            }
        }
        assert_eq!(Format::Plain.parse("57a"), None);
        assert_eq!(Format::Scratchpad.parse("3+6+0=9;"), None);
        assert_eq!(Format::Reversed.parse(""), None);
    }

    #[test]
    fn test_pairs_never_appear_in_training_in_either_order() {
        let (test, pool) = additions(3, 3, 300, 5000).unwrap();
        assert_eq!((test.len(), pool.len()), (300, 5000));
        let test_keys: HashSet<(i64, i64)> =
            test.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
        assert_eq!(test_keys.len(), 300);
        for &(a, b) in &pool {
            assert!(!test_keys.contains(&(a.min(b), a.max(b))), "{a}+{b} leaked");
            assert!((100..=999).contains(&a) && (100..=999).contains(&b));
        }
        assert!(
            additions(3, 1, 40, 40).is_err(),
            "1-digit space is too small"
        );
    }
}
