//! `rlhf ppo`: PPO (and PPO-ptx) against a reward model (InstructGPT step 3).

use std::path::PathBuf;

use anyhow::Result;
use rlhf_eval::{JudgeSpec, Oracle, RewardModel, Scorer};
use rlhf_train::{PpoConfig, PpoInputs, PpoReward, Resume};

use crate::common::{ConfigArgs, LoraArgs};

/// Optimise the SFT policy against a reward model with PPO: one sampled response per prompt
/// (KV cache, temperature T, log-probs recomputed at T), reward = the reward model's score at
/// EOS (normalised by its std on the SFT samples, minus a penalty when EOS is missing) − β ·
/// per-token KL to the frozen SFT reference, GAE advantages (whitened), clipped policy and
/// value losses over PPO epochs and minibatches; the value model starts from the reward model.
/// --reward oracle|answer optimises a verifiable reward instead (the value model then starts
/// from the policy).
/// With --ptx-data and ptx_coef > 0 (PPO-ptx) a pretraining LM loss is mixed into every
/// minibatch. `--print-config` lists every configuration key with its value.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// SFT checkpoint: the initial policy and the frozen KL reference.
    #[arg(long)]
    policy: PathBuf,
    /// The reward: a reward-model directory (from `rlhf reward`, also `rm:DIR`), which also
    /// initialises the value model and whose score is divided by its std on the SFT samples;
    /// or a reward computed from the text, as in `rlhf grpo`: `oracle` (the task world's
    /// checker) or `answer` (1 when the response reaches the prompts file's "answer", else 0),
    /// used unscaled, with the value model started from the policy and a fresh scalar head. (A
    /// reward-model directory named `oracle` or `answer` is given as `rm:oracle`, `rm:answer`.)
    #[arg(long, value_name = "DIR|rm:DIR|oracle|answer")]
    reward: String,
    /// Training prompts JSONL ({"prompt": ...}).
    #[arg(long)]
    prompts: PathBuf,
    /// Held-out prompts evaluated every `eval_every` iterations against the SFT policy (win rate
    /// by the reward model, and by the oracle for task-world prompts) [default: none].
    #[arg(long)]
    eval_prompts: Option<PathBuf>,
    /// Output directory: the final policy (a checkpoint dir), value/, metrics.jsonl, checkpoints/.
    #[arg(long)]
    out: PathBuf,
    /// PPO-ptx pretraining corpus: text (documents separated by blank lines) or JSONL {"text"}.
    #[arg(long)]
    ptx_data: Option<PathBuf>,
    /// PPO-ptx coefficient γ (sets the config's ptx_coef; 0 is plain PPO) [default: 0, or 1
    /// when --ptx-data is given].
    #[arg(long)]
    ptx_coef: Option<f64>,
    /// The gold judge logged beside the reward model (`<judge>_score` per iteration, and the
    /// held-out `eval/<judge>_win_rate`): `oracle` (the task world's scorer), `rm:DIR` (another
    /// reward model), `none`, or `auto`: the oracle when every prompt is a task-world prompt.
    #[arg(long, default_value = "auto")]
    gold: String,
    /// Sample the rollouts from an OpenAI-compatible server (`openai:URL`: vLLM, SGLang,
    /// `rlhf serve --dynamic-adapters --model POLICY`) serving the SFT policy, instead of here;
    /// they are scored and trained on here with log-probs recomputed by the trainer. Needs
    /// --lora: after each update the adapter is written to OUT/rollout-adapters/ and loaded by
    /// the server (POST /v1/load_lora_adapter), which must see that path; the config's
    /// rollout_staleness lets the served policy lag by that many updates [default: sample here].
    #[arg(long, value_name = "openai:URL")]
    rollout_engine: Option<String>,
    /// Continue the run in OUT from its latest checkpoint (with the same configuration and
    /// inputs; only iterations, eval_every, checkpoint_every, keep_checkpoints and
    /// rollout_staleness may change).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    lora: LoraArgs,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let cfg: PpoConfig = args.config.load_then(|cfg: &mut PpoConfig| {
        args.lora.apply(&mut cfg.lora)?;
        match (args.ptx_coef, &args.ptx_data) {
            (Some(g), _) => cfg.ptx_coef = g,
            (None, Some(_)) if cfg.ptx_coef == 0.0 => cfg.ptx_coef = 1.0,
            _ => {}
        }
        Ok(())
    })?;
    let resume = if args.resume {
        Resume::Latest
    } else {
        Resume::No
    };
    let gold: Option<Box<dyn Scorer>> = match args.gold.as_str() {
        "none" => None,
        "auto" => {
            let prompts = rlhf_eval::read_prompts(&args.prompts, None)?;
            Oracle::knows(&prompts).then(|| Box::new(Oracle) as Box<dyn Scorer>)
        }
        spec => match spec.parse::<JudgeSpec>().map_err(anyhow::Error::msg)? {
            JudgeSpec::Oracle => Some(Box::new(Oracle)),
            JudgeSpec::RewardModel(dir) => {
                let mut rm = RewardModel::load(&dir, device)?;
                rm.key = "gold".into();
                Some(Box::new(rm))
            }
            JudgeSpec::Llm(_) => {
                anyhow::bail!("--gold takes a judge that scores (oracle or rm:DIR), not an LLM")
            }
        },
    };
    let inputs = PpoInputs {
        policy: args.policy,
        reward: PpoReward::from_spec(&args.reward, &args.prompts)?,
        prompts: args.prompts,
        eval_prompts: args.eval_prompts,
        ptx_data: args.ptx_data,
        out: args.out,
        gold,
        rollout_engine: args.rollout_engine,
    };
    let gold_key = inputs
        .gold
        .as_ref()
        .map_or("oracle_score".to_string(), |g| format!("{}_score", g.key()));
    let s = rlhf_train::ppo(&inputs, &cfg, resume, device, true)?;
    // Under data parallelism rank 0 reports for all (the metrics are global means).
    if !rlhf_model::dist::is_writer() {
        return Ok(());
    }
    let first = s.log.first();
    let last = s.log.last();
    let get = |m: Option<&rlhf_train::Metrics>, k: &str| {
        m.and_then(|m| m.get(k))
            .map_or("n/a".to_string(), |v| format!("{v:.3}"))
    };
    eprintln!(
        "PPO: {} iterations in {:.1} s; reward {} -> {}, gold score {} -> {}, KL {} -> {}; saved \
         to {}",
        s.iterations,
        s.elapsed_s,
        get(first, "reward"),
        get(last, "reward"),
        get(first, &gold_key),
        get(last, &gold_key),
        get(first, "kl"),
        get(last, "kl"),
        s.out.display()
    );
    Ok(())
}
