//! `rlhf demo`: the embedded InstructGPT pipeline end to end (`rlhf_experiments::demo::run`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use rlhf_experiments::demo::{self, DemoConfig};
use rlhf_train::Preset;

use crate::common::Bars;

/// Run the whole embedded pipeline (data → pretrain → SFT → sample → label → reward model →
/// PPO and PPO-ptx → eval) in a fresh run folder, with a report. With --base, the pipeline
/// starts from a real checkpoint instead of pretraining one (e.g. SmolLM2-135M-Instruct from its
/// GGUF), with sizes scaled to a 2-core CPU; every size flag below still overrides.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder [default: runs/demo-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start from this checkpoint instead of pretraining: an rlhf/transformers checkpoint dir,
    /// or a llama-family .gguf file (imported into OUT/base first). Changes the defaults below
    /// to the real-checkpoint ones (the second value of each).
    #[arg(long, value_name = "DIR|FILE.gguf")]
    base: Option<PathBuf>,
    /// Seed of the task world and of every stage.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model size (see `rlhf pretrain --help`; not with --base).
    #[arg(long, default_value = "micro")]
    preset: Preset,
    /// Pretraining optimizer steps (not with --base) [default: 600].
    #[arg(long)]
    pretrain_steps: Option<u64>,
    /// SFT optimizer steps [default: 300; 30 with --base].
    #[arg(long)]
    sft_steps: Option<u64>,
    /// Prompts in the task world's prompts.jsonl (sampled, ranked, and PPO's prompts)
    /// [default: 1500; 64 with --base].
    #[arg(long)]
    prompts: Option<usize>,
    /// Responses sampled and ranked per prompt (InstructGPT: 4 to 9) [default: 8; 4 with
    /// --base].
    #[arg(long)]
    k: Option<usize>,
    /// PPO iterations for PPO and for PPO-ptx [default: 30; 4 with --base].
    #[arg(long)]
    ppo_iterations: Option<u64>,
    /// Rollouts per PPO iteration [default: 64; 16 with --base].
    #[arg(long)]
    ppo_rollouts: Option<usize>,
    /// PPO learning rate (policy and value model) [default: 3e-5; 1e-5 with --base].
    #[arg(long)]
    ppo_lr: Option<f64>,
    /// PPO epochs over each iteration's rollouts [default: 4; 2 with --base].
    #[arg(long)]
    ppo_epochs: Option<u64>,
    /// KL penalty coefficient β of PPO and PPO-ptx.
    #[arg(long, default_value_t = 0.1)]
    kl_coef: f64,
    /// PPO-ptx coefficient γ.
    #[arg(long, default_value_t = 1.0)]
    ptx_coef: f64,
    /// Held-out prompts in the evaluations [default: all 300; 32 with --base].
    #[arg(long)]
    eval_prompts: Option<usize>,
    /// Responses of each model per held-out prompt in the final evaluation [default: 4; 2 with
    /// --base].
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Largest n of the best-of-n curve (powers of two up to it) [default: 16; 4 with --base].
    #[arg(long)]
    best_of: Option<usize>,
    /// Held-out prompts used for the best-of-n curve [default: 64; 16 with --base].
    #[arg(long)]
    best_of_prompts: Option<usize>,
    /// Stop after pretraining (the quick smoke run of earlier versions; not with --base).
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
    let mut cfg = match &args.base {
        None => DemoConfig::default(),
        Some(base) => {
            if args.pretrain_only || args.pretrain_steps.is_some() {
                anyhow::bail!(
                    "--base starts from a checkpoint: --pretrain-only and --pretrain-steps do not apply"
                );
            }
            let dir = if base.extension().is_some_and(|e| e == "gguf") {
                let dir = out.join("base");
                eprintln!("importing {} into {}", base.display(), dir.display());
                rlhf_gguf::import_gguf(base, &dir, |_, _| {})
                    .with_context(|| format!("importing {}", base.display()))?;
                dir
            } else {
                base.clone()
            };
            DemoConfig::real(dir)
        }
    };
    cfg.seed = args.seed;
    cfg.preset = args.preset;
    cfg.kl_coef = args.kl_coef;
    cfg.ptx_coef = args.ptx_coef;
    cfg.pretrain_only = args.pretrain_only;
    cfg.dev = args.dev;
    let set = |v: &mut u64, x: Option<u64>| *v = x.unwrap_or(*v);
    set(&mut cfg.pretrain_steps, args.pretrain_steps);
    set(&mut cfg.sft_steps, args.sft_steps);
    set(&mut cfg.ppo_iterations, args.ppo_iterations);
    set(&mut cfg.ppo_epochs, args.ppo_epochs);
    let set = |v: &mut usize, x: Option<usize>| *v = x.unwrap_or(*v);
    set(&mut cfg.prompts, args.prompts);
    set(&mut cfg.k, args.k);
    set(&mut cfg.ppo_rollouts, args.ppo_rollouts);
    set(&mut cfg.eval_samples, args.eval_samples);
    set(&mut cfg.best_of, args.best_of);
    set(&mut cfg.best_of_prompts, args.best_of_prompts);
    cfg.ppo_lr = args.ppo_lr.unwrap_or(cfg.ppo_lr);
    cfg.eval_prompts = args.eval_prompts.or(cfg.eval_prompts);
    demo::run(&cfg, &out, device, &mut Bars::default())?;
    Ok(())
}
