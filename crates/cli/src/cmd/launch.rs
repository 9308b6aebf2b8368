//! `rlhf launch`: N data-parallel processes of one rlhf command on this machine, started with
//! torchrun's environment contract so that the same command also runs under torchrun or a
//! cluster launcher.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::common::Runtime;

/// Commands whose training runs data-parallel: they shard each global batch over the ranks and
/// all-reduce gradients; rank 0 writes.
pub const DATA_PARALLEL: [&str; 6] = ["pretrain", "sft", "reward", "dpo", "ppo", "grpo"];

/// Run an rlhf command as NPROC data-parallel processes on this machine, over PyTorch's c10d
/// (Gloo, loopback TCP). Each rank trains on its share of every global batch (batch_size must
/// divide evenly), gradients are all-reduced, and the run equals one process on the same global
/// batch; only rank 0 prints progress and writes checkpoints and metrics. Ranks get torchrun's
/// variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so across machines start
/// `rlhf <command>` under torchrun instead. If a rank fails, the others are stopped and launch
/// exits with an error naming it. Data-parallel commands: pretrain, sft, reward, dpo, ppo and
/// grpo (each rank samples its share of every batch of prompts; advantage whitening, the KL
/// controller, each minibatch and the metrics are global).
///
/// Example: rlhf launch --nproc 2 -- sft --model pre --data demos.jsonl --out sft
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Processes to start (ranks 0..NPROC-1).
    #[arg(long, default_value_t = 2)]
    nproc: usize,
    /// Rendezvous port on 127.0.0.1 [default: a free port chosen at start].
    #[arg(long)]
    master_port: Option<u16>,
    /// Seconds a rank waits for the others (to join, or in any collective) before it fails;
    /// passed to the ranks as RLHF_DIST_TIMEOUT. A rank that dies is noticed at once.
    #[arg(long, default_value_t = rlhf_model::dist::DEFAULT_TIMEOUT_S)]
    timeout: u64,
    /// Seconds the other ranks get to exit after one failed, before they are killed.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// The rlhf command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(args: Args, runtime: &Runtime) -> Result<()> {
    if args.nproc == 0 {
        bail!("--nproc must be at least 1");
    }
    if args.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let sub = args.command[0].as_str();
    if !DATA_PARALLEL.contains(&sub) {
        bail!(
            "`rlhf {sub}` does not run data-parallel; launch runs one of: {}",
            DATA_PARALLEL.join(", ")
        );
    }
    let port = match args.master_port {
        Some(p) => p,
        None => free_port()?,
    };
    let exe = std::env::current_exe().context("cannot find the rlhf executable")?;
    // Each rank gets an equal share of the cores unless told otherwise; N ranks of all-core
    // libtorch pools would oversubscribe the machine.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = runtime
        .threads
        .unwrap_or_else(|| (cores / args.nproc).max(1));
    eprintln!(
        "launch: {} ranks of `rlhf {}` on 127.0.0.1:{port}, {threads} thread(s) each",
        args.nproc,
        args.command.join(" ")
    );
    let mut children: Vec<Child> = Vec::with_capacity(args.nproc);
    let mut echoes = Vec::new();
    for rank in 0..args.nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(&args.command)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", args.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("RLHF_DIST_TIMEOUT", args.timeout.to_string())
            .env("RLHF_THREADS", threads.to_string())
            .env("RLHF_PRECISION", runtime.precision.to_string())
            .env("RLHF_DEVICE", runtime.device.to_string())
            .stdin(Stdio::null());
        if rank > 0 {
            // Rank 0 prints the run; the others' stdout repeats it, their stderr is kept.
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                stop(&mut children, Duration::from_secs(args.grace));
                return Err(e).with_context(|| format!("cannot start rank {rank}"));
            }
        };
        if let Some(err) = child.stderr.take() {
            echoes.push(std::thread::spawn(move || {
                let stderr = std::io::stderr();
                for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                    let _ = writeln!(stderr.lock(), "[rank {rank}] {line}");
                }
            }));
        }
        children.push(child);
    }
    let mut done: Vec<Option<ExitStatus>> = vec![None; children.len()];
    loop {
        for (rank, child) in children.iter_mut().enumerate() {
            if done[rank].is_some() {
                continue;
            }
            if let Some(status) = child.try_wait()? {
                done[rank] = Some(status);
                if !status.success() {
                    eprintln!(
                        "launch: rank {rank} failed ({}); stopping the other ranks",
                        describe(status)
                    );
                    stop(&mut children, Duration::from_secs(args.grace));
                    // The stopped ranks' last words (their errors) before ours.
                    echoes.into_iter().for_each(|e| drop(e.join()));
                    bail!(
                        "rank {rank} of {} failed ({}); see its output above",
                        args.nproc,
                        describe(status)
                    );
                }
            }
        }
        if done.iter().all(Option::is_some) {
            echoes.into_iter().for_each(|e| drop(e.join()));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Asks every rank still running to stop (SIGTERM), then kills those left after `grace`.
fn stop(children: &mut [Child], grace: Duration) {
    for child in children.iter_mut() {
        if let Ok(None) = child.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + grace;
    for child in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// A TCP port that was free a moment ago on loopback.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free port for the rendezvous; pass --master-port")?;
    Ok(listener.local_addr()?.port())
}
