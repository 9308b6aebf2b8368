//! Options every subcommand shares (device, precision, threads) and small helpers for the
//! command files.

use anyhow::Result;
use clap::Args;
use rlhf_model::{DeviceArg, Precision};

/// Where and how tensors are computed.
#[derive(Debug, Args)]
pub struct Runtime {
    /// Device: cpu, cuda, or auto (CUDA when libtorch sees a GPU, else CPU).
    #[arg(long, global = true, default_value = "auto", env = "RLHF_DEVICE")]
    pub device: DeviceArg,
    /// Dtype of the models' matrix products: fp32; bf16 (bf16 products on fp32 master weights
    /// and fp32 optimizer state; softmax, log-probs, losses, norms' statistics and RL ratios stay
    /// fp32); or auto (bf16 on CUDA, and on CPUs with avx512_bf16 or amx_bf16 for models at
    /// least 512 wide, where it measured faster; else fp32). The choice is printed. In bf16, CPU
    /// decoding reads bf16 copies of the weights made once per generation.
    #[arg(
        long,
        global = true,
        default_value = "auto",
        env = "RLHF_PRECISION",
        value_name = "fp32|bf16|auto"
    )]
    pub precision: Precision,
    /// Intra-op threads for libtorch [default: the number of cores; under `rlhf launch`, the
    /// cores divided among the ranks].
    #[arg(long, global = true, env = "RLHF_THREADS")]
    pub threads: Option<usize>,
}

impl Runtime {
    /// Sets threads and the models' precision, and resolves the device; prints the precision
    /// (to stderr) when the command runs a model.
    pub fn init(&self, runs_model: bool) -> Result<tch::Device> {
        rlhf_model::device::set_threads(self.threads);
        let device = self.device.resolve()?;
        rlhf_model::precision::set_default(self.precision, device);
        // Under a launcher only rank 0 says it (the group is joined later, so read RANK).
        let other_rank = std::env::var("RANK").is_ok_and(|r| r.trim() != "0")
            && std::env::var("WORLD_SIZE").is_ok_and(|w| w.trim() != "1");
        if runs_model && !other_rank {
            eprintln!("{}", self.precision.describe(device));
        }
        Ok(device)
    }
}

/// `--config FILE` and `--set key.path=value` for commands with a typed configuration.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML configuration file [default: every key at its default].
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Override one key, e.g. --set trainer.lr=3e-4 (repeatable; applied after --config).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the resolved configuration (defaults + --config + --set) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl ConfigArgs {
    /// Loads the typed config strictly: unknown keys and wrong types are errors with the key path.
    /// With `--print-config`, prints it and exits.
    pub fn load<T: serde::de::DeserializeOwned + serde::Serialize + Default>(&self) -> Result<T> {
        self.load_then(|_| Ok(()))
    }

    /// As [`Self::load`], with the command's own flags applied by `adjust` before the
    /// configuration is validated and printed (so `--print-config` shows what would run).
    pub fn load_then<T: serde::de::DeserializeOwned + serde::Serialize + Default>(
        &self,
        adjust: impl FnOnce(&mut T) -> Result<()>,
    ) -> Result<T> {
        let mut cfg: T = rlhf_train::config::load(self.config.as_deref(), &self.set)?;
        adjust(&mut cfg)?;
        if self.print_config {
            print_line(toml::to_string(&cfg)?)?;
            std::process::exit(0);
        }
        Ok(cfg)
    }
}

/// `--lora` and its settings, shared by the training commands (`sft`, `reward`, `ppo`). Each flag
/// overrides the configuration's `[lora]` table, which `--config`/`--set lora.KEY=...` also set.
#[derive(Debug, Args)]
pub struct LoraArgs {
    /// Train a LoRA adapter instead of every weight; OUT then holds the adapter in PEFT's
    /// layout (adapter_config.json, adapter_model.safetensors) naming MODEL as its base. MODEL
    /// must be a full checkpoint (`rlhf merge` makes one from an adapter).
    #[arg(long)]
    pub lora: bool,
    /// Rank of the adapters [default: 8].
    #[arg(long, value_name = "R")]
    pub lora_r: Option<i64>,
    /// Scale numerator: updates are scaled by ALPHA / R [default: 16].
    #[arg(long, value_name = "ALPHA")]
    pub lora_alpha: Option<f64>,
    /// Dropout on the adapters' input while training [default: 0].
    #[arg(long, value_name = "P")]
    pub lora_dropout: Option<f64>,
    /// Modules to adapt, comma-separated transformers names (q_proj,v_proj; c_attn for GPT-2),
    /// or all-linear: every linear map of the blocks [default: all-linear].
    #[arg(long, value_name = "NAMES")]
    pub lora_targets: Option<String>,
    /// rsLoRA: scale by ALPHA / sqrt(R) instead of ALPHA / R.
    #[arg(long)]
    pub rslora: bool,
}

impl LoraArgs {
    /// Writes the flags given into `cfg`; a LoRA setting without `--lora` (or lora.enabled in
    /// the configuration) is an error rather than silently unused.
    pub fn apply(&self, cfg: &mut rlhf_model::LoraConfig) -> Result<()> {
        cfg.enabled |= self.lora;
        let any = self.lora_r.is_some()
            || self.lora_alpha.is_some()
            || self.lora_dropout.is_some()
            || self.lora_targets.is_some()
            || self.rslora;
        if any && !cfg.enabled {
            anyhow::bail!(
                "--lora-r, --lora-alpha, --lora-dropout, --lora-targets and --rslora need --lora"
            );
        }
        if let Some(r) = self.lora_r {
            cfg.r = r;
        }
        if let Some(a) = self.lora_alpha {
            cfg.alpha = a;
        }
        if let Some(d) = self.lora_dropout {
            cfg.dropout = d;
        }
        if let Some(t) = &self.lora_targets {
            cfg.targets = t
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        cfg.rslora |= self.rslora;
        Ok(())
    }
}

/// Prints one line of output. A closed pipe (`rlhf score ... | head`) ends the program quietly,
/// as it does for other command-line tools, instead of panicking inside `println!`.
pub fn print_line(line: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// A progress bar `WHAT [####    ] pos/len (eta left)` on stderr.
pub fn progress_bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let template = format!("{what} {{bar:30}} {{pos}}/{{len}} ({{eta}} left)");
    indicatif::ProgressBar::new(len as u64).with_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}

/// Progress bars on stderr, one per phase, and result lines as they come: how the CLI shows a
/// library's `Observer` calls.
#[derive(Default)]
pub struct Bars {
    bar: Option<indicatif::ProgressBar>,
}

impl rlhf_eval::Observer for Bars {
    fn phase(&mut self, name: &str, total: u64) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let bar = progress_bar(total as usize, name);
        if bar.is_hidden() {
            // Not a terminal (a log file, CI): one line per phase instead of a bar.
            eprintln!("{name} ...");
        }
        self.bar = Some(bar);
    }
    fn advance(&mut self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }
    fn note(&mut self, line: &str) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// How to reach an LLM judge behind `--judge openai:URL` (`rlhf eval`, `rlhf label`); the
/// defaults are `rlhf_client::Endpoint`'s, shared by every command that calls an endpoint.
#[derive(Debug, Args)]
pub struct JudgeEndpointArgs {
    /// Model name sent to an openai: judge [default: the first model the server lists].
    #[arg(long)]
    pub judge_model: Option<String>,
    /// Seconds before a request to an openai: judge fails.
    #[arg(long, default_value_t = rlhf_client::endpoint::DEFAULT_TIMEOUT_S)]
    pub judge_timeout: u64,
    /// Retries of a failed judge request (no connection, 408/409/429/5xx), with exponential
    /// backoff from 0.5 s.
    #[arg(long, default_value_t = rlhf_client::endpoint::DEFAULT_RETRIES)]
    pub judge_retries: u32,
}

impl JudgeEndpointArgs {
    /// The endpoint with these settings.
    pub fn apply(&self, endpoint: rlhf_client::Endpoint) -> rlhf_client::Endpoint {
        endpoint.with(
            self.judge_model.clone(),
            Some(self.judge_timeout),
            Some(self.judge_retries),
        )
    }
}

/// The network limits of a server (`rlhf serve`, `rlhf label serve`).
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Seconds a client has to send a request's line and headers (counted from when the
    /// connection opens or finishes its last request): slow or idle connections are closed.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub header_timeout: f64,
    /// Seconds a client has to send a request's whole body once its headers arrived.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub body_timeout: f64,
    /// Most connections open at once; more wait in the kernel's queue until one closes.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
}

impl HttpArgs {
    pub fn limits(&self) -> rlhf_http::Limits {
        let secs = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.001, 86_400.0));
        rlhf_http::Limits {
            header_timeout: secs(self.header_timeout),
            body_timeout: secs(self.body_timeout),
            max_connections: self.max_connections.max(1),
            ..Default::default()
        }
    }
}

/// Completes on Ctrl-C or SIGTERM (what `kill`, systemd and container runtimes send), saying
/// so on stderr as `WHO: shutting down ...`.
pub async fn shutdown_signal(who: &'static str) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("{who}: shutting down after the open requests");
}
