//! Simulated-labeler tests: on an SFT model's own samples two independent labelers agree on
//! 70–76% of their pairs and the calibrated τ is what the bisection finds there; the noise-free
//! labeler reproduces the oracle's order exactly, identical responses tie, rankings are
//! deterministic for a seed.

use rlhf_data::{
    CALIBRATED_TAU, CANDIDATE_MIX, LabelerConfig, SampleRecord, SimulatedLabeler, TARGET_AGREEMENT,
    Task, calibrate_tau, calibration_pairs, expected_agreement, grade, read_jsonl, respond,
    sample_pairs, world_rng,
};

fn labeler(seed: u64) -> SimulatedLabeler {
    SimulatedLabeler::new(seed, &LabelerConfig::default()).expect("valid config")
}

/// SFT samples the labelers are calibrated on: the first 300 prompts (K = 8 responses each)
/// that a demo's SFT model sampled at temperature 1 (`rlhf demo --dev --seed 100`: a seed no
/// report uses).
fn sft_samples() -> Vec<SampleRecord> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sft_samples.jsonl");
    read_jsonl(&path).expect("fixture")
}

#[test]
fn calibrated_tau_gives_73_percent_on_sft_samples() {
    let pairs = sample_pairs(&sft_samples()).expect("task-world prompts");
    assert!(pairs.len() > 2000, "{} pairs", pairs.len());
    let tau = calibrate_tau(&pairs, TARGET_AGREEMENT).expect("reachable");
    assert!(
        (tau - CALIBRATED_TAU).abs() < 0.005,
        "bisection gives {tau}"
    );
    let expected = expected_agreement(CALIBRATED_TAU, &pairs);
    assert!((expected - TARGET_AGREEMENT).abs() < 0.005, "{expected}");
    // Agreement falls as noise grows.
    assert!(expected_agreement(0.0, &pairs) > expected_agreement(0.1, &pairs));
    assert!(expected_agreement(0.1, &pairs) > expected_agreement(0.5, &pairs));
}

/// What the demo measures: two labelers of a panel rank the same SFT samples and agree on
/// 70–76% of their pairs of different responses, for several panels.
#[test]
fn two_labelers_agree_within_the_band_on_sft_samples() {
    let samples = sft_samples();
    let mut total = 0.0;
    for seed in 0..5 {
        let panel = rlhf_data::LabelerPanel::new(2, seed, &LabelerConfig::default()).unwrap();
        let a = panel.rank_samples(samples.clone(), 1.0).unwrap().agreement;
        let rate = a.rate().expect("pairs");
        assert!((0.70..=0.76).contains(&rate), "panel {seed}: {rate}");
        total += rate;
    }
    let mean = total / 5.0;
    assert!(
        (TARGET_AGREEMENT - mean).abs() < 0.015,
        "mean agreement {mean}"
    );
}

/// The same labelers with the same seed rank the same samples identically.
#[test]
fn labeling_is_deterministic_for_a_fixed_seed() {
    let samples = sft_samples();
    let panel = rlhf_data::LabelerPanel::new(4, 3, &LabelerConfig::default()).unwrap();
    let a = panel.rank_samples(samples.clone(), 0.5).unwrap();
    let b = panel.rank_samples(samples.clone(), 0.5).unwrap();
    assert_eq!(a.rankings, b.rankings);
    assert_eq!(a.agreement, b.agreement);
    let other = rlhf_data::LabelerPanel::new(4, 4, &LabelerConfig::default()).unwrap();
    assert_ne!(
        other.rank_samples(samples, 0.5).unwrap().rankings,
        a.rankings
    );
}

#[test]
fn noise_free_labeler_agrees_with_the_oracle_order_exactly() {
    let oracle = SimulatedLabeler::noise_free();
    let pairs = calibration_pairs(3, 2000);
    for p in &pairs {
        let responses = [p.a.clone(), p.b.clone()];
        let ranking = oracle.rank(&p.task, &responses).expect("two responses");
        let (sa, sb) = (grade(&p.task, &p.a).score, grade(&p.task, &p.b).score);
        let groups = ranking.groups();
        if sa == sb {
            assert_eq!(groups, [vec![0, 1]], "equal scores tie");
        } else if sa > sb {
            assert_eq!(groups, [vec![0], vec![1]]);
        } else {
            assert_eq!(groups, [vec![1], vec![0]]);
        }
    }
    // Over K = 6 responses too: groups are in strictly decreasing score order.
    let task = pairs[0].task.clone();
    let mut rng = world_rng(7, 0);
    let responses: Vec<String> = (0..6)
        .map(|i| respond(&task, CANDIDATE_MIX[i % 4].0, &mut rng).text)
        .collect();
    let ranking = oracle.rank(&task, &responses).expect("six responses");
    let scores: Vec<f64> = ranking
        .groups()
        .iter()
        .map(|g| grade(&task, &responses[g[0]]).score)
        .collect();
    assert!(scores.windows(2).all(|w| w[0] > w[1]), "{scores:?}");
}

#[test]
fn identical_responses_tie_and_rankings_are_reproducible() {
    let task = Task::parse("Repeat the word red 3 times.").expect("parses");
    let responses: Vec<String> = ["red red red", "red red", "red red red", "Sure! red red red"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let l = labeler(5);
    let ranking = l.rank(&task, &responses).expect("ranks");
    let tied = ranking
        .groups()
        .iter()
        .find(|g| g.contains(&0))
        .expect("ranked");
    assert_eq!(tied, &vec![0, 2], "identical texts share a group");
    assert_eq!(ranking.pairs().len(), 6 - 1);
    assert_eq!(l.rank(&task, &responses).expect("again"), ranking);
    // Too few responses is an error, not a panic.
    assert!(l.rank(&task, &responses[..1]).is_err());
    // A negative temperature is rejected.
    assert!(SimulatedLabeler::new(0, &LabelerConfig { tau: -1.0 }).is_err());
}

/// Where the oracle's gap is small next to τ (same correctness and format, different work or
/// length), a labeler prefers the better response at the Bradley–Terry rate σ(Δscore/τ).
#[test]
fn noisy_labelers_prefer_better_responses_at_the_bradley_terry_rate() {
    let pairs: Vec<_> = sample_pairs(&sft_samples()).expect("task-world prompts");
    let l = labeler(9);
    let (mut decisive, mut right, mut expected) = (0, 0, 0.0);
    for p in &pairs {
        let (ga, gb) = (grade(&p.task, &p.a), grade(&p.task, &p.b));
        if ga.correct != gb.correct || ga.formatted != gb.formatted || ga.score == gb.score {
            continue;
        }
        decisive += 1;
        let ranking = l.rank(&p.task, &[p.a.clone(), p.b.clone()]).expect("ranks");
        let a_first = ranking.groups()[0] == [0];
        right += usize::from(a_first == (ga.score > gb.score));
        expected += 1.0 / (1.0 + (-(ga.score - gb.score).abs() / CALIBRATED_TAU).exp());
    }
    let rate = right as f64 / decisive as f64;
    let expected = expected / decisive as f64;
    // A real test of the noise: neither a coin flip nor a sure thing.
    assert!((0.6..0.95).contains(&expected), "{expected}");
    assert!(decisive > 1000, "{decisive} pairs");
    // Four standard errors of a binomial rate.
    let tolerance = 4.0 * (expected * (1.0 - expected) / decisive as f64).sqrt();
    assert!(
        (rate - expected).abs() < tolerance,
        "{rate} vs {expected} over {decisive} pairs"
    );
}

fn as_samples(pairs: &[rlhf_data::CalibrationPair]) -> Vec<rlhf_data::SampleRecord> {
    pairs
        .iter()
        .map(|p| rlhf_data::SampleRecord {
            prompt: p.task.prompt(),
            responses: vec![p.a.clone(), p.b.clone()],
        })
        .collect()
}

/// The panel's second opinions measure the agreement the Bradley–Terry model predicts for the
/// very pairs labeled (`p² + (1 − p)²` per pair), and the overlap share picks that many prompts.
#[test]
fn overlapping_prompts_measure_the_predicted_agreement() {
    let pairs = calibration_pairs(3, 3000);
    let panel = rlhf_data::LabelerPanel::new(2, 7, &LabelerConfig::default()).unwrap();
    let all = panel.rank_samples(as_samples(&pairs), 1.0).unwrap();
    let a = all.agreement;
    assert_eq!((a.prompts, a.pairs, a.tied), (3000, 3000, 0));
    let predicted = expected_agreement(CALIBRATED_TAU, &pairs);
    let measured = a.rate().unwrap();
    // Binomial standard error over 3000 pairs is about 0.008.
    assert!(
        (measured - predicted).abs() < 0.025,
        "measured {measured} vs predicted {predicted}"
    );
    // A quarter of the prompts, spread over the file; the rankings are the first labeler's
    // either way.
    let quarter = panel.rank_samples(as_samples(&pairs), 0.25).unwrap();
    assert_eq!(quarter.agreement.prompts, 750);
    assert_eq!(quarter.rankings, all.rankings);
    // The second opinions kept are the ones measured: one pair per prompt, so a prompt agrees
    // exactly when the two rankings are equal.
    let seconds: Vec<_> = (all.rankings.iter().zip(&all.second_opinions))
        .map(|(first, second)| (first, second.as_ref().expect("every prompt doubled")))
        .collect();
    assert!(
        seconds
            .iter()
            .all(|(f, s)| f.prompt() == s.prompt() && f.responses() == s.responses())
    );
    let same = seconds.iter().filter(|(f, s)| f == s).count();
    assert_eq!(same, a.agreed);
    let kept = quarter.second_opinions.iter().flatten().count();
    assert_eq!(kept, 750);
    let every = quarter.all_rankings();
    assert_eq!(every.len(), 3000 + 750);
    // Each second opinion follows its first ranking.
    let mut at = 0;
    for (first, second) in quarter.rankings.iter().zip(&quarter.second_opinions) {
        assert_eq!(&every[at], first);
        at += 1;
        if let Some(second) = second {
            assert_eq!(&every[at], second);
            at += 1;
        }
    }
    let none = panel.rank_samples(as_samples(&pairs), 0.0).unwrap();
    assert_eq!(none.agreement.rate(), None);
}

/// Noise-free labelers agree on every pair and tie exactly the pairs the oracle scores equal.
#[test]
fn noise_free_labelers_agree_everywhere_and_tie_equal_scores() {
    let pairs = calibration_pairs(4, 500);
    let cfg = LabelerConfig { tau: 0.0 };
    let panel = rlhf_data::LabelerPanel::new(3, 1, &cfg).unwrap();
    let a = panel
        .rank_samples(as_samples(&pairs), 1.0)
        .unwrap()
        .agreement;
    let equal = pairs
        .iter()
        .filter(|p| grade(&p.task, &p.a).score == grade(&p.task, &p.b).score)
        .count();
    assert!(equal > 0, "the pair mix has oracle ties");
    assert_eq!((a.pairs, a.agreed, a.tied), (500, 500, equal));
}

#[test]
fn overlap_needs_two_labelers_and_a_share() {
    let samples = as_samples(&calibration_pairs(5, 4));
    let one = rlhf_data::LabelerPanel::new(1, 0, &LabelerConfig::default()).unwrap();
    let err = one.rank_samples(samples.clone(), 0.5).unwrap_err();
    assert!(err.to_string().contains("at least 2 labelers"), "{err}");
    let two = rlhf_data::LabelerPanel::new(2, 0, &LabelerConfig::default()).unwrap();
    let err = two.rank_samples(samples, 1.5).unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
}
