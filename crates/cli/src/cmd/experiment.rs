//! `rlhf experiment rlhf|cot|format|lmsi|emergence|flan|distill|webgpt|align|verifiable`: the
//! paper-table rows E1, E3, E4, E8, E2, E5, E6 and E7, the alignment methods side by side, and
//! GRPO against PPO on a verifiable reward.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args as ClapArgs, Subcommand};
use rlhf_experiments::{
    align, cot, demo, distill, emergence, flan, format, lmsi, rlhf, verifiable, webgpt,
};

use crate::common::ConfigArgs;

/// Regenerate a row of the paper table from nothing (task data, tiny models trained in memory):
/// a markdown table with mean ± 95% CI over seeds, plots (SVG and PNG), FLOPs and wall time,
/// and a verdict that says plainly when the claim does not reproduce.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// E1, RLHF vs SFT: per seed, the whole `rlhf demo` pipeline (task world, pretraining, SFT,
    /// K samples per prompt, simulated labelers, reward model, PPO and PPO-ptx) and the oracle's
    /// win rate of PPO and PPO-ptx over SFT on the held-out prompts, with labeler agreement,
    /// reward-model accuracy, corpus NLL and wall time; the recipe is the demo's (`--set` takes
    /// its fields, e.g. `--set ppo_iterations=30`). Writes OUT/e1.md, OUT/results.json,
    /// OUT/e1_win_rate.svg/png and each seed's run folder OUT/seedN.
    Rlhf(Common),
    /// E3, chain of thought: direct answers vs CoT-trained vs a same-length dots control vs
    /// answer-before-reasoning vs CoT prompting of the direct model, on 1–4 step word problems
    /// (writes OUT/e3.md, OUT/results.json, OUT/e3_accuracy_by_steps.svg/png).
    Cot(Common),
    /// E4, output format and sample efficiency: 3-digit addition written plain, reversed, or
    /// with a scratchpad, trained on N examples for several N (writes OUT/e4.md, OUT/results.json,
    /// OUT/e4_accuracy_vs_n.svg/png).
    Format(Common),
    /// E8, self-improvement (LMSI): a CoT model at 30–60% accuracy samples 32 paths per
    /// unlabelled question at T=0.7, keeps the majority's paths, fine-tunes on them in four mixed
    /// formats; greedy and self-consistency accuracy before/after, the no-vote and gold-filter
    /// controls, and calibration (writes OUT/e8.md, OUT/results.json, OUT/e8_*.svg/png).
    Lmsi(Common),
    /// E2, emergence as a metric effect: six model sizes (~7k to ~0.8M parameters) learn 4-digit
    /// addition from the same data; the same outputs are scored by exact match, per-digit
    /// accuracy, edit distance and answer likelihood, against parameters and FLOPs (writes
    /// OUT/e2.md, OUT/results.json, OUT/e2_vs_params.svg/png, OUT/e2_vs_flops.svg/png).
    Emergence(Common),
    /// E5, FLAN instruction tuning: a tiny base pretrained on the world's knowledge, then
    /// instruction-tuned on 1, 3 or 7 of ten synthetic task clusters (or on the same examples
    /// without instructions); zero-shot accuracy on the three held-out clusters and on seen
    /// clusters under unseen templates, by rank classification and by generation (writes
    /// OUT/e5.md, OUT/results.json, OUT/e5_vs_clusters.svg/png).
    Flan(Common),
    /// E6, super-teacher distillation: a bigger teacher pretrained on a corpus that gives an
    /// invented lexicon's polarity away, adapted with 100 gold reviews, labels a pool of reviews;
    /// a small student trained on the teacher's labels vs on the 100 gold labels vs on gold
    /// labels for the whole pool (writes OUT/e6.md, OUT/results.json).
    Distill(Common),
    /// E7, WebGPT: a tiny policy browses a BM25 index of an invented entity world (re-drawn per
    /// seed, so closed-book answering is at chance) with WebGPT's commands, quotes pages and
    /// answers citing its quotes; behaviour cloning on scripted noisy demonstrations, a reward
    /// model on labeler-ranked episodes, best-of-{1,4,16,64}; accuracy and citation support vs
    /// closed book (writes OUT/e7.md, OUT/results.json, OUT/e7_best_of_n.svg/png, and the first
    /// seed's policy and index under OUT/seedN/ for `rlhf browse`).
    Webgpt(Common),
    /// The alignment methods side by side at equal budget: per seed one task world, one SFT
    /// model, one set of K-way rankings from the simulated labelers and one reward model; then
    /// best-of-n (by that reward model), PPO, DPO (sigmoid and listwise), GRPO and RLOO from the
    /// same SFT model (PPO, GRPO and RLOO with the same samples, optimizer steps and learning
    /// rate), each judged by the oracle against SFT on held-out prompts: win rate with 95%
    /// intervals, KL to SFT, length, wall time and estimated FLOPs, a verdict per method
    /// (writes OUT/align.md, OUT/results.json, OUT/align_win_rate_vs_{kl,time}.svg/png and each
    /// seed's run folder OUT/seedN). `--set` takes the recipe's fields (e.g.
    /// `--set iterations=30`; `rlhf experiment align --help` lists them with the defaults in
    /// the README).
    Align(Common),
    /// GRPO against its PPO counterpart on a verifiable reward: per seed one task world and one
    /// SFT model; the reward is 1 when a response's final number is the word problem's answer
    /// (0 otherwise) on the world's 1–2-step training word problems (1500 pretraining and 1500
    /// SFT steps); GRPO (8 prompts × G = 8) and PPO (64 prompts × 1, value model from the policy)
    /// draw the same samples and take the same optimizer steps at the same lr; each is judged on
    /// the held-out word problems of the same step counts by greedy and sampled accuracy against
    /// SFT's, with 95% intervals and a verdict (writes OUT/verifiable.md, OUT/results.json and
    /// each seed's run folder OUT/seedN). `--set` takes the recipe's fields (e.g. `--set
    /// iterations=50`, `--set reward=oracle`, `--set grpo_beta=0.1`). A seed folder whose
    /// stages.json matches the recipe's world, pretraining and SFT settings reuses them, so a
    /// rerun that changes only the RL settings (in a fresh OUT holding copies of those folders)
    /// starts at GRPO.
    Verifiable(Common),
}

#[derive(Debug, ClapArgs)]
struct Common {
    /// Number of seeds (runs with seeds FIRST_SEED, FIRST_SEED+1, ...).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
    /// Only re-render the report from OUT/results.json of an earlier run with the same config
    /// (no training); `emergence`, `webgpt`, `align` and `verifiable` only.
    #[arg(long)]
    report_only: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let mut bars = crate::common::Bars::default();
    let (common, name) = match &args.which {
        Which::Rlhf(c) => (c, "e1.md"),
        Which::Cot(c) => (c, "e3.md"),
        Which::Format(c) => (c, "e4.md"),
        Which::Lmsi(c) => (c, "e8.md"),
        Which::Emergence(c) => (c, "e2.md"),
        Which::Flan(c) => (c, "e5.md"),
        Which::Distill(c) => (c, "e6.md"),
        Which::Webgpt(c) => (c, "e7.md"),
        Which::Align(c) => (c, "align.md"),
        Which::Verifiable(c) => (c, "verifiable.md"),
    };
    anyhow::ensure!(common.seeds >= 1, "--seeds must be at least 1");
    anyhow::ensure!(
        !common.report_only
            || matches!(
                args.which,
                Which::Emergence(_) | Which::Webgpt(_) | Which::Align(_) | Which::Verifiable(_)
            ),
        "--report-only is implemented for `experiment emergence`, `webgpt`, `align` and \
         `verifiable` only"
    );
    let seeds: Vec<u64> = (common.first_seed..common.first_seed + common.seeds).collect();
    match &args.which {
        Which::Rlhf(c) => {
            let cfg: demo::DemoConfig = c.config.load()?;
            rlhf::run(&cfg, &seeds, &c.out, device, &mut bars)?;
        }
        Which::Cot(c) => {
            let cfg: cot::CotConfig = c.config.load()?;
            cot::run(&cfg, &seeds, &c.out, device, &mut bars)?;
        }
        Which::Format(c) => {
            let cfg: format::FormatConfig = c.config.load()?;
            format::run(&cfg, &seeds, &c.out, device, &mut bars)?;
        }
        Which::Lmsi(c) => {
            let cfg: lmsi::LmsiExperimentConfig = c.config.load()?;
            lmsi::run(&cfg, &seeds, &c.out, device, &mut bars)?;
        }
        Which::Emergence(c) => {
            let cfg: emergence::EmergenceConfig = c.config.load()?;
            if c.report_only {
                emergence::report_only(&cfg, &c.out)?;
            } else {
                emergence::run(&cfg, &seeds, &c.out, device, &mut bars)?;
            }
        }
        Which::Flan(c) => {
            let cfg: flan::FlanExperimentConfig = c.config.load()?;
            flan::run(&cfg, &seeds, &c.out, device, &mut bars)?;
        }
        Which::Distill(c) => {
            let cfg: distill::DistillExperimentConfig = c.config.load()?;
            distill::run(&cfg, &seeds, &c.out, device, &mut bars)?;
        }
        Which::Align(c) => {
            let cfg: align::AlignConfig = c.config.load()?;
            if c.report_only {
                align::report_only(&cfg, &c.out)?;
            } else {
                align::run(&cfg, &seeds, &c.out, device, &mut bars)?;
            }
        }
        Which::Verifiable(c) => {
            let cfg: verifiable::VerifiableConfig = c.config.load()?;
            if c.report_only {
                verifiable::report_only(&cfg, &c.out)?;
            } else {
                verifiable::run(&cfg, &seeds, &c.out, device, &mut bars)?;
            }
        }
        Which::Webgpt(c) => {
            let cfg: webgpt::WebGptConfig = c.config.load()?;
            if c.report_only {
                webgpt::report_only(&cfg, &c.out)?;
            } else {
                webgpt::run(&cfg, &seeds, &c.out, device, &mut bars)?;
            }
        }
    }
    drop(bars);
    let report = common.out.join(name);
    print!("{}", std::fs::read_to_string(&report)?);
    eprintln!("report: {}", report.display());
    Ok(())
}
