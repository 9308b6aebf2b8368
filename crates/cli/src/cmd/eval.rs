//! `rlhf eval`: model A against baseline B on a prompt set. Each model answers every prompt once
//! (chat format, same seed and temperature); a judge (the oracle, a reward model, or an LLM behind
//! an OpenAI-compatible server) decides each pair; the report gives A's win rate, each model's
//! mean score, the KL of A from B on A's samples, and response lengths, with 95% bootstrap
//! intervals over prompts.
//!
//! Not here: the statistics, plots and tables (`rlhf-report`), the models and the RM maths
//! (`rlhf-model`, `rlhf-train`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rlhf_data::{PromptRecord, read_jsonl, write_jsonl, write_text};
use rlhf_model::{Batch, Gpt, Head, Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use rlhf_report::{
    Interval, ScatterChart, ScatterSeries, bootstrap_mean_ci, fmt_interval, md_table, win_rate,
};
use rlhf_train::reward::{encode_response, rewards};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

/// Confidence level of every interval in the report.
const LEVEL: f64 = 0.95;

/// Compare a model (A) with a baseline (B): one sampled response per prompt from each, judged
/// pairwise. The win rate counts ties as half a win; intervals are 95% percentile-bootstrap
/// intervals over prompts. KL(A‖B) is Σ_t [log p_A(y_t) − log p_B(y_t)] over A's sampled tokens,
/// in nats per sequence, averaged over prompts (at --temperature; at 0, greedy, the
/// log-probabilities are taken at temperature 1). Both models sample with the same seed, so a
/// model against itself gives identical responses. A, B (and an rm: judge) share a tokenizer.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory of the model under evaluation (A).
    #[arg(long)]
    model: PathBuf,
    /// Checkpoint directory of the baseline (B), e.g. the SFT model A was trained from.
    #[arg(long)]
    baseline: PathBuf,
    /// JSONL of {"prompt": ...} records (extra fields are ignored), e.g. the task world's
    /// eval.jsonl.
    #[arg(long)]
    prompts: PathBuf,
    /// Judge: `oracle` (the task world's scorer), `rm:DIR` (a reward model from `rlhf reward`),
    /// or `openai:URL` (an LLM behind an OpenAI-compatible server, POST URL/v1/chat/completions,
    /// asked twice per prompt with the order swapped; OPENAI_API_KEY is sent if set).
    #[arg(long, value_parser = parse_judge)]
    judge: Judge,
    /// Model name sent to an openai: judge.
    #[arg(long, default_value = "judge")]
    judge_model: String,
    /// Seconds before a request to an openai: judge fails.
    #[arg(long, default_value_t = 120)]
    judge_timeout: u64,
    /// Retries of a failed judge request (no connection, 408/409/429/5xx), with exponential
    /// backoff from 0.5 s.
    #[arg(long, default_value_t = 3)]
    judge_retries: u32,
    /// Write eval.json, responses.jsonl, report.md and scores.svg/.png into this directory
    /// [default: print the summary only].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use only the first N prompts [default: all].
    #[arg(long)]
    n: Option<usize>,
    /// Sampling temperature of both models; 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Maximum new tokens per response.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Random seed (sampling and bootstrap).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Sequences generated or scored together.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

/// Who decides which response is better.
#[derive(Debug, Clone)]
pub enum Judge {
    Oracle,
    RewardModel(PathBuf),
    /// Base URL of an OpenAI-compatible server.
    OpenAi(String),
}

impl std::fmt::Display for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Judge::Oracle => write!(f, "oracle"),
            Judge::RewardModel(dir) => write!(f, "rm:{}", dir.display()),
            Judge::OpenAi(url) => write!(f, "openai:{url}"),
        }
    }
}

fn parse_judge(s: &str) -> std::result::Result<Judge, String> {
    if s == "oracle" {
        return Ok(Judge::Oracle);
    }
    if let Some(dir) = s.strip_prefix("rm:").filter(|d| !d.is_empty()) {
        return Ok(Judge::RewardModel(dir.into()));
    }
    if let Some(url) = s.strip_prefix("openai:") {
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Judge::OpenAi(url.trim_end_matches('/').to_string()));
        }
        return Err(format!(
            "openai:URL needs an http:// or https:// URL, got {url:?}"
        ));
    }
    Err(format!("expected oracle, rm:DIR or openai:URL, got {s:?}"))
}

/// One model's response to one prompt.
struct Response {
    text: String,
    /// Sampled token ids (EOS included when it ended the response).
    ids: Vec<i64>,
}

/// The judge's verdicts: scalar scores per model (oracle, RM) or only pairwise outcomes (LLM).
struct Verdicts {
    scores: Option<(Vec<f64>, Vec<f64>)>,
    outcomes: Vec<f64>,
    /// LLM answers that were neither A nor B (each counted as half a win).
    unparsed: usize,
}

pub fn run(args: Args, device: Device) -> Result<()> {
    let sampling = Sampling::new(args.temperature, None, None)?;
    ensure!(
        args.max_new_tokens >= 1,
        "--max-new-tokens must be at least 1"
    );
    if let Judge::RewardModel(dir) = &args.judge {
        ensure!(
            dir.is_dir(),
            "--judge rm:{}: no such reward-model directory (train one with `rlhf reward`)",
            dir.display()
        );
    }
    let mut records: Vec<PromptRecord> = read_jsonl(&args.prompts)?;
    records.truncate(args.n.unwrap_or(records.len()));
    ensure!(
        !records.is_empty(),
        "{}: no prompts",
        args.prompts.display()
    );
    let prompts: Vec<String> = records.into_iter().map(|r| r.prompt).collect();
    if let Judge::Oracle = args.judge {
        // Fail before sampling, not after: the oracle knows only task-world prompts.
        for (i, p) in prompts.iter().enumerate() {
            rlhf_data::Task::parse(p)
                .with_context(|| format!("{}: prompt {}", args.prompts.display(), i + 1))?;
        }
    }

    let load = |dir: &Path, flag: &str| {
        Pretrained::load(dir, Head::Lm, device)
            .with_context(|| format!("cannot load {flag} {}", dir.display()))
    };
    let (a, b) = (
        load(&args.model, "--model")?,
        load(&args.baseline, "--baseline")?,
    );
    same_vocabulary(&a, &args.model, &b, &args.baseline)?;

    let cfg = TextGenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: Some(args.seed),
        stop: vec![],
    };
    let ra = generate(&a, &prompts, &cfg, args.batch_size, "A")?;
    let rb = generate(&b, &prompts, &cfg, args.batch_size, "B")?;
    let kl = kl_per_prompt(
        &a,
        &b,
        &prompts,
        &ra,
        sampling.temperature(),
        args.batch_size,
    )?;
    drop(b);

    let verdicts = match &args.judge {
        Judge::Oracle => {
            scalar_verdicts(oracle_scores(&prompts, &ra)?, oracle_scores(&prompts, &rb)?)
        }
        Judge::RewardModel(dir) => {
            let (sa, sb) = rm_scores(dir, &args.model, &a, &prompts, (&ra, &rb), args.batch_size)?;
            scalar_verdicts(sa, sb)
        }
        Judge::OpenAi(url) => llm_verdicts(&args, url, &prompts, &ra, &rb)?,
    };
    let summary = summarize(&args, &verdicts, &kl, (&ra, &rb));
    eprint!("{}", summary_text(&args, &summary));
    if let Some(out) = &args.out {
        write_outputs(out, &args, &summary, &verdicts, (&prompts, &ra, &rb), &kl)?;
        let plot = if verdicts.scores.is_some() {
            ", scores.svg, scores.png"
        } else {
            ""
        };
        eprintln!(
            "wrote {}/{{eval.json, responses.jsonl, report.md{plot}}}",
            out.display()
        );
    }
    Ok(())
}

/// A and B must read the same token ids the same way, or the KL (and the comparison) is
/// meaningless.
fn same_vocabulary(a: &Pretrained, a_dir: &Path, b: &Pretrained, b_dir: &Path) -> Result<()> {
    let (va, vb) = (a.model.cfg.vocab_size, b.model.cfg.vocab_size);
    ensure!(
        va == vb,
        "--model {} has a vocabulary of {va} tokens but --baseline {} has {vb}: eval compares \
         models that share a tokenizer (e.g. a PPO policy and its SFT model)",
        a_dir.display(),
        b_dir.display()
    );
    same_tokenizer(&a.tokenizer, a_dir, &b.tokenizer, b_dir)
}

fn same_tokenizer(
    a: &rlhf_tokenizer::Tokenizer,
    a_dir: &Path,
    b: &rlhf_tokenizer::Tokenizer,
    b_dir: &Path,
) -> Result<()> {
    let json = |t: &rlhf_tokenizer::Tokenizer| t.inner().to_string(false).ok();
    ensure!(
        json(a).is_some() && json(a) == json(b),
        "{}/tokenizer.json and {}/tokenizer.json differ: eval needs both models (and an rm: \
         judge) to share one tokenizer",
        a_dir.display(),
        b_dir.display()
    );
    Ok(())
}

/// One response per prompt, in chat format, `rows` sequences at a time.
fn generate(
    pre: &Pretrained,
    prompts: &[String],
    cfg: &TextGenerateConfig,
    rows: usize,
    who: &str,
) -> Result<Vec<Response>> {
    let bar = crate::common::progress_bar(prompts.len(), &format!("sampling {who}"));
    let gens = pre.sample_k(prompts, 1, PromptFormat::Chat, cfg, rows, |d, _| {
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    gens.into_iter()
        .map(|mut g| {
            let g = g.pop().context("the sampler returned no response")?;
            Ok(Response {
                text: g.text.trim().to_string(),
                ids: g.generation.token_ids,
            })
        })
        .collect()
}

/// Per prompt, Σ_t [log p_A(y_t) − log p_B(y_t)] over A's sampled tokens y: a one-sample
/// estimate of KL(A‖B) in nats per sequence (the estimator PPO's KL penalty sums per token).
fn kl_per_prompt(
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

/// Σ_t log p(y_t | prompt, y_<t) at `temperature` for each prompt's response, each model
/// encoding the prompt with its own chat template.
fn response_logprobs(
    pre: &Pretrained,
    prompts: &[String],
    responses: &[Response],
    temperature: f64,
    rows: usize,
) -> Result<Vec<f64>> {
    let _guard = tch::no_grad_guard();
    let mut out = Vec::with_capacity(prompts.len());
    for (ps, rs) in prompts
        .chunks(rows.max(1))
        .zip(responses.chunks(rows.max(1)))
    {
        let mut seqs = Vec::with_capacity(ps.len());
        for (p, r) in ps.iter().zip(rs) {
            let mut ids = pre.encode_prompt(p, PromptFormat::Chat)?;
            let prompt_len = ids.len();
            ids.extend(&r.ids);
            seqs.push((ids, prompt_len));
        }
        out.extend(sum_logprobs(&pre.model, &seqs, temperature)?);
    }
    Ok(out)
}

/// For right-padded (ids, prompt_len) rows: the summed log-probability of ids[prompt_len..].
/// Only the response positions go through the LM head, which saves a (B, T, V) tensor.
fn sum_logprobs(model: &Gpt, seqs: &[(Vec<i64>, usize)], temperature: f64) -> Result<Vec<f64>> {
    let t = seqs.iter().map(|(s, _)| s.len()).max().unwrap_or(1);
    let (mut ids, mut pos, mut target, mut row) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (s, p)) in seqs.iter().enumerate() {
        ids.extend(s.iter().copied().chain(std::iter::repeat_n(0, t - s.len())));
        // Position j predicts token j + 1: the response tokens are predicted from p − 1 on.
        for j in p.saturating_sub(1)..s.len() - 1 {
            pos.push((i * t + j) as i64);
            target.push(s[j + 1]);
            row.push(i);
        }
    }
    let mut sums = vec![0.0; seqs.len()];
    if pos.is_empty() {
        return Ok(sums);
    }
    let dev = model.device();
    let ids = Tensor::from_slice(&ids)
        .view([seqs.len() as i64, t as i64])
        .to_device(dev);
    let batch = Batch {
        input_ids: &ids,
        attention_mask: None,
    };
    let hidden = model.forward_hidden(batch, None)?; // (B, T, C)
    let c = hidden.size()[2];
    let pos = Tensor::from_slice(&pos).to_device(dev);
    let hidden = hidden.reshape([-1, c]).index_select(0, &pos); // (N, C)
    let logits = model.lm_logits(&hidden)?.to_kind(Kind::Float) / temperature; // (N, V)
    let target = Tensor::from_slice(&target).to_device(dev).unsqueeze(1); // (N, 1)
    let lp = logits
        .log_softmax(-1, Kind::Float)
        .gather(1, &target, false)
        .squeeze_dim(1); // (N,)
    let lp = Vec::<f32>::try_from(&lp.to_device(Device::Cpu))?;
    for (r, l) in row.into_iter().zip(lp) {
        sums[r] += f64::from(l);
    }
    Ok(sums)
}

fn scalar_verdicts(a: Vec<f64>, b: Vec<f64>) -> Verdicts {
    Verdicts {
        outcomes: win_rate(&a, &b),
        scores: Some((a, b)),
        unparsed: 0,
    }
}

fn oracle_scores(prompts: &[String], responses: &[Response]) -> Result<Vec<f64>> {
    prompts
        .iter()
        .zip(responses)
        .map(|(p, r)| Ok(rlhf_data::score(p, &r.text)?))
        .collect()
}

/// Reward-model scores of A's and B's responses, read at each sequence's EOS as in training.
fn rm_scores(
    dir: &Path,
    model_dir: &Path,
    policy: &Pretrained,
    prompts: &[String],
    (ra, rb): (&[Response], &[Response]),
    rows: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let rm = Pretrained {
        model: Gpt::load(dir, Head::Scalar, policy.model.device())
            .with_context(|| format!("cannot load the reward model {}", dir.display()))?,
        tokenizer: rlhf_tokenizer::Tokenizer::from_dir(dir).with_context(|| {
            format!("cannot load the reward model's tokenizer {}", dir.display())
        })?,
    };
    same_tokenizer(&policy.tokenizer, model_dir, &rm.tokenizer, dir)?;
    let pad = rm
        .tokenizer
        .pad_id()
        .or(rm.tokenizer.eos_id())
        .map_or(0, i64::from);
    let _guard = tch::no_grad_guard();
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    // Half the rows per chunk: each prompt contributes A's and B's sequence.
    let per = (rows / 2).max(1);
    for ((ps, xa), xb) in prompts.chunks(per).zip(ra.chunks(per)).zip(rb.chunks(per)) {
        let mut seqs = Vec::with_capacity(2 * ps.len());
        for ((p, a), b) in ps.iter().zip(xa).zip(xb) {
            let ids = rm.encode_prompt(p, PromptFormat::Chat)?;
            seqs.push(encode_response(&rm.tokenizer, &ids, &a.text)?);
            seqs.push(encode_response(&rm.tokenizer, &ids, &b.text)?);
        }
        let r = Vec::<f32>::try_from(&rewards(&rm.model, &seqs, pad)?.to_device(Device::Cpu))?;
        for pair in r.chunks(2) {
            sa.push(f64::from(pair[0]));
            sb.push(f64::from(pair[1]));
        }
    }
    Ok((sa, sb))
}

/// An LLM judge, asked twice per prompt with the responses in both orders: position bias
/// (judges favour the first answer) cancels, and a judge that always says "A" scores 0.5.
fn llm_verdicts(
    args: &Args,
    url: &str,
    prompts: &[String],
    ra: &[Response],
    rb: &[Response],
) -> Result<Verdicts> {
    let judge = LlmJudge::new(
        url,
        &args.judge_model,
        args.judge_timeout,
        args.judge_retries,
    );
    let bar = crate::common::progress_bar(prompts.len(), "judging");
    let (mut outcomes, mut unparsed) = (Vec::with_capacity(prompts.len()), 0);
    for ((p, a), b) in prompts.iter().zip(ra).zip(rb) {
        // First ask with A shown first, then with B shown first.
        let first = judge.choose(p, &a.text, &b.text)?;
        let second = judge.choose(p, &b.text, &a.text)?;
        let half = |v: Option<char>, a_letter: char| match v {
            Some(c) => f64::from(u8::from(c == a_letter)),
            None => 0.5,
        };
        unparsed += usize::from(first.is_none()) + usize::from(second.is_none());
        outcomes.push((half(first, 'A') + half(second, 'B')) / 2.0);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if unparsed > 0 {
        eprintln!("warning: {unparsed} judge answers were neither A nor B (counted as ties)");
    }
    Ok(Verdicts {
        scores: None,
        outcomes,
        unparsed,
    })
}

struct LlmJudge {
    client: rlhf_client::Client,
    model: String,
}

impl LlmJudge {
    fn new(url: &str, model: &str, timeout_s: u64, retries: u32) -> Self {
        let client = rlhf_client::Client::new(rlhf_client::ClientConfig {
            timeout: Duration::from_secs(timeout_s.max(1)),
            max_retries: retries,
            ..rlhf_client::ClientConfig::new(url)
        });
        Self {
            client,
            model: model.to_string(),
        }
    }

    /// 'A' or 'B' as the judge answered, None when the answer is neither.
    fn choose(&self, prompt: &str, first: &str, second: &str) -> Result<Option<char>> {
        let question = format!(
            "Which response follows the instruction better? Judge correctness first, then \
             format, then concision. Answer with a single letter: A or B.\n\n\
             [Instruction]\n{prompt}\n\n[Response A]\n{first}\n\n[Response B]\n{second}\n\n\
             Answer (A or B):"
        );
        let req = rlhf_client::ChatRequest {
            model: self.model.clone(),
            messages: vec![
                rlhf_client::ChatMessage::system("You are a careful, impartial judge."),
                rlhf_client::ChatMessage::user(question),
            ],
            temperature: Some(0.0),
            max_tokens: Some(8),
            ..Default::default()
        };
        let resp = self.client.chat(&req)?;
        let content = resp
            .choices
            .first()
            .and_then(|c| c.message.content.as_deref())
            .with_context(|| "the judge's response has no choices[0].message.content")?;
        Ok(parse_letter(content))
    }
}

/// "A", "**B**", "Response A.", "(b)" → the letter; anything else → None.
fn parse_letter(answer: &str) -> Option<char> {
    let t = answer.trim_matches(|c: char| !c.is_alphanumeric());
    let t = t
        .strip_prefix("Response ")
        .or_else(|| t.strip_prefix("response "))
        .unwrap_or(t);
    match t {
        "A" | "a" => Some('A'),
        "B" | "b" => Some('B'),
        _ => None,
    }
}

/// The numbers of the report.
struct Summary {
    n: usize,
    win: Interval,
    counts: [usize; 3],
    score_a: Option<Interval>,
    score_b: Option<Interval>,
    kl: Interval,
    kl_per_token: f64,
    len_a: f64,
    len_b: f64,
}

fn summarize(
    args: &Args,
    v: &Verdicts,
    kl: &[f64],
    (ra, rb): (&[Response], &[Response]),
) -> Summary {
    let ci = |x: &[f64]| bootstrap_mean_ci(x, args.bootstrap, LEVEL, args.seed);
    let count = |o: f64| v.outcomes.iter().filter(|&&x| x == o).count();
    let tokens = |r: &[Response]| r.iter().map(|r| r.ids.len()).sum::<usize>();
    let n = v.outcomes.len();
    Summary {
        n,
        win: ci(&v.outcomes),
        counts: [count(1.0), n - count(1.0) - count(0.0), count(0.0)],
        score_a: v.scores.as_ref().map(|(a, _)| ci(a)),
        score_b: v.scores.as_ref().map(|(_, b)| ci(b)),
        kl: ci(kl),
        kl_per_token: kl.iter().sum::<f64>() / tokens(ra).max(1) as f64,
        len_a: tokens(ra) as f64 / n as f64,
        len_b: tokens(rb) as f64 / n as f64,
    }
}

/// Rows of (metric, value) shared by the terminal summary and the markdown table.
fn summary_rows(s: &Summary) -> Vec<Vec<String>> {
    let [w, t, l] = s.counts;
    let mut rows = vec![
        vec!["win rate of A over B".into(), fmt_interval(&s.win, 3)],
        vec!["wins / ties / losses".into(), format!("{w} / {t} / {l}")],
    ];
    if let (Some(a), Some(b)) = (&s.score_a, &s.score_b) {
        rows.push(vec!["mean score of A".into(), fmt_interval(a, 3)]);
        rows.push(vec!["mean score of B".into(), fmt_interval(b, 3)]);
    }
    rows.push(vec![
        "KL(A‖B), nats per sequence".into(),
        fmt_interval(&s.kl, 3),
    ]);
    rows.push(vec![
        "KL(A‖B), nats per token".into(),
        format!("{:.4}", s.kl_per_token),
    ]);
    rows.push(vec![
        "mean length of A, tokens".into(),
        format!("{:.1}", s.len_a),
    ]);
    rows.push(vec![
        "mean length of B, tokens".into(),
        format!("{:.1}", s.len_b),
    ]);
    rows
}

fn summary_text(args: &Args, s: &Summary) -> String {
    let mut out = format!(
        "eval: {} prompts, judge {}, temperature {}, seed {} (95% bootstrap intervals)\n",
        s.n, args.judge, args.temperature, args.seed
    );
    for r in summary_rows(s) {
        out += &format!("  {:<30} {}\n", r[0], r[1]);
    }
    out
}

fn interval_json(ci: &Interval) -> Value {
    // serde_json writes NaN as null, which is what "no data" should read as.
    json!({ "mean": ci.mean, "lo": ci.lo, "hi": ci.hi })
}

fn write_outputs(
    out: &Path,
    args: &Args,
    s: &Summary,
    v: &Verdicts,
    (prompts, ra, rb): (&[String], &[Response], &[Response]),
    kl: &[f64],
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let score = |i: usize, a: bool| v.scores.as_ref().map(|(x, y)| if a { x[i] } else { y[i] });
    let records = (0..prompts.len()).map(|i| {
        json!({
            "prompt": prompts[i], "response_a": ra[i].text, "response_b": rb[i].text,
            "score_a": score(i, true), "score_b": score(i, false), "outcome": v.outcomes[i],
            "kl": kl[i], "tokens_a": ra[i].ids.len(), "tokens_b": rb[i].ids.len(),
        })
    });
    write_jsonl(out.join("responses.jsonl"), records)?;
    let [wins, ties, losses] = s.counts;
    let mut doc = json!({
        "model": args.model, "baseline": args.baseline, "prompts": args.prompts,
        "judge": args.judge.to_string(), "n": s.n, "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens, "seed": args.seed,
        "bootstrap_resamples": args.bootstrap, "confidence": LEVEL,
        "win_rate": interval_json(&s.win), "wins": wins, "ties": ties, "losses": losses,
        "score_a": s.score_a.as_ref().map(interval_json),
        "score_b": s.score_b.as_ref().map(interval_json),
        "kl": interval_json(&s.kl), "kl_per_token": s.kl_per_token,
        "length_a": s.len_a, "length_b": s.len_b,
    });
    if let Judge::OpenAi(_) = args.judge {
        doc["judge_model"] = json!(args.judge_model);
        doc["judge_unparsed"] = json!(v.unparsed);
    }
    write_text(
        out.join("eval.json"),
        &(serde_json::to_string_pretty(&doc)? + "\n"),
    )?;
    if let Some((a, b)) = &v.scores {
        ScatterChart {
            title: format!("Score per prompt ({})", judge_name(&args.judge)),
            x_label: "baseline (B)".into(),
            y_label: "model (A)".into(),
            series: vec![ScatterSeries {
                name: "prompts (above the diagonal: A wins)".into(),
                points: b.iter().copied().zip(a.iter().copied()).collect(),
            }],
            diagonal: true,
            size: (640, 600),
        }
        .save(&out.join("scores"))?;
    }
    write_text(
        out.join("report.md"),
        &report_md(args, s, v, (prompts, ra, rb)),
    )?;
    Ok(())
}

fn judge_name(j: &Judge) -> &'static str {
    match j {
        Judge::Oracle => "oracle",
        Judge::RewardModel(_) => "reward model",
        Judge::OpenAi(_) => "LLM judge",
    }
}

fn report_md(
    args: &Args,
    s: &Summary,
    v: &Verdicts,
    (prompts, ra, rb): (&[String], &[Response], &[Response]),
) -> String {
    let mut md = format!(
        "# Evaluation\n\nA = `{}`, B = `{}`, on the first {} prompts of `{}`; judge `{}`, \
         temperature {}, seed {}, at most {} new tokens. Intervals are 95% percentile-bootstrap \
         intervals over prompts ({} resamples); ties count as half a win.\n\n",
        args.model.display(),
        args.baseline.display(),
        s.n,
        args.prompts.display(),
        args.judge,
        args.temperature,
        args.seed,
        args.max_new_tokens,
        args.bootstrap
    );
    md += &md_table(&["metric", "value"], &summary_rows(s));
    if v.scores.is_some() {
        md += "\n![Score of A against score of B, one point per prompt](scores.svg)\n";
    }
    md += "\n## Examples\n\n";
    let cut = |t: &str| -> String {
        let c: String = t.chars().take(160).collect();
        if c.len() < t.len() { c + "…" } else { c }
    };
    let rows: Vec<Vec<String>> = (0..prompts.len().min(5))
        .map(|i| {
            vec![
                cut(&prompts[i]),
                cut(&ra[i].text),
                cut(&rb[i].text),
                format!("{}", v.outcomes[i]),
            ]
        })
        .collect();
    md += &md_table(&["prompt", "A", "B", "outcome for A"], &rows);
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_specs() {
        assert!(matches!(parse_judge("oracle"), Ok(Judge::Oracle)));
        assert!(
            matches!(parse_judge("rm:runs/rm"), Ok(Judge::RewardModel(d)) if d == Path::new("runs/rm"))
        );
        assert!(
            matches!(parse_judge("openai:http://h:8/"), Ok(Judge::OpenAi(u)) if u == "http://h:8")
        );
        assert!(parse_judge("rm:").is_err());
        assert!(parse_judge("openai:localhost").is_err());
        assert!(
            parse_judge("gpt4")
                .unwrap_err()
                .contains("oracle, rm:DIR or openai:URL")
        );
    }

    /// The KL sums log-probabilities from one right-padded forward; they must equal the ones the
    /// sampler reported while generating with left padding and the KV cache (an off-by-one in
    /// the positions would break this).
    #[test]
    fn response_logprobs_match_the_sampler() {
        let dir = tempfile::tempdir().unwrap();
        let text = "Jane has 12 flowers. The answer is 7. Sort the list: 3, 1, 2.";
        let bpe = rlhf_tokenizer::BpeConfig {
            vocab_size: 280,
            ..Default::default()
        };
        let tok = rlhf_tokenizer::train_bpe(std::iter::repeat_n(text, 20), &bpe).unwrap();
        tok.save(dir.path()).unwrap();
        let cfg = json!({
            "model_type": "llama", "vocab_size": tok.vocab_size(), "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 256, "eos_token_id": tok.eos_id(),
        });
        let cfg = rlhf_model::ModelConfig::from_json(&cfg, &dir.path().join("config.json"));
        tch::manual_seed(0);
        Gpt::new(&cfg.unwrap(), Head::Lm, Device::Cpu)
            .save(dir.path())
            .unwrap();
        let pre = Pretrained::load(dir.path(), Head::Lm, Device::Cpu).unwrap();
        let prompts = [
            "Jane has 12 flowers.",
            "Sort the list: 3, 1, 2. The answer is",
        ]
        .map(String::from)
        .to_vec();
        let cfg = TextGenerateConfig {
            max_new_tokens: 12,
            sampling: Sampling::new(0.7, None, None).unwrap(),
            seed: Some(1),
            stop: vec![],
        };
        let gens = pre
            .sample_k(&prompts, 1, PromptFormat::Chat, &cfg, 8, |_, _| ())
            .unwrap();
        let responses: Vec<Response> = gens
            .iter()
            .map(|g| Response {
                text: g[0].text.clone(),
                ids: g[0].generation.token_ids.clone(),
            })
            .collect();
        let got = response_logprobs(&pre, &prompts, &responses, 0.7, 8).unwrap();
        for (g, got) in gens.iter().zip(got) {
            let want: f64 = g[0].generation.logprobs.iter().map(|&x| f64::from(x)).sum();
            assert!((want - got).abs() < 1e-3, "{want} vs {got}");
        }
    }

    #[test]
    fn letters() {
        for (s, want) in [
            ("A", Some('A')),
            (" **B**\n", Some('B')),
            ("Response A.", Some('A')),
        ] {
            assert_eq!(parse_letter(s), want, "{s:?}");
        }
        for s in ["", "AB", "A is better than B", "C"] {
            assert_eq!(parse_letter(s), None, "{s:?}");
        }
    }
}
