//! `rlhf chat`: a terminal chat with a checkpoint, the whole conversation kept as context.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rlhf_serve::{Engine, EngineConfig, Event, Job, Params};
use rlhf_tokenizer::{Message, Tokenizer};

/// Chat with a checkpoint in the terminal. Each answer streams as it is generated; the whole
/// conversation is the context of the next turn (the oldest turns are dropped when it no longer
/// fits). Commands: /reset clears the history, /history prints it, /system TEXT sets the system
/// message, /exit (or Ctrl-D) quits.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// System message at the start of the conversation [default: none].
    #[arg(long)]
    system: Option<String>,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Most tokens per answer [default: the rest of the context].
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Random seed of the first answer (each later answer adds 1) [default: random].
    #[arg(long)]
    seed: Option<u64>,
}

struct Chat {
    engine: Engine,
    tokenizer: Tokenizer,
    history: Vec<Message>,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    anyhow::ensure!(
        (0.0..=2.0).contains(&args.temperature),
        "--temperature must be in [0, 2], got {}",
        args.temperature
    );
    anyhow::ensure!(
        args.top_p > 0.0 && args.top_p <= 1.0,
        "--top-p must be in (0, 1], got {}",
        args.top_p
    );
    let engine = Engine::start(args.model.clone(), device, EngineConfig::default())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer = Tokenizer::from_dir(&rlhf_model::lora::tokenizer_dir(&args.model)?)?;
    let mut chat = Chat {
        engine,
        tokenizer,
        history: args.system.iter().map(Message::system).collect(),
    };
    let interactive = std::io::stdin().is_terminal();
    eprintln!(
        "Chatting with {} (context {} tokens). /reset clears the history, /history shows it, \
         /exit quits.",
        args.model.display(),
        chat.engine.context
    );
    let mut out = std::io::stdout();
    let mut lines = std::io::stdin().lock().lines();
    for turn in 0u64.. {
        if interactive {
            write!(out, "> ")?;
            out.flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                chat.history.retain(|m| m.role == "system");
                writeln!(out, "(history cleared)")?;
                continue;
            }
            "/history" => {
                for m in &chat.history {
                    writeln!(out, "[{}] {}", m.role, m.content.as_str().unwrap_or(""))?;
                }
                continue;
            }
            _ => {}
        }
        if let Some(system) = line.strip_prefix("/system ") {
            chat.history.retain(|m| m.role != "system");
            chat.history.insert(0, Message::system(system));
            continue;
        }
        let params = Params {
            max_tokens: args.max_tokens.unwrap_or(usize::MAX),
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed.map(|s| s + turn),
            ..Default::default()
        };
        chat.history.push(Message::user(line));
        match chat.answer(params, &mut out) {
            Ok(reply) => chat.history.push(Message::assistant(reply)),
            Err(e) => {
                chat.history.pop();
                writeln!(out, "\n(error: {e:#})")?;
            }
        }
    }
    Ok(())
}

impl Chat {
    /// Prompt ids of the conversation, dropping the oldest exchanges (never the system message
    /// or the last user turn) until at least one token of answer fits.
    fn prompt(&mut self) -> Result<Vec<i64>> {
        loop {
            let ids = self.tokenizer.apply_chat(&self.history, true)?;
            if ids.len() < self.engine.context {
                return Ok(ids.into_iter().map(i64::from).collect());
            }
            let first = self.history.iter().position(|m| m.role != "system");
            match first {
                Some(i) if i + 1 < self.history.len() => {
                    self.history.remove(i);
                    eprintln!("(the oldest turn no longer fits the context and was dropped)");
                }
                _ => bail!(
                    "the message is {} tokens, more than the context of {}",
                    ids.len(),
                    self.engine.context
                ),
            }
        }
    }

    /// Streams one answer to `out` and returns its text.
    fn answer(&mut self, mut params: Params, out: &mut impl Write) -> Result<String> {
        let prompt = self.prompt()?;
        params.max_tokens = params.max_tokens.min(self.engine.context - prompt.len());
        let (tx, mut rx) = tokio::sync::mpsc::channel(rlhf_serve::engine::EVENT_BUFFER);
        self.engine.submit(Job {
            prompt,
            n: 1,
            first_choice: 0,
            params,
            events: tx,
            adapter: None,
        })?;
        let mut reply = String::new();
        while let Some(event) = rx.blocking_recv() {
            match event {
                Event::Delta { text, .. } => {
                    write!(out, "{text}")?;
                    out.flush()?;
                    reply.push_str(&text);
                }
                Event::Finished { .. } => break,
                Event::Failed(e) => bail!(e),
            }
        }
        writeln!(out)?;
        Ok(reply)
    }
}
