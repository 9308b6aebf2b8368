//! The `rlhf` binary: argument parsing and dispatch only; the work happens in the library crates.
//! One file per subcommand under `cmd/`; the clap doc comments are the `--help` text.

// jemalloc serves the whole process, libtorch included (rlhf_model::alloc).
rlhf_model::jemalloc_global_allocator!();

mod cmd;
mod common;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use common::Runtime;

/// rlhf: turn a pretrained language model into an aligned assistant (SFT, reward model, PPO), on
/// a laptop CPU for tiny models and on GPUs for real ones.
#[derive(Debug, Parser)]
#[command(name = "rlhf", version, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    runtime: Runtime,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Demo(cmd::demo::Args),
    Data(cmd::data::Args),
    Pretrain(cmd::pretrain::Args),
    Sft(cmd::sft::Args),
    Reward(cmd::reward::Args),
    Ppo(cmd::ppo::Args),
    Dpo(cmd::dpo::Args),
    Grpo(cmd::grpo::Args),
    Score(cmd::score::Args),
    Eval(cmd::eval::Args),
    Generate(cmd::generate::Args),
    Serve(cmd::serve::Args),
    Chat(cmd::chat::Args),
    Sample(cmd::sample::Args),
    Label(cmd::label::Args),
    Launch(cmd::launch::Args),
    Merge(cmd::merge::Args),
    Nll(cmd::nll::Args),
    SelfImprove(cmd::self_improve::Args),
    Experiment(cmd::experiment::Args),
    Distill(cmd::distill::Args),
    Flan(cmd::flan::Args),
    Import(cmd::import::Args),
    Browse(cmd::browse::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logged events (a server's internal errors, with the id its client was given) go to
    // stderr; RLHF_LOG takes a tracing filter (e.g. `info`, `rlhf_serve=debug`).
    let filter = tracing_subscriber::EnvFilter::try_from_env("RLHF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // jemalloc keeps freed pages for the next step; past half the machine's memory they go back.
    rlhf_model::alloc::guard_memory(0.5);
    // Only the commands that run a model say which precision they run it in.
    let runs_model = !matches!(
        cli.command,
        Command::Data(_)
            | Command::Label(_)
            | Command::Import(_)
            | Command::Merge(_)
            | Command::Launch(_)
    );
    let result = cli
        .runtime
        .init(runs_model)
        .and_then(|device| {
            join_launch(&cli.command, device)?;
            Ok(device)
        })
        .and_then(|device| match cli.command {
            Command::Demo(args) => cmd::demo::run(args, device),
            Command::Data(args) => cmd::data::run(args),
            Command::Pretrain(args) => cmd::pretrain::run(args, device),
            Command::Sft(args) => cmd::sft::run(args, device),
            Command::Reward(args) => cmd::reward::run(args, device),
            Command::Ppo(args) => cmd::ppo::run(args, device),
            Command::Dpo(args) => cmd::dpo::run(args, device),
            Command::Grpo(args) => cmd::grpo::run(args, device),
            Command::Score(args) => cmd::score::run(args, device),
            Command::Eval(args) => cmd::eval::run(args, device),
            Command::Generate(args) => cmd::generate::run(args, device),
            Command::Serve(args) => cmd::serve::run(args, device),
            Command::Chat(args) => cmd::chat::run(args, device),
            Command::Sample(args) => cmd::sample::run(args, device),
            Command::Label(args) => cmd::label::run(args),
            Command::Launch(args) => cmd::launch::run(args, &cli.runtime),
            Command::Merge(args) => cmd::merge::run(args, device),
            Command::Nll(args) => cmd::nll::run(args, device),
            Command::SelfImprove(args) => cmd::self_improve::run(args, device),
            Command::Experiment(args) => cmd::experiment::run(args, device),
            Command::Distill(args) => cmd::distill::run(args, device),
            Command::Flan(args) => cmd::flan::run(args, device),
            Command::Import(args) => cmd::import::run(args),
            Command::Browse(args) => cmd::browse::run(args, device),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Under a launcher (WORLD_SIZE > 1: `rlhf launch`, torchrun), joins the process group before
/// the command runs; a command that cannot run data-parallel is refused rather than run N
/// times over.
fn join_launch(command: &Command, device: tch::Device) -> anyhow::Result<()> {
    let Some(env) = rlhf_model::dist::LaunchEnv::from_env()? else {
        return Ok(());
    };
    if device != tch::Device::Cpu {
        anyhow::bail!(
            "data parallelism runs on CPU processes over Gloo; NCCL for GPUs is not wired yet \
             (no GPU was available to test it). Use --device cpu"
        );
    }
    let name = match command {
        Command::Pretrain(_) => "pretrain",
        Command::Sft(_) => "sft",
        Command::Reward(_) => "reward",
        Command::Dpo(_) => "dpo",
        Command::Ppo(_) => "ppo",
        Command::Grpo(_) => "grpo",
        Command::Launch(_) => anyhow::bail!(
            "rlhf launch is running under a launcher already (WORLD_SIZE={}); start the \
             command itself",
            env.world
        ),
        _ => anyhow::bail!(
            "this command does not run data-parallel, but WORLD_SIZE={} asks for {} processes; \
             data-parallel commands: {}",
            env.world,
            env.world,
            cmd::launch::DATA_PARALLEL.join(", ")
        ),
    };
    let group = rlhf_model::dist::init(&env)?;
    if group.rank() == 0 {
        eprintln!(
            "data parallel: `{name}` on {} ranks (c10d Gloo via {}:{}, timeout {} s)",
            group.world(),
            env.master_addr,
            env.master_port,
            env.timeout.as_secs()
        );
    }
    Ok(())
}
