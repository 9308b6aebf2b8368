//! GRPO and RLOO: advantages against hand-computed values (groups, ties in rewards, the std
//! division on and off), the loss's aggregation and masks (sequence vs token means, padding
//! ignored, the k3 term, the clipped ratio), the verifiable answer reward.

mod common;

use rlhf_eval::Scorer;
use rlhf_train::grpo::{
    Aggregation, AnswerMatch, AnswerRecord, GrpoConfig, answer_reached, group_advantages,
    grpo_loss, rloo_advantages,
};
use tch::{Kind, Tensor};

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

#[test]
fn group_advantages_by_hand() {
    // Group 1: rewards 1, 0, 0, 1 -> mean 0.5, unbiased std sqrt(1/3).
    // Group 2: all tied -> 0 everywhere (no NaN from a zero std).
    let r = [1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.3, 0.3];
    let s = (1.0f64 / 3.0).sqrt() + 1e-4;
    let want = [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0.0, 0.0, 0.0, 0.0];
    assert!(close(&group_advantages(&r, 4, true).unwrap(), &want));
    // Without the std division (Dr. GRPO): r - mean.
    let want = [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0];
    assert!(close(&group_advantages(&r, 4, false).unwrap(), &want));
    // RLOO: r_i - mean of the others. Group (3, 1, 2): 3 - 1.5, 1 - 2.5, 2 - 2.
    let want = [1.5, -1.5, 0.0];
    assert!(close(&rloo_advantages(&[3.0, 1.0, 2.0], 3).unwrap(), &want));
    // RLOO = G/(G-1) × (r - mean), and ties give 0 there too.
    let r = [0.2, 0.9, 0.4, 0.4, 0.7, 0.7];
    let a = rloo_advantages(&r, 3).unwrap();
    let g = group_advantages(&r, 3, false).unwrap();
    assert!(close(&a, &g.iter().map(|x| x * 1.5).collect::<Vec<_>>()));
    // Bad shapes and non-finite rewards are errors.
    assert!(group_advantages(&[1.0, 2.0, 3.0], 2, true).is_err());
    assert!(rloo_advantages(&[1.0, 2.0], 1).is_err());
    assert!(group_advantages(&[1.0, f64::NAN], 2, true).is_err());
}

fn t(rows: &[&[f64]]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, -1])
}

#[test]
fn loss_aggregation_and_masks() {
    // Two responses: 3 real tokens and 1 real token (+ 2 padding). Ratio 1 everywhere
    // (logp == old), no KL term: the per-token loss is -A.
    let logp = t(&[&[-1.0, -2.0, -0.5], &[-0.3, 9.0, 9.0]]).set_requires_grad(true);
    let old = t(&[&[-1.0, -2.0, -0.5], &[-0.3, -7.0, -7.0]]);
    let mask = t(&[&[1.0, 1.0, 1.0], &[1.0, 0.0, 0.0]]);
    let adv = Tensor::from_slice(&[2.0f64, -1.0]);
    let go = |agg, beta: f64, kl: bool| {
        grpo_loss(&logp, &old, &old, &adv, &mask, 0.2, beta, kl, agg).unwrap()
    };
    // Sequence: mean over each response's tokens, then over responses: (-2 + 1) / 2.
    let seq = go(Aggregation::Sequence, 0.0, true);
    assert!((seq.loss.double_value(&[]) - (-0.5)).abs() < 1e-12);
    // Token: every real token weighs the same: (3 × -2 + 1 × 1) / 4.
    let tok = go(Aggregation::Token, 0.0, true);
    assert!((tok.loss.double_value(&[]) - (-1.25)).abs() < 1e-12);
    // Padding (logp 9 there) changes nothing, and gets no gradient.
    tok.loss.backward();
    let g = logp.grad();
    assert_eq!(g.double_value(&[1, 1]), 0.0);
    assert_eq!(g.double_value(&[1, 2]), 0.0);
    // d/dlogp of -A·ratio at ratio 1 is -A / 4 per token under token aggregation.
    assert!((g.double_value(&[0, 0]) - (-0.5)).abs() < 1e-12);
    assert!((g.double_value(&[1, 0]) - 0.25).abs() < 1e-12);
    // The k3 term: with ref = logp - 0.1 on every token, k3 = e^-0.1 - 1 + 0.1 per token.
    let refp = &old - 0.1;
    let l = grpo_loss(
        &logp,
        &old,
        &refp,
        &adv,
        &mask,
        0.2,
        0.5,
        true,
        Aggregation::Token,
    )
    .unwrap();
    let k3 = (-0.1f64).exp() - 1.0 + 0.1;
    assert!((l.kl - k3).abs() < 1e-12);
    assert!((l.loss.double_value(&[]) - (-1.25 + 0.5 * k3)).abs() < 1e-12);
    // KL as a reward penalty instead: no k3 in the loss.
    let l = grpo_loss(
        &logp,
        &old,
        &refp,
        &adv,
        &mask,
        0.2,
        0.5,
        false,
        Aggregation::Token,
    )
    .unwrap();
    assert!((l.loss.double_value(&[]) - (-1.25)).abs() < 1e-12);
}

#[test]
fn the_ratio_is_clipped() {
    // Ratio e^0.5 > 1.2 with a positive advantage: the clipped term (-1.2 A) wins, no gradient.
    let logp = Tensor::from_slice(&[0.5f64])
        .view([1, 1])
        .set_requires_grad(true);
    let old = Tensor::zeros([1, 1], (Kind::Double, tch::Device::Cpu));
    let mask = Tensor::ones([1, 1], (Kind::Double, tch::Device::Cpu));
    let adv = Tensor::from_slice(&[1.0f64]);
    let l = grpo_loss(
        &logp,
        &old,
        &old,
        &adv,
        &mask,
        0.2,
        0.0,
        true,
        Aggregation::Token,
    )
    .unwrap();
    assert!((l.loss.double_value(&[]) - (-1.2)).abs() < 1e-12);
    assert_eq!(l.clip_fraction, 1.0);
    l.loss.backward();
    assert_eq!(logp.grad().double_value(&[0, 0]), 0.0);
}

#[test]
fn answers_are_checked() {
    assert!(answer_reached("5 + 3 = 8. The answer is 8.", "8"));
    assert!(!answer_reached("The answer is 9.", "8"));
    assert!(answer_reached("so 12 apples", "12"));
    assert!(answer_reached("The answer is Paris.", "paris"));
    assert!(answer_reached("I think\nParis", "Paris"));
    assert!(!answer_reached("The answer is Lyon.", "Paris"));
    let m = AnswerMatch::new(&[AnswerRecord {
        prompt: "2+2?".into(),
        answer: "4".into(),
    }]);
    let s = m
        .score(
            &["2+2?".into(), "2+2?".into()],
            &["It is 4.".into(), "5".into()],
        )
        .unwrap();
    assert_eq!(s, vec![1.0, 0.0]);
    assert!(
        m.check(&["3+3?".into()]).is_err(),
        "a prompt without an answer is refused"
    );
}

#[test]
fn settings_are_checked() {
    for bad in [
        GrpoConfig {
            group: 1,
            ..Default::default()
        },
        GrpoConfig {
            minibatches: 3,
            ..Default::default()
        },
        GrpoConfig {
            beta: -0.1,
            ..Default::default()
        },
        GrpoConfig {
            clip: 0.0,
            ..Default::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    GrpoConfig::default().validate().unwrap();
}

#[test]
fn a_short_run_raises_the_reward() {
    // Sampling draws from libtorch's global generator: no other test of this binary may draw
    // from or reseed it meanwhile (`common::torch_rng`).
    let _rng = common::torch_rng();
    use rlhf_train::grpo::{Algo, GrpoInputs, grpo};
    let dir = tempfile::tempdir().unwrap();
    let (model, prompts) = common::tiny_run_inputs(dir.path(), 16);
    for algo in [Algo::Grpo, Algo::Rloo] {
        let out = dir.path().join(format!("{algo:?}"));
        let inputs = GrpoInputs {
            rollout_engine: None,
            policy: model.clone(),
            prompts: prompts.clone(),
            reward: Box::new(common::Short),
            eval_prompts: None,
            out: out.clone(),
            progress: false,
        };
        let cfg = GrpoConfig {
            algo,
            iterations: 12,
            prompts_per_iteration: 4,
            group: 8,
            lr: 1e-2,
            max_new_tokens: 12,
            ..Default::default()
        };
        let s = grpo(&inputs, &cfg, rlhf_train::Resume::No, tch::Device::Cpu).unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let reward = |rows: &[serde_json::Value]| {
            rows.iter()
                .map(|r| r["reward"].as_f64().unwrap())
                .sum::<f64>()
                / rows.len() as f64
        };
        let (early, late) = (reward(&lines[..3]), reward(&lines[9..]));
        assert!(
            late > early + 0.5,
            "{algo:?}: reward {early:.2} -> {late:.2}"
        );
        assert_eq!(s.iterations, 12);
        assert!(out.join("model.safetensors").is_file());
    }
}

#[test]
fn an_on_policy_update_skips_the_old_pass_and_changes_nothing() {
    // One epoch of one minibatch with the KL as a loss term takes the old log-probs from the
    // update's own forward pass (detached); with β = 0 that must move the weights exactly as the
    // path with a separate old pass does (KL on the reward, β = 0: the same loss).
    let _rng = common::torch_rng();
    use rlhf_model::{GenerateConfig, Sampling};
    use rlhf_train::grpo::{KlMode, iteration};
    let rows: Vec<Vec<i64>> = (0..4).flat_map(|i| vec![vec![5 + i, 9, 12]; 4]).collect();
    let texts: Vec<String> = (0..16).map(|i| format!("prompt {}", i / 4)).collect();
    let mut weights = Vec::new();
    let mut metrics = Vec::new();
    for kl_mode in [KlMode::Loss, KlMode::Reward] {
        let policy = common::tiny_pretrained(96);
        let cfg = GrpoConfig {
            group: 4,
            prompts_per_iteration: 4,
            epochs: 1,
            minibatches: 1,
            beta: 0.0,
            kl_mode,
            lr: 1e-2,
            max_new_tokens: 8,
            ..Default::default()
        };
        let mut opt = cfg.optimizer(&policy.model).unwrap();
        let gen_cfg = GenerateConfig {
            max_new_tokens: 8,
            sampling: Sampling::new(1.0, None, None).unwrap(),
            seed: Some(3),
            eos_token_ids: policy.eos_ids(),
            pad_token_id: policy.pad_id(),
        };
        let m = iteration(
            &policy,
            None,
            &mut opt,
            &common::Short,
            &rows,
            &texts,
            &cfg,
            gen_cfg,
            0,
        )
        .unwrap();
        let w: Vec<Tensor> = policy
            .model
            .trainable_parameters()
            .into_iter()
            .map(|(_, t)| t.detach().copy())
            .collect();
        weights.push(w);
        metrics.push(m);
    }
    assert_eq!(
        metrics[0]["reward"], metrics[1]["reward"],
        "the same samples"
    );
    assert_eq!(metrics[0]["clip_fraction"], 0.0);
    assert!(
        (metrics[0]["loss"] - metrics[1]["loss"]).abs() < 1e-6,
        "{} vs {}",
        metrics[0]["loss"],
        metrics[1]["loss"]
    );
    let moved = weights[0]
        .iter()
        .zip(&weights[1])
        .map(|(a, b)| (a - b).abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(moved < 1e-6, "the two paths' weights differ by {moved}");
}

#[test]
fn two_data_parallel_ranks_update_like_one_process_on_the_same_samples() {
    // Each rank holds two whole groups of the four; both aggregations, with the k3 term.
    let _rng = common::torch_rng();
    use rlhf_model::{GenerateConfig, Sampling};
    use rlhf_train::grpo::{sample, update};
    let rows: Vec<Vec<i64>> = (0..4).flat_map(|i| vec![vec![5 + i, 9, 12]; 4]).collect();
    let texts: Vec<String> = (0..16).map(|i| format!("prompt {}", i / 4)).collect();
    let weights = |p: &rlhf_model::Pretrained| {
        let all: Vec<Tensor> = p
            .model
            .trainable_parameters()
            .into_iter()
            .map(|(_, t)| t.detach().reshape([-1]))
            .collect();
        Tensor::cat(&all, 0)
    };
    for aggregation in [Aggregation::Token, Aggregation::Sequence] {
        let cfg = GrpoConfig {
            group: 4,
            prompts_per_iteration: 4,
            epochs: 2,
            minibatches: 2,
            beta: 0.05,
            aggregation,
            lr: 1e-2,
            max_new_tokens: 8,
            ..Default::default()
        };
        let reference = common::tiny_pretrained(96).model;
        let sampler = common::tiny_pretrained(96);
        let gen_cfg = GenerateConfig {
            max_new_tokens: 8,
            sampling: Sampling::new(1.0, None, None).unwrap(),
            seed: Some(5),
            eos_token_ids: sampler.eos_ids(),
            pad_token_id: sampler.pad_id(),
        };
        let samples = sample(
            &sampler,
            Some(&reference),
            &common::Short,
            &rows,
            &texts,
            &cfg,
            &gen_cfg,
        )
        .unwrap();
        let one = common::tiny_pretrained(96);
        let before = weights(&one);
        let mut opt = cfg.optimizer(&one.model).unwrap();
        update(
            &one.model,
            Some(&reference),
            &mut opt,
            &samples,
            &cfg,
            0,
            None,
        )
        .unwrap();
        let after = weights(&one);
        let halves = vec![
            samples.select(&(0..8).collect::<Vec<i64>>()),
            samples.select(&(8..16).collect::<Vec<i64>>()),
        ];
        let ranks: Vec<Tensor> = common::on_ranks(halves, |half, group| {
            let p = common::tiny_pretrained(96);
            let reference = common::tiny_pretrained(96).model;
            let mut opt = cfg.optimizer(&p.model).unwrap();
            update(
                &p.model,
                Some(&reference),
                &mut opt,
                &half,
                &cfg,
                0,
                Some(group),
            )
            .unwrap();
            weights(&p)
        });
        let moved = (&after - &before).abs().max().double_value(&[]);
        assert!(
            moved > 1e-3,
            "{aggregation:?}: the update barely moved: {moved}"
        );
        for (rank, w) in ranks.iter().enumerate() {
            let gap = (w - &after).abs().max().double_value(&[]);
            assert!(
                gap < 1e-5 * moved.max(1.0),
                "{aggregation:?}, rank {rank}: weights differ by {gap} (moved {moved})"
            );
        }
    }
}
