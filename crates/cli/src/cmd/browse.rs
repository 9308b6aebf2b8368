//! `rlhf browse index DIR --out INDEX` and `rlhf browse --model DIR --index INDEX --question
//! TEXT`: WebGPT's text browser over your own documents, driven by a trained policy.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use rlhf_browse::{
    AgentConfig, BrowseConfig, ModelPolicy, SearchIndex, browse_batch, check_citations,
    parse_answer, read_folder,
};
use rlhf_model::{Head, Pretrained, PromptFormat};

/// Answer a question by browsing: the model searches a BM25 index with WebGPT's commands
/// (Search, Clicked on link, Find in page, Quote, Scroll down/up, Top, Back, End: Answer), then
/// answers from its quotes, citing them as [1], [2]. Prints the trajectory, the answer and
/// whether each citation checks out against its page. Train a policy with `rlhf experiment
/// webgpt` (it saves one under OUT/seedN/bc with its index).
#[derive(Debug, ClapArgs)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    index: Option<IndexCmd>,
    /// The policy checkpoint (e.g. OUT/seed0/bc from `rlhf experiment webgpt`).
    #[arg(long, required_unless_present = "index")]
    model: Option<PathBuf>,
    /// An index folder written by `rlhf browse index` (or OUT/seed0/index).
    #[arg(long = "index", required_unless_present = "index", value_name = "DIR")]
    index_dir: Option<PathBuf>,
    /// The question.
    #[arg(long, required_unless_present = "index")]
    question: Option<String>,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Commands before browsing is ended for the model.
    #[arg(long, default_value_t = 10)]
    max_actions: usize,
    /// Search results shown per search.
    #[arg(long, default_value_t = 3)]
    results: usize,
    /// Page lines in the window.
    #[arg(long, default_value_t = 3)]
    window: usize,
    /// Tokens one command or the answer may take.
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Wrap prompts with the checkpoint's chat template (the E7 policies use raw text).
    #[arg(long)]
    chat: bool,
}

#[derive(Debug, Subcommand)]
enum IndexCmd {
    /// Index every .txt and .md file under DIR (recursively) for BM25 search: the title is the
    /// first Markdown heading or first line, the URL the file's relative path.
    Index {
        /// The folder of documents.
        dir: PathBuf,
        /// The index folder to create (must be new or empty).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    if let Some(IndexCmd::Index { dir, out }) = args.index {
        let docs = read_folder(&dir)?;
        anyhow::ensure!(
            !docs.is_empty(),
            "{}: no non-empty .txt or .md files to index",
            dir.display()
        );
        SearchIndex::create(&out, &docs, &dir.display().to_string())?;
        eprintln!(
            "indexed {} documents from {} into {}",
            docs.len(),
            dir.display(),
            out.display()
        );
        return Ok(());
    }
    let (model, index_dir, question) = (
        args.model.expect("required by clap"),
        args.index_dir.expect("required by clap"),
        args.question.expect("required by clap"),
    );
    let index = SearchIndex::open(&index_dir)?;
    let pre = Pretrained::load(&model, Head::Lm, device)
        .with_context(|| format!("loading the policy from {}", model.display()))?;
    let cfg = AgentConfig {
        browse: BrowseConfig {
            results: args.results,
            window: args.window,
            max_actions: args.max_actions,
            ..Default::default()
        },
        max_action_tokens: args.max_tokens,
        trace: true,
    };
    let policy = ModelPolicy {
        pre: &pre,
        format: if args.chat {
            PromptFormat::Chat
        } else {
            PromptFormat::Raw
        },
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        seed: args.seed,
        rows: 1,
    };
    let ep = browse_batch(&policy, &index, &[question], 1, &cfg, |_, _| {})?
        .pop()
        .and_then(|mut v| v.pop())
        .expect("one episode");
    for (i, (obs, act)) in ep.observations.iter().zip(&ep.actions).enumerate() {
        println!("── step {} ──\n{obs} {act}", i + 1);
    }
    println!("── answer ──\n{} {}", ep.answer_prompt, ep.answer);
    let parsed = parse_answer(&ep.answer);
    let support = check_citations(&parsed, &ep.quotes, &index)?;
    println!("── citations ──");
    for id in &parsed.cited {
        match ep.quotes.iter().find(|q| q.id == *id) {
            Some(q) => println!("[{id}] {} ({}): \"{}\"", q.title, q.url, q.text),
            None => println!("[{id}] cites no quote"),
        }
    }
    println!(
        "{} command(s), {} rejected; citations {}; quotes on their pages: {}; answer supported by \
         its quotes: {}",
        ep.actions.len(),
        ep.rejected,
        if support.cites_quotes {
            "valid"
        } else {
            "missing or invalid"
        },
        yes(support.quotes_verified),
        yes(support.supported)
    );
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
