//! DPO and relatives: the losses against hand-computed values (DPO with and without label
//! smoothing, IPO, the listwise form equal to DPO at K = 2 and to the mean pairwise loss for a
//! two-group ranking with ties, its K = 3 gradient against the explicit expansion), the batch
//! loss's weighting, bad preference files named by file/line/field, and a short run on a tiny
//! model that raises preference accuracy while every margin starts at exactly 0.

mod common;

use rlhf_model::{Gpt, Head, Pretrained};
use rlhf_train::dpo::{
    DpoConfig, DpoLoss, DpoStep, PrefData, encode_items, ipo_loss, listwise_loss,
    preference_accuracy, reference_logprobs, sigmoid_loss,
};
use rlhf_train::{TrainStep, TrainerConfig, run_steps};
use tch::{Device, Kind, Tensor};

fn t(v: &[f64]) -> Tensor {
    Tensor::from_slice(v).to_kind(Kind::Double)
}

fn f(x: &Tensor) -> f64 {
    f64::try_from(x).unwrap()
}

fn softplus(x: f64) -> f64 {
    (1.0 + x.exp()).ln()
}

#[test]
fn dpo_and_ipo_by_hand() {
    // margin 0.7, beta 0.1: -log sigma(0.07) = log(1 + e^-0.07).
    let m = t(&[0.7, -2.0, 0.0]);
    let plain = sigmoid_loss(&m, 0.1, 0.0);
    let want = [softplus(-0.07), softplus(0.2), 2f64.ln()];
    for (i, w) in want.iter().enumerate() {
        assert!((f(&plain.get(i as i64)) - w).abs() < 1e-12, "pair {i}");
    }
    // Label smoothing 0.2: 0.8 * log(1 + e^-z) + 0.2 * log(1 + e^z).
    let smooth = sigmoid_loss(&m, 0.1, 0.2);
    let z = [0.07, -0.2, 0.0];
    for (i, z) in z.iter().enumerate() {
        let w = 0.8 * softplus(-z) + 0.2 * softplus(*z);
        assert!(
            (f(&smooth.get(i as i64)) - w).abs() < 1e-12,
            "smoothed pair {i}"
        );
    }
    // IPO: (m - 1/(2 beta))^2 = (2 - 5)^2 = 9, (5 - 5)^2 = 0.
    let ipo = ipo_loss(&t(&[2.0, 5.0]), 0.1);
    assert_eq!(f(&ipo.get(0)), 9.0);
    assert_eq!(f(&ipo.get(1)), 0.0);
}

#[test]
fn listwise_is_dpo_at_k2_and_the_mean_pairwise_loss_over_ties() {
    let beta = 0.1;
    let (w, l) = (-12.5, -10.0); // log-ratios of winner and loser
    let scores = t(&[w * beta, l * beta]);
    let lw = f(&listwise_loss(&scores, &[vec![0], vec![1]]).unwrap());
    let dpo = f(&sigmoid_loss(&t(&[w - l]), beta, 0.0).get(0));
    assert!((lw - dpo).abs() < 1e-12, "{lw} vs {dpo}");
    // [[0, 1], [2]]: each tied response above the third, not against each other.
    let s = [0.3, -0.4, 0.1];
    let lw = f(&listwise_loss(&t(&s), &[vec![0, 1], vec![2]]).unwrap());
    let pairwise = (softplus(-(s[0] - s[2])) + softplus(-(s[1] - s[2]))) / 2.0;
    assert!((lw - pairwise).abs() < 1e-12, "{lw} vs {pairwise}");
    // Everything tied: nothing to learn, an error rather than a silent zero.
    assert!(listwise_loss(&t(&s), &[vec![0, 1, 2]]).is_err());
}

#[test]
fn listwise_gradient_at_k3_matches_the_explicit_expansion() {
    let (a, b, c) = (0.5f64, -0.2, 0.9);
    let s = t(&[a, b, c]).set_requires_grad(true);
    let loss = listwise_loss(&s, &[vec![0], vec![1], vec![2]]).unwrap();
    // L = -1/2 [(a - log(e^a + e^b + e^c)) + (b - log(e^b + e^c))]
    let (z1, z2) = (a.exp() + b.exp() + c.exp(), b.exp() + c.exp());
    let want_loss = -0.5 * ((a - z1.ln()) + (b - z2.ln()));
    assert!((f(&loss) - want_loss).abs() < 1e-12);
    loss.backward();
    let g = Vec::<f64>::try_from(s.grad()).unwrap();
    let want = [
        -0.5 * (1.0 - a.exp() / z1),
        -0.5 * (-b.exp() / z1 + 1.0 - b.exp() / z2),
        -0.5 * (-c.exp() / z1 - c.exp() / z2),
    ];
    for i in 0..3 {
        assert!(
            (g[i] - want[i]).abs() < 1e-12,
            "d/ds{i}: {} vs {}",
            g[i],
            want[i]
        );
    }
}

fn tiny(positions: i64) -> Pretrained {
    common::tiny_pretrained(positions)
}

/// An error and its causes, as the CLI prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn write(dir: &std::path::Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn bad_files_name_file_line_and_field() {
    let pre = tiny(48);
    let dir = tempfile::tempdir().unwrap();
    let ok = r#"{"prompt": "Jane has 12 flowers.", "chosen": "The answer is 10.", "rejected": "Sort 3, 1, 2."}"#;
    let long = "Jane has 12 flowers. ".repeat(20);
    let cases = [
        (
            format!(r#"{{"prompt": "{long}", "chosen": "a", "rejected": "b"}}"#),
            "prefs.jsonl:2: field 'prompt'",
            "no room",
        ),
        (
            format!(r#"{{"prompt": "q", "chosen": "{long}", "rejected": "b"}}"#),
            "prefs.jsonl:2: field 'chosen'",
            "longer than the model's context",
        ),
        (
            r#"{"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, 1, 2]}"#
                .replace("\"c\"", &format!("\"{long}\"")),
            "prefs.jsonl:2: field 'responses[2]'",
            "context",
        ),
        (
            r#"{"prompt": "q", "chosen": "a"}"#.to_string(),
            "prefs.jsonl:2: field 'rejected'",
            "missing",
        ),
        (
            r#"{"prompt": "q", "chosen": "same", "rejected": "same"}"#.to_string(),
            "prefs.jsonl:2: field 'rejected'",
            "identical",
        ),
    ];
    for (bad, at, what) in cases {
        let path = write(dir.path(), "prefs.jsonl", &[ok.to_string(), bad.clone()]);
        let err = chain(&encode_items(&pre, &path).unwrap_err());
        assert!(err.contains(at) && err.contains(what), "{bad}\n  got {err}");
    }
    // Settings are checked before anything is loaded.
    let bad = [
        DpoConfig {
            beta: 0.0,
            ..Default::default()
        },
        DpoConfig {
            label_smoothing: 0.5,
            ..Default::default()
        },
        DpoConfig {
            loss: DpoLoss::Ipo,
            label_smoothing: 0.1,
            ..Default::default()
        },
        DpoConfig {
            epochs: 0,
            ..Default::default()
        },
    ];
    for cfg in bad {
        assert!(cfg.validate().is_err(), "{:?}", cfg.loss);
    }
}

#[test]
fn a_short_run_learns_the_preferences() {
    let pre = tiny(96);
    let dir = tempfile::tempdir().unwrap();
    // The preferred answer always states the result; the other rambles. Three responses ranked,
    // one tie in the middle group.
    let lines: Vec<String> = (0..24)
        .map(|i| {
            format!(
                r#"{{"prompt": "Jane has {} flowers.", "responses": ["The answer is {}.", "Sort 3, 1, 2.", "Sort 2, 1, 3."], "ranking": [0, [1, 2]]}}"#,
                i + 3,
                i + 1
            )
        })
        .collect();
    let path = write(dir.path(), "prefs.jsonl", &lines);
    for loss in [DpoLoss::Sigmoid, DpoLoss::Ipo, DpoLoss::Listwise] {
        let mut items = encode_items(&pre, &path).unwrap();
        assert_eq!(items[0].pairs, vec![(0, 1), (0, 2)]);
        let pad = pre.pad_id();
        reference_logprobs(&pre.model, &mut items, pad, 16).unwrap();
        let model = Gpt::new(&pre.model.cfg, Head::Lm, Device::Cpu);
        tch::no_grad(|| {
            for (n, mut v) in model.vs.variables() {
                v.copy_(&pre.model.vs.variables()[&n]);
            }
        });
        let before = preference_accuracy(&model, &items, pad, 0.1, 16).unwrap();
        assert_eq!(
            before.labels, 0.5,
            "{loss:?}: every margin is exactly 0 at the start"
        );
        assert_eq!(before.margin, 0.0);
        let cfg = DpoConfig {
            loss,
            ..Default::default()
        };
        let tcfg = TrainerConfig {
            lr: 3e-3,
            warmup_steps: 0,
            max_steps: 12,
            batch_size: 4,
            weight_decay: 0.0,
            ..cfg.trainer.clone()
        };
        let mut step = DpoStep {
            gpt: &model,
            items: items.clone(),
            eval: items.clone(),
            pad,
            cfg,
        };
        let mut data = PrefData::new(items.len(), 4, 0);
        let records = run_steps(&tcfg, &mut step, &mut data, 12).unwrap();
        let m = step.eval().unwrap();
        let after = preference_accuracy(&model, &items, pad, 0.1, 16).unwrap();
        assert!(
            after.labels > 0.9,
            "{loss:?}: accuracy {} after training",
            after.labels
        );
        assert!(after.margin > 0.0);
        assert_eq!(m["preference_accuracy"], after.labels);
        let first = &records[0].metrics;
        for key in [
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "rewards/accuracies",
        ] {
            assert!(first.contains_key(key), "{loss:?}: {key} logged");
        }
        assert!(
            records.last().unwrap().loss < records[0].loss,
            "{loss:?}: loss falls"
        );
    }
}
