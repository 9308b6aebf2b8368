//! `rlhf grpo`: GRPO or RLOO, policy-gradient RL with group baselines and no value model.

use std::path::PathBuf;

use anyhow::Result;
use rlhf_train::Resume;
use rlhf_train::grpo::{Algo, GrpoConfig, GrpoInputs, grpo, reward_from_spec};

use crate::common::{ConfigArgs, LoraArgs};

/// Train a policy with GRPO or RLOO: each prompt is answered G times, each response's advantage
/// is its reward against its group's (GRPO: minus the group mean, divided by the group std unless
/// scale_rewards = false; RLOO: minus the mean of the other G − 1), given to every token, with
/// PPO's clipped ratio. The KL to the reference is a k3 loss term (kl_mode = "loss") or a penalty
/// on the reward (kl_mode = "reward"); aggregation = "sequence" (each response weighs the same)
/// or "token" (each token does). No value model. Writes the policy (or its adapter) to OUT with
/// metrics.jsonl (one line per iteration) and summary.json.
///
/// Every setting is a config key (`--set KEY=VALUE`; `--print-config` lists them with their
/// defaults): iterations (100), prompts_per_iteration (8), group (8), epochs (1), minibatches
/// (2), lr (5e-5), clip (0.2), beta (0.04), kl_mode, scale_rewards (true), aggregation (sequence),
/// temperature (1), max_new_tokens (64), seed, checkpoint_every (20), keep_checkpoints (2), and
/// [lora].
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The initial policy (an SFT checkpoint); also the KL reference.
    #[arg(long)]
    model: PathBuf,
    /// Training prompts JSONL: {"prompt"} (or {"prompt","answer"} for --reward answer).
    #[arg(long)]
    prompts: PathBuf,
    /// The reward: oracle (the task world's checker), answer (1 when the response reaches the
    /// prompts file's "answer"), or rm:DIR (a reward model).
    #[arg(long)]
    reward: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// grpo or rloo [default: the config's algo, grpo].
    #[arg(long, value_enum)]
    algo: Option<AlgoArg>,
    /// G, responses per prompt [default: 8].
    #[arg(long)]
    group: Option<usize>,
    /// Task-world prompts (e.g. the world's eval.jsonl): greedy word-problem accuracy is
    /// measured on their word problems before and after training.
    #[arg(long)]
    eval_prompts: Option<PathBuf>,
    /// Sample the G responses per prompt from an OpenAI-compatible server (`openai:URL`: vLLM,
    /// SGLang, `rlhf serve --dynamic-adapters --model MODEL`) serving MODEL, instead of here;
    /// they are scored and trained on here, log-probs recomputed. Needs --lora: after each
    /// update the adapter is written to OUT/rollout-adapters/ and loaded by the server (POST
    /// /v1/load_lora_adapter); the config's rollout_staleness lets the served policy lag by
    /// that many updates [default: sample here].
    #[arg(long, value_name = "openai:URL")]
    rollout_engine: Option<String>,
    /// Continue the run in OUT from its latest checkpoint (same configuration and inputs).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    lora: LoraArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AlgoArg {
    Grpo,
    Rloo,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let cfg: GrpoConfig = args.config.load_then(|cfg: &mut GrpoConfig| {
        args.lora.apply(&mut cfg.lora)?;
        if let Some(a) = args.algo {
            cfg.algo = match a {
                AlgoArg::Grpo => Algo::Grpo,
                AlgoArg::Rloo => Algo::Rloo,
            };
        }
        if let Some(g) = args.group {
            cfg.group = g;
        }
        Ok(())
    })?;
    let inputs = GrpoInputs {
        reward: reward_from_spec(&args.reward, &args.prompts, device)?,
        policy: args.model,
        prompts: args.prompts,
        eval_prompts: args.eval_prompts,
        out: args.out,
        progress: true,
        rollout_engine: args.rollout_engine,
    };
    let resume = if args.resume {
        Resume::Latest
    } else {
        Resume::No
    };
    let s = grpo(&inputs, &cfg, resume, device)?;
    // Under data parallelism rank 0 reports for all (the metrics are global means).
    if !rlhf_model::dist::is_writer() {
        return Ok(());
    }
    let acc = match s.word_problem_accuracy {
        Some((a, b)) => format!(
            "; greedy word-problem accuracy {:.1}% -> {:.1}% ({} problems)",
            100.0 * a,
            100.0 * b,
            s.eval_word_problems
        ),
        None => String::new(),
    };
    eprintln!(
        "{:?}: {} iterations in {:.1} s; mean reward {:.3} (first iteration) -> {:.3} (last){acc}; \
         saved to {}",
        s.algo,
        s.iterations,
        s.elapsed_s,
        s.reward_first,
        s.reward_last,
        s.out.display()
    );
    Ok(())
}
