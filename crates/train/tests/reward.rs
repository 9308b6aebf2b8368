//! Reward model: the grouped ranking loss against hand-computed values (K = 3; K = 4 with a tie),
//! the grouped loss's gradient against the explicit pair expansion, and one RM step changing
//! every parameter.

use rlhf_model::last_token_scalars as rewards;
use rlhf_model::{Gpt, Head, ModelConfig};
use rlhf_train::reward::ranking_loss;
use tch::{Device, Kind, Tensor};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
}

fn log_sigmoid(x: f64) -> f64 {
    -(1.0 + (-x).exp()).ln()
}

#[test]
fn k3_matches_hand_computation() {
    // Ranking 2 > 0 > 1 with rewards r = [0.5, -1.0, 2.0]: pairs (2,0), (2,1), (0,1).
    let r = Tensor::from_slice(&[0.5f32, -1.0, 2.0]);
    let loss = f64::try_from(ranking_loss(&r, &[vec![(2, 0), (2, 1), (0, 1)]]).unwrap()).unwrap();
    let by_hand = -(log_sigmoid(1.5) + log_sigmoid(3.0) + log_sigmoid(1.5)) / 3.0;
    close(loss, by_hand);
    // ln(1+e^-1.5) = 0.201413, ln(1+e^-3) = 0.048587: (2 * 0.201413 + 0.048587) / 3
    assert!((by_hand - 0.150471).abs() < 1e-5, "{by_hand}");
}

#[test]
fn k4_with_a_tie_drops_the_tied_pair_and_averages_over_prompts() {
    // Prompt A: ranking [1, [0, 3], 2] -> pairs (1,0), (1,3), (1,2), (0,2), (3,2); 0~3 dropped.
    let pairs_a = rlhf_data::Ranking::new(vec![vec![1], vec![0, 3], vec![2]], 4)
        .unwrap()
        .pairs();
    assert_eq!(pairs_a.len(), 5);
    // Prompt B (K = 2) shares the batch: its indices follow A's four responses.
    let r = Tensor::from_slice(&[0.0f32, 1.0, -0.5, 0.25, 0.3, 0.9]);
    let loss = f64::try_from(ranking_loss(&r, &[pairs_a, vec![(5, 4)]]).unwrap()).unwrap();
    let a = -(log_sigmoid(1.0)
        + log_sigmoid(0.75)
        + log_sigmoid(1.5)
        + log_sigmoid(0.5)
        + log_sigmoid(0.75))
        / 5.0;
    let b = -log_sigmoid(0.6);
    close(loss, (a + b) / 2.0);
}

fn tiny_rm() -> Gpt {
    let json = serde_json::json!({
        "model_type": "llama", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 32,
        "max_position_embeddings": 32, "tie_word_embeddings": true,
    });
    let cfg = ModelConfig::from_json(&json, std::path::Path::new("tiny")).unwrap();
    tch::manual_seed(3);
    let mut gpt = Gpt::new(&cfg, Head::Scalar, Device::Cpu);
    gpt.set_kind(Kind::Double);
    gpt
}

fn trainable(gpt: &Gpt) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = gpt
        .vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn grads(gpt: &Gpt) -> Vec<Tensor> {
    trainable(gpt)
        .into_iter()
        .map(|(_, t)| t.grad().copy())
        .collect()
}

#[test]
fn grouped_gradient_equals_explicit_pair_expansion() {
    let gpt = tiny_rm();
    let seqs: Vec<Vec<i64>> = vec![
        vec![1, 5, 7, 2],
        vec![1, 5, 9, 11, 2],
        vec![1, 5, 3, 2],
        vec![1, 5, 8, 8, 8, 2],
    ];
    let pairs = vec![(1, 0), (1, 3), (1, 2), (0, 2), (3, 2)];
    // Grouped: one forward of the K sequences.
    let r = rewards(&gpt, &seqs, 0).unwrap();
    ranking_loss(&r, std::slice::from_ref(&pairs))
        .unwrap()
        .backward();
    let grouped = grads(&gpt);
    for (_, t) in trainable(&gpt) {
        let _ = t.grad().zero_();
    }
    // Explicit: a forward of (chosen, rejected) per pair, each weighted 1/|pairs|.
    for &(w, l) in &pairs {
        let r = rewards(&gpt, &[seqs[w].clone(), seqs[l].clone()], 0).unwrap();
        (ranking_loss(&r, &[vec![(0, 1)]]).unwrap() / pairs.len() as f64).backward();
    }
    for (g, e) in grouped.iter().zip(grads(&gpt)) {
        let d = f64::try_from((g - &e).abs().max()).unwrap();
        let scale = f64::try_from(e.abs().max()).unwrap();
        assert!(d <= 1e-9 * scale.max(1.0), "gradient differs by {d}");
    }
}

#[test]
fn one_rm_step_changes_every_parameter() {
    let gpt = tiny_rm();
    // The head's bias cancels in every r_w - r_l, so it is not trained (it only centres rewards
    // after training); every trainable parameter must move.
    let trainable = trainable(&gpt);
    assert!(trainable.iter().all(|(n, _)| n != "score.bias"));
    let before: Vec<(String, Tensor)> = trainable
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().copy()))
        .collect();
    let seqs: Vec<Vec<i64>> = vec![vec![1, 5, 7, 2], vec![1, 5, 9, 2], vec![1, 4, 3, 3, 2]];
    let r = rewards(&gpt, &seqs, 0).unwrap();
    ranking_loss(&r, &[vec![(0, 1), (0, 2), (1, 2)]])
        .unwrap()
        .backward();
    let mut opt = rlhf_train::AdamW::new(trainable, Default::default()).unwrap();
    let grad = opt.gradients(1.0).unwrap();
    opt.step(&grad, 1e-3).unwrap();
    let after = gpt.vs.variables();
    for (name, old) in before {
        let d = f64::try_from((&after[&name] - old).abs().max()).unwrap();
        assert!(d > 0.0, "{name} did not change");
    }
}
