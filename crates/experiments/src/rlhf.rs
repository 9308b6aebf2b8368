//! Row E1, InstructGPT's headline: a policy tuned with PPO against a reward model learned from
//! (simulated) human rankings beats the SFT policy it started from, and PPO-ptx (PPO plus the
//! pretraining loss) keeps the gain while paying less "alignment tax" on the pretraining
//! distribution.
//!
//! Each seed is one whole `rlhf demo` run (`demo::run`) from its own task world: pretraining,
//! SFT, K samples per prompt, simulated labelers, reward model, PPO and PPO-ptx, and the oracle's
//! verdict on the held-out prompts. The report gives, per seed, the measured labeler agreement,
//! the reward model's accuracy, both win rates with their intervals, the corpus NLL and the wall
//! time, then the win rates pooled over seeds (two-level bootstrap) and a verdict.

use std::fmt::Write as _;
use std::path::Path;

use rlhf_data::Agreement;
use rlhf_report::{Interval, LineChart, Series, fmt_interval, md_table};
use serde::Serialize;
use tch::Device;

use crate::common::{Observer, run_seeds, seeds_ci, write_text};
use crate::demo::{self, DemoConfig, DemoSummary};
use crate::error::Result;

/// One PPO run of one seed against SFT, judged by the oracle on the held-out prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// "ppo" or "ppo-ptx".
    pub name: String,
    pub win_rate: Interval,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// Mean KL to SFT (nats per response), when measured.
    pub kl: Option<f64>,
    /// Per held-out prompt: 1 win, 0.5 tie, 0 loss.
    pub outcomes: Vec<f64>,
    /// (iteration, held-out oracle win rate on the in-loop evaluation prompts).
    pub curve: Vec<(f64, f64)>,
}

/// One seed's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub agreement: Agreement,
    pub rm_accuracy_labels: Option<f64>,
    pub rm_accuracy_oracle: Option<f64>,
    pub runs: Vec<RunResult>,
    /// (model, held-out corpus NLL): pretrained, SFT, PPO, PPO-ptx.
    pub corpus_nll: Vec<(String, f64)>,
    pub seconds: f64,
}

impl SeedResult {
    fn from_demo(seed: u64, d: &DemoSummary) -> Self {
        let runs = d
            .comparisons
            .iter()
            .map(|(name, c)| RunResult {
                name: name.clone(),
                win_rate: c.win_rate,
                wins: c.wins,
                ties: c.ties,
                losses: c.losses,
                kl: c.kl.map(|k| k.mean),
                outcomes: c.items.iter().map(|i| i.outcome).collect(),
                curve: d
                    .win_rate_curves
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default(),
            })
            .collect();
        Self {
            seed,
            agreement: d.agreement,
            rm_accuracy_labels: d.rm_accuracy_labels,
            rm_accuracy_oracle: d.rm_accuracy_oracle,
            runs,
            corpus_nll: d.corpus_nll.clone(),
            seconds: d.seconds,
        }
    }

    fn run(&self, name: &str) -> Option<&RunResult> {
        self.runs.iter().find(|r| r.name == name)
    }

    fn nll(&self, name: &str) -> Option<f64> {
        self.corpus_nll
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// Runs the demo pipeline once per seed (`cfg.seed` is replaced by each seed; the seed's run
/// folder is `out/seedN`) and writes `out/e1.md`, `out/results.json` and
/// `out/e1_win_rate.svg/png`.
pub fn run(
    cfg: &DemoConfig,
    seeds: &[u64],
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<Vec<SeedResult>> {
    cfg.validate()?;
    let (results, seconds) = run_seeds(seeds, out, obs, |seed, label, obs| {
        obs.note(&format!("\n=== E1 {label} ==="));
        let c = DemoConfig {
            seed,
            pretrain_only: false,
            ..cfg.clone()
        };
        let d = demo::run(&c, &out.join(format!("seed{seed}")), device, obs)?;
        Ok(SeedResult::from_demo(seed, &d))
    })?;
    let text = report(cfg, &results, seconds);
    write_text(&out.join("e1.md"), &text)?;
    chart(&results).save(&out.join("e1_win_rate"))?;
    Ok(results)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v))
}

/// The markdown report: per-seed table, pooled intervals, verdict.
pub fn report(cfg: &DemoConfig, results: &[SeedResult], seconds: f64) -> String {
    let mut s = String::from(
        "# E1: RLHF (PPO against a learned reward model) vs SFT\n\n\
         InstructGPT's claim (Ouyang et al. 2022): labelers prefer the PPO policy's outputs to \
         the SFT policy's, and mixing in pretraining updates (PPO-ptx) keeps that while reducing \
         the regression on the pretraining distribution. Here each seed runs the whole `rlhf \
         demo` pipeline from its own task world; the judge is the noise-free oracle (the rubric \
         in `crates/data/src/oracle.rs`), the win rate counts ties as half and its interval is a \
         95% bootstrap over the held-out prompts.\n\n",
    );
    let _ = writeln!(
        s,
        "Recipe: {:?} preset, {} pretraining steps, {} SFT steps, {} prompts × K = {} samples \
         ranked by the simulated labelers, {} PPO iterations at lr {} with {} epochs and β = {}, \
         PPO-ptx γ = {}; {} held-out prompts, {} sample(s) of each model per prompt (the \
         interval resamples prompts).\n",
        cfg.preset,
        cfg.pretrain_steps,
        cfg.sft_steps,
        cfg.prompts,
        cfg.k,
        cfg.ppo_iterations,
        cfg.ppo_lr,
        cfg.ppo_epochs,
        cfg.kl_coef,
        cfg.ptx_coef,
        cfg.eval_prompts.map_or("all".into(), |n| n.to_string()),
        cfg.eval_samples,
    );
    let run_cell = |r: Option<&RunResult>| r.map_or("–".into(), |r| fmt_interval(&r.win_rate, 3));
    let nll_cell = |x: Option<f64>| x.map_or("–".into(), |v| format!("{v:.3}"));
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.seed.to_string(),
                pct(r.agreement.rate()),
                format!(
                    "{} / {}",
                    pct(r.rm_accuracy_labels),
                    pct(r.rm_accuracy_oracle)
                ),
                run_cell(r.run("ppo")),
                run_cell(r.run("ppo-ptx")),
                format!(
                    "{} / {} / {}",
                    nll_cell(r.nll("SFT")),
                    nll_cell(r.nll("PPO")),
                    nll_cell(r.nll("PPO-ptx"))
                ),
                format!("{:.0}", r.seconds),
            ]
        })
        .collect();
    s.push_str(&md_table(
        &[
            "seed",
            "labeler agreement",
            "RM accuracy (labels / oracle)",
            "PPO win rate vs SFT",
            "PPO-ptx win rate vs SFT",
            "corpus NLL (SFT / PPO / PPO-ptx)",
            "wall time (s)",
        ],
        &rows,
    ));
    let pooled = |name: &str| {
        let per_seed: Vec<Vec<f64>> = results
            .iter()
            .filter_map(|r| r.run(name).map(|x| x.outcomes.clone()))
            .filter(|o| !o.is_empty())
            .collect();
        (!per_seed.is_empty()).then(|| seeds_ci(&per_seed))
    };
    let (ppo, ptx) = (pooled("ppo"), pooled("ppo-ptx"));
    let _ = write!(
        s,
        "\nPooled over {} seeds (bootstrap over seeds, then prompts): PPO {}, PPO-ptx {}. \
         Total wall time {:.0} s.\n\n![win rate during PPO](e1_win_rate.svg)\n\n",
        results.len(),
        ppo.as_ref().map_or("–".into(), |c| fmt_interval(c, 3)),
        ptx.as_ref().map_or("–".into(), |c| fmt_interval(c, 3)),
        seconds
    );
    s.push_str(&verdict(results));
    s.push('\n');
    s
}

/// Plain words: does every seed's PPO interval lie above 0.5, and does PPO-ptx keep the corpus
/// NLL at or below SFT's?
pub fn verdict(results: &[SeedResult]) -> String {
    let above = |name: &str| -> (Vec<u64>, Vec<u64>) {
        results
            .iter()
            .filter_map(|r| r.run(name).map(|x| (r.seed, x.win_rate.lo > 0.5)))
            .fold((vec![], vec![]), |(mut yes, mut no), (seed, ok)| {
                if ok {
                    yes.push(seed)
                } else {
                    no.push(seed)
                }
                (yes, no)
            })
    };
    let (ppo_yes, ppo_no) = above("ppo");
    let (ptx_yes, ptx_no) = above("ppo-ptx");
    let tax: Vec<u64> = results
        .iter()
        .filter(|r| match (r.nll("PPO-ptx"), r.nll("SFT")) {
            (Some(p), Some(s)) => p > s,
            _ => false,
        })
        .map(|r| r.seed)
        .collect();
    let mut s = String::from("**Verdict:** ");
    if ppo_no.is_empty() && !ppo_yes.is_empty() {
        let _ = write!(
            s,
            "reproduces: PPO beats SFT on every seed ({} of {}, each interval above 0.5). ",
            ppo_yes.len(),
            results.len()
        );
    } else {
        let _ = write!(
            s,
            "does not reproduce on every seed: PPO's interval is not above 0.5 on seed(s) {:?}. ",
            ppo_no
        );
    }
    if ptx_no.is_empty() && !ptx_yes.is_empty() {
        s.push_str("PPO-ptx beats SFT on every seed too. ");
    } else if !ptx_no.is_empty() {
        let _ = write!(
            s,
            "PPO-ptx's interval is not above 0.5 on seed(s) {ptx_no:?}. "
        );
    }
    if tax.is_empty() {
        s.push_str("PPO-ptx's corpus NLL stays at or below SFT's on every seed.");
    } else {
        let _ = write!(
            s,
            "PPO-ptx's corpus NLL rises above SFT's on seed(s) {tax:?}."
        );
    }
    s
}

/// Held-out oracle win rate vs SFT during PPO, one curve per seed and run.
fn chart(results: &[SeedResult]) -> LineChart {
    let series = results
        .iter()
        .flat_map(|r| {
            r.runs.iter().map(move |x| Series {
                name: format!("{} seed {}", x.name, r.seed),
                points: x.curve.clone(),
                band: None,
            })
        })
        .collect();
    LineChart {
        title: "Held-out oracle win rate vs SFT during PPO".into(),
        x_label: "PPO iteration".into(),
        y_label: "win rate".into(),
        series,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(seed: u64, ppo_lo: f64, ptx_nll: f64) -> SeedResult {
        let run = |name: &str, lo: f64| RunResult {
            name: name.into(),
            win_rate: Interval {
                mean: lo + 0.03,
                lo,
                hi: lo + 0.06,
            },
            wins: 10,
            ties: 0,
            losses: 5,
            kl: Some(1.0),
            outcomes: vec![1.0, 0.0, 1.0, 0.5],
            curve: vec![(10.0, 0.55)],
        };
        SeedResult {
            seed,
            agreement: Agreement {
                prompts: 1,
                pairs: 4,
                agreed: 3,
                tied: 0,
            },
            rm_accuracy_labels: Some(0.7),
            rm_accuracy_oracle: Some(0.8),
            runs: vec![run("ppo", ppo_lo), run("ppo-ptx", 0.52)],
            corpus_nll: vec![("SFT".into(), 1.5), ("PPO-ptx".into(), ptx_nll)],
            seconds: 1.0,
        }
    }

    #[test]
    fn verdict_names_the_seeds_that_fail() {
        let ok = verdict(&[seed(0, 0.52, 1.4), seed(1, 0.51, 1.5)]);
        assert!(
            ok.contains("reproduces: PPO beats SFT on every seed (2 of 2"),
            "{ok}"
        );
        assert!(ok.contains("at or below SFT's on every seed"), "{ok}");
        let bad = verdict(&[seed(0, 0.52, 1.4), seed(1, 0.49, 1.6)]);
        assert!(bad.contains("not above 0.5 on seed(s) [1]"), "{bad}");
        assert!(bad.contains("rises above SFT's on seed(s) [1]"), "{bad}");
        let text = report(
            &DemoConfig::default(),
            &[seed(0, 0.52, 1.4), seed(1, 0.51, 1.5)],
            2.0,
        );
        assert!(text.contains("| 0 | 75.0% | 70.0% / 80.0% |"), "{text}");
        assert!(text.contains("Pooled over 2 seeds"), "{text}");
    }
}
