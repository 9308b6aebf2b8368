//! A model (A) against a baseline (B) on a prompt set, as one typed result: each model answers
//! every prompt once (chat format, same seed and temperature), a judge decides each pair, and
//! [`Comparison`] holds A's win rate (ties count half), each side's mean score, the KL of A from
//! B on A's responses and the lengths, with percentile-bootstrap intervals over prompts.
//! `rlhf eval`, the demo, PPO's in-loop evaluation and the experiments all produce this type.
//!
//! Not here: the judges (`judge.rs`), the files a comparison is written to (`report.rs`), the
//! statistics themselves (`rlhf-report`).

use rlhf_model::{Pretrained, PromptFormat, Sampling, TextGenerateConfig, sequence_logprobs};
use rlhf_report::{Interval, bootstrap_mean_ci};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::judge::{Judge, Verdicts};
use crate::progress::Observer;

/// Confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// How the two models answer and how the intervals are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompareConfig {
    /// Sampling temperature of both models; 0 is greedy. 1.0: the models' own distributions.
    pub temperature: f64,
    /// Longest response. 64: twice a clean task-world answer.
    pub max_new_tokens: usize,
    /// Seeds both models' sampling (the same seed: a model against itself gives identical
    /// responses) and the bootstrap. 0.
    pub seed: u64,
    /// Bootstrap resamples per interval. 1000.
    pub bootstrap: usize,
    /// Sequences generated or scored together. 32.
    pub rows: usize,
    /// Responses each model gives to every prompt. 1. With more, a prompt's outcome is the mean
    /// over its samples and the intervals resample prompts (not samples), so they narrow as the
    /// within-prompt noise averages out, without pretending the samples are independent prompts.
    pub samples: usize,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            max_new_tokens: 64,
            seed: 0,
            bootstrap: 1000,
            rows: 32,
            samples: 1,
        }
    }
}

impl CompareConfig {
    pub fn validate(&self) -> Result<()> {
        Sampling::new(self.temperature, None, None)?;
        if self.max_new_tokens == 0 {
            return Err(EvalError::Invalid(
                "max_new_tokens must be at least 1".into(),
            ));
        }
        if self.bootstrap == 0 || self.rows == 0 || self.samples == 0 {
            return Err(EvalError::Invalid(
                "bootstrap, rows and samples must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn generate_config(&self) -> Result<TextGenerateConfig> {
        Ok(TextGenerateConfig {
            max_new_tokens: self.max_new_tokens,
            sampling: Sampling::new(self.temperature, None, None)?,
            seed: Some(self.seed),
            stop: vec![],
        })
    }
}

/// One model's response to one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Decoded and trimmed.
    pub text: String,
    /// Sampled token ids (EOS included when it ended the response).
    pub ids: Vec<i64>,
}

/// One response per prompt in chat format, `cfg.rows` sequences at a time, with the same seed
/// for any model (so a model against itself answers identically).
pub fn sample_responses(
    pre: &Pretrained,
    prompts: &[String],
    cfg: &CompareConfig,
    obs: &mut dyn Observer,
) -> Result<Vec<Response>> {
    let gens = pre.sample_k(
        prompts,
        1,
        PromptFormat::Chat,
        &cfg.generate_config()?,
        cfg.rows,
        |d, _| obs.advance(d as u64),
    )?;
    gens.into_iter()
        .map(|mut g| {
            let g = g
                .pop()
                .ok_or_else(|| EvalError::Invalid("the sampler returned no response".into()))?;
            Ok(Response {
                text: g.text.trim().to_string(),
                ids: g.generation.token_ids,
            })
        })
        .collect()
}

/// Σ_t log p(y_t | prompt, y_<t) of each prompt's response under `pre` at `temperature`, the
/// prompt encoded with `pre`'s own chat template.
pub fn response_logprobs(
    pre: &Pretrained,
    prompts: &[String],
    responses: &[Response],
    temperature: f64,
    rows: usize,
) -> Result<Vec<f64>> {
    let encoded = prompts
        .iter()
        .map(|p| pre.encode_prompt(p, PromptFormat::Chat))
        .collect::<rlhf_model::Result<Vec<_>>>()?;
    let ids: Vec<&[i64]> = responses.iter().map(|r| r.ids.as_slice()).collect();
    let scores = sequence_logprobs(&pre.model, &encoded, &ids, pre.pad_id(), temperature, rows)?;
    Ok(scores.into_iter().map(|s| s.sum).collect())
}

/// Per prompt, Σ_t [log p_A(y_t) − log p_B(y_t)] over A's response y: a one-sample estimate of
/// KL(A‖B) in nats per sequence (the estimator PPO's KL penalty sums per token).
pub fn kl_per_prompt(
    a: &Pretrained,
    b: &Pretrained,
    prompts: &[String],
    responses: &[Response],
    temperature: f64,
    rows: usize,
) -> Result<Vec<f64>> {
    let la = response_logprobs(a, prompts, responses, temperature, rows)?;
    let lb = response_logprobs(b, prompts, responses, temperature, rows)?;
    Ok(la.iter().zip(&lb).map(|(x, y)| x - y).collect())
}

/// One prompt of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub prompt: String,
    pub response_a: String,
    pub response_b: String,
    pub score_a: Option<f64>,
    pub score_b: Option<f64>,
    /// 1: A better, 0.5: tie, 0: B better.
    pub outcome: f64,
    pub kl: Option<f64>,
    pub tokens_a: Option<usize>,
    pub tokens_b: Option<usize>,
}

/// A against B on a prompt set: what every evaluation reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The judge's name ("oracle", "reward model", "LLM judge").
    pub judge: String,
    pub n: usize,
    /// A's win rate, ties counting half, with its interval.
    pub win_rate: Interval,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// Mean scores, for judges that score.
    pub score_a: Option<Interval>,
    pub score_b: Option<Interval>,
    /// KL(A‖B) in nats per sequence, and per token of A's responses, when measured.
    pub kl: Option<Interval>,
    pub kl_per_token: Option<f64>,
    /// Mean response lengths in tokens, when the token ids are known.
    pub length_a: Option<f64>,
    pub length_b: Option<f64>,
    /// LLM answers that named neither response (counted as ties).
    pub unparsed: usize,
    /// Resamples and confidence level of the intervals.
    pub bootstrap_resamples: usize,
    pub confidence: f64,
    /// Samples per prompt: `items` holds that many consecutive items per prompt, and the
    /// intervals resample prompts.
    pub samples_per_prompt: usize,
    #[serde(skip)]
    pub items: Vec<Item>,
}

/// What [`summarize`] needs besides the verdicts.
#[derive(Debug, Clone, Copy)]
pub struct Paired<'a> {
    pub prompts: &'a [String],
    pub a: &'a [String],
    pub b: &'a [String],
    /// Per prompt KL(A‖B), when measured.
    pub kl: Option<&'a [f64]>,
    /// Per prompt token counts of A's and B's responses, when known.
    pub tokens: Option<(&'a [usize], &'a [usize])>,
}

/// The comparison's numbers from paired responses and a judge's verdicts; intervals are
/// percentile-bootstrap intervals over prompts (`resamples`, seeded by `seed`).
pub fn summarize(
    judge: &str,
    p: Paired<'_>,
    v: &Verdicts,
    resamples: usize,
    seed: u64,
) -> Comparison {
    summarize_grouped(judge, p, v, resamples, seed, 1)
}

/// [`summarize`] for `per_prompt` consecutive items per prompt (several samples of each): the
/// intervals resample prompts, each represented by the mean of its items; the counts, means
/// and items cover every sample.
pub fn summarize_grouped(
    judge: &str,
    p: Paired<'_>,
    v: &Verdicts,
    resamples: usize,
    seed: u64,
    per_prompt: usize,
) -> Comparison {
    let per_prompt = per_prompt.max(1);
    let ci = |x: &[f64]| {
        let means: Vec<f64> = x
            .chunks(per_prompt)
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect();
        bootstrap_mean_ci(&means, resamples, LEVEL, seed)
    };
    let count = |o: f64| v.outcomes.iter().filter(|&&x| x == o).count();
    let n = v.outcomes.len();
    let (wins, losses) = (count(1.0), count(0.0));
    let mean_len = |t: &[usize]| t.iter().sum::<usize>() as f64 / n.max(1) as f64;
    let items = (0..n)
        .map(|i| Item {
            prompt: p.prompts[i].clone(),
            response_a: p.a[i].clone(),
            response_b: p.b[i].clone(),
            score_a: v.scores.as_ref().map(|(a, _)| a[i]),
            score_b: v.scores.as_ref().map(|(_, b)| b[i]),
            outcome: v.outcomes[i],
            kl: p.kl.map(|k| k[i]),
            tokens_a: p.tokens.map(|(a, _)| a[i]),
            tokens_b: p.tokens.map(|(_, b)| b[i]),
        })
        .collect();
    Comparison {
        judge: judge.to_string(),
        n,
        win_rate: ci(&v.outcomes),
        wins,
        ties: n - wins - losses,
        losses,
        score_a: v.scores.as_ref().map(|(a, _)| ci(a)),
        score_b: v.scores.as_ref().map(|(_, b)| ci(b)),
        kl: p.kl.map(ci),
        kl_per_token: match (p.kl, p.tokens) {
            (Some(k), Some((ta, _))) => {
                Some(k.iter().sum::<f64>() / ta.iter().sum::<usize>().max(1) as f64)
            }
            _ => None,
        },
        length_a: p.tokens.map(|(a, _)| mean_len(a)),
        length_b: p.tokens.map(|(_, b)| mean_len(b)),
        unparsed: v.unparsed,
        bootstrap_resamples: resamples,
        confidence: LEVEL,
        samples_per_prompt: per_prompt,
        items,
    }
}

/// A's and B's responses already in hand (e.g. PPO's held-out samples), judged: no KL, no
/// token lengths.
pub fn compare_responses(
    judge: &Judge,
    prompts: &[String],
    a: &[String],
    b: &[String],
    resamples: usize,
    seed: u64,
) -> Result<Comparison> {
    let v = judge.verdicts(prompts, a, b, |_| {})?;
    let paired = Paired {
        prompts,
        a,
        b,
        kl: None,
        tokens: None,
    };
    Ok(summarize(judge.name(), paired, &v, resamples, seed))
}

/// The whole comparison in memory: A and B each answer every prompt, A's KL from B is measured
/// on A's responses, the judge decides. A and B must share a tokenizer (the KL compares their
/// log-probs of the same ids).
pub fn compare_models(
    a: &Pretrained,
    b: &Pretrained,
    prompts: &[String],
    judge: &Judge,
    cfg: &CompareConfig,
    obs: &mut dyn Observer,
) -> Result<Comparison> {
    cfg.validate()?;
    if prompts.is_empty() {
        return Err(EvalError::Invalid("no prompts to compare on".into()));
    }
    if !a.tokenizer.same_as(&b.tokenizer) || a.model.cfg.vocab_size != b.model.cfg.vocab_size {
        return Err(EvalError::Invalid(
            "the model and the baseline use different tokenizers: a comparison needs both to \
             share one (e.g. a PPO policy and its SFT model)"
                .into(),
        ));
    }
    judge.check(prompts)?;
    // Each prompt `samples` times in a row: different samples of both models, judged in pairs.
    let repeated: Vec<String> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), cfg.samples))
        .collect();
    let prompts = &repeated[..];
    obs.phase("sampling A", prompts.len() as u64);
    let ra = sample_responses(a, prompts, cfg, obs)?;
    obs.phase("sampling B", prompts.len() as u64);
    let rb = sample_responses(b, prompts, cfg, obs)?;
    // At temperature 0 (greedy) the log-probabilities are taken at temperature 1.
    let temperature = Sampling::new(cfg.temperature, None, None)?.temperature();
    let kl = kl_per_prompt(a, b, prompts, &ra, temperature, cfg.rows)?;
    let (ta, tb): (Vec<String>, Vec<String>) = ra
        .iter()
        .zip(&rb)
        .map(|(x, y)| (x.text.clone(), y.text.clone()))
        .unzip();
    obs.phase("judging", prompts.len() as u64);
    let v = judge.verdicts(prompts, &ta, &tb, |d| obs.advance(d as u64))?;
    if v.unparsed > 0 {
        obs.note(&format!(
            "warning: {} judge answers were neither A nor B (counted as ties)",
            v.unparsed
        ));
    }
    let (na, nb): (Vec<usize>, Vec<usize>) = ra
        .iter()
        .zip(&rb)
        .map(|(x, y)| (x.ids.len(), y.ids.len()))
        .unzip();
    let paired = Paired {
        prompts,
        a: &ta,
        b: &tb,
        kl: Some(&kl),
        tokens: Some((&na, &nb)),
    };
    Ok(summarize_grouped(
        judge.name(),
        paired,
        &v,
        cfg.bootstrap,
        cfg.seed,
        cfg.samples,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples per prompt: the counts cover every sample, the interval resamples the two
    /// prompts' means (0.5 and 1.0), so its bounds can only be those means.
    #[test]
    fn grouped_summaries_resample_prompts_not_samples() {
        let prompts: Vec<String> = ["p", "p", "q", "q"].map(String::from).to_vec();
        let texts: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let v = Verdicts {
            scores: Some((vec![1.0, 0.0, 1.0, 1.0], vec![0.0, 1.0, 0.0, 0.0])),
            outcomes: vec![1.0, 0.0, 1.0, 1.0],
            unparsed: 0,
        };
        let paired = Paired {
            prompts: &prompts,
            a: &texts,
            b: &texts,
            kl: None,
            tokens: None,
        };
        let c = summarize_grouped("oracle", paired, &v, 500, 0, 2);
        assert_eq!((c.n, c.wins, c.losses, c.ties), (4, 3, 1, 0));
        assert_eq!(c.samples_per_prompt, 2);
        assert!((c.win_rate.mean - 0.75).abs() < 1e-12);
        assert_eq!((c.win_rate.lo, c.win_rate.hi), (0.5, 1.0));
        // Treated as four independent items the same outcomes give another interval.
        let flat = summarize("oracle", paired, &v, 500, 0);
        assert!(flat.win_rate.lo < 0.5, "{:?}", flat.win_rate);
        assert_eq!(flat.samples_per_prompt, 1);
    }
}
