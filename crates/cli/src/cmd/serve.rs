//! `rlhf serve`: an OpenAI-compatible HTTP API over a checkpoint.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::common::shutdown_signal;
use rlhf_serve::{Engine, EngineConfig, ServeConfig};
use rlhf_tokenizer::Tokenizer;

/// Serve a checkpoint over an OpenAI-compatible HTTP API: GET /v1/models, POST /v1/completions,
/// POST /v1/chat/completions (with the checkpoint's chat template), `stream: true` as server-sent
/// events. Requests that arrive together are decoded together in one batch with the KV cache;
/// each keeps its own temperature, top_p, seed, stop sequences and logprobs. Errors use OpenAI's
/// JSON error shape. Prints the address once it listens; Ctrl-C stops after open requests finish.
///
/// LoRA adapters (PEFT's layout) are served beside the model on its shared weights: `--adapter`
/// loads them at start and, with `--dynamic-adapters`, vLLM's `POST /v1/load_lora_adapter`
/// {"lora_name","lora_path"} and `POST /v1/unload_lora_adapter` {"lora_name"} change them while
/// the server runs; a request picks one by sending its name as `model`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory (config.json, model.safetensors, tokenizer.json), or a LoRA adapter
    /// directory (served merged-in as the model).
    #[arg(long)]
    model: PathBuf,
    /// A LoRA adapter to serve beside the model, as NAME=DIR or DIR (named after the
    /// directory); requests select it with `model: NAME` (repeatable).
    #[arg(long, value_name = "[NAME=]DIR")]
    adapter: Vec<String>,
    /// Allow loading and unloading adapters at run time (POST /v1/load_lora_adapter and
    /// /v1/unload_lora_adapter, vLLM's API). They read directories on this machine that a
    /// client names: keep it off on a shared network, or set an API key.
    #[arg(long)]
    dynamic_adapters: bool,
    /// Address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port; 0 picks a free one (printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model name clients must send [default: the checkpoint directory's name].
    #[arg(long)]
    served_model_name: Option<String>,
    /// Require `Authorization: Bearer <KEY>` on every /v1 request [default: no key, env
    /// RLHF_API_KEY].
    #[arg(long, env = "RLHF_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Most sequences (choices) decoded together in one batch.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Most requests waiting for the model; more are answered 503 (clients retry).
    #[arg(long, default_value_t = 4096)]
    max_queue: usize,
    /// Largest max_tokens accepted (prompt + max_tokens must also fit the context).
    #[arg(long, default_value_t = 4096)]
    max_tokens_cap: usize,
    /// Largest n (choices per request).
    #[arg(long, default_value_t = 16)]
    max_n: usize,
    /// Requests wait for the running batch to finish instead of joining it at the next step
    /// (static batching; for comparison).
    #[arg(long)]
    static_batching: bool,
    /// Largest request body in bytes; bigger ones get 413.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Most choices one request may ask for (completions: prompts × n); more is a 400.
    #[arg(long, default_value_t = 128)]
    max_choices: usize,
    /// Longest stop sequence in bytes; longer is a 400.
    #[arg(long, default_value_t = 1024)]
    max_stop_bytes: usize,
    #[command(flatten)]
    http: crate::common::HttpArgs,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let adapters: Vec<(String, PathBuf)> = args
        .adapter
        .iter()
        .map(|a| match a.split_once('=') {
            Some((name, dir)) => (name.to_string(), PathBuf::from(dir)),
            None => {
                let dir = PathBuf::from(a);
                let name = dir
                    .canonicalize()
                    .unwrap_or(dir.clone())
                    .file_name()
                    .map_or("adapter".into(), |n| n.to_string_lossy().into_owned());
                (name, dir)
            }
        })
        .collect();
    let engine_cfg = EngineConfig {
        max_batch_rows: args.max_batch,
        max_queue: args.max_queue,
        continuous: !args.static_batching,
        adapters: adapters.clone(),
    };
    let engine = Engine::start(args.model.clone(), device, engine_cfg)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer = Tokenizer::from_dir(&rlhf_model::lora::tokenizer_dir(&args.model)?)?;
    let name = args.served_model_name.clone().unwrap_or_else(|| {
        let dir = args.model.canonicalize().unwrap_or(args.model.clone());
        dir.file_name()
            .map_or("model".into(), |n| n.to_string_lossy().into_owned())
    });
    if adapters.iter().any(|(a, _)| *a == name) {
        anyhow::bail!(
            "--adapter: the name `{name}` is the model's own; give the adapter another (NAME=DIR)"
        );
    }
    let cfg = ServeConfig {
        model_name: name.clone(),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        max_body_bytes: args.max_body_bytes,
        max_tokens_cap: args.max_tokens_cap,
        max_n: args.max_n,
        max_choices: args.max_choices,
        max_stop_bytes: args.max_stop_bytes,
        adapters: adapters.into_iter().map(|(n, _)| n).collect(),
        dynamic_adapters: args.dynamic_adapters,
        ..Default::default()
    };
    let context = engine.context;
    let app = rlhf_serve::router(engine, tokenizer, cfg);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        for a in &args.adapter {
            eprintln!("rlhf serve: LoRA adapter {a}");
        }
        eprintln!("rlhf serve: model `{name}` (context {context} tokens) on http://{local}/v1");
        rlhf_http::serve(
            listener,
            app,
            args.http.limits(),
            shutdown_signal("rlhf serve"),
        )
        .await
        .context("serving")
    })
}
