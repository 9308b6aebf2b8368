//! `rlhf demo`: the embedded InstructGPT pipeline end to end with no downloads: task world →
//! tokenizer + tiny model pretrained from scratch → SFT → K samples per prompt → simulated
//! labelers → reward model → PPO and PPO-ptx → evaluation against SFT (oracle win rate, KL,
//! pretraining NLL, best-of-n) → a run folder with every artifact and `report.md` with plots.
//!
//! Each stage runs the same code as its subcommand (`rlhf sample`, `rlhf eval`, ...): the demo
//! parses the subcommand's own arguments, so what it does can be replayed by hand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use rlhf_data::{EvalRecord, PromptRecord, WorldConfig, read_jsonl, write_world};
use rlhf_model::{Head, Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use rlhf_report::{LineChart, Series, md_table};
use rlhf_train::{
    Metrics, PpoConfig, PpoInputs, Preset, PretrainConfig, Resume, RewardConfig, SftConfig,
};

/// Run the whole embedded pipeline (data → pretrain → SFT → sample → label → reward model →
/// PPO and PPO-ptx → eval) in a fresh run folder, with a report.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder [default: runs/demo-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the task world and of every stage.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model size (see `rlhf pretrain --help`).
    #[arg(long, default_value = "micro")]
    preset: Preset,
    /// Pretraining optimizer steps.
    #[arg(long, default_value_t = 600)]
    pretrain_steps: u64,
    /// SFT optimizer steps.
    #[arg(long, default_value_t = 300)]
    sft_steps: u64,
    /// Responses sampled and ranked per prompt (InstructGPT: 4 to 9).
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// PPO iterations (64 rollouts each) for PPO and for PPO-ptx.
    #[arg(long, default_value_t = 20)]
    ppo_iterations: u64,
    /// PPO learning rate (policy and value model).
    #[arg(long, default_value_t = 2e-5)]
    ppo_lr: f64,
    /// PPO-ptx coefficient γ.
    #[arg(long, default_value_t = 1.0)]
    ptx_coef: f64,
    /// Held-out prompts in the final evaluation [default: all 300].
    #[arg(long)]
    eval_prompts: Option<usize>,
    /// Largest n of the best-of-n curve (powers of two up to it).
    #[arg(long, default_value_t = 16)]
    best_of: usize,
    /// Held-out prompts used for the best-of-n curve.
    #[arg(long, default_value_t = 64)]
    best_of_prompts: usize,
    /// Stop after pretraining (the quick smoke run of earlier versions).
    #[arg(long)]
    pretrain_only: bool,
}

/// Parses a subcommand's own arguments, so that the demo runs exactly what the CLI would.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct Sub<T: clap::Args> {
    #[command(flatten)]
    args: T,
}

fn parse<T: clap::Args>(argv: &[String]) -> Result<T> {
    Ok(Sub::<T>::try_parse_from(argv)
        .with_context(|| format!("demo: bad internal arguments {argv:?}"))?
        .args)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Timings and report text, appended stage by stage and written after each stage, so an
/// interrupted demo still leaves a report of what finished.
struct Report {
    path: PathBuf,
    text: String,
    t0: Instant,
    stage: usize,
    stages: usize,
}

impl Report {
    fn stage(&mut self, name: &str) -> Instant {
        self.stage += 1;
        eprintln!(
            "\n[{}/{}] {name}  ({:.0} s so far)",
            self.stage,
            self.stages,
            self.t0.elapsed().as_secs_f64()
        );
        Instant::now()
    }

    fn add(&mut self, s: &str) -> Result<()> {
        self.text.push_str(s);
        std::fs::write(&self.path, &self.text)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("runs/demo-{secs}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut rep = Report {
        path: out.join("report.md"),
        text: format!(
            "# rlhf demo\n\nRun folder: `{}`; seed {}; `rlhf demo` with every stage's artifact \
             in its own folder.\n\n",
            out.display(),
            args.seed
        ),
        t0: Instant::now(),
        stage: 0,
        stages: if args.pretrain_only { 3 } else { 9 },
    };
    let seed = args.seed.to_string();

    // 1. Task world.
    let t = rep.stage("task world");
    let data = out.join("data");
    std::fs::create_dir_all(&data)?;
    let world = write_world(
        &data,
        &WorldConfig {
            seed: args.seed,
            ..Default::default()
        },
    )?;
    let mut s = format!("## 1. Task world ({:.1} s)\n\n", t.elapsed().as_secs_f64());
    for f in &world.files {
        let _ = writeln!(s, "- `data/{}`: {} records", f.name, f.records);
    }
    rep.add(&s)?;

    // 2. Pretraining.
    let t = rep.stage(&format!(
        "pretraining a {:?} model ({} steps)",
        args.preset, args.pretrain_steps
    ));
    let mut cfg = PretrainConfig {
        preset: args.preset,
        ..Default::default()
    };
    cfg.trainer.max_steps = args.pretrain_steps;
    cfg.trainer.seed = args.seed;
    cfg.trainer.checkpoint_every = 0;
    let pretrained = out.join("pretrained");
    let ps = rlhf_train::pretrain(&data, &pretrained, &cfg, Resume::No, device, true)?;
    eprintln!(
        "      {} params, held-out loss {:.3} -> {:.3}",
        ps.params, ps.eval_loss_start, ps.eval_loss_end
    );
    rep.add(&format!(
        "\n## 2. Pretraining ({:.0} s)\n\n{:?} preset, {} parameters, {} steps; held-out LM loss \
         {:.3} -> {:.3}. `pretrained/`\n",
        t.elapsed().as_secs_f64(),
        args.preset,
        ps.params,
        ps.steps,
        ps.eval_loss_start,
        ps.eval_loss_end
    ))?;
    if args.pretrain_only {
        let t = rep.stage("answering held-out prompts");
        let samples = greedy_answers(
            &pretrained,
            &data.join("eval.jsonl"),
            8,
            PromptFormat::Raw,
            device,
        )?;
        let mut s = format!("\n## Samples ({:.0} s)\n\n", t.elapsed().as_secs_f64());
        for (prompt, answer, score) in &samples {
            eprintln!("\n  > {prompt}\n  {answer}   [oracle {score:.2}]");
            let _ = writeln!(s, "- **{prompt}**\n  {answer} `[{score:.2}]`");
        }
        rep.add(&s)?;
        return finish(&mut rep, &out);
    }

    // 3. SFT.
    let t = rep.stage(&format!(
        "supervised fine-tuning ({} steps)",
        args.sft_steps
    ));
    let mut sft_cfg = SftConfig::default();
    sft_cfg.trainer.max_steps = args.sft_steps;
    sft_cfg.trainer.seed = args.seed;
    let sft = out.join("sft");
    let ss = rlhf_train::sft(
        &pretrained,
        &data.join("sft.jsonl"),
        &sft,
        &sft_cfg,
        Resume::No,
        device,
    )?;
    rep.add(&format!(
        "\n## 3. SFT ({:.0} s)\n\n{} demonstrations (25% flawed on purpose), {} steps; held-out \
         loss {:.3} -> {:.3}. `sft/`\n",
        t.elapsed().as_secs_f64(),
        ss.train_examples,
        ss.steps,
        ss.eval_loss_start,
        ss.eval_loss_end
    ))?;

    // SFT against the pretrained model, greedy, on every held-out prompt.
    let eval_file = data.join("eval.jsonl");
    let base = oracle_eval(&pretrained, &eval_file, PromptFormat::Raw, device)?;
    let base_chat = oracle_eval(&pretrained, &eval_file, PromptFormat::Chat, device)?;
    let tuned = oracle_eval(&sft, &eval_file, PromptFormat::Chat, device)?;
    eprintln!(
        "      held-out oracle score {:.3} / {:.3} -> {:.3}, accuracy {:.1}% / {:.1}% -> {:.1}% \
         (pretrained in chat / corpus format -> SFT)",
        base_chat.0,
        base.0,
        tuned.0,
        100.0 * base_chat.1,
        100.0 * base.1,
        100.0 * tuned.1
    );
    rep.add(&format!(
        "\nGreedy answers to all {} held-out prompts, scored by the oracle. Asked as an assistant \
         (the chat template), SFT is far ahead; the pretrained model prompted in its own corpus \
         format, whose solutions are all clean, can beat SFT, whose demonstrations are a quarter \
         flawed:\n\n{}",
        tuned.2,
        md_table(
            &[
                "model (prompt format)",
                "mean oracle score",
                "accuracy (correct answers)"
            ],
            &[
                row("pretrained (chat template)", base_chat),
                row("pretrained (corpus format)", base),
                row("SFT (chat template)", tuned),
            ],
        )
    ))?;

    // 4. Sample K responses per prompt, 5. rank them with simulated labelers.
    let t = rep.stage(&format!("sampling K = {} responses per prompt", args.k));
    let samples = out.join("samples.jsonl");
    let k = args.k.to_string();
    crate::cmd::sample::run(
        parse(&argv(&[
            "--model",
            &p(&sft),
            "--prompts",
            &p(&data.join("prompts.jsonl")),
            "--k",
            &k,
            "--out",
            &p(&samples),
            "--seed",
            &seed,
            "--max-new-tokens",
            "64",
            "--batch-size",
            "128",
        ]))?,
        device,
    )?;
    let rankings = out.join("rankings.jsonl");
    crate::cmd::label::run(parse(&argv(&[
        "--oracle",
        "--samples",
        &p(&samples),
        "--out",
        &p(&rankings),
        "--seed",
        &seed,
    ]))?)?;
    rep.add(&format!(
        "\n## 4. Samples and rankings ({:.0} s)\n\nK = {} responses per prompt from the SFT \
         model at temperature 1, ranked by 4 simulated labelers (oracle + Bradley–Terry noise \
         calibrated to 73% inter-labeler agreement). `samples.jsonl`, `rankings.jsonl`\n",
        t.elapsed().as_secs_f64(),
        args.k
    ))?;

    // 6. Reward model.
    let t = rep.stage("reward model");
    let rm = out.join("rm");
    let mut rm_cfg = RewardConfig::default();
    rm_cfg.trainer.seed = args.seed;
    let rs = rlhf_train::reward(&sft, &rankings, &rm, &rm_cfg, device)?;
    let oracle_acc = rs
        .eval_accuracy_end
        .oracle
        .map_or("n/a".into(), |o| format!("{:.1}%", 100.0 * o));
    eprintln!(
        "      held-out pairwise accuracy {:.1}% (labels), {oracle_acc} (noise-free oracle)",
        100.0 * rs.eval_accuracy_end.labels
    );
    rep.add(&format!(
        "\n## 5. Reward model ({:.0} s)\n\n{} train / {} held-out prompts, 1 epoch, each \
         prompt's C(K,2) pairs in one batch element. Held-out pairwise accuracy: {:.1}% against \
         the noisy labels ({} pairs), {oracle_acc} against the noise-free oracle ({} pairs). \
         Rewards centred on the SFT samples (std {:.3}). `rm/`\n",
        t.elapsed().as_secs_f64(),
        rs.train_prompts,
        rs.eval_prompts,
        100.0 * rs.eval_accuracy_end.labels,
        rs.eval_accuracy_end.label_pairs,
        rs.eval_accuracy_end.oracle_pairs,
        rs.reward_std
    ))?;

    // 7. PPO and PPO-ptx.
    let mut runs = Vec::new();
    for (name, ptx) in [("ppo", 0.0), ("ppo-ptx", args.ptx_coef)] {
        let t = rep.stage(&format!("{name} ({} iterations)", args.ppo_iterations));
        let cfg = PpoConfig {
            iterations: args.ppo_iterations,
            ptx_coef: ptx,
            seed: args.seed,
            // Within the 10-minute budget: 2 PPO epochs at a lower LR than the library default
            // (3e-5, 4 epochs), which over-optimised this small reward model (see README).
            lr: args.ppo_lr,
            ppo_epochs: 2,
            ptx_batch: 4,
            eval_every: 10,
            eval_prompts: 64,
            checkpoint_every: 0,
            ..Default::default()
        };
        let inputs = PpoInputs {
            policy: sft.clone(),
            reward: rm.clone(),
            prompts: data.join("prompts.jsonl"),
            eval_prompts: Some(data.join("eval.jsonl")),
            ptx_data: (ptx > 0.0).then(|| data.join("corpus.txt")),
            out: out.join(name),
        };
        let summary = rlhf_train::ppo(&inputs, &cfg, Resume::No, device, true)?;
        runs.push((name, summary.log, t.elapsed().as_secs_f64()));
    }
    let mut s = String::from("\n## 6. PPO and PPO-ptx\n\n");
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|(name, log, secs)| {
            let (a, b) = (log.first(), log.last());
            let g = |m: Option<&Metrics>, k: &str| {
                m.and_then(|m| m.get(k))
                    .map_or("–".into(), |v| format!("{v:.3}"))
            };
            vec![
                name.to_string(),
                format!("{}", log.len()),
                format!("{secs:.0}"),
                format!("{} → {}", g(a, "rm_score"), g(b, "rm_score")),
                format!("{} → {}", g(a, "oracle_score"), g(b, "oracle_score")),
                g(b, "kl"),
                g(b, "response_len"),
            ]
        })
        .collect();
    s.push_str(&md_table(
        &[
            "run",
            "iterations",
            "seconds",
            "RM score (rollouts)",
            "oracle score (rollouts)",
            "final KL (nats)",
            "final length",
        ],
        &rows,
    ));
    s.push_str(&ppo_plots(&out, &runs)?);
    rep.add(&s)?;

    // 8. Evaluation against SFT.
    let t = rep.stage("evaluation against SFT on held-out prompts");
    let mut s = String::from("\n## 7. Evaluation on held-out prompts (oracle judge)\n\n");
    let n = args.eval_prompts.map(|n| n.to_string());
    let mut rows = Vec::new();
    for (name, _, _) in &runs {
        let dir = out.join(format!("eval-{name}"));
        let mut a = argv(&[
            "--model",
            &p(&out.join(name)),
            "--baseline",
            &p(&sft),
            "--prompts",
            &p(&data.join("eval.jsonl")),
            "--judge",
            "oracle",
            "--out",
            &p(&dir),
            "--seed",
            &seed,
        ]);
        if let Some(n) = &n {
            a.extend(argv(&["--n", n]));
        }
        crate::cmd::eval::run(parse(&a)?, device)?;
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json"))?)?;
        let ci = |k: &str| {
            let x = &v[k];
            format!(
                "{:.3} [{:.3}, {:.3}]",
                x["mean"].as_f64().unwrap_or(f64::NAN),
                x["lo"].as_f64().unwrap_or(f64::NAN),
                x["hi"].as_f64().unwrap_or(f64::NAN)
            )
        };
        rows.push(vec![
            format!("{name} vs SFT"),
            ci("win_rate"),
            ci("score_a"),
            ci("score_b"),
            format!("{:.2}", v["kl"]["mean"].as_f64().unwrap_or(f64::NAN)),
        ]);
    }
    s.push_str(&md_table(
        &[
            "comparison",
            "oracle win rate [95% CI]",
            "oracle score",
            "SFT oracle score",
            "KL to SFT (nats)",
        ],
        &rows,
    ));
    // The alignment tax: held-out pretraining-corpus NLL.
    let held = held_out_corpus(&data, 300)?;
    let mut nll_rows = Vec::new();
    for (name, dir) in [
        ("pretrained", &pretrained),
        ("SFT", &sft),
        ("PPO", &out.join("ppo")),
        ("PPO-ptx", &out.join("ppo-ptx")),
    ] {
        let pre = Pretrained::load(dir, Head::Lm, device)?;
        let texts: Vec<Vec<i64>> = held
            .iter()
            .map(|t| pre.encode_prompt(t, PromptFormat::Raw))
            .collect::<rlhf_model::Result<_>>()?;
        let max = pre.model.cfg.max_positions as usize;
        let texts: Vec<Vec<i64>> = texts
            .into_iter()
            .map(|mut t| {
                t.truncate(max);
                t
            })
            .collect();
        let (total, count) = pre.nll(&texts, 16)?;
        nll_rows.push(vec![
            name.to_string(),
            format!("{:.4}", total / count.max(1) as f64),
        ]);
    }
    s.push_str(&format!(
        "\nPretraining-corpus NLL (nats/token, the last {} corpus documents, held out from \
         pretraining): PPO-ptx should pay less \"alignment tax\" than PPO.\n\n",
        held.len()
    ));
    s.push_str(&md_table(&["model", "held-out corpus NLL"], &nll_rows));
    let _ = writeln!(s, "\n({:.0} s)", t.elapsed().as_secs_f64());
    rep.add(&s)?;

    // 9. Best-of-n against the reward model.
    let t = rep.stage(&format!("best-of-n (n up to {})", args.best_of));
    let s = best_of_n(
        &out,
        &sft,
        &rm,
        &data.join("eval.jsonl"),
        args.best_of,
        args.best_of_prompts,
        args.seed,
        device,
    )?;
    rep.add(&format!("{s}\n({:.0} s)\n", t.elapsed().as_secs_f64()))?;
    finish(&mut rep, &out)
}

fn finish(rep: &mut Report, out: &Path) -> Result<()> {
    let total = rep.t0.elapsed().as_secs_f64();
    rep.add(&format!("\nTotal wall time: {total:.1} s.\n"))?;
    eprintln!(
        "\ndone in {total:.1} s; report: {}",
        out.join("report.md").display()
    );
    Ok(())
}

/// The last `n` documents of the world's corpus.txt (the held-out end of the pretraining stream).
fn held_out_corpus(data: &Path, n: usize) -> Result<Vec<String>> {
    let path = data.join("corpus.txt");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let docs: Vec<String> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect();
    Ok(docs[docs.len().saturating_sub(n)..].to_vec())
}

/// Reward, oracle score, KL and win rate against PPO iteration; oracle vs RM as KL grows.
fn ppo_plots(out: &Path, runs: &[(&str, Vec<Metrics>, f64)]) -> Result<String> {
    let series = |key: &str, x_key: &str| -> Vec<Series> {
        runs.iter()
            .map(|(name, log, _)| Series {
                name: format!("{name} {key}"),
                points: log
                    .iter()
                    .filter_map(|m| Some((*m.get(x_key)?, *m.get(key)?)))
                    .collect(),
                band: None,
            })
            .collect()
    };
    let mut s = String::from("\n");
    let charts = [
        ("ppo_reward", "Rollout rewards", "iteration", "score", {
            let mut v = series("rm_score", "iteration");
            v.extend(series("oracle_score", "iteration"));
            v
        }),
        (
            "ppo_kl",
            "KL to the SFT policy",
            "iteration",
            "KL (nats per response)",
            series("kl", "iteration"),
        ),
        (
            "ppo_win_rate",
            "Held-out oracle win rate vs SFT (64 prompts)",
            "iteration",
            "win rate",
            {
                let mut v = series("eval/oracle_win_rate", "eval/iteration");
                v.extend(series("eval/rm_win_rate", "eval/iteration"));
                v
            },
        ),
        (
            "ppo_overoptimisation",
            "Gold (oracle) vs proxy (RM) reward as KL grows",
            "KL (nats)",
            "score",
            {
                let mut v = series("rm_score", "kl");
                v.extend(series("oracle_score", "kl"));
                v
            },
        ),
    ];
    for (stem, title, x, y, series) in charts {
        let chart = LineChart {
            title: title.into(),
            x_label: x.into(),
            y_label: y.into(),
            series,
            ..Default::default()
        };
        chart.save(&out.join(stem))?;
        let _ = writeln!(s, "![{title}]({stem}.svg)\n");
    }
    Ok(s)
}

/// Best-of-n by the reward model: for each n, the mean oracle and RM score of the RM's favourite
/// among n SFT samples (disjoint groups of the `n_max` samples per prompt, averaged).
#[allow(clippy::too_many_arguments)]
fn best_of_n(
    out: &Path,
    sft: &Path,
    rm: &Path,
    eval: &Path,
    n_max: usize,
    n_prompts: usize,
    seed: u64,
    device: tch::Device,
) -> Result<String> {
    let pre = Pretrained::load(sft, Head::Lm, device)?;
    let prompts: Vec<String> = read_jsonl::<PromptRecord>(eval)?
        .into_iter()
        .take(n_prompts)
        .map(|r| r.prompt)
        .collect();
    let cfg = TextGenerateConfig {
        max_new_tokens: 64,
        sampling: Sampling::new(1.0, None, None)?,
        seed: Some(seed),
        stop: vec![],
    };
    let gens = pre.sample_k(&prompts, n_max, PromptFormat::Chat, &cfg, 256, |_, _| {})?;
    let rm_model = rlhf_model::Gpt::load(rm, Head::Scalar, device)?;
    let pad = pre
        .tokenizer
        .pad_id()
        .or(pre.tokenizer.eos_id())
        .map_or(0, i64::from);
    let mut table = Vec::new();
    let (mut rm_pts, mut or_pts) = (Vec::new(), Vec::new());
    let mut scored = Vec::new(); // per prompt: (rm, oracle) of each sample
    for (prompt, gens) in prompts.iter().zip(&gens) {
        let q = pre.encode_prompt(prompt, PromptFormat::Chat)?;
        let seqs: Vec<Vec<i64>> = gens
            .iter()
            .map(|g| rlhf_train::reward::encode_response(&pre.tokenizer, &q, g.text.trim()))
            .collect::<rlhf_train::Result<_>>()?;
        let r = {
            let _g = tch::no_grad_guard();
            Vec::<f32>::try_from(
                &rlhf_train::reward::rewards(&rm_model, &seqs, pad)?.to_device(tch::Device::Cpu),
            )?
        };
        let o: Vec<f64> = gens
            .iter()
            .map(|g| rlhf_data::score(prompt, g.text.trim()).unwrap_or(f64::NAN))
            .collect();
        scored.push(r.into_iter().map(f64::from).zip(o).collect::<Vec<_>>());
    }
    let mut n = 1;
    while n <= n_max {
        let (mut rm_sum, mut or_sum, mut count) = (0.0, 0.0, 0usize);
        for samples in &scored {
            for group in samples.chunks(n).filter(|g| g.len() == n) {
                let best = group
                    .iter()
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .expect("non-empty group");
                rm_sum += best.0;
                or_sum += best.1;
                count += 1;
            }
        }
        let (rm_mean, or_mean) = (rm_sum / count as f64, or_sum / count as f64);
        rm_pts.push((n as f64, rm_mean));
        or_pts.push((n as f64, or_mean));
        table.push(vec![
            n.to_string(),
            format!("{rm_mean:.3}"),
            format!("{or_mean:.3}"),
        ]);
        n *= 2;
    }
    let chart = LineChart {
        title: "Best-of-n by the reward model (SFT samples)".into(),
        x_label: "n".into(),
        y_label: "score of the RM's choice".into(),
        series: vec![
            Series {
                name: "RM score (proxy)".into(),
                points: rm_pts,
                band: None,
            },
            Series {
                name: "oracle score (gold)".into(),
                points: or_pts,
                band: None,
            },
        ],
        log_x: true,
        ..Default::default()
    };
    chart.save(&out.join("best_of_n"))?;
    Ok(format!(
        "\n## 8. Best-of-n against the reward model\n\n{} held-out prompts × {n_max} SFT samples; \
         for each n the RM picks its favourite of n (disjoint groups, averaged).\n\n{}\n\
         ![best-of-n](best_of_n.svg)\n",
        scored.len(),
        md_table(&["n", "RM score", "oracle score"], &table)
    ))
}

/// A table row of `oracle_eval`'s result.
fn row(name: &str, (score, acc, _): (f64, f64, usize)) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{score:.3}"),
        format!("{:.1}%", 100.0 * acc),
    ]
}

/// Mean oracle score, accuracy and count of greedy answers to every prompt of `eval`. Raw
/// prompts (a pretrained model) end at the first newline, as answers do in the corpus.
fn oracle_eval(
    model: &Path,
    eval: &Path,
    format: PromptFormat,
    device: tch::Device,
) -> Result<(f64, f64, usize)> {
    let pre = Pretrained::load(model, Head::Lm, device)?;
    let records: Vec<EvalRecord> = read_jsonl(eval)?;
    let stop = match format {
        PromptFormat::Raw => vec!["\n".to_string()],
        PromptFormat::Chat => vec![],
    };
    let cfg = TextGenerateConfig {
        max_new_tokens: 64,
        sampling: Sampling::Greedy,
        seed: Some(0),
        stop,
    };
    let (mut score, mut correct) = (0.0, 0usize);
    for chunk in records.chunks(64) {
        let prompts: Vec<Vec<i64>> = chunk
            .iter()
            .map(|r| match format {
                PromptFormat::Raw => pre.encode_prompt(&format!("{}\n", r.prompt), format),
                PromptFormat::Chat => pre.encode_prompt(&r.prompt, format),
            })
            .collect::<rlhf_model::Result<_>>()?;
        for (r, o) in chunk.iter().zip(pre.generate_ids(&prompts, &cfg)?) {
            let task = rlhf_data::Task::parse(&r.prompt)?;
            let g = rlhf_data::grade(&task, o.text.trim());
            score += g.score;
            correct += usize::from(g.correct);
        }
    }
    let n = records.len().max(1);
    Ok((score / n as f64, correct as f64 / n as f64, records.len()))
}

/// Greedy continuations of `n` eval prompts, spread over task families.
fn greedy_answers(
    model: &Path,
    eval: &Path,
    n: usize,
    format: PromptFormat,
    device: tch::Device,
) -> Result<Vec<(String, String, f64)>> {
    let pre = Pretrained::load(model, Head::Lm, device)?;
    let records: Vec<EvalRecord> = read_jsonl(eval)?;
    // Every k-th record, so that each family (written in blocks) shows up.
    let stride = (records.len() / n.max(1)).max(1);
    let picked: Vec<&EvalRecord> = records.iter().step_by(stride).take(n).collect();
    let prompts: Vec<Vec<i64>> = picked
        .iter()
        .map(|r| pre.encode_prompt(&format!("{}\n", r.prompt), format))
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
