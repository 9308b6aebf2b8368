//! `rlhf label`: rank samples with simulated labelers (`--oracle`) or an LLM judge
//! (`--judge openai:URL`), or collect human rankings with the labeling web app (`serve`,
//! `add-labeler`, `revoke`, `export`, `stats`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rlhf_client::Endpoint;
use rlhf_data::{
    LabelerConfig, LabelerPanel, RankingRecord, SampleRecord, read_jsonl, write_jsonl,
};
use rlhf_label::{Db, WebConfig};

/// Rank samples: with --oracle, simulated labelers (the task world's oracle with Bradley–Terry
/// noise calibrated to InstructGPT's ~73% inter-labeler agreement; prompts go round-robin to the
/// labelers); with --judge openai:URL, a model behind an OpenAI-compatible server ranks each
/// prompt's responses (AI feedback). Ties are written as nested lists. The subcommands run the
/// web app where people rank them.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<LabelCommand>,
    /// Use the simulated labelers.
    #[arg(long, conflicts_with = "judge")]
    oracle: bool,
    /// Use an LLM judge: `openai:URL` (POST URL/v1/chat/completions; OPENAI_API_KEY is sent if
    /// set), e.g. openai:http://127.0.0.1:8000 for `rlhf serve`.
    #[arg(long, value_name = "openai:URL", value_parser = Endpoint::parse)]
    judge: Option<Endpoint>,
    #[command(flatten)]
    endpoint: crate::common::JudgeEndpointArgs,
    /// Samples JSONL: {"prompt", "responses": [...]} (task-world prompts for --oracle).
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Output rankings JSONL: {"prompt", "responses", "ranking"}.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Number of simulated labelers.
    #[arg(long, default_value_t = 4)]
    labelers: u64,
    /// Seed of the labelers' noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --oracle: the share of prompts (0 to 1) that a second labeler also ranks, to measure
    /// how often two labelers agree (printed and written to OUT with the extension
    /// .agreement.json); the rankings keep the first labeler's order. Needs 2+ labelers.
    #[arg(long, default_value_t = 0.25)]
    overlap: f64,
    /// With --oracle: also write the second labeler's ranking of each doubled prompt to OUT,
    /// on the line after the first's. `rlhf reward` pools the rankings of the same responses
    /// into one batch element, so its reward model learns from both at the cost of one.
    #[arg(long, requires = "oracle")]
    keep_overlap: bool,
    /// Noise temperature τ in oracle-score units; 0 ranks by the oracle exactly [default: the
    /// calibrated 0.097, which gives 73% agreement on a demo SFT model's samples].
    #[arg(long, conflicts_with = "calibrate")]
    tau: Option<f64>,
    /// With --oracle: choose τ on these very samples, so that two labelers are expected to
    /// agree on 73% of the pairs they compare (InstructGPT's 72.6 ± 1.5%); the τ is printed.
    #[arg(long)]
    calibrate: bool,
}

#[derive(Debug, clap::Subcommand)]
enum LabelCommand {
    Serve(ServeArgs),
    AddLabeler(AddLabelerArgs),
    Revoke(RevokeArgs),
    Export(ExportArgs),
    Stats(StatsArgs),
}

/// The labeling database, from --db or the environment.
#[derive(Debug, clap::Args)]
struct DbArgs {
    /// Database: sqlite://FILE (created if missing) or postgres://USER:PASSWORD@HOST:PORT/DB. Give
    /// a URL with a password in RLHF_LABEL_DB rather than here: a command line is visible to
    /// every user of the machine (`ps`). Messages print the URL with its password as `***`.
    #[arg(
        long = "db",
        value_name = "URL",
        env = "RLHF_LABEL_DB",
        hide_env_values = true,
        default_value = "sqlite://labels.db"
    )]
    url: String,
}

/// The labeling web app: labelers log in with their token, rank each prompt's responses (shown in
/// a shuffled order; ties allowed), flag them (wrong, harmful, ignores the instruction), comment
/// and submit. A submission is acknowledged only once committed. Prints the address once it
/// listens; Ctrl-C or SIGTERM stops it after the requests in flight.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Samples JSONL to label ({"prompt", "responses"}); tasks already in the database are kept
    /// and not added twice [default: serve the tasks already in the database].
    #[arg(long)]
    samples: Option<PathBuf>,
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on; 0.0.0.0 exposes the app to the network (put TLS in front of it).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port; 0 picks a free one (printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Labelers per prompt (more than 1 measures agreement).
    #[arg(long, default_value_t = 1)]
    overlap: i64,
    /// Minutes after which a task shown but not submitted goes to someone else; a submission
    /// after that is refused (409).
    #[arg(long, default_value_t = 30)]
    expire_minutes: i64,
    #[command(flatten)]
    http: crate::common::HttpArgs,
}

/// Add a labeler and print their login token (once: only its SHA-256 digest is stored).
#[derive(Debug, clap::Args)]
struct AddLabelerArgs {
    /// The labeler's name (unique).
    name: String,
    #[command(flatten)]
    db: DbArgs,
}

/// Revoke a labeler's token: every request carrying it is refused (401) from then on, by a
/// server already running too. Their submissions stay; a task they were shown but did not submit
/// goes to someone else once it expires (--expire-minutes).
#[derive(Debug, clap::Args)]
struct RevokeArgs {
    /// The labeler's name.
    name: String,
    #[command(flatten)]
    db: DbArgs,
}

/// Export every submission as the {"prompt", "responses", "ranking"} JSONL `rlhf reward` trains
/// on (one line per labeler's ranking, with "labeler", "flags" and "comment" for auditing).
#[derive(Debug, clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Output JSONL.
    #[arg(long)]
    out: PathBuf,
}

/// Per-labeler counts and time per task, and pairwise agreement between labelers (the share of
/// response pairs both ranked that they ordered the same way).
#[derive(Debug, clap::Args)]
struct StatsArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Some(LabelCommand::Serve(a)) => runtime()?.block_on(serve(a)),
        Some(LabelCommand::AddLabeler(a)) => runtime()?.block_on(async {
            let db = Db::open(&a.db.url).await?;
            let token = db.add_labeler(&a.name).await?;
            db.close().await;
            eprintln!(
                "labeler `{}` added; their token (shown once):",
                a.name.trim()
            );
            println!("{token}");
            Ok(())
        }),
        Some(LabelCommand::Revoke(a)) => runtime()?.block_on(async {
            let db = Db::open(&a.db.url).await?;
            let newly = db.revoke_labeler(&a.name).await?;
            db.close().await;
            let already = if newly { "" } else { " (it already was)" };
            eprintln!("labeler `{}`: token revoked{already}", a.name.trim());
            Ok(())
        }),
        Some(LabelCommand::Export(a)) => runtime()?.block_on(export(a)),
        Some(LabelCommand::Stats(a)) => runtime()?.block_on(stats(a)),
        None => rank(args),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn serve(a: ServeArgs) -> Result<()> {
    anyhow::ensure!(a.overlap >= 1, "--overlap must be at least 1");
    let db = Db::open(&a.db.url).await?;
    if let Some(path) = &a.samples {
        let samples: Vec<SampleRecord> = read_jsonl(path)?;
        let (added, total) = db.load_tasks(&samples).await?;
        eprintln!(
            "{}: {added} new tasks ({total} in the database)",
            path.display()
        );
    }
    let cfg = WebConfig {
        overlap: a.overlap,
        expire_ms: a.expire_minutes.max(1) * 60_000,
        ..Default::default()
    };
    let app = rlhf_label::router(db, cfg);
    let addr = format!("{}:{}", a.host, a.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("rlhf label serve: on http://{}/", listener.local_addr()?);
    let shutdown = crate::common::shutdown_signal("rlhf label serve");
    rlhf_http::serve(listener, app, a.http.limits(), shutdown)
        .await
        .context("serving")
}

async fn export(a: ExportArgs) -> Result<()> {
    let db = Db::open(&a.db.url).await?;
    let subs = db.all_submissions().await?;
    let records = rlhf_label::stats::export(&subs)?;
    write_jsonl(&a.out, &records).with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!("{} rankings -> {}", records.len(), a.out.display());
    Ok(())
}

async fn stats(a: StatsArgs) -> Result<()> {
    let db = Db::open(&a.db.url).await?;
    let s = rlhf_label::stats::stats(&db.all_submissions().await?);
    if a.json {
        return crate::common::print_line(serde_json::to_string_pretty(&s)?);
    }
    let secs = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.1}"));
    println!("{} submissions on {} tasks", s.submissions, s.tasks_labeled);
    println!("\n| labeler | submissions | median s/task | mean s/task | flags | comments |");
    println!("|---|---|---|---|---|---|");
    for l in &s.labelers {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            l.labeler,
            l.submissions,
            secs(l.median_seconds),
            secs(l.mean_seconds),
            l.flags,
            l.comments
        );
    }
    println!("\n| labeler A | labeler B | shared tasks | pairs ranked by both | agreement |");
    println!("|---|---|---|---|---|");
    for g in &s.agreement {
        let agree = g
            .agreement
            .map_or("-".into(), |x| format!("{:.1}%", 100.0 * x));
        println!(
            "| {} | {} | {} | {} | {agree} |",
            g.a, g.b, g.tasks, g.pairs
        );
    }
    if let Some(x) = s.overall_agreement {
        println!("\noverall agreement: {:.1}%", 100.0 * x);
    }
    Ok(())
}

/// `--oracle` or `--judge`: rank a samples file.
fn rank(args: Args) -> Result<()> {
    let (Some(samples_path), Some(out_path)) = (&args.samples, &args.out) else {
        bail!(
            "give --samples FILE and --out FILE (or a subcommand: serve, add-labeler, revoke, export, \
             stats)"
        );
    };
    let samples: Vec<SampleRecord> = read_jsonl(samples_path)?;
    if let Some(dir) = out_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let (out, source) = match (&args.judge, args.oracle) {
        (Some(judge), _) => (judge_rank(&args, judge, &samples)?, "the judge"),
        (None, true) => (
            oracle_rank(&args, samples, samples_path)?,
            "simulated labelers",
        ),
        (None, false) => bail!("give --oracle (simulated labelers) or --judge openai:URL"),
    };
    write_jsonl(out_path, &out).with_context(|| format!("cannot write {}", out_path.display()))?;
    eprintln!(
        "{} rankings by {source} -> {}",
        out.len(),
        out_path.display()
    );
    Ok(())
}

fn oracle_rank(
    args: &Args,
    samples: Vec<SampleRecord>,
    path: &std::path::Path,
) -> Result<Vec<RankingRecord>> {
    anyhow::ensure!(args.labelers >= 1, "--labelers must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.overlap),
        "--overlap must be a share from 0 to 1, found {}",
        args.overlap
    );
    let mut cfg = LabelerConfig::default();
    if let Some(tau) = args.tau {
        cfg.tau = tau;
    }
    if args.calibrate {
        let pairs = rlhf_data::sample_pairs(&samples)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let ties = rlhf_data::oracle_tie_share(&pairs);
        cfg.tau =
            rlhf_data::calibrate_tau(&pairs, rlhf_data::TARGET_AGREEMENT).with_context(|| {
                format!(
                    "{}: 73% agreement is out of reach on these samples ({} pairs of different \
                 responses, {:.1}% of them scored equal by the oracle)",
                    path.display(),
                    pairs.len(),
                    100.0 * ties
                )
            })?;
        eprintln!(
            "calibrated tau = {:.3} on {} pairs of these samples ({:.1}% of them oracle ties)",
            cfg.tau,
            pairs.len(),
            100.0 * ties
        );
    }
    let panel = LabelerPanel::new(args.labelers, args.seed, &cfg)?;
    // One labeler has no second opinion to compare with.
    let overlap = if panel.len() < 2 { 0.0 } else { args.overlap };
    let labeled = panel
        .rank_samples(samples, overlap)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    eprintln!("ranked by {} simulated labelers", panel.len());
    if overlap > 0.0 {
        eprintln!("{}", labeled.agreement.summary());
        if let Some(out) = &args.out {
            let file = out.with_extension("agreement.json");
            std::fs::write(&file, serde_json::to_string_pretty(&labeled.agreement)?)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
    }
    Ok(match args.keep_overlap {
        true => labeled.all_rankings(),
        false => labeled.rankings,
    })
}

fn judge_rank(
    args: &Args,
    judge: &Endpoint,
    samples: &[SampleRecord],
) -> Result<Vec<RankingRecord>> {
    let llm = args.endpoint.apply(judge.clone()).connect()?;
    let bar = crate::common::progress_bar(samples.len(), "judging");
    let judged = rlhf_label::judge::rank_all(&llm, samples, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    if !judged.unparsed.is_empty() {
        let (line, answer) = &judged.unparsed[0];
        eprintln!(
            "warning: {} of {} samples were skipped: the judge refused them or named no \
             response (e.g. record {line}: {:?})",
            judged.unparsed.len(),
            samples.len(),
            answer.chars().take(120).collect::<String>()
        );
    }
    Ok(judged.records)
}
