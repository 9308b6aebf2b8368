//! `rlhf demo`: the embedded pipeline end to end with no downloads. For now: task world →
//! tokenizer + tiny model pretrained from scratch → greedy answers to held-out prompts, scored by
//! the oracle. The later stages (SFT, reward model, PPO) join it as they land.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use rlhf_data::{EvalRecord, WorldConfig, read_jsonl, write_world};
use rlhf_model::{Head, Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use rlhf_train::{Preset, PretrainConfig, Resume};

/// Run the embedded pipeline in a fresh run folder: task world, pretraining, samples.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder [default: runs/demo-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the task world and of training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model size (see `rlhf pretrain --help`).
    #[arg(long, default_value = "micro")]
    preset: Preset,
    /// Pretraining optimizer steps.
    #[arg(long, default_value_t = 600)]
    pretrain_steps: u64,
    /// Held-out prompts to answer at the end.
    #[arg(long, default_value_t = 8)]
    samples: usize,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let out = args.out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("runs/demo-{secs}"))
    });
    let t0 = Instant::now();
    let mut report = format!("# rlhf demo\n\nRun folder: `{}`\n\n", out.display());

    eprintln!("[1/3] task world -> {}/data", out.display());
    let data = out.join("data");
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let world = write_world(
        &data,
        &WorldConfig {
            seed: args.seed,
            ..Default::default()
        },
    )?;
    let t_data = t0.elapsed().as_secs_f64();
    let _ = writeln!(
        report,
        "## Task world (seed {}, {t_data:.1} s)\n",
        world.seed
    );
    for f in &world.files {
        let _ = writeln!(
            report,
            "- `{}`: {} records, {} bytes",
            f.name, f.records, f.bytes
        );
    }

    eprintln!(
        "[2/3] pretraining a {:?} model ({} steps)",
        args.preset, args.pretrain_steps
    );
    let mut cfg = PretrainConfig {
        preset: args.preset,
        ..Default::default()
    };
    cfg.trainer.max_steps = args.pretrain_steps;
    cfg.trainer.seed = args.seed;
    cfg.trainer.checkpoint_every = 0;
    let model_dir = out.join("pretrained");
    let s = rlhf_train::pretrain(&data, &model_dir, &cfg, Resume::No, device, true)?;
    eprintln!(
        "      {} params, held-out loss {:.3} -> {:.3} in {:.1} s",
        s.params, s.eval_loss_start, s.eval_loss_end, s.elapsed_s
    );
    let _ = writeln!(
        report,
        "\n## Pretraining ({:?}, {} params)\n\n{} steps in {:.1} s; held-out loss {:.3} -> {:.3} \
         (train tokens {}, held-out tokens {}). Checkpoint: `{}`.\n",
        args.preset,
        s.params,
        s.steps,
        s.elapsed_s,
        s.eval_loss_start,
        s.eval_loss_end,
        s.train_tokens,
        s.eval_tokens,
        model_dir.display()
    );

    eprintln!("[3/3] answering held-out prompts");
    let samples = sample_answers(&model_dir, &data.join("eval.jsonl"), args.samples, device)?;
    report.push_str("## Samples (greedy, held-out prompts; oracle score in brackets)\n\n");
    for (prompt, answer, score) in &samples {
        eprintln!("\n  > {prompt}\n  {answer}   [oracle {score:.2}]");
        let _ = writeln!(report, "- **{prompt}**\n  {answer} `[{score:.2}]`");
    }
    let total = t0.elapsed().as_secs_f64();
    let _ = writeln!(report, "\nTotal wall time: {total:.1} s.");
    std::fs::write(out.join("report.md"), &report)?;
    eprintln!(
        "\ndone in {total:.1} s; report: {}",
        out.join("report.md").display()
    );
    Ok(())
}

/// Greedy continuations of the first `n` eval prompts, spread over task families.
fn sample_answers(
    model: &std::path::Path,
    eval: &std::path::Path,
    n: usize,
    device: tch::Device,
) -> Result<Vec<(String, String, f64)>> {
    let pre = Pretrained::load(model, Head::Lm, device)?;
    let records: Vec<EvalRecord> = read_jsonl(eval)?;
    // Every k-th record, so that each family (written in blocks) shows up.
    let stride = (records.len() / n.max(1)).max(1);
    let picked: Vec<&EvalRecord> = records.iter().step_by(stride).take(n).collect();
    let prompts: Vec<Vec<i64>> = picked
        .iter()
        .map(|r| pre.encode_prompt(&format!("{}\n", r.prompt), PromptFormat::Raw))
        .collect::<rlhf_model::Result<_>>()?;
    let cfg = TextGenerateConfig {
        max_new_tokens: 60,
        sampling: Sampling::Greedy,
        seed: Some(0),
        stop: vec!["\n\n".into()],
    };
    let outs = pre.generate_ids(&prompts, &cfg)?;
    Ok(picked
        .iter()
        .zip(outs)
        .map(|(r, o)| {
            let answer = o.text.trim().to_string();
            let score = rlhf_data::score(&r.prompt, &answer).unwrap_or(f64::NAN);
            (r.prompt.clone(), answer, score)
        })
        .collect())
}
