//! Rank classification and the FLAN evaluation on a tiny model: batching with padding gives the
//! same scores as one pair at a time, the total log-likelihood is what a hand computation over
//! the logits gives, and the option the model was trained to give is the one picked.

mod common;

use rlhf_data::flan::{Cluster, FlanEval};
use rlhf_model::{Batch, Head, ModelConfig, Pretrained, PromptFormat};
use rlhf_tokenizer::{BpeConfig, train_bpe};
use rlhf_train::flan::{by_cluster, evaluate, rank_classify};
use rlhf_train::sft::{collate, encode_pair};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor};

fn tiny() -> Pretrained {
    let text =
        "Is it alpha, beta or gamma? Pick the best option. yes no it is not possible to tell";
    let tok = train_bpe(
        std::iter::repeat_n(text, 20),
        &BpeConfig {
            vocab_size: 290,
            ..Default::default()
        },
    )
    .unwrap();
    let json = serde_json::json!({
        "model_type": "llama", "vocab_size": tok.vocab_size(), "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 128, "tie_word_embeddings": true,
    });
    let cfg = ModelConfig::from_json(&json, std::path::Path::new("tiny")).unwrap();
    Pretrained {
        model: common::seeded_gpt(&cfg, Head::Lm, 3),
        tokenizer: tok,
    }
}

fn item(prompt: &str, options: &[&str], answer: &str) -> FlanEval {
    FlanEval {
        prompt: prompt.into(),
        answer: answer.into(),
        options: options.iter().map(|s| s.to_string()).collect(),
        cluster: Cluster::Nli,
        template: 0,
    }
}

/// Σ log p(completion token | prefix) from one unbatched forward, position by position.
fn by_hand(pre: &Pretrained, prompt: &str, completion: &str) -> f64 {
    let ex = encode_pair(
        pre,
        PromptFormat::Raw,
        &PromptFormat::Raw.prompt_text(prompt),
        completion,
    )
    .unwrap();
    let ids = Tensor::from_slice(&ex.ids).unsqueeze(0);
    let logits = tch::no_grad(|| {
        pre.model
            .forward(
                Batch {
                    input_ids: &ids,
                    attention_mask: None,
                },
                None,
            )
            .unwrap()
    });
    let logp = logits.squeeze_dim(0).log_softmax(-1, Kind::Double);
    let mut total = 0.0;
    for (t, &label) in ex.labels.iter().enumerate() {
        if label >= 0 {
            total += logp.double_value(&[t as i64, label]);
        }
    }
    total
}

#[test]
fn batched_scores_equal_one_at_a_time_and_the_hand_sum() {
    let pre = tiny();
    let items = [
        item(
            "Is it alpha, beta or gamma?",
            &["alpha", "beta", "gamma"],
            "beta",
        ),
        item(
            "Pick the best option.",
            &["yes", "it is not possible to tell", "no"],
            "no",
        ),
    ];
    let pairs: Vec<(String, String)> = items
        .iter()
        .flat_map(|i| {
            i.options
                .iter()
                .map(|o| (PromptFormat::Raw.prompt_text(&i.prompt), o.clone()))
        })
        .collect();
    let scores = |rows| {
        pre.completion_logprobs(PromptFormat::Raw, &pairs, rows)
            .unwrap()
            .into_iter()
            .map(|s| (s.sum, s.tokens))
            .collect::<Vec<_>>()
    };
    let (batched, single) = (scores(4), scores(1));
    for (((b, nb), (s, ns)), (p, c)) in batched.iter().zip(&single).zip(&pairs) {
        assert_eq!(nb, ns);
        assert!((b - s).abs() < 1e-4, "{b} vs {s}: padding changed a score");
        let prompt = p.trim_end_matches('\n');
        let hand = by_hand(&pre, prompt, c);
        assert!((b - hand).abs() < 1e-3, "{b} vs {hand} for {c:?}");
        // The count covers the completion's tokens and EOS.
        let n = pre.tokenizer.encode(c, false).unwrap().len() + 1;
        assert_eq!(*nb, n);
    }
    // Rank classification picks each item's highest total log-likelihood.
    let picked = rank_classify(&pre, PromptFormat::Raw, &items, 5).unwrap();
    let mut at = 0;
    for (it, &p) in items.iter().zip(&picked) {
        let s: Vec<f64> = single[at..at + it.options.len()]
            .iter()
            .map(|x| x.0)
            .collect();
        at += it.options.len();
        let best = s
            .iter()
            .enumerate()
            .fold(0, |b, (i, x)| if *x > s[b] { i } else { b });
        assert_eq!(p, best, "{s:?}");
    }
}

#[test]
fn rank_classification_picks_the_option_the_model_learned() {
    let pre = tiny();
    let prompt = PromptFormat::Raw.prompt_text("Is it alpha, beta or gamma?");
    let ex = encode_pair(&pre, PromptFormat::Raw, &prompt, "gamma").unwrap();
    let (ids, labels) = collate(&[&ex], 0);
    let mut opt = tch::nn::Adam::default().build(&pre.model.vs, 3e-3).unwrap();
    for _ in 0..150 {
        let (loss, _) = rlhf_train::sft::sft_loss(&pre.model, &ids, &labels).unwrap();
        opt.backward_step(&loss);
    }
    let items = [item(
        "Is it alpha, beta or gamma?",
        &["alpha", "beta", "gamma"],
        "gamma",
    )];
    assert_eq!(
        rank_classify(&pre, PromptFormat::Raw, &items, 8).unwrap(),
        vec![2]
    );
    let scores = evaluate(&pre, PromptFormat::Raw, &items, 8, 8).unwrap();
    assert!(scores[0].rank_correct);
    assert!(scores[0].exact, "greedy output {:?}", scores[0].output);
    assert!((scores[0].chance - 1.0 / 3.0).abs() < 1e-12);
    let per = by_cluster(&scores);
    assert_eq!(per.len(), 1);
    assert_eq!(
        (per[0].rank_accuracy, per[0].generation_accuracy),
        (1.0, 1.0)
    );
}

#[test]
fn an_item_without_options_is_an_error_naming_it() {
    let pre = tiny();
    let e = rank_classify(&pre, PromptFormat::Raw, &[item("x", &[], "y")], 4).unwrap_err();
    assert!(e.to_string().contains("item 1 (nli) has no options"), "{e}");
}
