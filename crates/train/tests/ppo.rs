//! The PPO glue, on tiny random models: the log-probs the sampler reports equal the ones the
//! update recomputes; the reward model's score lands at each row's EOS and the KL penalty on
//! every token; PPO-ptx changes the gradient only when its coefficient is nonzero; and PPO
//! raises the reward model's score on a toy task where the reward model likes one token.
//!
//! Every test here samples from libtorch's global generator (seeded per rollout), and some
//! depend on what it draws (rows of different lengths, the toy task's progress): they take turns
//! (`common::torch_rng`).

mod common;

use rand::RngCore;
use rlhf_model::{Gpt, Head, ModelConfig};
use rlhf_train::ppo::{self, Ppo, PpoConfig};
use rlhf_train::reward::{self, EncodedComparison};
use rlhf_train::rollout::{self, Models, Reward, RolloutConfig};
use rlhf_train::{DataRng, TrainerConfig};
use tch::{Device, Kind, Tensor};

/// A tiny Llama whose weights come from a Rust RNG seeded by `seed` (libtorch's generator is
/// global and shared with tests on other threads).
fn seeded(cfg: &ModelConfig, head: Head, seed: u64) -> Gpt {
    let gpt = Gpt::new(cfg, head, Device::Cpu);
    let mut vars: Vec<(String, Tensor)> = gpt.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, var)) in vars.iter().enumerate() {
        if name.contains("norm") || name == "score.bias" {
            continue;
        }
        let mut rng = DataRng::new(seed, i as u64);
        let scale = if name.starts_with("score") { 0.3 } else { 0.08 };
        let values: Vec<f32> = (0..var.numel())
            .map(|_| (rng.next_u32() as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale)
            .collect();
        let src = Tensor::from_slice(&values).view(var.size().as_slice());
        tch::no_grad(|| var.shallow_clone().copy_(&src));
    }
    gpt
}

const EOS: i64 = 1;
const PAD: i64 = 0;

fn prompts(n: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut rng = DataRng::new(seed, 99);
    (0..n)
        .map(|i| {
            (0..2 + i % 5)
                .map(|_| 2 + (rng.next_u32() % 60) as i64)
                .collect()
        })
        .collect()
}

struct Fixture {
    policy: Gpt,
    reference: Gpt,
    value: Gpt,
    reward: Gpt,
}

impl Fixture {
    fn new() -> Self {
        let cfg = common::tiny_config(32);
        Self {
            policy: seeded(&cfg, Head::Lm, 1),
            reference: seeded(&cfg, Head::Lm, 1),
            value: seeded(&cfg, Head::Scalar, 2),
            reward: seeded(&cfg, Head::Scalar, 3),
        }
    }

    fn models(&self) -> Models<'_> {
        Models {
            policy: &self.policy,
            reference: &self.reference,
            value: &self.value,
            reward: Reward::Model(&self.reward),
        }
    }
}

fn rollout_config(temperature: f64, max_new_tokens: usize) -> RolloutConfig {
    RolloutConfig {
        temperature,
        max_new_tokens,
        stop_ids: vec![EOS],
        pad_id: PAD,
        rm_eos_id: EOS,
        score_scale: 0.5,
        missing_eos_penalty: 1.0,
    }
}

#[test]
fn sampler_logprobs_equal_the_recomputed_ones() {
    let _rng = common::torch_rng();
    let f = Fixture::new();
    for temperature in [1.0, 0.7] {
        // A high EOS logit bias is not needed: with 64 tokens some of 24 rows of 12 stop early.
        let ro = rollout::rollout(
            &f.models(),
            &prompts(24, 5),
            &rollout_config(temperature, 12),
            11,
        )
        .unwrap();
        let lens: Vec<usize> = ro.response_ids.iter().map(Vec::len).collect();
        assert!(
            lens.iter().min() != lens.iter().max() || ro.ended.iter().any(|&e| e),
            "the test needs rows of different lengths: {lens:?}"
        );
        let gap = ro.logprob_mismatch();
        assert!(
            gap <= 1e-5,
            "T = {temperature}: sampler vs recomputed log-probs differ by {gap}"
        );
        // And the recomputation is not trivially equal: the log-probs are real ones.
        let lp = f64::try_from(ro.logprobs.abs().sum(Kind::Double)).unwrap();
        assert!(lp > 1.0);
    }
}

#[test]
fn the_reward_lands_at_each_eos_and_the_kl_penalty_on_every_token() {
    let _rng = common::torch_rng();
    let f = Fixture::new();
    // The policy differs from the reference, so the KL is nonzero.
    let cfg = common::tiny_config(32);
    let moved = seeded(&cfg, Head::Lm, 7);
    let models = Models {
        policy: &moved,
        ..f.models()
    };
    let rcfg = rollout_config(1.0, 10);
    let batch = prompts(16, 3);
    let ro = rollout::rollout(&models, &batch, &rcfg, 4).unwrap();
    // The reward model read its score at the EOS appended after each response (the stop
    // token dropped), exactly where a fresh forward of that sequence puts its last position.
    for (i, (q, r)) in batch.iter().zip(&ro.response_ids).enumerate() {
        let seq: Vec<i64> = q.iter().chain(r).copied().chain([EOS]).collect();
        let ids = Tensor::from_slice(&seq).unsqueeze(0);
        let hidden = tch::no_grad(|| {
            f.reward.forward_hidden(
                rlhf_model::Batch {
                    input_ids: &ids,
                    attention_mask: None,
                },
                None,
            )
        })
        .unwrap();
        let all = f.reward.scalar(&hidden).unwrap();
        let at_eos = f64::try_from(all.select(1, seq.len() as i64 - 1)).unwrap();
        assert!((ro.raw_scores[i] - at_eos).abs() < 1e-5, "row {i}");
        let penalty = if ro.ended[i] { 0.0 } else { 1.0 };
        let want = ro.raw_scores[i] / 0.5 - penalty;
        let got = f64::try_from(ro.scores.get(i as i64)).unwrap();
        assert!(
            (got - want).abs() < 1e-5,
            "row {i}: normalised score {got} vs {want}"
        );
    }
    let beta = 0.1;
    let pcfg = PpoConfig::default();
    let (rewards, kl) = ppo::token_rewards(&ro, &pcfg, beta).unwrap();
    let mask = Vec::<Vec<f32>>::try_from(&ro.batch.mask).unwrap();
    let rewards = Vec::<Vec<f32>>::try_from(&rewards).unwrap();
    let kl = Vec::<Vec<f32>>::try_from(&kl).unwrap();
    let scores = Vec::<f32>::try_from(&ro.scores).unwrap();
    let mut nonzero_kl = 0;
    for i in 0..mask.len() {
        let last = mask[i]
            .iter()
            .rposition(|&m| m > 0.0)
            .expect("a response token");
        for t in 0..mask[i].len() {
            let want = if t > last {
                0.0
            } else if t == last {
                scores[i] - beta as f32 * kl[i][t]
            } else {
                -(beta as f32) * kl[i][t]
            };
            assert!(
                (rewards[i][t] - want).abs() < 1e-6,
                "row {i}, token {t} (last {last}): reward {} vs {want}",
                rewards[i][t]
            );
            nonzero_kl += usize::from(t <= last && kl[i][t].abs() > 1e-6);
        }
    }
    assert!(nonzero_kl > 10, "the KL term must be exercised");
}

/// The policy's gradient after one minibatch loss over the given rollouts.
fn policy_gradient(f: &Fixture, ro: &rollout::Rollout, ptx: Option<(&Tensor, f64)>) -> Vec<Tensor> {
    let models = f.models();
    let cfg = PpoConfig::default();
    let (adv, ret, _) = ppo::advantages(ro, &cfg, 0.02).unwrap();
    for (_, t) in f.policy.vs.variables() {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let idx = Tensor::from_slice(&[0i64, 2, 4, 6]);
    let l = ppo::minibatch_loss(&models, ro, &idx, &adv, &ret, &cfg, ptx, 1.0).unwrap();
    l.loss.backward();
    let mut vars: Vec<(String, Tensor)> = f.policy.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.iter().map(|(_, t)| t.grad().copy()).collect()
}

#[test]
fn ptx_changes_the_gradient_only_with_a_nonzero_coefficient() {
    let _rng = common::torch_rng();
    let f = Fixture::new();
    let corpus =
        Tensor::from_slice(&(0..40).map(|i| 2 + (i * 7) % 60).collect::<Vec<i64>>()).view([2, 20]);
    let ro = rollout::rollout(&f.models(), &prompts(8, 1), &rollout_config(1.0, 6), 2).unwrap();
    let plain = policy_gradient(&f, &ro, None);
    let zero = policy_gradient(&f, &ro, Some((&corpus, 0.0)));
    let mixed = policy_gradient(&f, &ro, Some((&corpus, 1.0)));
    let diff = |a: &[Tensor], b: &[Tensor]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::try_from((x - y).abs().max()).unwrap())
            .fold(0.0, f64::max)
    };
    assert_eq!(
        diff(&plain, &zero),
        0.0,
        "γ = 0 must leave PPO's gradient as it is"
    );
    assert!(
        diff(&plain, &mixed) > 1e-4,
        "γ = 1 must add the LM loss's gradient"
    );
    assert!(
        plain
            .iter()
            .any(|g| f64::try_from(g.abs().sum(Kind::Double)).unwrap() > 0.0)
    );
}

/// Token 7 anywhere in the response is what the toy reward model learns to like.
const LIKED: i64 = 7;

fn toy_reward_model(cfg: &ModelConfig) -> Gpt {
    let rm = seeded(cfg, Head::Scalar, 21);
    let mut rng = DataRng::new(5, 0);
    let token = |rng: &mut DataRng| loop {
        let t = 2 + (rng.next_u32() % 60) as i64;
        if t != LIKED {
            return t;
        }
    };
    let items: Vec<EncodedComparison> = (0..400)
        .map(|_| {
            let prompt: Vec<i64> = (0..3).map(|_| token(&mut rng)).collect();
            let mut plain: Vec<i64> = (0..6).map(|_| token(&mut rng)).collect();
            let mut liked = plain.clone();
            let k = 1 + (rng.next_u32() % 3) as usize;
            for j in 0..k {
                liked[(rng.next_u32() as usize + j) % 6] = LIKED;
            }
            plain.push(EOS);
            liked.push(EOS);
            let seq = |r: &[i64]| prompt.iter().chain(r).copied().collect::<Vec<_>>();
            EncodedComparison {
                seqs: vec![seq(&liked), seq(&plain)],
                pairs: vec![(0, 1)],
                oracle_pairs: None,
            }
        })
        .collect();
    let tcfg = TrainerConfig {
        lr: 3e-3,
        warmup_steps: 10,
        max_steps: 250,
        batch_size: 16,
        weight_decay: 0.0,
        seed: 1,
        ..Default::default()
    };
    reward::fit(&rm, items, PAD, &tcfg, |_| {}).unwrap();
    rm
}

/// PPO on the toy tasks: 32 rollouts of 6 tokens, two minibatches, a large learning rate.
fn toy_task_config() -> PpoConfig {
    PpoConfig {
        rollout_batch: 32,
        minibatches: 2,
        lr: 3e-3,
        kl_coef: 0.01,
        max_new_tokens: 6,
        ..Default::default()
    }
}

/// Rollouts of the toy tasks: no stop token (every response is 6 tokens), raw scores.
fn toy_task_rollouts() -> RolloutConfig {
    RolloutConfig {
        stop_ids: vec![],
        missing_eos_penalty: 0.0,
        score_scale: 1.0,
        ..rollout_config(1.0, 6)
    }
}

#[test]
fn ppo_raises_the_reward_model_score_on_a_toy_task() {
    let _rng = common::torch_rng();
    let cfg = common::tiny_config(32);
    let reward = toy_reward_model(&cfg);
    // The reward model learned the task: a liked token raises the score.
    let probe = |resp: &[i64]| -> f64 {
        let seq: Vec<i64> = [3, 4, 5].iter().chain(resp).copied().chain([EOS]).collect();
        let r = tch::no_grad(|| rlhf_model::last_token_scalars(&reward, &[seq], PAD)).unwrap();
        f64::try_from(r.get(0)).unwrap()
    };
    let (with, without) = (probe(&[9, LIKED, 11, 12]), probe(&[9, 10, 11, 12]));
    assert!(
        with > without + 0.5,
        "toy reward model: {with} vs {without}"
    );

    let policy = seeded(&cfg, Head::Lm, 1);
    let reference = seeded(&cfg, Head::Lm, 1);
    let value = reward.copy_with_head(Head::Scalar).unwrap();
    let models = Models {
        policy: &policy,
        reference: &reference,
        value: &value,
        reward: Reward::Model(&reward),
    };
    let pcfg = toy_task_config();
    let mut algo = Ppo::new(models, &pcfg, toy_task_rollouts(), None).unwrap();
    let mut scores = Vec::new();
    let mut liked_share = Vec::new();
    for it in 0..25 {
        let (ro, m) = algo.step(&prompts(32, 100 + it), it).unwrap();
        scores.push(m["rm_score"]);
        let tokens: Vec<i64> = ro.response_ids.concat();
        liked_share
            .push(tokens.iter().filter(|&&t| t == LIKED).count() as f64 / tokens.len() as f64);
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let (early, late) = (mean(&scores[..3]), mean(&scores[scores.len() - 3..]));
    assert!(
        late > early + 0.5,
        "PPO did not raise the reward-model score: {scores:?}"
    );
    assert!(
        mean(&liked_share[liked_share.len() - 3..]) > 3.0 * mean(&liked_share[..3]),
        "the liked token did not become more frequent: {liked_share:?}"
    );
}

/// A verifiable reward on tokens: the share of the response's tokens that are `LIKED`, and a
/// record of the prompts it was asked about.
struct LikedShare {
    seen: std::cell::RefCell<Vec<Vec<i64>>>,
}

impl rollout::TokenReward for LikedShare {
    fn score(
        &self,
        prompts: &[Vec<i64>],
        responses: &[Vec<i64>],
    ) -> rlhf_train::error::Result<Vec<f64>> {
        self.seen.borrow_mut().extend(prompts.iter().cloned());
        Ok(responses
            .iter()
            .map(|r| r.iter().filter(|&&t| t == LIKED).count() as f64 / r.len().max(1) as f64)
            .collect())
    }
}

#[test]
fn ppo_raises_a_reward_computed_from_the_tokens_with_a_value_model_from_the_policy() {
    let _rng = common::torch_rng();
    let cfg = common::tiny_config(32);
    let policy = seeded(&cfg, Head::Lm, 1);
    let reference = seeded(&cfg, Head::Lm, 1);
    // No reward model: the value model is the policy's body with a fresh scalar head.
    let value = policy.copy_with_head(Head::Scalar).unwrap();
    let reward = LikedShare {
        seen: Default::default(),
    };
    let models = Models {
        policy: &policy,
        reference: &reference,
        value: &value,
        reward: Reward::Tokens(&reward),
    };
    let pcfg = toy_task_config();
    let mut algo = Ppo::new(models, &pcfg, toy_task_rollouts(), None).unwrap();
    let mut rewards = Vec::new();
    for it in 0..25 {
        let batch = prompts(32, 100 + it);
        let (ro, m) = algo.step(&batch, it).unwrap();
        assert!(!m.contains_key("rm_score"), "no reward model, no rm_score");
        // The logged reward is the scorer's mean, and it was asked about these very prompts.
        let share =
            |r: &Vec<i64>| r.iter().filter(|&&t| t == LIKED).count() as f64 / r.len().max(1) as f64;
        let direct = ro.response_ids.iter().map(share).sum::<f64>() / 32.0;
        assert!(
            (m["reward"] - direct).abs() < 1e-12,
            "{} vs {direct}",
            m["reward"]
        );
        assert_eq!(
            reward.seen.borrow_mut().drain(..).collect::<Vec<_>>(),
            batch
        );
        rewards.push(m["reward"]);
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let (early, late) = (mean(&rewards[..3]), mean(&rewards[rewards.len() - 3..]));
    assert!(
        late > 3.0 * early && late > 0.2,
        "PPO did not raise the token reward: {rewards:?}"
    );
}

/// The policy's and the value model's trainable weights, flattened.
fn weights(f: &Fixture) -> Tensor {
    let mut all: Vec<(String, Tensor)> = f.policy.trainable_parameters();
    all.extend(f.value.trainable_parameters());
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::cat(
        &all.iter()
            .map(|(_, t)| t.detach().reshape([-1]))
            .collect::<Vec<_>>(),
        0,
    )
}

#[test]
fn two_data_parallel_ranks_update_like_one_process_on_the_same_rollouts() {
    let _turn = common::torch_rng();
    let cfg = PpoConfig {
        rollout_batch: 8,
        minibatches: 2,
        ppo_epochs: 2,
        lr: 3e-3,
        max_new_tokens: 6,
        ..Default::default()
    };
    let sampler = Fixture::new();
    let ro = rollout::rollout(
        &sampler.models(),
        &prompts(8, 5),
        &rollout_config(1.0, 6),
        11,
    )
    .unwrap();
    // One process on the whole batch.
    let one = Fixture::new();
    let before = weights(&one);
    let mut opt = ppo::optimizer(&one.policy, &one.value, &cfg).unwrap();
    let (adv, ret, kl) = ppo::advantages(&ro, &cfg, 0.02).unwrap();
    ppo::update(
        &one.models(),
        &mut opt,
        &ro,
        &adv,
        &ret,
        &cfg,
        None,
        0,
        None,
    )
    .unwrap();
    let after_one = weights(&one);
    // Two ranks (threads with their own Gloo groups on loopback), each with half the rows.
    let halves = vec![ro.select(&[0, 1, 2, 3]), ro.select(&[4, 5, 6, 7])];
    let ranks: Vec<(Tensor, Tensor, f64)> = common::on_ranks(halves, |half, group| {
        let f = Fixture::new();
        let mut opt = ppo::optimizer(&f.policy, &f.value, &cfg).unwrap();
        let (adv, ret, kl) = ppo::advantages_in(&half, &cfg, 0.02, Some(group)).unwrap();
        ppo::update(
            &f.models(),
            &mut opt,
            &half,
            &adv,
            &ret,
            &cfg,
            None,
            0,
            Some(group),
        )
        .unwrap();
        (weights(&f), adv, kl)
    });
    // Global whitening and KL: each rank holds its rows of the one-process values.
    let adv_two = Tensor::cat(&[&ranks[0].1, &ranks[1].1], 0);
    let adv_gap = f64::try_from((&adv_two - &adv).abs().max()).unwrap();
    assert!(adv_gap < 1e-5, "advantages differ by {adv_gap}");
    assert!((ranks[0].2 - kl).abs() < 1e-6 && (ranks[1].2 - kl).abs() < 1e-6);
    // The same 4 updates (2 epochs x 2 minibatches): equal weights on both ranks and to the
    // one process's, and far from where they started.
    let moved = f64::try_from((&after_one - &before).abs().max()).unwrap();
    for (rank, (w, _, _)) in ranks.iter().enumerate() {
        let gap = f64::try_from((w - &after_one).abs().max()).unwrap();
        assert!(
            gap < 1e-5 * moved.max(1.0),
            "rank {rank}: weights differ by {gap} (moved {moved})"
        );
    }
    let between = f64::try_from((&ranks[0].0 - &ranks[1].0).abs().max()).unwrap();
    assert_eq!(between, 0.0, "the ranks' weights must be identical");
    assert!(moved > 1e-3, "the update barely moved the weights: {moved}");
}
