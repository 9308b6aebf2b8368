//! SFT: the loss covers exactly the assistant's tokens (plus EOS), batches pad correctly, and one
//! step changes every parameter.

mod common;

use rlhf_data::SftRecord;
use rlhf_model::{Batch, Gpt, Pretrained};
use rlhf_train::sft::{collate, encode_example, masked_ce, sft_loss};
use rlhf_train::{DataSource, RandomTokens, TrainStep, TrainerConfig, run_steps};
use tch::{Device, Kind, Tensor};

fn tiny() -> Pretrained {
    common::tiny_pretrained(256)
}

fn record(prompt: &str, completion: &str) -> SftRecord {
    SftRecord::Completion {
        prompt: prompt.into(),
        completion: completion.into(),
    }
}

#[test]
fn loss_is_the_mean_over_completion_tokens_only() {
    let pre = tiny();
    let a = encode_example(&pre, &record("Jane has 12 flowers.", "The answer is 10.")).unwrap();
    let b = encode_example(&pre, &record("Sort 3, 1, 2 please, now.", "1, 2, 3")).unwrap();
    let (ids, labels) = collate(&[&a, &b], 1);
    let (loss, n) = sft_loss(&pre.model, &ids, &labels).unwrap();
    // By hand: log-softmax at every position, summed only where the label is a target.
    let logits = pre
        .model
        .forward(
            Batch {
                input_ids: &ids,
                attention_mask: None,
            },
            None,
        )
        .unwrap();
    let logp = logits.log_softmax(-1, Kind::Double);
    let (mut sum, mut count) = (0.0, 0);
    for (row, ex) in [&a, &b].iter().enumerate() {
        let target_positions = ex.labels.iter().enumerate().filter(|(_, l)| **l >= 0);
        for (t, &l) in target_positions {
            sum -= f64::try_from(logp.get(row as i64).get(t as i64).get(l)).unwrap();
            count += 1;
        }
    }
    assert_eq!(n, count);
    assert!((f64::try_from(loss).unwrap() - sum / count as f64).abs() < 1e-5);
    // The targets are the completion's tokens and EOS, nothing of the prompt.
    let eos = i64::from(pre.tokenizer.eos_id().unwrap());
    assert_eq!(a.labels.iter().rev().find(|&&l| l >= 0), Some(&eos));
    let answer = pre.tokenizer.encode("The answer is 10.", false).unwrap();
    assert!(count as usize > answer.len());
}

#[test]
fn prompt_positions_carry_no_loss() {
    let pre = tiny();
    let ex = encode_example(&pre, &record("Jane has 12 flowers.", "The answer is 10.")).unwrap();
    let n_prompt = pre
        .tokenizer
        .render_chat(
            &[rlhf_tokenizer::Message::user("Jane has 12 flowers.")],
            true,
        )
        .unwrap();
    let n_prompt = pre.tokenizer.encode(&n_prompt, false).unwrap().len();
    // Positions before the last prompt token predict prompt tokens: no label there.
    assert!(ex.labels[..n_prompt - 1].iter().all(|&l| l == -100));
    assert!(
        ex.labels[n_prompt - 1..ex.labels.len() - 1]
            .iter()
            .all(|&l| l >= 0)
    );
    let (ids, labels) = collate(&[&ex], 1);
    let logits = pre
        .model
        .forward(
            Batch {
                input_ids: &ids,
                attention_mask: None,
            },
            None,
        )
        .unwrap();
    let logits = logits.detach().set_requires_grad(true);
    let (loss, _) = masked_ce(&logits, &labels).unwrap();
    // Whatever the model outputs at prompt positions, the loss is the same...
    let noise = Tensor::randn(logits.size(), (Kind::Float, Device::Cpu)) * 10.0;
    let keep = Tensor::arange(ids.size()[1], (Kind::Int64, Device::Cpu)).ge(n_prompt as i64 - 1);
    let changed =
        &logits.detach() + noise * keep.logical_not().to_kind(Kind::Float).view([1, -1, 1]);
    let (again, _) = masked_ce(&changed, &labels).unwrap();
    assert_eq!(
        f64::try_from(&loss).unwrap(),
        f64::try_from(&again).unwrap()
    );
    // ...and its gradient there is exactly zero, non-zero at every target position.
    loss.backward();
    let g = logits
        .grad()
        .abs()
        .sum_dim_intlist(-1, false, Kind::Double)
        .get(0);
    for t in 0..ids.size()[1] {
        let gt = f64::try_from(g.get(t)).unwrap();
        if ex.labels[t as usize] >= 0 {
            assert!(gt > 0.0, "position {t}")
        } else {
            assert_eq!(gt, 0.0, "position {t}")
        }
    }
    // Right padding does not change the real positions' logits.
    let long = encode_example(
        &pre,
        &record("Sort 3, 1, 2 please, now. Sort 3, 1, 2.", "1, 2, 3"),
    )
    .unwrap();
    let (ids3, _) = collate(&[&ex, &long], 1);
    let padded = pre
        .model
        .forward(
            Batch {
                input_ids: &ids3,
                attention_mask: None,
            },
            None,
        )
        .unwrap();
    let t = ids.size()[1];
    let d = f64::try_from(
        (padded.get(0).narrow(0, 0, t) - logits.detach().get(0))
            .abs()
            .max(),
    )
    .unwrap();
    assert!(d < 1e-5, "padding changed real positions by {d}");
}

struct Step(Gpt);
impl TrainStep for Step {
    type Batch = (Tensor, Tensor);
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.0.vs.variables().into_iter().collect()
    }
    fn loss(
        &mut self,
        (ids, labels): &(Tensor, Tensor),
    ) -> rlhf_train::Result<rlhf_train::StepOutput> {
        let (loss, n) = sft_loss(&self.0, ids, labels)?;
        Ok(rlhf_train::StepOutput::new(loss, n))
    }
    fn save(&self, _: &std::path::Path) -> rlhf_train::Result<()> {
        Ok(())
    }
    fn load(&mut self, _: &std::path::Path) -> rlhf_train::Result<()> {
        Ok(())
    }
}

struct Fixed((Tensor, Tensor));
impl DataSource for Fixed {
    type Batch = (Tensor, Tensor);
    fn next_batch(&mut self) -> rlhf_train::Result<Option<(Tensor, Tensor)>> {
        Ok(Some((self.0.0.shallow_clone(), self.0.1.shallow_clone())))
    }
    fn position(&self) -> rlhf_train::DataPosition {
        RandomTokens::new(1, 1, 1, 0).position()
    }
    fn seek(&mut self, _: &rlhf_train::DataPosition) -> rlhf_train::Result<()> {
        Ok(())
    }
}

#[test]
fn one_sft_step_changes_every_parameter() {
    let pre = tiny();
    let a = encode_example(&pre, &record("Jane has 12 flowers.", "The answer is 10.")).unwrap();
    let b = encode_example(&pre, &record("Sort 3, 1, 2.", "1, 2, 3")).unwrap();
    let batch = collate(&[&a, &b], 1);
    let before: Vec<(String, Tensor)> = pre
        .model
        .vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    let mut step = Step(pre.model);
    let cfg = TrainerConfig {
        warmup_steps: 0,
        lr: 1e-3,
        ..Default::default()
    };
    run_steps(&cfg, &mut step, &mut Fixed(batch), 1).unwrap();
    let after = step.0.vs.variables();
    for (name, old) in before {
        let d = f64::try_from((&after[&name] - old).abs().max()).unwrap();
        assert!(d > 0.0, "{name} did not change");
    }
}
