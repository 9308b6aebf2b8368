//! Rollouts from an external inference engine: PPO samples its responses from any
//! OpenAI-compatible server (`--rollout-engine openai:URL`: vLLM, SGLang, `rlhf serve`), then
//! scores and trains locally, with the log-probs recomputed by the trainer (`rollout::score`).
//!
//! The policy reaches the server as a LoRA adapter through vLLM's runtime adapter API
//! (`POST /v1/load_lora_adapter`, `rlhf serve --dynamic-adapters`): after an update the trainer
//! writes the adapter into the run folder, the server loads it under a new name, later requests
//! name it, and the previous one is unloaded. The server reads the adapter from the path the
//! trainer sends, so both must see the same filesystem. How far the served policy may lag the
//! trained one is a setting (`rollout_staleness`, in updates): 0 hands every update over before
//! the next rollout; k lets the server sample from a policy up to k updates old, the lag that
//! asynchronous RL systems accept to keep the engine busy.
//!
//! Exact tokens: requests ask for `return_tokens_as_token_ids` (a vLLM extension `rlhf serve`
//! also speaks), so the trainer scores the very ids that were sampled rather than a re-encoding
//! of the text; a server that does not return ids is refused with that reason. A response that
//! ended with `finish_reason: "stop"` gets the policy's first stop token appended (servers do
//! not report it), so that, as with local rollouts, the policy learns to end.

use std::path::{Path, PathBuf};

use rlhf_client::{Client, CompletionRequest, Endpoint, Prompt};
use rlhf_model::Gpt;
use rlhf_model::sample::{Finish, Generation};

use crate::error::{Result, TrainError};

/// Choices per completions request: a server caps the choices one request may ask for
/// (`rlhf serve --max-choices`, 16 by default).
const CHOICES_PER_REQUEST: usize = 16;

/// An OpenAI-compatible server that samples the rollouts.
pub struct RolloutEngine {
    endpoint: Endpoint,
    client: Client,
    /// The server's name for the base model (the SFT checkpoint the adapters apply to).
    base: String,
    /// The name requests use now: the base, or the adapter last handed over.
    served: String,
    /// The policy version (updates) the server samples from, once known.
    version: Option<u64>,
    /// Where handed-over adapters are written (`<run>/rollout-adapters/`).
    dir: PathBuf,
    /// A prefix unique to this run, so that two runs on one server do not collide.
    prefix: String,
}

impl RolloutEngine {
    /// The engine a run asks for (`--rollout-engine SPEC`), if any, refusing what it cannot
    /// serve: a full-weight policy (`lora` off), or a data-parallel launch.
    pub fn for_run(spec: Option<&str>, lora: bool, run_dir: &Path) -> Result<Option<Self>> {
        let Some(spec) = spec else {
            return Ok(None);
        };
        if rlhf_model::dist::group().is_some() {
            return Err(TrainError::Config(
                "--rollout-engine does not run data-parallel yet (each rank would hand its own \
                 copy of the policy to the server); run one process"
                    .into(),
            ));
        }
        if !lora {
            return Err(TrainError::Config(
                "--rollout-engine hands the policy to the server as a LoRA adapter (POST \
                 /v1/load_lora_adapter); train the policy with --lora"
                    .into(),
            ));
        }
        Self::connect(spec, run_dir).map(Some)
    }

    /// Connects to `spec` (`openai:URL`); the base model is the endpoint's model or the first
    /// the server lists. Adapters will be written under `run_dir/rollout-adapters`.
    pub fn connect(spec: &str, run_dir: &Path) -> Result<Self> {
        let endpoint = Endpoint::parse(spec)
            .map_err(|e| TrainError::Config(format!("--rollout-engine: {e}")))?;
        let llm = endpoint.connect().map_err(|e| {
            TrainError::Invalid(format!(
                "--rollout-engine {endpoint}: cannot list the server's models ({e}); is it \
                 running?"
            ))
        })?;
        let base = llm.model().to_string();
        let dir = std::path::absolute(run_dir.join("rollout-adapters"))
            .map_err(|e| TrainError::io("resolve", run_dir, e))?;
        let prefix = format!("rlhf-ppo-{:08x}", rand::random::<u32>());
        Ok(Self {
            client: endpoint.client(),
            endpoint,
            served: base.clone(),
            base,
            version: None,
            dir,
            prefix,
        })
    }

    /// The model name requests use now.
    pub fn served(&self) -> &str {
        &self.served
    }

    /// The policy version the server samples from (updates since the start of the run).
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Whether the server must get the policy of `version` before the next rollout: it has
    /// none yet, or its lags by more than `staleness` updates.
    pub fn due(&self, version: u64, staleness: u64) -> bool {
        self.version
            .is_none_or(|v| version.saturating_sub(v) > staleness)
    }

    /// Hands `policy` (a model with a LoRA adapter) of `version` to the server: writes the
    /// adapter, loads it under a fresh name, and unloads the one before.
    pub fn hand_over(&mut self, policy: &Gpt, version: u64) -> Result<()> {
        if policy.adapter().is_none() {
            return Err(TrainError::Config(
                "--rollout-engine hands the policy to the server as a LoRA adapter (POST \
                 /v1/load_lora_adapter); train the policy with --lora"
                    .into(),
            ));
        }
        let name = format!("{}-v{version}", self.prefix);
        let path = self.dir.join(format!("v{version:06}"));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| TrainError::io("remove", &path, e))?;
        }
        policy.save(&path)?;
        let text = path.to_string_lossy().into_owned();
        self.client.load_lora_adapter(&name, &text).map_err(|e| {
            TrainError::Invalid(format!(
                "--rollout-engine {}: the server did not load the policy's adapter from {text} \
                 ({e}); it needs runtime adapters (`rlhf serve --dynamic-adapters`, or vLLM with \
                 --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) and must see this path",
                self.endpoint
            ))
        })?;
        let old = std::mem::replace(&mut self.served, name);
        if old != self.base {
            self.client.unload_lora_adapter(&old)?;
            if let Some(v) = old.rsplit_once("-v").map(|(_, v)| v) {
                let stale = self.dir.join(format!("v{:0>6}", v));
                let _ = std::fs::remove_dir_all(stale);
            }
        }
        self.version = Some(version);
        Ok(())
    }

    /// `n` responses per prompt (prompt-major: prompt 0's n, then prompt 1's, ...), sampled by
    /// the server at `temperature` with at most `max_new_tokens`; `stop_id` is appended to
    /// responses that ended by a stop.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        prompts: &[Vec<i64>],
        n: usize,
        temperature: f64,
        max_new_tokens: usize,
        stop_id: i64,
        seed: u64,
    ) -> Result<Vec<Generation>> {
        // Requests of whole prompts × n choices, at most CHOICES_PER_REQUEST each; a prompt
        // whose n alone is more goes in several requests (each its own seed).
        let mut requests: Vec<(Vec<usize>, usize)> = Vec::new();
        if n > CHOICES_PER_REQUEST {
            for p in 0..prompts.len() {
                let mut left = n;
                while left > 0 {
                    let k = left.min(CHOICES_PER_REQUEST);
                    requests.push((vec![p], k));
                    left -= k;
                }
            }
        } else {
            let per = (CHOICES_PER_REQUEST / n.max(1)).max(1);
            let all: Vec<usize> = (0..prompts.len()).collect();
            requests.extend(all.chunks(per).map(|c| (c.to_vec(), n)));
        }
        let mut out = Vec::with_capacity(prompts.len() * n);
        for (c, (chunk, k)) in requests.iter().enumerate() {
            let ids: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&p| prompts[p].iter().map(|&t| t as u32).collect())
                .collect();
            let req = CompletionRequest {
                model: self.served.clone(),
                prompt: Prompt::TokenLists(ids),
                max_tokens: Some(max_new_tokens as u32),
                temperature: Some(temperature),
                n: Some(*k as u32),
                seed: Some(seed.wrapping_add(c as u64) as i64 & i64::MAX),
                logprobs: Some(0),
                return_tokens_as_token_ids: Some(true),
                ..Default::default()
            };
            let resp = self.client.completion(&req)?;
            let mut choices = resp.choices;
            // OpenAI numbers the choices prompt-major: prompt i's j-th is i·n + j.
            choices.sort_by_key(|ch| ch.index);
            if choices.len() != chunk.len() * k {
                return Err(self.bad(format!(
                    "{} choices for {} prompts × n = {k}",
                    choices.len(),
                    chunk.len()
                )));
            }
            for ch in choices {
                let lp = ch.logprobs.ok_or_else(|| self.bad("no logprobs".into()))?;
                let token_ids = lp
                    .tokens
                    .iter()
                    .map(|t| {
                        t.strip_prefix("token_id:")
                            .and_then(|id| id.parse::<i64>().ok())
                            .ok_or_else(|| {
                                self.bad(format!(
                                    "token {t:?} is not `token_id:ID` (the server ignored \
                                     return_tokens_as_token_ids)"
                                ))
                            })
                    })
                    .collect::<Result<Vec<i64>>>()?;
                let mut logprobs: Vec<f32> = lp
                    .token_logprobs
                    .iter()
                    .map(|l| l.unwrap_or(f64::NAN) as f32)
                    .collect();
                logprobs.truncate(token_ids.len());
                let (mut token_ids, finish) = match ch.finish_reason.as_deref() {
                    Some("stop") => (token_ids, Finish::Eos),
                    Some("length") => (token_ids, Finish::Length),
                    other => {
                        return Err(self.bad(format!("finish_reason {other:?}")));
                    }
                };
                if finish == Finish::Eos {
                    token_ids.push(stop_id);
                }
                if token_ids.is_empty() {
                    // A response cut at zero tokens: nothing to train on; count it as a
                    // stop so that it is scored like an immediate end.
                    token_ids.push(stop_id);
                }
                out.push(Generation {
                    token_ids,
                    logprobs,
                    finish,
                });
            }
        }
        Ok(out)
    }

    fn bad(&self, what: String) -> TrainError {
        TrainError::Invalid(format!(
            "--rollout-engine {}: unexpected completions reply from model {}: {what}",
            self.endpoint, self.served
        ))
    }
}
