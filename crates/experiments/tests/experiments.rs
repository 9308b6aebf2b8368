//! The experiments end to end at toy sizes (seconds): the invariants of their data and filters,
//! and that every table and plot is written. The real rows run from the CLI
//! (`rlhf experiment cot|format|lmsi`).
//!
//! libtorch's random generator is global to the process and the tests of this binary run in
//! parallel threads; model initialisation, sampling and the trainers reseed it and draw from it.
//! So every test that runs a model holds [`torch_rng`]: each then sees only its own draws and
//! gives the same result on every run of one machine.

use anyhow::Result;
use rlhf_data::{AnswerPattern, Split, Task};
use rlhf_experiments::cot::{self, Condition, CotConfig, Problem};
use rlhf_experiments::format::{self, FormatConfig};
use rlhf_experiments::lmsi::{self, LmsiExperimentConfig, Variant};
use rlhf_experiments::tiny::{TinyLm, TinySpec, train_tokenizer};
use rlhf_experiments::{Quiet, common};
use rlhf_model::PromptFormat;
use rlhf_train::TrainerConfig;
use rlhf_train::lmsi::{Filter, Formats};
use tch::Device;

fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Re-rendering a report from `results.json` alone (`rerender`, after deleting `report`) gives
/// the same text as the run's `md`, wall-time line apart (the seeds' own clocks vs the run's).
fn assert_rerenders_the_same(
    report: &std::path::Path,
    md: &str,
    rerender: impl FnOnce() -> rlhf_experiments::Result<()>,
) -> Result<()> {
    std::fs::remove_file(report)?;
    rerender()?;
    let again = std::fs::read_to_string(report)?;
    let body = |t: &str| {
        t.split("Total wall time")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(body(&again), body(md));
    Ok(())
}

fn nano(max_positions: i64) -> TinySpec {
    TinySpec {
        hidden: 32,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        max_positions,
    }
}

fn steps(n: u64, batch: usize) -> TrainerConfig {
    TrainerConfig {
        lr: 3e-3,
        warmup_steps: 5,
        max_steps: n,
        batch_size: batch,
        checkpoint_every: 0,
        eval_every: 0,
        ..Default::default()
    }
}

#[test]
fn tiny_model_masks_the_prompt_and_learns_a_mapping() -> Result<()> {
    let _rng = torch_rng();
    let tok = train_tokenizer(&["ab=x cd=y".to_string()], 260)?;
    let mut lm = TinyLm::new(tok, &nano(32), PromptFormat::Raw, 0, Device::Cpu)?;
    let ex = lm.example("ab=", "x")?;
    // "ab=" + "x" + EOS: only the last two positions are targets ("x" after "=", EOS after "x").
    assert_eq!(ex.ids.len(), 5);
    assert_eq!(&ex.labels[..2], &[-100, -100]);
    assert_eq!(ex.labels[2], ex.ids[3]);
    assert_eq!(ex.labels[3], ex.ids[4]);
    assert_eq!(ex.labels[4], -100);
    let pairs = vec![
        ("ab=".to_string(), "x".to_string()),
        ("cd=".to_string(), "y".to_string()),
    ];
    let stats = lm.train(&pairs, &steps(150, 2), |_| {})?;
    assert_eq!(stats.steps, 150);
    assert!(
        stats.flops > 0.0 && stats.tokens == 150 * 2 * 5,
        "{stats:?}"
    );
    assert!(stats.final_loss < 0.1, "{stats:?}");
    let out = lm.complete(&["ab=".into(), "cd=".into()], 3, 8)?;
    assert_eq!(out, vec!["x", "y"]);
    Ok(())
}

#[test]
fn cot_conditions_share_the_answer_and_dots_match_the_steps() -> Result<()> {
    let _rng = torch_rng();
    let cfg = CotConfig::default();
    let mut rng = rlhf_data::world_rng(5, 1);
    let wp = rlhf_data::WordProblem::generate(&mut rng, Split::Train, 3);
    let p = Problem {
        question: wp.prompt(),
        steps: 3,
        answer: wp.answer(),
        reasoning: wp.cot_sentences().join(" "),
    };
    let tok = train_tokenizer(&[p.question.clone(), p.reasoning.clone()], 300)?;
    let lm = TinyLm::new(tok, &cfg.model, PromptFormat::Chat, 0, Device::Cpu)?;
    let filler = lm.count_tokens(&p.reasoning)?;
    let pattern = AnswerPattern::default();
    for c in Condition::ALL {
        let text = cot::completion(c, &p, filler);
        assert_eq!(pattern.extract(&text), Some(p.answer), "{c:?}: {text}");
    }
    let dots = cot::completion(Condition::Dots, &p, filler);
    let (pad, answer) = dots.split_once(' ').expect("dots then the answer");
    assert_eq!(
        lm.count_tokens(pad)?,
        filler,
        "one token per dot, as many as the steps"
    );
    assert!(answer.starts_with("The answer is"));
    assert!(cot::completion(Condition::AnswerFirst, &p, 0).starts_with("The answer is"));
    assert_eq!(
        cot::completion(Condition::Direct, &p, 0),
        format!("The answer is {}.", p.answer)
    );
    Ok(())
}

#[test]
fn cot_experiment_writes_its_table_with_every_condition() -> Result<()> {
    let _rng = torch_rng();
    let dir = tempfile::tempdir()?;
    let cfg = CotConfig {
        train_problems: 64,
        test_per_steps: 4,
        vocab: 400,
        model: nano(384),
        trainer: steps(4, 8),
        max_new_tokens: 8,
        ..Default::default()
    };
    let runs = cot::run(&cfg, &[0, 1], dir.path(), Device::Cpu, &mut Quiet)?;
    assert_eq!(runs.len(), 2);
    for s in &runs {
        assert_eq!(s.test_steps.len(), 16);
        assert_eq!(s.runs.len(), Condition::ALL.len());
        for r in &s.runs {
            assert_eq!(r.correct.len(), 16);
            assert_eq!(
                r.train.is_none(),
                r.condition == Condition::CotPromptedDirect
            );
        }
    }
    let md = std::fs::read_to_string(dir.path().join("e3.md"))?;
    for c in Condition::ALL {
        assert!(
            md.contains(&format!("| {} |", c.name())),
            "{c:?} row missing:\n{md}"
        );
    }
    assert!(md.contains("**Verdict:"));
    assert!(dir.path().join("e3_accuracy_by_steps.png").exists());
    assert!(dir.path().join("results.json").exists());
    Ok(())
}

#[test]
fn cot_test_problems_come_from_the_eval_split() {
    // The experiment's test set is drawn like this; every entity and operand tuple is eval-only.
    let mut rng = rlhf_data::world_rng(0, 11);
    for _ in 0..50 {
        let p = rlhf_data::WordProblem::generate(&mut rng, Split::Eval, 2);
        let task = Task::parse(&p.prompt()).expect("parses");
        assert_eq!(task.split(), Some(Split::Eval));
    }
}

#[test]
fn format_experiment_scores_every_size_and_format() -> Result<()> {
    let _rng = torch_rng();
    let dir = tempfile::tempdir()?;
    let cfg = FormatConfig {
        sizes: vec![20, 40],
        test_problems: 10,
        model: nano(64),
        trainer: steps(3, 8),
        ..Default::default()
    };
    let runs = format::run(&cfg, &[7], dir.path(), Device::Cpu, &mut Quiet)?;
    assert_eq!(runs[0].runs.len(), 6, "3 formats x 2 sizes");
    assert!(runs[0].runs.iter().all(|r| r.correct.len() == 10));
    let md = std::fs::read_to_string(dir.path().join("e4.md"))?;
    assert!(md.contains("| scratchpad |") && md.contains("N = 40"));
    assert!(dir.path().join("e4_accuracy_vs_n.svg").exists());
    Ok(())
}

#[test]
fn lmsi_experiment_filters_keep_what_they_promise() -> Result<()> {
    let _rng = torch_rng();
    let dir = tempfile::tempdir()?;
    let mut cfg = LmsiExperimentConfig {
        base_problems: 64,
        questions: 6,
        test_per_steps: 2,
        vocab: 400,
        model: nano(384),
        base_trainer: steps(30, 8),
        finetune: steps(2, 4),
        ..Default::default()
    };
    cfg.lmsi.paths = 4;
    cfg.lmsi.eval_paths = 2;
    cfg.lmsi.max_new_tokens = 24;
    let runs = lmsi::run(&cfg, &[3], dir.path(), Device::Cpu, &mut Quiet)?;
    let s = &runs[0];
    assert_eq!(s.paths, 24);
    let by = |f: Filter| {
        s.runs
            .iter()
            .find(|r| r.filter == f && r.formats == Formats::Cot)
            .expect("filter ran")
    };
    // Gold keeps only right answers; no-vote keeps every answered path, a superset of LMSI's.
    assert!(by(Filter::Gold).kept_paths == 0 || by(Filter::Gold).kept_correct == 1.0);
    assert!(by(Filter::NoVote).kept_paths >= by(Filter::Majority).kept_paths);
    assert_eq!(
        by(Filter::NoVote).kept_paths,
        (s.answered * s.paths as f64).round() as usize
    );
    assert_eq!(s.base.items.len(), 8);
    assert_eq!(
        s.runs.len(),
        4,
        "three filters in CoT formats and LMSI in the paper's four"
    );
    let mixed = s
        .runs
        .iter()
        .find(|r| r.variant == Variant::LmsiMixed)
        .expect("mixed ran");
    assert_eq!(mixed.kept_paths, by(Filter::Majority).kept_paths);
    assert!(mixed.kept_paths == 0 || mixed.records == 2 * by(Filter::Majority).records);
    let md = std::fs::read_to_string(dir.path().join("e8.md"))?;
    assert!(md.contains("lmsi (majority vote)") && md.contains("Calibration"));
    assert!(dir.path().join("e8_calibration.png").exists());
    let _ = common::RESAMPLES;
    Ok(())
}

#[test]
fn emergence_scores_the_same_outputs_four_ways_per_size() -> Result<()> {
    let _rng = torch_rng();
    use rlhf_experiments::emergence::{self, EmergenceConfig};
    let dir = tempfile::tempdir()?;
    let cfg = EmergenceConfig {
        sizes: vec![
            nano(32),
            TinySpec {
                hidden: 48,
                ..nano(32)
            },
        ],
        train_problems: 64,
        test_problems: 12,
        trainer: steps(3, 16),
        ..Default::default()
    };
    let runs = emergence::run(&cfg, &[2], dir.path(), Device::Cpu, &mut Quiet)?;
    let r = &runs[0].runs;
    assert_eq!(r.len(), 2);
    assert!(r[0].params < r[1].params);
    for s in r {
        assert_eq!(s.exact.len(), 12);
        for i in 0..12 {
            // Exact match implies every digit right; per-digit never exceeds edit similarity
            // by construction of the two (a substitution costs both the same).
            assert!(s.exact[i] <= s.per_digit[i]);
            assert!(s.answer_logprob[i] <= 0.0 && s.answer_logprob[i].is_finite());
        }
    }
    let md = std::fs::read_to_string(dir.path().join("e2.md"))?;
    assert!(md.contains("Sharpness") && md.contains("**Verdict:"));
    assert!(dir.path().join("e2_vs_flops.png").exists());
    // The report re-renders from results.json alone, table for table.
    std::fs::remove_file(dir.path().join("e2.md"))?;
    let again = emergence::report_only(&cfg, dir.path())?;
    assert_eq!(again[0].runs[1].exact, r[1].exact);
    let md2 = std::fs::read_to_string(dir.path().join("e2.md"))?;
    let table = |m: &str| m.split("Wall time").next().unwrap_or_default().to_string();
    assert_eq!(table(&md2), table(&md));
    let other = EmergenceConfig {
        sizes: vec![nano(32)],
        ..cfg.clone()
    };
    assert!(
        emergence::report_only(&other, dir.path()).is_err(),
        "sizes must match"
    );
    Ok(())
}

#[test]
fn flan_experiment_scores_every_condition_on_both_eval_sets() -> Result<()> {
    let _rng = torch_rng();
    use rlhf_data::flan::FlanConfig;
    use rlhf_experiments::flan::{self, FlanExperimentConfig};
    let dir = tempfile::tempdir()?;
    let cfg = FlanExperimentConfig {
        data: FlanConfig {
            train_per_cluster: 12,
            eval_per_cluster: 4,
            corpus_docs: 40,
            countries: 8,
            ..Default::default()
        },
        cluster_counts: vec![1, 7],
        vocab: 300,
        model: nano(160),
        pretrain: steps(3, 8),
        finetune: steps(3, 8),
        ..Default::default()
    };
    let runs = flan::run(&cfg, &[1], dir.path(), Device::Cpu, &mut Quiet)?;
    let r = &runs[0];
    let names: Vec<&str> = r.conditions.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["base", "flan-1", "flan-7", "no-template"]);
    assert_eq!(r.held_out, flan::held_out_for(1, 3));
    for c in &r.conditions {
        assert_eq!(c.held_out.len(), 3 * 4);
        assert_eq!(c.seen.len(), 7 * 4);
        // Held-out clusters are never trained on; eval sets keep to their clusters.
        assert!(c.clusters.iter().all(|k| !r.held_out.contains(k)));
        assert!(c.held_out.iter().all(|s| r.held_out.contains(&s.cluster)));
        assert!(c.seen.iter().all(|s| !r.held_out.contains(&s.cluster)));
        assert!(c.held_out.iter().all(|s| s.chance > 0.0 && s.chance <= 0.5));
    }
    assert_eq!(r.conditions[1].clusters.len(), 1);
    assert_eq!(r.conditions[2].clusters.len(), 7);
    assert_eq!(r.conditions[3].clusters, r.conditions[2].clusters);
    let md = std::fs::read_to_string(dir.path().join("e5.md"))?;
    assert!(md.contains("**Verdict:") && md.contains("held-out cluster"));
    assert!(dir.path().join("e5_vs_clusters.svg").exists());
    let bad = FlanExperimentConfig {
        cluster_counts: vec![8],
        ..cfg
    };
    assert!(flan::run(&bad, &[1], dir.path(), Device::Cpu, &mut Quiet).is_err());
    Ok(())
}

#[test]
fn distill_experiment_trains_three_students_on_their_labels() -> Result<()> {
    let _rng = torch_rng();
    use rlhf_experiments::distill::{self, DistillExperimentConfig};
    let dir = tempfile::tempdir()?;
    let cfg = DistillExperimentConfig {
        words: 40,
        reviews_per_doc: 1,
        corpus_docs: 100,
        gold: 10,
        pool: 200,
        test: 20,
        vocab: 300,
        teacher: TinySpec {
            hidden: 48,
            ..nano(96)
        },
        student: nano(48),
        pretrain: steps(3, 8),
        adapt: steps(2, 4),
        student_trainer: steps(3, 8),
        rows: 64,
    };
    let runs = distill::run(&cfg, &[0], dir.path(), Device::Cpu, &mut Quiet)?;
    let r = &runs[0];
    assert_eq!(r.students.len(), 3);
    assert_eq!(r.students[0].examples, 10);
    assert_eq!(r.students[1].examples, r.labels_kept);
    assert!(r.labels_kept <= 200);
    assert_eq!(r.students[2].examples, 200);
    assert!(r.teacher_params > r.student_params);
    for s in r.students.iter().chain([&r.teacher]) {
        assert_eq!(s.correct.len(), 20);
    }
    assert!((0.0..=1.0).contains(&r.label_accuracy));
    let md = std::fs::read_to_string(dir.path().join("e6.md"))?;
    assert!(md.contains("**Verdict:") && md.contains("teacher-labelled student"));
    Ok(())
}

#[test]
fn webgpt_experiment_grades_every_condition_and_saves_a_browsable_policy() -> Result<()> {
    let _rng = torch_rng();
    use rlhf_browse::{
        AgentConfig, ModelPolicy, SearchIndex, browse_batch, check_citations, parse_answer,
    };
    use rlhf_experiments::webgpt::{self, WebGptConfig};
    use rlhf_model::{Head, Pretrained, PromptFormat};
    let dir = tempfile::tempdir()?;
    let cfg = WebGptConfig {
        towns: 30,
        test_towns: 4,
        rm_questions: 24,
        rm_k: 2,
        best_of: vec![1, 2, 4],
        vocab: 400,
        spec: nano(320),
        bc: steps(3, 8),
        closed_book: steps(2, 8),
        reward: TrainerConfig {
            batch_size: 4,
            loss_weighting: rlhf_train::LossWeighting::MicroBatch,
            ..steps(0, 4)
        },
        max_action_tokens: 12,
        rows: 64,
        ..Default::default()
    };
    let runs = webgpt::run(&cfg, &[0], dir.path(), Device::Cpu, &mut Quiet)?;
    let r = &runs[0];
    assert!(r.demonstrations >= 100, "{}", r.demonstrations);
    assert!(r.demo_correct > 0.6 && r.demo_supported > 0.7);
    assert_eq!(r.best_of.len(), 3);
    for o in [&r.closed_book, &r.bc]
        .into_iter()
        .chain(r.best_of.iter().map(|(_, o)| o))
    {
        assert_eq!(o.correct.len(), 16, "{}", o.name);
        assert!(
            o.correct
                .iter()
                .chain(&o.supported)
                .all(|v| (0.0..=1.0).contains(v))
        );
    }
    assert_eq!(r.closed_book.actions, 0.0);
    assert!(r.bc.actions >= 1.0, "the policy acts at least once");
    assert!(r.rm_steps >= 1);
    let md = std::fs::read_to_string(dir.path().join("e7.md"))?;
    assert!(md.contains("Verdict:") && md.contains("best-of-4") && md.contains("closed book"));
    assert!(dir.path().join("e7_best_of_n.svg").exists());
    // Re-rendering from results.json alone gives the same report, wall-time line apart.
    std::fs::remove_file(dir.path().join("e7.md"))?;
    webgpt::report_only(&cfg, dir.path())?;
    let again = std::fs::read_to_string(dir.path().join("e7.md"))?;
    let body = |t: &str| t.split("Wall time").next().unwrap_or_default().to_string();
    assert_eq!(body(&again), body(&md));
    let mut other = cfg.clone();
    other.best_of = vec![1];
    assert!(
        webgpt::report_only(&other, dir.path()).is_err(),
        "a config that does not match"
    );

    // The saved policy browses the saved index, and whatever it quotes and cites is checked
    // against the pages: every kept quote occurs on its page.
    let seed_dir = dir.path().join("seed0");
    let index = SearchIndex::open(&seed_dir.join("index"))?;
    let pre = Pretrained::load(&seed_dir.join("bc"), Head::Lm, Device::Cpu)?;
    let agent = AgentConfig {
        browse: Default::default(),
        max_action_tokens: 12,
        trace: true,
    };
    let policy = ModelPolicy {
        pre: &pre,
        format: PromptFormat::Raw,
        max_tokens: 12,
        temperature: 1.0,
        seed: 3,
        rows: 32,
    };
    let qs = vec!["Who is the mayor of Nowhere?".to_string(); 2];
    let eps = browse_batch(&policy, &index, &qs, 8, &agent, |_, _| {})?;
    assert_eq!(eps.len(), 2);
    for e in eps.iter().flatten() {
        assert_eq!(e.observations.len(), e.actions.len());
        assert!(e.actions.len() <= 10);
        for q in &e.quotes {
            let page = index.get(&q.url)?.expect("a quoted page exists");
            assert!(rlhf_browse::occurs_in(&q.text, &page.text));
        }
        let s = check_citations(&parse_answer(&e.answer), &e.quotes, &index)?;
        assert!(!s.supported || s.quotes_verified);
    }
    Ok(())
}

#[test]
fn align_experiment_judges_every_method_on_the_same_items_at_equal_online_budget() -> Result<()> {
    let _rng = torch_rng();
    use rlhf_experiments::align::{self, AlignConfig, METHODS};
    let dir = tempfile::tempdir()?;
    let cfg = AlignConfig {
        pretrain_steps: 4,
        sft_steps: 4,
        prompts: 64,
        k: 3,
        iterations: 1,
        epochs: 2,
        minibatches: 2,
        best_of: 2,
        eval_prompts: Some(3),
        eval_samples: 2,
        ..Default::default()
    };
    let runs = align::run(&cfg, &[0], dir.path(), Device::Cpu, &mut Quiet)?;
    let r = &runs[0];
    let names: Vec<&str> = r.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, METHODS);
    for m in &r.methods {
        // Every method is judged on the same 3 prompts × 2 samples.
        assert_eq!(m.outcomes.len(), 6, "{}", m.name);
        assert_eq!(m.wins + m.ties + m.losses, 6, "{}", m.name);
        assert!(m.outcomes.iter().all(|o| [0.0, 0.5, 1.0].contains(o)));
        assert!((0.0..=1.0).contains(&m.win_rate.mean), "{}", m.name);
        // KL(method ‖ SFT) is the mean over these 6 sequences of Σ_t log p_method − log p_SFT on
        // the method's own samples: its expectation is ≥ 0, but a method that barely moved reads
        // below 0 by chance (−0.22 seen on one CI machine for PPO). What must hold is that the
        // mean is not significantly negative: above −3 standard errors of the per-sequence values.
        assert!(m.kl.is_finite(), "{}: KL {}", m.name, m.kl);
        if m.name != "best-of-n" {
            let text = std::fs::read_to_string(
                dir.path()
                    .join(format!("seed0/eval-{}/responses.jsonl", m.name)),
            )?;
            let kls: Vec<f64> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["kl"].as_f64()))
                .collect::<Result<Option<Vec<f64>>, _>>()?
                .expect("every judged item carries its KL");
            let n = kls.len() as f64;
            let mean = kls.iter().sum::<f64>() / n;
            assert!((mean - m.kl).abs() < 1e-9, "{}: {mean} vs {}", m.name, m.kl);
            let sd = (kls.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            assert!(
                m.kl > -3.0 * sd / n.sqrt() - 1e-6,
                "{}: KL {} with per-sequence sd {sd}",
                m.name,
                m.kl
            );
        }
    }
    let get = |n: &str| r.methods.iter().find(|m| m.name == n).unwrap();
    // Best-of-2's KL is the bound log 2 − 1/2; it trains nothing and pays at inference.
    assert!((get("best-of-n").kl - (2f64.ln() - 0.5)).abs() < 1e-12);
    assert_eq!(get("best-of-n").train_flops, 0.0);
    assert!(get("best-of-n").inference_flops_per_prompt > 0.0);
    // The online methods drew the same samples and took the same steps: 1 × 64, 1 × 2 × 2.
    for n in ["ppo", "grpo", "rloo"] {
        assert_eq!((get(n).samples, get(n).steps), (64, 4), "{n}");
    }
    // PPO trains a value model too: more FLOPs than GRPO for the same samples.
    assert!(get("ppo").train_flops > get("grpo").train_flops);
    assert!(get("dpo").train_flops > 0.0 && get("dpo").samples == 0);
    let md = std::fs::read_to_string(dir.path().join("align.md"))?;
    for label in [
        "best-of-2 (RM)",
        "PPO",
        "DPO (sigmoid)",
        "DPO (listwise)",
        "GRPO",
        "RLOO",
    ] {
        assert!(
            md.contains(&format!("- **{label}**: ")),
            "no verdict for {label}"
        );
    }
    assert!(dir.path().join("align_win_rate_vs_kl.svg").exists());
    assert_rerenders_the_same(&dir.path().join("align.md"), &md, || {
        align::report_only(&cfg, dir.path()).map(drop)
    })
}

#[test]
fn verifiable_experiment_trains_grpo_and_ppo_on_the_answer_reward_at_equal_budget() -> Result<()> {
    let _rng = torch_rng();
    use rlhf_experiments::verifiable::{self, VerifiableConfig};
    let dir = tempfile::tempdir()?;
    let cfg = VerifiableConfig {
        pretrain_steps: 4,
        sft_steps: 4,
        iterations: 2,
        samples: 2,
        heldout: 40,
        ..Default::default()
    };
    let runs = verifiable::run(&cfg, &[0], dir.path(), Device::Cpu, &mut Quiet)?;
    let r = &runs[0];
    let names: Vec<&str> = r.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["SFT", "GRPO", "PPO"]);
    // Judged on the drawn held-out problems, which the seed folder keeps.
    assert!(r.eval_problems == cfg.heldout && r.train_problems >= 64);
    let heldout = std::fs::read_to_string(dir.path().join("seed0/heldout.jsonl"))?;
    assert_eq!(heldout.lines().count(), cfg.heldout);
    for m in &r.models {
        // Every model answered every held-out word problem twice: shares of 0, 1/2 or 1.
        assert_eq!(m.sampled.len(), r.eval_problems, "{}", m.name);
        assert!(m.sampled.iter().all(|a| [0.0, 0.5, 1.0].contains(a)));
        assert!((0.0..=1.0).contains(&m.greedy));
    }
    for (name, dir_name) in [("GRPO", "grpo"), ("PPO", "ppo")] {
        let m = r.models.iter().find(|m| m.name == name).unwrap();
        let (first, last) = m.train_reward.expect("a trained model logs its reward");
        assert!((0.0..=1.0).contains(&first) && (0.0..=1.0).contains(&last));
        // Both drew the same number of batches: one metrics line per iteration.
        let log = std::fs::read_to_string(
            dir.path()
                .join("seed0")
                .join(dir_name)
                .join("metrics.jsonl"),
        )?;
        assert_eq!(log.lines().count(), 2, "{name}");
    }
    // The training file holds only word problems within max_steps, each with its answer.
    let answers = std::fs::read_to_string(dir.path().join("seed0/answers.jsonl"))?;
    assert_eq!(answers.lines().count(), r.train_problems);
    for line in answers.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        match rlhf_data::Task::parse(v["prompt"].as_str().unwrap())? {
            rlhf_data::Task::Arithmetic(a) => assert!(a.steps().len() <= cfg.max_steps, "{line}"),
            t => panic!("not a word problem: {t:?}"),
        }
    }
    let md = std::fs::read_to_string(dir.path().join("verifiable.md"))?;
    for label in ["**GRPO** vs SFT", "**PPO** vs SFT", "**GRPO − PPO**"] {
        assert!(md.contains(label), "no verdict {label}");
    }
    assert_rerenders_the_same(&dir.path().join("verifiable.md"), &md, || {
        verifiable::report_only(&cfg, dir.path()).map(drop)
    })?;

    // A fresh folder holding copies of seed 0's stages reruns only the RL part: GRPO with its own
    // β, on the same SFT model (its sampled answers are the same draws as before), without
    // pretraining again.
    let again = tempfile::tempdir()?;
    let (from, to) = (dir.path().join("seed0"), again.path().join("seed0"));
    for part in ["data", "pretrained", "sft", "stages.json"] {
        copy_tree(&from.join(part), &to.join(part))?;
    }
    let weights = to.join("pretrained/model.safetensors");
    let stamp = std::fs::metadata(&weights)?.modified()?;
    let rl_only = VerifiableConfig {
        grpo_beta: Some(0.1),
        ..cfg.clone()
    };
    let rerun = verifiable::run(&rl_only, &[0], again.path(), Device::Cpu, &mut Quiet)?;
    let (sft, sft_again) = (&r.models[0], &rerun[0].models[0]);
    assert_eq!(
        (sft.greedy, &sft.sampled),
        (sft_again.greedy, &sft_again.sampled),
        "SFT is judged the same"
    );
    assert_eq!(
        std::fs::metadata(&weights)?.modified()?,
        stamp,
        "pretrained again"
    );
    let md = std::fs::read_to_string(again.path().join("verifiable.md"))?;
    assert!(md.contains("k3 loss term with β = 0.1,"), "{md}");
    // Stages of another recipe are refused, naming the folder.
    let other = VerifiableConfig {
        sft_steps: 5,
        ..rl_only.clone()
    };
    let refusal = |cfg: &VerifiableConfig| {
        verifiable::run(cfg, &[0], again.path(), Device::Cpu, &mut Quiet)
            .unwrap_err()
            .to_string()
    };
    let err = refusal(&other);
    assert!(
        err.contains("another recipe") && err.contains("seed0"),
        "{err}"
    );
    // A damaged marker is named with what it should hold.
    std::fs::write(to.join("stages.json"), "{\"seed\": 0}")?;
    let err = refusal(&rl_only);
    assert!(
        err.contains("stages.json") && err.contains("pretrain_steps"),
        "{err}"
    );
    Ok(())
}

/// Copies a file, or a folder with everything under it.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(drop)
    }
}
