//! PPO against a reward model (InstructGPT step 3), and PPO-ptx. Each iteration samples one
//! response per prompt for a batch of prompts (`rollout.rs`), turns the reward model's score at
//! EOS minus a per-token KL penalty to the frozen SFT reference into per-token rewards, computes
//! GAE advantages (whitened) and returns, then runs `ppo_epochs` passes of clipped policy and
//! value losses over shuffled minibatches; PPO-ptx adds `ptx_coef` × the LM loss on a corpus
//! batch to every minibatch. The value model starts from the reward model. The defaults follow
//! InstructGPT and "The N Implementation Details of RLHF with PPO" (Huang et al., 2024).
//!
//! Not here: the maths (`rl.rs`), sampling and scoring (`rollout.rs`), evaluation by win rate
//! (`rlhf eval`).
//!
//! Shapes as in `rollout.rs`: B rollouts, M minibatch rows, R response tokens.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rlhf_data::{PromptRecord, read_jsonl_lines};
use rlhf_model::{Gpt, Head, Pretrained, PromptFormat};
use rlhf_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, CheckpointInfo, FORMAT_VERSION, OPTIMIZER_FILE};
use crate::config;
use crate::data::{DataPosition, DataRng, DataSource, Epochs};
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig, clip_grad_norm};
use crate::pretrain::{CorpusWindows, lm_loss};
use crate::reward::RewardStats;
use crate::rl::{self, KlControl, KlEstimator};
use crate::rollout::{self, Models, Rollout, RolloutConfig};
use crate::step::Metrics;
use crate::trainer::Resume;

/// `rlhf ppo`'s configuration (`--config FILE`, `--set key=value`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// PPO iterations (rollouts + update). 100.
    pub iterations: u64,
    /// Prompts (one response each) per iteration. 64.
    pub rollout_batch: usize,
    /// Minibatches per PPO epoch (rows per minibatch = rollout_batch / minibatches). 4.
    pub minibatches: usize,
    /// Passes over each rollout batch. 4: TRL's and InstructGPT's.
    pub ppo_epochs: u64,
    /// Adam learning rate of policy and value model, constant. 3e-5: tiny models need more than
    /// InstructGPT's 9.65e-6 (1.3B) to move within a few hundred updates.
    pub lr: f64,
    /// Adam betas and epsilon. (0.9, 0.95), 1e-8.
    pub betas: [f64; 2],
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables. 1.0.
    pub grad_clip: f64,
    /// Sampling temperature; log-probs are recomputed at the same temperature. 1.0.
    pub temperature: f64,
    /// Longest response. 64: twice a clean task-world answer.
    pub max_new_tokens: usize,
    /// β, the per-token KL penalty to the SFT reference. 0.02: InstructGPT.
    pub kl_coef: f64,
    /// Target KL (nats per response) of the adaptive controller (Ziegler et al. 2019); 0 keeps β
    /// fixed. 0.
    pub kl_target: f64,
    /// The controller's horizon in episodes. 10000.
    pub kl_horizon: f64,
    /// Estimator of the per-token KL in the reward: k1 (log ratio, InstructGPT), k2 or k3.
    pub kl_estimator: KlEstimator,
    /// GAE discount γ and λ. 1.0 and 0.95.
    pub gamma: f64,
    pub lambda: f64,
    /// Policy ratio clip ε. 0.2.
    pub clip: f64,
    /// Value clip. 0.2.
    pub value_clip: f64,
    /// Weight of the value loss. 0.1: TRL.
    pub vf_coef: f64,
    /// Whiten advantages per batch. true.
    pub whiten_advantages: bool,
    /// Subtracted from the normalised score of a response that hit `max_new_tokens` without EOS.
    /// 1.0: one standard deviation of the reward model's score.
    pub missing_eos_penalty: f64,
    /// PPO-ptx: weight γ of the pretraining LM loss mixed into every minibatch; 0 is plain PPO.
    pub ptx_coef: f64,
    /// PPO-ptx corpus rows per minibatch and their length. 8 × 128.
    pub ptx_batch: usize,
    pub ptx_seq_len: i64,
    /// Evaluate on held-out prompts every N iterations (and at the start and end); 0 never. 10.
    pub eval_every: u64,
    /// Held-out prompts per evaluation. 64.
    pub eval_prompts: usize,
    /// Checkpoint every N iterations (and at the end); 0 only at the end. 20.
    pub checkpoint_every: u64,
    /// Checkpoints kept. 2.
    pub keep_checkpoints: usize,
    /// Seeds prompt order, sampling and the ptx batches. 0.
    pub seed: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            iterations: 100,
            rollout_batch: 64,
            minibatches: 4,
            ppo_epochs: 4,
            lr: 3e-5,
            betas: [0.9, 0.95],
            eps: 1e-8,
            grad_clip: 1.0,
            temperature: 1.0,
            max_new_tokens: 64,
            kl_coef: 0.02,
            kl_target: 0.0,
            kl_horizon: 10000.0,
            kl_estimator: KlEstimator::K1,
            gamma: 1.0,
            lambda: 0.95,
            clip: 0.2,
            value_clip: 0.2,
            vf_coef: 0.1,
            whiten_advantages: true,
            missing_eos_penalty: 1.0,
            ptx_coef: 0.0,
            ptx_batch: 8,
            ptx_seq_len: 128,
            eval_every: 10,
            eval_prompts: 64,
            checkpoint_every: 20,
            keep_checkpoints: 2,
            seed: 0,
        }
    }
}

impl PpoConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Config(format!("ppo config: {m}")));
        if self.rollout_batch == 0 || self.minibatches == 0 {
            return bad("rollout_batch and minibatches must be at least 1");
        }
        if self.rollout_batch % self.minibatches != 0 {
            return bad("rollout_batch must be a multiple of minibatches");
        }
        if self.rollout_batch / self.minibatches < 2 {
            return bad("minibatches must hold at least 2 rows each (advantages are whitened)");
        }
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return bad("temperature must be > 0 (PPO samples)");
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr must be positive");
        }
        if self.kl_coef < 0.0 || self.kl_target < 0.0 {
            return bad("kl_coef and kl_target must be >= 0");
        }
        if self.ptx_coef < 0.0 {
            return bad("ptx_coef must be >= 0");
        }
        Ok(())
    }
}

/// The inputs of a PPO run.
#[derive(Debug, Clone)]
pub struct PpoInputs {
    /// SFT checkpoint: the initial policy and the frozen reference.
    pub policy: PathBuf,
    /// Reward-model dir (from `rlhf reward`); also the value model's initialisation.
    pub reward: PathBuf,
    /// Training prompts JSONL ({"prompt"}).
    pub prompts: PathBuf,
    /// Held-out prompts for the periodic evaluation (task-world prompts get oracle scores).
    pub eval_prompts: Option<PathBuf>,
    /// PPO-ptx corpus: text (documents separated by blank lines) or JSONL {"text"}.
    pub ptx_data: Option<PathBuf>,
    pub out: PathBuf,
}

/// One iteration's log line (`metrics.jsonl`).
pub type IterationLog = Metrics;

/// What a finished PPO run reports.
#[derive(Debug, Clone)]
pub struct PpoSummary {
    pub iterations: u64,
    pub elapsed_s: f64,
    /// Every iteration's metrics, resumed runs included.
    pub log: Vec<IterationLog>,
    pub out: PathBuf,
}

/// Prompts tokenized with the chat template; errors name file:line.
fn load_prompts(
    pre: &Pretrained,
    path: &Path,
    max_new: usize,
) -> Result<(Vec<String>, Vec<Vec<i64>>)> {
    let records: Vec<(usize, PromptRecord)> =
        read_jsonl_lines(path).map_err(|e| TrainError::Invalid(e.to_string()))?;
    if records.is_empty() {
        return Err(TrainError::Invalid(format!(
            "{}: no prompts",
            path.display()
        )));
    }
    let max = pre.model.cfg.max_positions as usize;
    let (mut texts, mut ids) = (Vec::new(), Vec::new());
    for (line, r) in records {
        let q = pre.encode_prompt(&r.prompt, PromptFormat::Chat)?;
        if q.len() + max_new > max {
            return Err(TrainError::Invalid(format!(
                "{}:{line}: field 'prompt': {} tokens + max_new_tokens {max_new} exceed the \
                 model's context of {max}; shorten the prompt or lower max_new_tokens",
                path.display(),
                q.len()
            )));
        }
        texts.push(r.prompt);
        ids.push(q);
    }
    Ok((texts, ids))
}

/// Documents of a ptx corpus: JSONL {"text"} or plain text split at blank lines.
fn ptx_stream(tok: &Tokenizer, path: &Path) -> Result<Vec<i64>> {
    let docs: Vec<String> = if path.extension().is_some_and(|e| e == "jsonl") {
        rlhf_data::read_jsonl::<rlhf_data::TextRecord>(path)
            .map_err(|e| TrainError::Invalid(e.to_string()))?
            .into_iter()
            .map(|r| r.text)
            .collect()
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::io("read the corpus", path, e))?;
        text.split("\n\n")
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect()
    };
    crate::pretrain::token_stream(tok, &docs)
}

/// Refuses a reward model whose tokenizer differs from the policy's: its scores would be read
/// from token ids it does not understand.
fn check_same_tokenizer(policy: &Tokenizer, rm: &Tokenizer, rm_dir: &Path) -> Result<()> {
    let probe = "Compare: 12 + 7 = 19. The answer is 19.\n<|im_end|> héllo";
    let a = policy
        .encode(probe, false)
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    let b = rm
        .encode(probe, false)
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    if policy.vocab_size() != rm.vocab_size() || a != b || policy.eos_id() != rm.eos_id() {
        return Err(TrainError::Invalid(format!(
            "the reward model {} uses a different tokenizer from the policy ({} vs {} tokens, \
             or different ids for the same text); train the reward model from the policy's SFT \
             checkpoint",
            rm_dir.display(),
            rm.vocab_size(),
            policy.vocab_size()
        )));
    }
    Ok(())
}

/// The trainable state that checkpoints carry besides weights and optimizer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PpoState {
    kl: KlControl,
    log: Vec<IterationLog>,
    ptx_position: Option<DataPosition>,
}

const STATE_FILE: &str = "ppo_state.json";

/// Rows of a rollout (a minibatch), on the rollout's device.
fn rows(t: &Tensor, idx: &Tensor) -> Tensor {
    t.index_select(0, idx)
}

/// Mean of a device scalar as f64 (one host sync).
fn scalar(t: &Tensor) -> f64 {
    f64::try_from(t.to_kind(Kind::Double)).unwrap_or(f64::NAN)
}

/// Runs PPO; `out` receives the final policy (a checkpoint dir for `rlhf eval`/`rlhf generate`),
/// `out/value/`, `metrics.jsonl` and `checkpoints/`.
pub fn ppo(
    inputs: &PpoInputs,
    cfg: &PpoConfig,
    resume: Resume,
    device: Device,
    progress: bool,
) -> Result<PpoSummary> {
    cfg.validate()?;
    let out = &inputs.out;
    std::fs::create_dir_all(out).map_err(|e| TrainError::io("create", out, e))?;
    let t0 = Instant::now();

    // Models: the policy and its frozen copy, the reward model, the value model from it.
    let mut policy = Pretrained::load(&inputs.policy, Head::Lm, device)?;
    let reference = Gpt::load(&inputs.policy, Head::Lm, device)?;
    let reward = Gpt::load(&inputs.reward, Head::Scalar, device)?;
    let rm_tok =
        Tokenizer::from_dir(&inputs.reward).map_err(|e| TrainError::Invalid(e.to_string()))?;
    check_same_tokenizer(&policy.tokenizer, &rm_tok, &inputs.reward)?;
    let mut value = Gpt::load(&inputs.reward, Head::Scalar, device)?;
    for (_, t) in reference
        .vs
        .variables()
        .iter()
        .chain(reward.vs.variables().iter())
    {
        let _ = t.shallow_clone().set_requires_grad(false);
    }
    let stats = RewardStats::read(&inputs.reward)?;
    let score_scale = stats.map_or(1.0, |s| s.std).max(1e-6);

    let (prompt_texts, prompt_ids) = load_prompts(&policy, &inputs.prompts, cfg.max_new_tokens)?;
    let eval = match &inputs.eval_prompts {
        Some(p) if cfg.eval_every > 0 => {
            let (t, i) = load_prompts(&policy, p, cfg.max_new_tokens)?;
            let n = cfg.eval_prompts.min(t.len());
            Some((t[..n].to_vec(), i[..n].to_vec()))
        }
        _ => None,
    };
    let tok = &policy.tokenizer;
    let pad_id = tok.pad_id().or(tok.eos_id()).map_or(0, i64::from);
    let rm_eos_id = tok.eos_id().map(i64::from).ok_or_else(|| {
        TrainError::Invalid("the policy's tokenizer has no EOS token for the reward model".into())
    })?;
    let rcfg = RolloutConfig {
        temperature: cfg.temperature,
        max_new_tokens: cfg.max_new_tokens,
        stop_ids: policy.eos_ids(),
        pad_id,
        rm_eos_id,
        score_scale,
        missing_eos_penalty: cfg.missing_eos_penalty,
    };
    let mut ptx = match (&inputs.ptx_data, cfg.ptx_coef > 0.0) {
        (Some(path), true) => {
            let stream = ptx_stream(tok, path)?;
            Some(CorpusWindows::new(
                Tensor::from_slice(&stream),
                cfg.ptx_batch as i64,
                cfg.ptx_seq_len,
                cfg.seed,
            )?)
        }
        (None, true) => {
            return Err(TrainError::Config(
                "ptx_coef > 0 needs a pretraining corpus (--ptx-data)".into(),
            ));
        }
        _ => None,
    };

    let mut opt = optimizer(&policy.model, &value, cfg)?;
    let mut kl = KlControl::new(
        cfg.kl_coef,
        (cfg.kl_target > 0.0).then_some(cfg.kl_target),
        cfg.kl_horizon,
    )?;
    let mut order = Epochs::new(prompt_ids.len(), cfg.rollout_batch, cfg.seed, 7);
    let mut log: Vec<IterationLog> = Vec::new();
    let mut start = 0u64;
    let config_json = serde_json::to_value(config::to_table(cfg)?)
        .map_err(|e| TrainError::Invalid(e.to_string()))?;

    if matches!(resume, Resume::No) && checkpoint::latest(out)?.is_some() {
        return Err(TrainError::checkpoint(
            out,
            "already holds PPO checkpoints; pass --resume to continue that run or choose a new \
             --out"
                .to_string(),
        ));
    }
    if let Resume::Latest | Resume::From(_) = resume {
        let dir = match &resume {
            Resume::From(d) => Some(d.clone()),
            _ => checkpoint::latest(out)?,
        };
        let dir = dir.ok_or_else(|| {
            TrainError::checkpoint(out, "no checkpoint to resume from".to_string())
        })?;
        let info = checkpoint::read_info(&dir)?;
        if info.stage != "ppo" {
            return Err(TrainError::checkpoint(
                &dir,
                format!("was written by '{}', not 'ppo'", info.stage),
            ));
        }
        checkpoint::load_gpt(&mut policy.model, &dir.join("policy"))?;
        checkpoint::load_gpt(&mut value, &dir.join("value"))?;
        let path = dir.join(OPTIMIZER_FILE);
        let state = Tensor::read_safetensors(&path).map_err(|e| {
            TrainError::checkpoint(&path, format!("cannot read optimizer state: {e}"))
        })?;
        opt.load_state(state, &path)?;
        let spath = dir.join(STATE_FILE);
        let text =
            std::fs::read_to_string(&spath).map_err(|e| TrainError::io("read", &spath, e))?;
        let st: PpoState = serde_json::from_str(&text)
            .map_err(|e| TrainError::checkpoint(&spath, e.to_string()))?;
        kl = st.kl.clone();
        log = st.log.clone();
        order.seek(&info.data_position);
        if let (Some(p), Some(pos)) = (ptx.as_mut(), &st.ptx_position) {
            p.seek(pos)?;
        }
        start = info.step;
    }

    let metrics_path = out.join("metrics.jsonl");
    rewrite_metrics(&metrics_path, &log)?;
    let bar = progress.then(|| {
        let style = ProgressStyle::with_template(
            "ppo {bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let b = ProgressBar::new(cfg.iterations).with_style(style);
        b.set_position(start);
        b.reset_eta();
        b
    });

    // Baseline responses for the win rate: the reference (SFT) policy, sampled once.
    let eval_base = match &eval {
        Some((texts, ids)) => {
            Some(eval_responses(&reference, tok, ids, &rcfg, cfg.seed)?).map(|r| (texts.clone(), r))
        }
        None => None,
    };
    let evaluate = |policy: &Pretrained, it: u64| -> Result<Metrics> {
        let (Some((texts, ids)), Some((_, base))) = (&eval, &eval_base) else {
            return Ok(Metrics::new());
        };
        let resp = eval_responses(&policy.model, &policy.tokenizer, ids, &rcfg, cfg.seed)?;
        let mut m = Metrics::new();
        let rm = |rs: &[String]| -> Result<Vec<f64>> {
            let seqs: Vec<Vec<i64>> = ids
                .iter()
                .zip(rs)
                .map(|(q, r)| crate::reward::encode_response(&policy.tokenizer, q, r))
                .collect::<Result<_>>()?;
            let _g = tch::no_grad_guard();
            let r = crate::reward::rewards(&reward, &seqs, pad_id)?.to_device(Device::Cpu);
            Ok(Vec::<f32>::try_from(&r)?
                .into_iter()
                .map(f64::from)
                .collect())
        };
        let (rm_a, rm_b) = (rm(&resp)?, rm(base)?);
        m.insert("eval/rm_score".into(), mean(&rm_a));
        m.insert("eval/rm_win_rate".into(), win_rate(&rm_a, &rm_b));
        let oracle = |rs: &[String]| -> Option<Vec<f64>> {
            texts
                .iter()
                .zip(rs)
                .map(|(p, r)| rlhf_data::score(p, r).ok())
                .collect()
        };
        if let (Some(a), Some(b)) = (oracle(&resp), oracle(base)) {
            m.insert("eval/oracle_score".into(), mean(&a));
            m.insert("eval/oracle_win_rate".into(), win_rate(&a, &b));
            m.insert("eval/baseline_oracle_score".into(), mean(&b));
        }
        m.insert("eval/iteration".into(), it as f64);
        Ok(m)
    };

    let mut last_eval = if start == 0 {
        evaluate(&policy, 0)?
    } else {
        Metrics::new()
    };
    let mut last_ckpt: Option<PathBuf> = None;
    for it in start..cfg.iterations {
        let t_it = Instant::now();
        let idx = order.next_indices();
        let batch_ids: Vec<Vec<i64>> = idx.iter().map(|&i| prompt_ids[i].clone()).collect();
        let models = Models {
            policy: &policy.model,
            reference: &reference,
            value: &value,
            reward: &reward,
        };
        let seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(it);
        let ro = rollout::rollout(&models, &batch_ids, &rcfg, seed)?;
        let t_rollout = t_it.elapsed().as_secs_f64();

        let mut m = Metrics::new();
        let (adv, ret, kl_mean) = advantages(&ro, cfg, kl.value())?;
        m.insert("kl".into(), kl_mean);
        m.insert("kl_coef".into(), kl.value());
        let upd = update(
            &mut policy.model,
            &value,
            &mut opt,
            &ro,
            &adv,
            &ret,
            cfg,
            ptx.as_mut(),
            it,
        )?;
        m.extend(upd);
        kl.update(kl_mean, cfg.rollout_batch as u64);
        let t_update = t_it.elapsed().as_secs_f64() - t_rollout;

        // Rollout statistics.
        let lens: Vec<f64> = ro.response_ids.iter().map(|r| r.len() as f64).collect();
        m.insert("rm_score".into(), mean(&ro.raw_scores));
        m.insert("score".into(), scalar(&ro.scores.mean(Kind::Float)));
        m.insert("response_len".into(), mean(&lens));
        m.insert(
            "eos_rate".into(),
            ro.ended.iter().filter(|&&e| e).count() as f64 / ro.ended.len() as f64,
        );
        let texts: Vec<String> = ro
            .response_ids
            .iter()
            .map(|r| {
                let ids: Vec<u32> = r.iter().map(|&i| i as u32).collect();
                policy.tokenizer.decode(&ids, true).unwrap_or_default()
            })
            .collect();
        let oracle: Option<Vec<f64>> = idx
            .iter()
            .zip(&texts)
            .map(|(&i, r)| rlhf_data::score(&prompt_texts[i], r).ok())
            .collect();
        if let Some(o) = oracle {
            m.insert("oracle_score".into(), mean(&o));
        }
        m.insert("time/rollout_s".into(), t_rollout);
        m.insert("time/update_s".into(), t_update);
        let done = it + 1;
        if cfg.eval_every > 0 && (done % cfg.eval_every == 0 || done == cfg.iterations) {
            last_eval = evaluate(&policy, done)?;
            m.extend(last_eval.clone());
            if let Some(b) = &bar {
                let parts: Vec<String> = last_eval
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.3}"))
                    .collect();
                b.println(format!("iteration {done}: {}", parts.join(", ")));
            }
        } else if done == 1 {
            // The start-of-run evaluation goes into the first line.
            m.extend(last_eval.clone());
        }
        m.insert("iteration".into(), done as f64);
        m.insert("time/iteration_s".into(), t_it.elapsed().as_secs_f64());
        append_metrics(&metrics_path, &m)?;
        if let Some(b) = &bar {
            b.set_position(done);
            b.set_message(format!(
                "rm {:+.3} kl {:.2} len {:.0}",
                m["rm_score"], m["kl"], m["response_len"]
            ));
        }
        log.push(m);

        if (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) || done == cfg.iterations
        {
            let pos = order.position();
            let info = CheckpointInfo {
                format_version: FORMAT_VERSION,
                stage: "ppo".into(),
                step: done,
                tokens_seen: 0,
                elapsed_s: t0.elapsed().as_secs_f64(),
                metrics: log.last().cloned().unwrap_or_default(),
                data_position: pos,
                config: config_json.clone(),
            };
            let state = PpoState {
                kl: kl.clone(),
                log: log.clone(),
                ptx_position: ptx.as_ref().map(|p| p.position()),
            };
            let path = checkpoint::write(out, &info, |tmp| {
                rlhf_model::checkpoint::save_tensors(&opt.state(), &tmp.join(OPTIMIZER_FILE))?;
                policy.model.save(&tmp.join("policy"))?;
                value.save(&tmp.join("value"))?;
                let json = serde_json::to_string(&state).expect("state serialises");
                let p = tmp.join(STATE_FILE);
                std::fs::write(&p, json).map_err(|e| TrainError::io("write", &p, e))
            })?;
            checkpoint::prune(out, cfg.keep_checkpoints)?;
            last_ckpt = Some(path);
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    let _ = last_eval;
    // The final policy is the run folder itself; the value model next to it.
    policy
        .tokenizer
        .save(out)
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    checkpoint::export(&policy.model, last_ckpt.as_deref(), out)?;
    value.save(&out.join("value"))?;
    Ok(PpoSummary {
        iterations: cfg.iterations,
        elapsed_s: t0.elapsed().as_secs_f64(),
        log,
        out: out.clone(),
    })
}

/// One AdamW over the policy's parameters and the value model's trainable ones (its scalar
/// head's bias is fixed), named `policy.*` and `value.*`.
pub fn optimizer(policy: &Gpt, value: &Gpt, cfg: &PpoConfig) -> Result<AdamW> {
    let mut params: Vec<(String, Tensor)> = Vec::new();
    for (n, t) in policy.vs.variables() {
        params.push((format!("policy.{n}"), t));
    }
    for (n, t) in value.vs.variables() {
        if t.requires_grad() {
            params.push((format!("value.{n}"), t));
        }
    }
    AdamW::new(
        params,
        AdamWConfig {
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: 0.0,
        },
    )
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// Share of items where `a` beats `b` (ties count half).
fn win_rate(a: &[f64], b: &[f64]) -> f64 {
    let w: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            if (x - y).abs() <= 1e-9 {
                0.5
            } else if x > y {
                1.0
            } else {
                0.0
            }
        })
        .sum();
    w / a.len().max(1) as f64
}

/// Sampled responses (text, stop token removed) of `gpt` to `prompts`, with a fixed seed.
fn eval_responses(
    gpt: &Gpt,
    tok: &Tokenizer,
    prompts: &[Vec<i64>],
    rcfg: &RolloutConfig,
    seed: u64,
) -> Result<Vec<String>> {
    let cfg = rlhf_model::GenerateConfig {
        max_new_tokens: rcfg.max_new_tokens,
        sampling: rlhf_model::Sampling::new(rcfg.temperature, None, None)?,
        seed: Some(seed ^ 0x5eed),
        eos_token_ids: rcfg.stop_ids.clone(),
        pad_token_id: rcfg.pad_id,
    };
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(64) {
        for g in rlhf_model::sample::generate(gpt, chunk, &cfg, |_, _| false)? {
            let ids: Vec<u32> = g
                .token_ids
                .iter()
                .filter(|t| !rcfg.stop_ids.contains(t))
                .map(|&i| i as u32)
                .collect();
            out.push(
                tok.decode(&ids, true)
                    .map_err(|e| TrainError::Invalid(e.to_string()))?,
            );
        }
    }
    Ok(out)
}

/// Per-token rewards (score at EOS − β·KL), GAE advantages (whitened) and returns; also the
/// mean summed KL per response. Refuses non-finite advantages before anything is updated.
pub fn advantages(ro: &Rollout, cfg: &PpoConfig, beta: f64) -> Result<(Tensor, Tensor, f64)> {
    let _g = tch::no_grad_guard();
    let (rewards, kl) = rl::rewards_with_kl(
        &ro.scores,
        &ro.logprobs,
        &ro.ref_logprobs,
        &ro.mask,
        beta,
        cfg.kl_estimator,
    )?;
    let kl_mean = scalar(&rl::masked_sum(&kl, &ro.mask)?) / ro.mask.size()[0] as f64;
    let (mut adv, ret) = rl::gae(&rewards, &ro.values, &ro.mask, cfg.gamma, cfg.lambda)?;
    if cfg.whiten_advantages {
        adv = rl::masked_whiten(&adv, &ro.mask, true)?;
    }
    let finite = adv.isfinite().all();
    if !bool::try_from(&finite).unwrap_or(false) {
        return Err(TrainError::Invalid(
            "the advantages contain NaN or inf (from the reward model's scores or the value \
             model); PPO stopped before updating, and the last checkpoint is untouched"
                .into(),
        ));
    }
    Ok((adv, ret, kl_mean))
}

/// `ppo_epochs` passes of clipped policy + value loss (+ ptx) over shuffled minibatches.
#[allow(clippy::too_many_arguments)]
pub fn update(
    policy: &mut Gpt,
    value: &Gpt,
    opt: &mut AdamW,
    ro: &Rollout,
    adv: &Tensor,
    ret: &Tensor,
    cfg: &PpoConfig,
    mut ptx: Option<&mut CorpusWindows>,
    it: u64,
) -> Result<Metrics> {
    let b = ro.seqs.size()[0] as usize;
    let mb = b / cfg.minibatches;
    let device = ro.seqs.device();
    let mut rng = DataRng::new(cfg.seed.wrapping_add(it), 11);
    let (mut n, mut pg, mut vf, mut clipfrac, mut vclip, mut akl, mut ent, mut ptx_loss, mut gn) =
        (0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    let p = ro.prompt_len;
    let r = ro.responses.size()[1];
    for _ in 0..cfg.ppo_epochs {
        let perm = rng.permutation(b);
        for chunk in perm.chunks(mb) {
            let idx: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
            let idx = Tensor::from_slice(&idx).to_device(device);
            let (seqs, att, resp, mask) = (
                rows(&ro.seqs, &idx),
                rows(&ro.attention, &idx),
                rows(&ro.responses, &idx),
                rows(&ro.mask, &idx),
            );
            opt.zero_grad();
            let (logp, logits) =
                rollout::response_logprobs(policy, &seqs, &att, &resp, p, cfg.temperature)?;
            let pl = rl::policy_loss(
                &logp,
                &rows(&ro.logprobs, &idx),
                &rows(adv, &idx),
                &mask,
                cfg.clip,
            )?;
            let v = rollout::response_values(value, &seqs, &att, p, r)?;
            let vl = rl::value_loss(
                &v,
                &rows(&ro.values, &idx),
                &rows(ret, &idx),
                &mask,
                cfg.value_clip,
            )?;
            let mut loss = &pl.loss + cfg.vf_coef * &vl.loss;
            if let Some(src) = ptx.as_deref_mut() {
                let ids = src
                    .next_batch()?
                    .expect("corpus windows never end")
                    .to_device(device);
                let l = lm_loss(policy, &ids)?;
                ptx_loss += scalar(&l);
                loss += cfg.ptx_coef * l;
            }
            let lv = scalar(&loss);
            if !lv.is_finite() {
                return Err(TrainError::NonFinite {
                    step: it + 1,
                    what: "the PPO loss",
                    value: lv,
                    last_checkpoint: None,
                });
            }
            loss.backward();
            let mut grad = opt.gradients(1.0)?;
            let norm = scalar(&clip_grad_norm(&mut grad, cfg.grad_clip)?);
            if !norm.is_finite() {
                return Err(TrainError::NonFinite {
                    step: it + 1,
                    what: "the gradient norm",
                    value: norm,
                    last_checkpoint: None,
                });
            }
            opt.step(&grad, cfg.lr)?;
            tch::no_grad(|| -> Result<()> {
                let e = rl::entropy_from_logits(&(logits.detach() / cfg.temperature))?;
                ent += scalar(&rl::masked_mean(&e, &mask)?);
                Ok(())
            })?;
            n += 1.0;
            pg += scalar(&pl.loss);
            vf += scalar(&vl.loss);
            clipfrac += pl.clip_fraction;
            vclip += vl.clip_fraction;
            akl += pl.approx_kl;
            gn += norm;
        }
    }
    let mut m = Metrics::from([
        ("policy_loss".to_string(), pg / n),
        ("value_loss".to_string(), vf / n),
        ("clip_fraction".to_string(), clipfrac / n),
        ("value_clip_fraction".to_string(), vclip / n),
        ("approx_kl".to_string(), akl / n),
        ("entropy".to_string(), ent / n),
        ("grad_norm".to_string(), gn / n),
    ]);
    if ptx.is_some() {
        m.insert("ptx_loss".into(), ptx_loss / n);
    }
    Ok(m)
}

/// Rewrites `metrics.jsonl` with the resumed log (drops lines of iterations after the checkpoint).
fn rewrite_metrics(path: &Path, log: &[IterationLog]) -> Result<()> {
    let mut text = String::new();
    for m in log {
        text.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| TrainError::io("write", path, e))
}

fn append_metrics(path: &Path, m: &IterationLog) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| TrainError::io("open", path, e))?;
    writeln!(
        f,
        "{}",
        serde_json::to_string(m).expect("metrics serialise")
    )
    .map_err(|e| TrainError::io("write", path, e))
}
