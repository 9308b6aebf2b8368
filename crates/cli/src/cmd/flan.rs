//! `rlhf flan build|eval`: FLAN instruction-tuning data and zero-shot evaluation.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use rlhf_data::flan::{self, Cluster, FlanConfig, FlanEval};
use rlhf_model::{Head, Pretrained, PromptFormat};
use rlhf_train::flan::{by_cluster, evaluate};

use crate::common::ConfigArgs;

/// FLAN-style instruction tuning (Wei et al. 2021): build templated data from ten synthetic task
/// clusters with a held-out-cluster protocol, and evaluate a model zero-shot by rank
/// classification and by generation. Train with `rlhf pretrain --data OUT/corpus.txt` (the base)
/// and `rlhf sft --data OUT/train.jsonl` (instruction tuning).
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Write OUT/train.jsonl ({"prompt", "completion", "cluster", "template", "inverted"}: ten
    /// templates per cluster, up to three turning the task around, an OPTIONS suffix on
    /// classification prompts), OUT/train-no-template.jsonl (the same instances, inputs only),
    /// OUT/eval-held-out.jsonl (held-out clusters, every forward template), OUT/eval-seen.jsonl
    /// (training clusters under their two eval-only templates, unseen instances), OUT/corpus.txt
    /// (pretraining text stating the world's knowledge) and OUT/flan.json (clusters, templates,
    /// the seed's invented facts).
    Build(BuildArgs),
    /// Score a model on an eval file: per cluster, rank classification accuracy (the option with
    /// the highest log-likelihood) and generation accuracy (greedy exact match), beside chance.
    Eval(EvalArgs),
}

#[derive(Debug, ClapArgs)]
struct BuildArgs {
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the data and of the invented fact world (overrides `seed` in the config).
    #[arg(long)]
    seed: Option<u64>,
    /// Comma-separated clusters to hold out of training (overrides `held_out`) [default:
    /// antonyms,topic,counting]. Clusters: nli, sentiment, paraphrase, comparison, topic,
    /// arithmetic, lists, facts, counting, antonyms.
    #[arg(long, value_delimiter = ',')]
    held_out: Option<Vec<String>>,
    /// Keys: seed, held_out, train_per_cluster (1000), eval_per_cluster (100), corpus_docs
    /// (8000), countries (40).
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, ClapArgs)]
struct EvalArgs {
    /// Checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// Eval JSONL ({"prompt", "answer", "options", "cluster"}), e.g. OUT/eval-held-out.jsonl.
    #[arg(long)]
    data: PathBuf,
    /// Wrap prompts in the model's chat template (a model tuned with `rlhf sft`); without it
    /// the prompt is followed by a newline, as the base model and `rlhf experiment flan` use.
    #[arg(long)]
    chat: bool,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 64)]
    rows: usize,
    /// Longest generated answer, in tokens.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Also write every item's outcome here as JSONL.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    match args.which {
        Which::Build(a) => build(a),
        Which::Eval(a) => eval(a, device),
    }
}

fn build(args: BuildArgs) -> Result<()> {
    let mut cfg: FlanConfig = args.config.load()?;
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    if let Some(names) = &args.held_out {
        cfg.held_out = names
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| Cluster::parse(n))
            .collect::<rlhf_data::Result<_>>()
            .context("--held-out")?;
    }
    let data = flan::build(&cfg)?;
    let files = flan::write(&args.out, &data)?;
    for f in &files {
        let bytes = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        eprintln!("  {:<26} {:>10} bytes", f.display(), bytes);
    }
    eprintln!(
        "FLAN data (seed {}): {} training records from {} clusters; {} held-out items ({}); {} \
         seen-cluster items under unseen templates",
        cfg.seed,
        data.train.len(),
        data.train_clusters().len(),
        data.eval_held_out.len(),
        cfg.held_out
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", "),
        data.eval_seen.len()
    );
    Ok(())
}

fn eval(args: EvalArgs, device: tch::Device) -> Result<()> {
    anyhow::ensure!(args.rows >= 1, "--rows must be at least 1");
    let items: Vec<FlanEval> = rlhf_data::read_jsonl(&args.data)?;
    anyhow::ensure!(!items.is_empty(), "{}: no eval items", args.data.display());
    let pre = Pretrained::load(&args.model, Head::Lm, device)?;
    let format = if args.chat {
        PromptFormat::Chat
    } else {
        PromptFormat::Raw
    };
    let bar = crate::common::progress_bar(1, "scoring");
    let scores = evaluate(&pre, format, &items, args.rows, args.max_new_tokens)?;
    bar.finish_and_clear();
    if let Some(out) = &args.out {
        rlhf_data::write_jsonl(out, &scores)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    let per = by_cluster(&scores);
    let rows: Vec<Vec<String>> = per
        .iter()
        .map(|c| {
            vec![
                c.cluster.name().to_string(),
                c.items.to_string(),
                format!("{:.1}", 100.0 * c.rank_accuracy),
                format!("{:.1}", 100.0 * c.generation_accuracy),
                format!("{:.1}", 100.0 * c.chance),
            ]
        })
        .collect();
    let n = scores.len() as f64;
    let mut rows = rows;
    rows.push(vec![
        "all".into(),
        scores.len().to_string(),
        format!(
            "{:.1}",
            100.0 * scores.iter().filter(|s| s.rank_correct).count() as f64 / n
        ),
        format!(
            "{:.1}",
            100.0 * scores.iter().filter(|s| s.exact).count() as f64 / n
        ),
        format!(
            "{:.1}",
            100.0 * scores.iter().map(|s| s.chance).sum::<f64>() / n
        ),
    ]);
    print!(
        "{}",
        rlhf_report::md_table(
            &[
                "cluster",
                "items",
                "rank classification %",
                "generation %",
                "chance %"
            ],
            &rows
        )
    );
    Ok(())
}
