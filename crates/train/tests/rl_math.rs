//! PPO's maths (`rlhf_train::rl`) against values computed by hand in the comments: masked
//! statistics and whitening, GAE, the KL estimators, the clipped losses and their gradients,
//! entropy and log-probs, the adaptive KL coefficient and the KL-penalised reward. All in f64 so
//! the tolerances can be ~1e-9.

use rlhf_train::rl::{
    AdaptiveKlController, KlControl, KlEstimator, entropy_from_logits, gae, kl_per_token,
    logprobs_from_logits, masked_mean, masked_mean_dim, masked_sum, masked_var, masked_whiten,
    policy_loss, rewards_with_kl, value_loss,
};
use tch::{Kind, Tensor};

type Result = anyhow::Result<()>;

const TOL: f64 = 1e-9;

/// A (rows, cols) f64 tensor.
fn t2(rows: &[&[f64]]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, -1])
}

fn values(x: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(x.reshape([-1])).expect("f64 tensor")
}

fn scalar(x: &Tensor) -> f64 {
    x.double_value(&[])
}

fn assert_close(got: &Tensor, want: &[f64], tol: f64, what: &str) {
    let got = values(got);
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
}

/// Selected entries 1, 2, 6; the padding holds 5, NaN and inf, which must never leak in.
fn stats_example() -> (Tensor, Tensor) {
    let x = t2(&[&[1.0, 2.0, f64::NAN], &[6.0, 5.0, f64::INFINITY]]);
    let mask = t2(&[&[1.0, 1.0, 0.0], &[1.0, 0.0, 0.0]]);
    (x, mask)
}

#[test]
fn masked_sum_mean_and_var_by_hand() -> Result {
    let (x, mask) = stats_example();
    // sum = 1 + 2 + 6 = 9; mean = 9 / 3 = 3
    close(scalar(&masked_sum(&x, &mask)?), 9.0, TOL, "sum");
    close(scalar(&masked_mean(&x, &mask)?), 3.0, TOL, "mean");
    // row means: (1 + 2) / 2 = 1.5; 6 / 1 = 6
    assert_close(
        &masked_mean_dim(&x, &mask, 1)?,
        &[1.5, 6.0],
        TOL,
        "row means",
    );
    // deviations -2, -1, 3 → squares 4 + 1 + 9 = 14: biased 14 / 3, unbiased 14 / 2 = 7
    close(
        scalar(&masked_var(&x, &mask, false)?),
        14.0 / 3.0,
        TOL,
        "biased var",
    );
    close(
        scalar(&masked_var(&x, &mask, true)?),
        7.0,
        TOL,
        "unbiased var",
    );
    Ok(())
}

#[test]
fn masked_var_refuses_too_few_entries() {
    let x = t2(&[&[1.0, 2.0]]);
    let one = t2(&[&[1.0, 0.0]]);
    // One entry: a biased variance of 0, but n / (n - 1) = 1 / 0 for the unbiased one.
    assert_eq!(scalar(&masked_var(&x, &one, false).unwrap()), 0.0);
    let err = masked_var(&x, &one, true).unwrap_err().to_string();
    assert!(
        err.contains("masked_var") && err.contains("at least 2"),
        "{err}"
    );
    assert!(masked_var(&x, &t2(&[&[0.0, 0.0]]), false).is_err());
}

#[test]
fn whiten_centres_and_scales_over_the_mask() -> Result {
    let (x, mask) = stats_example();
    // mean 3, unbiased var 7: (x - 3) / sqrt(7 + 1e-8) on the mask, 0 elsewhere.
    let s = (7.0f64 + 1e-8).sqrt();
    let w = masked_whiten(&x, &mask, true)?;
    assert_close(
        &w,
        &[-2.0 / s, -1.0 / s, 0.0, 3.0 / s, 0.0, 0.0],
        TOL,
        "whitened",
    );
    close(scalar(&masked_mean(&w, &mask)?), 0.0, TOL, "whitened mean");
    // Unbiased var of the whitened values: 7 / (7 + 1e-8), 1 up to the epsilon.
    let var = scalar(&masked_var(&w, &mask, true)?);
    close(var, 7.0 / (7.0 + 1e-8), TOL, "whitened var");
    // shift_mean = false adds the mean back: same spread, mean 3, padding still 0.
    let kept = masked_whiten(&x, &mask, false)?;
    let want = [3.0 - 2.0 / s, 3.0 - 1.0 / s, 0.0, 3.0 + 3.0 / s, 0.0, 0.0];
    assert_close(&kept, &want, TOL, "whitened, mean kept");
    close(scalar(&masked_mean(&kept, &mask)?), 3.0, TOL, "kept mean");
    // f32 in, f32 out.
    let w32 = masked_whiten(&x.to_kind(Kind::Float), &mask.to_kind(Kind::Float), true)?;
    assert_eq!(w32.kind(), Kind::Float);
    Ok(())
}

#[test]
fn gae_gamma_half_lambda_one_by_hand() -> Result {
    // One response of 3 tokens, then a padded column full of garbage (100) that must be ignored.
    let rewards = t2(&[&[1.0, 0.0, 2.0, 100.0]]);
    let values = t2(&[&[0.5, 1.0, 0.25, 100.0]]);
    let mask = t2(&[&[1.0, 1.0, 1.0, 0.0]]);
    let (adv, ret) = gae(&rewards, &values, &mask, 0.5, 1.0)?;
    // δ_2 = r_2 + γ·0 - V_2   = 2 - 0.25           = 1.75   (V after EOS is 0)
    // δ_1 = r_1 + γ·V_2 - V_1 = 0 + 0.5·0.25 - 1   = -0.875
    // δ_0 = r_0 + γ·V_1 - V_0 = 1 + 0.5·1 - 0.5    = 1.0
    // A_2 = 1.75
    // A_1 = δ_1 + γλ·A_2 = -0.875 + 0.5·1.75 = 0
    // A_0 = δ_0 + γλ·A_1 = 1.0 + 0.5·0      = 1.0
    assert_close(&adv, &[1.0, 0.0, 1.75, 0.0], TOL, "advantages");
    // returns = A + V = [1.5, 1.0, 2.0]: with λ = 1 the discounted reward-to-go
    // (G_2 = 2, G_1 = 0 + 0.5·2 = 1, G_0 = 1 + 0.5·1 = 1.5).
    assert_close(&ret, &[1.5, 1.0, 2.0, 0.0], TOL, "returns");
    Ok(())
}

#[test]
fn gae_shorter_row_equals_computing_it_alone() -> Result {
    let rewards = t2(&[&[0.0, 0.0, 1.0], &[0.5, -1.0, 3.0]]);
    let values = t2(&[&[0.5, 0.25, 0.75], &[0.25, 0.5, 9.0]]);
    let mask = t2(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 0.0]]);
    let (adv, ret) = gae(&rewards, &values, &mask, 1.0, 0.95)?;
    // Row 0, γ = 1, λ = 0.95:
    //   δ_2 = 1 - 0.75 = 0.25;  δ_1 = 0 + 0.75 - 0.25 = 0.5;  δ_0 = 0 + 0.25 - 0.5 = -0.25
    //   A_2 = 0.25
    //   A_1 = 0.5 + 0.95·0.25 = 0.7375
    //   A_0 = -0.25 + 0.95·0.7375 = -0.25 + 0.700625 = 0.450625
    //   returns = A + V = [0.950625, 0.9875, 1.0]
    // Row 1 ends after 2 tokens (its 3.0 and 9.0 are padding):
    //   δ_1 = -1 + 0 - 0.5 = -1.5;  δ_0 = 0.5 + 0.5 - 0.25 = 0.75
    //   A_1 = -1.5;  A_0 = 0.75 + 0.95·(-1.5) = 0.75 - 1.425 = -0.675
    //   returns = [-0.675 + 0.25, -1.5 + 0.5, 0] = [-0.425, -1.0, 0]
    let want_adv = [0.450625, 0.7375, 0.25, -0.675, -1.5, 0.0];
    assert_close(&adv, &want_adv, TOL, "advantages");
    let want_ret = [0.950625, 0.9875, 1.0, -0.425, -1.0, 0.0];
    assert_close(&ret, &want_ret, TOL, "returns");
    // Row 1 on its own, unpadded, gives the same numbers.
    let (alone, alone_ret) = gae(
        &t2(&[&[0.5, -1.0]]),
        &t2(&[&[0.25, 0.5]]),
        &t2(&[&[1.0, 1.0]]),
        1.0,
        0.95,
    )?;
    assert_close(&alone, &[-0.675, -1.5], TOL, "row 1 alone");
    assert_close(&alone_ret, &[-0.425, -1.0], TOL, "row 1 alone, returns");
    Ok(())
}

#[test]
fn gae_limits_td_errors_and_reward_to_go() -> Result {
    let rewards = t2(&[&[1.0, 0.0, 2.0]]);
    let values = t2(&[&[0.5, 1.0, 0.25]]);
    let mask = t2(&[&[1.0, 1.0, 1.0]]);
    // λ = 0: A_t = δ_t, the one-step TD errors of the first GAE test: [1.0, -0.875, 1.75].
    let (adv, _) = gae(&rewards, &values, &mask, 0.5, 0.0)?;
    assert_close(&adv, &[1.0, -0.875, 1.75], TOL, "lambda 0");
    // γ = λ = 1: returns are the reward-to-go [1 + 0 + 2, 0 + 2, 2] = [3, 2, 2] whatever V is,
    // and A = returns - V = [2.5, 1.0, 1.75].
    let (adv, ret) = gae(&rewards, &values, &mask, 1.0, 1.0)?;
    assert_close(&ret, &[3.0, 2.0, 2.0], TOL, "reward-to-go");
    assert_close(&adv, &[2.5, 1.0, 1.75], TOL, "reward-to-go - V");
    Ok(())
}

#[test]
fn gae_accepts_an_offset_response_and_rejects_holes() -> Result {
    // A response in columns 1..3 (column 0 a prompt token): as if columns 1..3 stood alone.
    // γ = 0.5, λ = 1, rewards [0, 2], values [1, 0.25]:
    //   δ_2 = 2 - 0.25 = 1.75;  δ_1 = 0 + 0.5·0.25 - 1 = -0.875
    //   A_2 = 1.75;  A_1 = -0.875 + 0.5·1.75 = 0
    let rewards = t2(&[&[9.0, 0.0, 2.0]]);
    let values = t2(&[&[9.0, 1.0, 0.25]]);
    let (adv, ret) = gae(&rewards, &values, &t2(&[&[0.0, 1.0, 1.0]]), 0.5, 1.0)?;
    assert_close(&adv, &[0.0, 0.0, 1.75], TOL, "offset advantages");
    assert_close(&ret, &[0.0, 1.0, 2.0], TOL, "offset returns");
    let err = gae(&rewards, &values, &t2(&[&[1.0, 0.0, 1.0]]), 0.5, 1.0).unwrap_err();
    assert!(err.to_string().contains("contiguous"), "{err}");
    assert!(gae(&rewards, &values, &t2(&[&[1.0, 1.0, 1.0]]), 1.5, 1.0).is_err());
    Ok(())
}

#[test]
fn kl_estimators_by_hand() -> Result {
    let logp = t2(&[&[-1.0, -2.0, -3.0]]);
    let ref_logp = t2(&[&[-2.0, -1.0, -3.0]]);
    // K1 = logp - ref = [1, -1, 0]
    let k1 = kl_per_token(&logp, &ref_logp, KlEstimator::K1)?;
    assert_close(&k1, &[1.0, -1.0, 0.0], TOL, "k1");
    // K2 = ½ (logp - ref)² = [0.5, 0.5, 0]
    let k2 = kl_per_token(&logp, &ref_logp, KlEstimator::K2)?;
    assert_close(&k2, &[0.5, 0.5, 0.0], TOL, "k2");
    // K3: log r = ref - logp = [-1, 1, 0], so (r - 1) - log r =
    //   [e⁻¹ - 1 + 1, e - 1 - 1, 1 - 1 - 0] = [e⁻¹, e - 2, 0] = [0.367879…, 0.718281…, 0]
    let k3 = kl_per_token(&logp, &ref_logp, KlEstimator::K3)?;
    let e = std::f64::consts::E;
    assert_close(&k3, &[1.0 / e, e - 2.0, 0.0], TOL, "k3");
    Ok(())
}

#[test]
fn k3_is_never_negative() -> Result {
    // (r - 1) - log r ≥ 0 since log r ≤ r - 1; checked over log-ratios from -20 to 20.
    let logp = Tensor::linspace(-20.0, 20.0, 4001, (Kind::Double, tch::Device::Cpu));
    let k3 = kl_per_token(&logp, &logp.zeros_like(), KlEstimator::K3)?;
    let min = values(&k3).into_iter().fold(f64::INFINITY, f64::min);
    assert!(min >= 0.0, "min k3 {min}");
    Ok(())
}

#[test]
fn kl_estimator_parses_and_serialises_lowercase() -> Result {
    assert_eq!("k3".parse::<KlEstimator>()?, KlEstimator::K3);
    assert_eq!("K2".parse::<KlEstimator>()?, KlEstimator::K2);
    let err = "k4".parse::<KlEstimator>().unwrap_err().to_string();
    assert!(err.contains("k1, k2 or k3"), "{err}");
    assert_eq!(serde_json::to_string(&KlEstimator::K1)?, "\"k1\"");
    assert_eq!(
        serde_json::from_str::<KlEstimator>("\"k3\"")?,
        KlEstimator::K3
    );
    assert_eq!(KlEstimator::K2.to_string(), "k2");
    assert_eq!(KlEstimator::default(), KlEstimator::K1);
    Ok(())
}

#[test]
fn policy_loss_clips_by_hand() -> Result {
    // clip = 0.2 → ratios clamped to [0.8, 1.2]; old_logp = 0 so ratio = exp(logp).
    //   tok  A   ratio  -A·ratio  -A·clamp   max   clipped (strictly larger)?
    //   0   +1   1.1    -1.1      -1.1      -1.1   no (inside the range: equal)
    //   1   +1   1.5    -1.5      -1.2      -1.2   yes
    //   2   -2   0.9     1.8       1.8       1.8   no
    //   3   -2   0.5     1.0       1.6       1.6   yes
    //   4   +1   0.5    -0.5      -0.8      -0.5   no (outside, but the unclipped term wins)
    //   5   -1   1.5     1.5       1.2       1.5   no (idem)
    //   6   padding: ratio e⁵, A = 100, ignored
    // loss = (-1.1 - 1.2 + 1.8 + 1.6 - 0.5 + 1.5) / 6 = 2.1 / 6 = 0.35; clip_fraction = 2 / 6.
    let ratios = [1.1f64, 1.5, 0.9, 0.5, 0.5, 1.5];
    let mut logp: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    logp.push(5.0);
    let logp = t2(&[logp.as_slice()]).set_requires_grad(true);
    let old = logp.zeros_like().detach();
    let adv = t2(&[&[1.0, 1.0, -2.0, -2.0, 1.0, -1.0, 100.0]]);
    let mask = t2(&[&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]]);
    let out = policy_loss(&logp, &old, &adv, &mask, 0.2)?;
    close(scalar(&out.loss), 0.35, TOL, "loss");
    close(out.clip_fraction, 2.0 / 6.0, TOL, "clip_fraction");
    // approx_kl = mean of ½ (ln ratio)²; ln 1.1 = 0.0953, ln 1.5 = 0.4055, ln 0.9 = -0.1054,
    // ln 0.5 = -0.6931 → ½(0.00908 + 0.16440 + 0.01110 + 0.48045 + 0.48045 + 0.16440) / 6
    // = ½ · 1.30989 / 6 = 0.109158…
    let kl = ratios.iter().map(|r| 0.5 * r.ln().powi(2)).sum::<f64>() / 6.0;
    close(out.approx_kl, kl, TOL, "approx_kl");
    assert!((kl - 0.109158).abs() < 1e-6, "{kl}");
    // d loss / d logp_i = (1/6) · d(-A·ratio)/d logp = -A·ratio / 6 where the unclipped term
    // wins, 0 where the clipped one does (the clamp is flat there) and on the padding:
    //   [-1.1, 0, 1.8, 0, -0.5, 1.5, 0] / 6
    out.loss.backward();
    let want = [-1.1 / 6.0, 0.0, 1.8 / 6.0, 0.0, -0.5 / 6.0, 1.5 / 6.0, 0.0];
    assert_close(&logp.grad(), &want, TOL, "gradient");
    Ok(())
}

#[test]
fn value_loss_clips_by_hand() -> Result {
    // clip = 0.25, old = 0.5: v_clipped = 0.5 + clamp(v - 0.5, -0.25, 0.25).
    //   tok  v      ret   v_clip  (v-ret)²   (v_clip-ret)²          max       clipped?
    //   0   1.0    0.5   0.75    0.25       0.0625                 0.25      no
    //   1   1.0    1.5   0.75    0.25       0.5625                 0.5625    yes
    //   2   0.625  0     0.625   0.390625   0.390625 (inside)      0.390625  no (equal)
    //   3   padding (100), ignored
    // loss = ½ (0.25 + 0.5625 + 0.390625) / 3 = ½ · 1.203125 / 3 = 0.2005208…
    let v = t2(&[&[1.0, 1.0, 0.625, 100.0]]).set_requires_grad(true);
    let old = t2(&[&[0.5, 0.5, 0.5, 0.0]]);
    let ret = t2(&[&[0.5, 1.5, 0.0, 0.0]]);
    let mask = t2(&[&[1.0, 1.0, 1.0, 0.0]]);
    let out = value_loss(&v, &old, &ret, &mask, 0.25)?;
    close(scalar(&out.loss), 0.5 * 1.203125 / 3.0, TOL, "loss");
    close(out.clip_fraction, 1.0 / 3.0, TOL, "clip_fraction");
    // d loss / d v = ½ · (1/3) · 2 (v - ret) on unclipped winners: tok 0 → 0.5 / 3;
    // tok 1 → 0 (clipped, clamp flat); tok 2: both terms equal with slope 2·0.625 each,
    // maximum splits the gradient half-half → 0.625 / 3; padding → 0.
    out.loss.backward();
    assert_close(
        &v.grad(),
        &[0.5 / 3.0, 0.0, 0.625 / 3.0, 0.0],
        TOL,
        "gradient",
    );
    Ok(())
}

#[test]
fn entropy_by_hand() -> Result {
    // Uniform over V = 4: ln 4. One-hot-like [100, 0, 0, 0]: p of the others ≈ e⁻¹⁰⁰, so ≈ 0.
    let logits = Tensor::from_slice(&[3.0f64, 3.0, 3.0, 3.0, 100.0, 0.0, 0.0, 0.0]).view([1, 2, 4]);
    let h = entropy_from_logits(&logits)?;
    assert_eq!(h.size(), [1, 2]);
    assert_close(&h, &[4f64.ln(), 0.0], TOL, "entropy");
    // [0, ln 3] → p = [1/4, 3/4]: H = -(¼ ln ¼ + ¾ ln ¾) = ln 4 - ¾ ln 3 = 0.5623351…
    let two = Tensor::from_slice(&[0.0f64, 3f64.ln()]).view([1, 1, 2]);
    let want = 4f64.ln() - 0.75 * 3f64.ln();
    assert_close(&entropy_from_logits(&two)?, &[want], TOL, "two tokens");
    assert!((want - 0.5623351).abs() < 1e-7);
    Ok(())
}

#[test]
fn logprobs_with_temperature() -> Result {
    let logits = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 0.0, -1.0, 4.0]).view([1, 2, 3]);
    let tokens = Tensor::from_slice(&[2i64, 0]).view([1, 2]);
    let lp = logprobs_from_logits(&logits, &tokens, 2.0)?;
    // Row 0 at T = 2: z = [0.5, 1, 1.5], token 2 → 1.5 - ln(e^0.5 + e^1 + e^1.5)
    // Row 1: z = [0, -0.5, 2], token 0 → 0 - ln(e^0 + e^-0.5 + e^2)
    let h0 = 1.5 - (0.5f64.exp() + 1f64.exp() + 1.5f64.exp()).ln();
    let h1 = -(1.0 + (-0.5f64).exp() + 2f64.exp()).ln();
    assert_close(&lp, &[h0, h1], TOL, "by hand");
    // The same as log_softmax(logits / 2) gathered at the tokens.
    let reference = (&logits / 2.0)
        .log_softmax(-1, Kind::Double)
        .gather(-1, &tokens.unsqueeze(-1), false)
        .squeeze_dim(-1);
    assert_close(&lp, &values(&reference), TOL, "log_softmax(logits / 2)");
    let at_one = logprobs_from_logits(&logits, &tokens, 1.0)?;
    let reference = logits
        .log_softmax(-1, Kind::Double)
        .gather(-1, &tokens.unsqueeze(-1), false);
    assert_close(&at_one, &values(&reference), TOL, "temperature 1");
    assert!(logprobs_from_logits(&logits, &tokens, 0.0).is_err());
    assert!(logprobs_from_logits(&logits, &tokens.view([2, 1]), 1.0).is_err());
    Ok(())
}

#[test]
fn adaptive_kl_controller_by_hand() -> Result {
    let mut c = AdaptiveKlController::new(0.1, 6.0, 10_000.0)?;
    // KL 6.6: e = 6.6/6 - 1 = 0.1; β ← 0.1 · (1 + 0.1 · 1000/10000) = 0.1 · 1.01 = 0.101
    c.update(6.6, 1000);
    close(c.value, 0.101, 1e-12, "first update");
    // KL 12: 12/6 - 1 = 1, clipped to 0.2; β ← 0.101 · (1 + 0.2 · 0.1) = 0.101 · 1.02 = 0.10302
    c.update(12.0, 1000);
    close(c.value, 0.10302, 1e-12, "clipped up");
    // KL 0: 0/6 - 1 = -1, clipped to -0.2; β ← 0.10302 · 0.98 = 0.1009596
    c.update(0.0, 1000);
    close(c.value, 0.1009596, 1e-12, "clipped down");
    // A NaN KL leaves β alone.
    c.update(f64::NAN, 1000);
    close(c.value, 0.1009596, 1e-12, "NaN ignored");
    assert!(AdaptiveKlController::new(0.1, 0.0, 10_000.0).is_err());
    Ok(())
}

#[test]
fn kl_control_fixed_or_adaptive_round_trips() -> Result {
    let mut fixed = KlControl::new(0.05, None, 10_000.0)?;
    fixed.update(100.0, 1000);
    assert_eq!(fixed.value(), 0.05);
    let mut adaptive = KlControl::new(0.1, Some(6.0), 10_000.0)?;
    adaptive.update(6.6, 1000);
    close(adaptive.value(), 0.101, 1e-12, "adaptive");
    let json = serde_json::to_string(&adaptive)?;
    assert_eq!(serde_json::from_str::<KlControl>(&json)?, adaptive);
    Ok(())
}

#[test]
fn rewards_with_kl_by_hand() -> Result {
    // β = 0.5, K1. Row 0: 3 tokens, score 2; row 1: 2 tokens, score -1; row 2: empty, score 5.
    let logp = t2(&[&[-1.0, -2.0, -0.5], &[-1.0, -1.0, 9.0], &[-1.0, -1.0, -1.0]]);
    let ref_logp = t2(&[&[-1.5, -1.0, -0.5], &[-2.0, -1.0, 0.0], &[-3.0, -3.0, -3.0]]);
    let mask = t2(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 0.0], &[0.0, 0.0, 0.0]]);
    let score = Tensor::from_slice(&[2.0f64, -1.0, 5.0]);
    let (rewards, kl) = rewards_with_kl(&score, &logp, &ref_logp, &mask, 0.5, KlEstimator::K1)?;
    // Row 0: kl = [-1 + 1.5, -2 + 1, 0] = [0.5, -1, 0]; -β·kl = [-0.25, 0.5, 0]; + 2 at column 2.
    // Row 1: kl = [-1 + 2, 0, masked] = [1, 0, 0]; -β·kl = [-0.5, 0, 0]; + (-1) at column 1.
    // Row 2: nothing masked: kl and rewards all 0, the score 5 dropped.
    let want_kl = [0.5, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_close(&kl, &want_kl, TOL, "kl");
    let want = [-0.25, 0.5, 2.0, -0.5, -1.0, 0.0, 0.0, 0.0, 0.0];
    assert_close(&rewards, &want, TOL, "rewards");
    Ok(())
}

#[test]
fn mismatched_inputs_are_errors_not_panics() {
    let x = t2(&[&[1.0, 2.0, 3.0]]);
    let err = masked_mean(&x, &t2(&[&[1.0, 1.0]]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("masked_mean") && err.contains("shape"),
        "{err}"
    );
    let err = kl_per_token(&x, &x.to_kind(Kind::Float), KlEstimator::K1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kl_per_token") && err.contains("Float"),
        "{err}"
    );
    let score = Tensor::from_slice(&[1.0f64, 2.0]);
    let err = rewards_with_kl(&score, &x, &x, &x.ones_like(), 0.1, KlEstimator::K1).unwrap_err();
    assert!(err.to_string().contains("score"), "{err}");
}
