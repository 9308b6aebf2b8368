//! `rlhf demo`: the embedded InstructGPT pipeline end to end (`rlhf_experiments::demo::run`).

use std::path::PathBuf;

use anyhow::Result;
use rlhf_experiments::demo::{self, DemoConfig};
use rlhf_train::Preset;

use crate::common::Bars;

/// Run the whole embedded pipeline (data → pretrain → SFT → sample → label → reward model →
/// PPO and PPO-ptx → eval) in a fresh run folder, with a report.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder [default: runs/demo-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the task world and of every stage.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model size (see `rlhf pretrain --help`).
    #[arg(long, default_value = "micro")]
    preset: Preset,
    /// Pretraining optimizer steps.
    #[arg(long, default_value_t = 600)]
    pretrain_steps: u64,
    /// SFT optimizer steps.
    #[arg(long, default_value_t = 300)]
    sft_steps: u64,
    /// Prompts in the task world's prompts.jsonl (sampled, ranked, and PPO's prompts).
    #[arg(long, default_value_t = 1500)]
    prompts: usize,
    /// Responses sampled and ranked per prompt (InstructGPT: 4 to 9).
    #[arg(long, default_value_t = 8)]
    k: usize,
    /// PPO iterations (64 rollouts each) for PPO and for PPO-ptx.
    #[arg(long, default_value_t = 30)]
    ppo_iterations: u64,
    /// PPO learning rate (policy and value model).
    #[arg(long, default_value_t = 3e-5)]
    ppo_lr: f64,
    /// PPO epochs over each iteration's rollouts.
    #[arg(long, default_value_t = 4)]
    ppo_epochs: u64,
    /// KL penalty coefficient β of PPO and PPO-ptx.
    #[arg(long, default_value_t = 0.1)]
    kl_coef: f64,
    /// PPO-ptx coefficient γ.
    #[arg(long, default_value_t = 1.0)]
    ptx_coef: f64,
    /// Held-out prompts in the final evaluation [default: all 300].
    #[arg(long)]
    eval_prompts: Option<usize>,
    /// Responses of each model per held-out prompt in the final evaluation.
    #[arg(long, default_value_t = 4)]
    eval_samples: usize,
    /// Largest n of the best-of-n curve (powers of two up to it).
    #[arg(long, default_value_t = 16)]
    best_of: usize,
    /// Held-out prompts used for the best-of-n curve.
    #[arg(long, default_value_t = 64)]
    best_of_prompts: usize,
    /// Stop after pretraining (the quick smoke run of earlier versions).
    #[arg(long)]
    pretrain_only: bool,
    /// Evaluate on the world's dev.jsonl (held-out prompts disjoint from eval.jsonl) instead of
    /// eval.jsonl: for choosing a recipe without looking at the reported numbers.
    #[arg(long)]
    dev: bool,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let out = args.out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("runs/demo-{secs}"))
    });
    let cfg = DemoConfig {
        seed: args.seed,
        preset: args.preset,
        pretrain_steps: args.pretrain_steps,
        sft_steps: args.sft_steps,
        prompts: args.prompts,
        k: args.k,
        ppo_iterations: args.ppo_iterations,
        ppo_lr: args.ppo_lr,
        ppo_epochs: args.ppo_epochs,
        kl_coef: args.kl_coef,
        ptx_coef: args.ptx_coef,
        eval_prompts: args.eval_prompts,
        eval_samples: args.eval_samples,
        best_of: args.best_of,
        best_of_prompts: args.best_of_prompts,
        pretrain_only: args.pretrain_only,
        dev: args.dev,
    };
    demo::run(&cfg, &out, device, &mut Bars::default())?;
    Ok(())
}
