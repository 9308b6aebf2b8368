//! Simulated labelers: rank K responses with Bradley–Terry noise around the oracle's scores,
//! calibrated so that two independent labelers agree on about 73% of the pairs they compare in
//! an SFT model's own samples, as InstructGPT's labelers did (Ouyang et al. 2022, §5.1: 72.6 ±
//! 1.5% inter-annotator agreement).
//!
//! Model: a labeler's utility for a response is `score/τ + G`, with `G` standard Gumbel noise;
//! sorting by utility samples a Plackett–Luce ranking whose pairwise marginals are exactly
//! Bradley–Terry, `P(i ≻ j) = σ((s_i − s_j)/τ)` (the difference of two Gumbels is logistic).
//! `G` is a hash of (labeler seed, prompt, response), so a labeler is consistent, order-free and
//! reproducible. Scoring is `oracle.rs`; the record format is `formats.rs`.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::formats::{Ranking, RankingRecord, SampleRecord};
use crate::oracle::grade;
use crate::rng::{fnv1a, pick, unit, world_rng};
use crate::world::{Family, Quality, Split, Task, respond};

/// Bradley–Terry temperature, in oracle-score units, that gives 73% agreement between two
/// labelers on what they actually label: an SFT model's own samples.
///
/// Found with [`calibrate_tau`] on [`sample_pairs`] of the samples of `rlhf demo --dev --seed 100`
/// (a seed no report uses): 0.099 on all 2000 prompts × K = 8 (54,033 pairs of different
/// responses), 0.097 on the first 300 prompts kept in `tests/fixtures/sft_samples.jsonl` (the test
/// `calibrated_tau_gives_73_percent_on_sft_samples` recomputes it). On those samples 18% of the
/// pairs are oracle ties, which any labeler orders by coin flip; the rest are mostly decided by
/// the rubric's finer items, so the noise is small next to a correctness gap (a labeler prefers
/// a correct response to a wrong one of the same format with probability above 0.99) and
/// comparable to a work or length gap (0.05 apart: σ(0.05/0.097) ≈ 0.63). Earlier versions
/// calibrated τ = 0.39 on a synthetic response mix; on real samples that gave 57–58% agreement.
/// Another policy's samples need their own τ (`rlhf label --oracle --calibrate`).
pub const CALIBRATED_TAU: f64 = 0.097;

/// The target agreement between two simulated labelers.
pub const TARGET_AGREEMENT: f64 = 0.73;

/// Configuration of a simulated labeler.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelerConfig {
    /// Noise temperature; 0 ranks by the oracle score exactly. Default: [`CALIBRATED_TAU`].
    pub tau: f64,
}

impl Default for LabelerConfig {
    fn default() -> Self {
        Self {
            tau: CALIBRATED_TAU,
        }
    }
}

/// A simulated labeler; two labelers with different seeds have independent noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulatedLabeler {
    seed: u64,
    tau: f64,
}

impl SimulatedLabeler {
    pub fn new(seed: u64, cfg: &LabelerConfig) -> Result<Self> {
        if !(cfg.tau.is_finite() && cfg.tau >= 0.0) {
            return Err(DataError::Config {
                field: "tau",
                problem: format!("expected a finite temperature >= 0, found {}", cfg.tau),
            });
        }
        Ok(Self { seed, tau: cfg.tau })
    }

    /// A labeler that ranks by the oracle score exactly; equal scores tie.
    pub fn noise_free() -> Self {
        Self { seed: 0, tau: 0.0 }
    }

    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// Ranks `responses` to `task`, best first. Responses with exactly equal utility (identical
    /// text, or equal scores for the noise-free labeler) form a tied group.
    pub fn rank(&self, task: &Task, responses: &[String]) -> Result<Ranking> {
        let scores: Vec<f64> = responses.iter().map(|r| grade(task, r).score).collect();
        self.rank_scores(&task.prompt(), responses, &scores)
    }

    /// Ranks `responses` to `prompt` given an oracle's `scores` for them (any task with its own
    /// oracle, e.g. the browsing world), with this labeler's noise.
    pub fn rank_scores(
        &self,
        prompt: &str,
        responses: &[String],
        scores: &[f64],
    ) -> Result<Ranking> {
        if scores.len() != responses.len() {
            return Err(DataError::Rank {
                problem: format!("{} scores for {} responses", scores.len(), responses.len()),
            });
        }
        let utilities: Vec<f64> = responses
            .iter()
            .zip(scores)
            .map(|(r, &s)| self.utility(prompt, s, r))
            .collect();
        let mut order: Vec<usize> = (0..responses.len()).collect();
        // Stable sort: equal utilities keep index order, so the output is deterministic.
        order.sort_by(|&a, &b| utilities[b].total_cmp(&utilities[a]));
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in order {
            match groups.last_mut() {
                Some(g) if utilities[g[0]] == utilities[i] => g.push(i),
                _ => groups.push(vec![i]),
            }
        }
        Ranking::new(groups, responses.len()).map_err(|e| DataError::Rank { problem: e.problem })
    }

    /// [`rank`](Self::rank) for a prompt given as text; fails if the oracle cannot parse it.
    pub fn rank_prompt(&self, prompt: &str, responses: &[String]) -> Result<Ranking> {
        self.rank(&Task::parse(prompt)?, responses)
    }

    /// `score/τ + Gumbel(seed, prompt, response)`, or the bare score when τ = 0.
    fn utility(&self, prompt: &str, score: f64, response: &str) -> f64 {
        if self.tau == 0.0 {
            return score;
        }
        let h = fnv1a(&[
            &self.seed.to_le_bytes(),
            prompt.as_bytes(),
            response.as_bytes(),
        ]);
        let mut rng = ChaCha8Rng::seed_from_u64(h);
        // Uniform on the open interval (0, 1), so both logarithms are finite.
        let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        score / self.tau - (-u.ln()).ln()
    }
}

/// A panel of `n` simulated labelers (labeler j seeded `seed · 1000 + j`, so two panels with
/// different seeds share no labeler), taking prompts in turn as a labeling team would.
#[derive(Debug, Clone)]
pub struct LabelerPanel {
    labelers: Vec<SimulatedLabeler>,
}

impl LabelerPanel {
    pub fn new(n: u64, seed: u64, cfg: &LabelerConfig) -> Result<Self> {
        if n == 0 {
            return Err(DataError::Config {
                field: "labelers",
                problem: "expected at least 1 labeler, found 0".into(),
            });
        }
        let labelers = (0..n)
            .map(|i| SimulatedLabeler::new(seed.wrapping_mul(1000) + i, cfg))
            .collect::<Result<_>>()?;
        Ok(Self { labelers })
    }

    pub fn len(&self) -> usize {
        self.labelers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labelers.is_empty()
    }

    /// Ranks every sample (sample i by labeler i mod n) into a rankings record; an error names
    /// the record (1-based) that could not be ranked. A share `overlap` (0 to 1, spread evenly
    /// over the file) of the prompts is also ranked by a second labeler (labeler i + 1 mod n), as
    /// InstructGPT had some comparisons labeled twice; the records keep the first labeler's
    /// ranking and [`Labeled::agreement`] says how often the two agreed.
    pub fn rank_samples(&self, samples: Vec<SampleRecord>, overlap: f64) -> Result<Labeled> {
        if !(0.0..=1.0).contains(&overlap) {
            return Err(DataError::Config {
                field: "overlap",
                problem: format!("expected a share from 0 to 1, found {overlap}"),
            });
        }
        if overlap > 0.0 && self.labelers.len() < 2 {
            return Err(DataError::Config {
                field: "overlap",
                problem: "a second opinion needs at least 2 labelers".into(),
            });
        }
        let n = self.labelers.len();
        let mut rankings = Vec::with_capacity(samples.len());
        let mut second_opinions = Vec::with_capacity(samples.len());
        let mut agreement = Agreement::default();
        for (i, s) in samples.into_iter().enumerate() {
            let in_record = |e: DataError| DataError::InRecord {
                record: i + 1,
                source: Box::new(e),
            };
            let task = Task::parse(&s.prompt).map_err(in_record)?;
            let ranking = self.labelers[i % n]
                .rank(&task, &s.responses)
                .map_err(in_record)?;
            // Prompt i is doubled when the running count of doubled prompts steps up at i.
            let second = if (((i + 1) as f64) * overlap).floor() > ((i as f64) * overlap).floor() {
                let second = self.labelers[(i + 1) % n]
                    .rank(&task, &s.responses)
                    .map_err(in_record)?;
                agreement.add(&s.responses, &ranking, &second);
                Some(second)
            } else {
                None
            };
            let record = |ranking| {
                RankingRecord::new(s.prompt.clone(), s.responses.clone(), ranking).map_err(|e| {
                    in_record(DataError::Rank {
                        problem: e.to_string(),
                    })
                })
            };
            rankings.push(record(ranking)?);
            second_opinions.push(second.map(record).transpose()?);
        }
        Ok(Labeled {
            rankings,
            second_opinions,
            agreement,
        })
    }
}

/// What a labeling pass produced: one record per sample and, over the prompts two labelers
/// ranked, the second labeler's record and how often the two agreed.
#[derive(Debug, Clone)]
pub struct Labeled {
    /// The first labeler's ranking of every sample.
    pub rankings: Vec<RankingRecord>,
    /// `second_opinions[i]`: the second labeler's ranking of sample i, when it was doubled.
    pub second_opinions: Vec<Option<RankingRecord>>,
    pub agreement: Agreement,
}

impl Labeled {
    /// Every ranking made: each sample's first ranking, followed by its second opinion if any.
    /// `rlhf reward` pools the rankings of the same responses into one batch element, so a
    /// reward model trained on these learns from both labelers at the cost of one.
    pub fn all_rankings(&self) -> Vec<RankingRecord> {
        (self.rankings.iter().zip(&self.second_opinions))
            .flat_map(|(first, second)| std::iter::once(first).chain(second))
            .cloned()
            .collect()
    }
}

/// Agreement between two labelers who ranked the same prompts, counted over every pair of
/// responses with different text (identical texts tie for everyone and say nothing). A pair
/// agrees when both prefer the same response or both mark it tied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// Prompts ranked by both labelers.
    pub prompts: usize,
    /// Pairs of different responses both compared.
    pub pairs: usize,
    /// Pairs on which their verdicts were the same.
    pub agreed: usize,
    /// Pairs that at least one of them marked tied.
    pub tied: usize,
}

impl Agreement {
    /// Adds one prompt's two rankings of `responses`.
    pub fn add(&mut self, responses: &[String], a: &Ranking, b: &Ranking) {
        let place = |r: &Ranking| {
            let mut at = vec![0usize; responses.len()];
            for (g, group) in r.groups().iter().enumerate() {
                for &i in group {
                    at[i] = g;
                }
            }
            at
        };
        let (pa, pb) = (place(a), place(b));
        self.prompts += 1;
        for i in 0..responses.len() {
            for j in i + 1..responses.len() {
                if responses[i] == responses[j] {
                    continue;
                }
                let (va, vb) = (pa[i].cmp(&pa[j]), pb[i].cmp(&pb[j]));
                self.pairs += 1;
                self.agreed += usize::from(va == vb);
                self.tied += usize::from(va.is_eq() || vb.is_eq());
            }
        }
    }

    /// The share of pairs agreed on; `None` without pairs.
    pub fn rate(&self) -> Option<f64> {
        (self.pairs > 0).then(|| self.agreed as f64 / self.pairs as f64)
    }

    /// The share of pairs marked tied by at least one labeler; `None` without pairs.
    pub fn tied_share(&self) -> Option<f64> {
        (self.pairs > 0).then(|| self.tied as f64 / self.pairs as f64)
    }

    /// One line for a log or report, e.g. "two labelers agree on 73.1% of 5814 pairs (1000
    /// prompts ranked twice; 0.0% of pairs tied)".
    pub fn summary(&self) -> String {
        match (self.rate(), self.tied_share()) {
            (Some(r), Some(t)) => format!(
                "two labelers agree on {:.1}% of {} pairs ({} prompts ranked twice; {:.1}% of \
                 pairs tied)",
                100.0 * r,
                self.pairs,
                self.prompts,
                100.0 * t
            ),
            _ => format!(
                "no agreement measured ({} prompts ranked twice, no pair of different responses)",
                self.prompts
            ),
        }
    }
}

/// Shares of response qualities among synthetic candidates ([`calibration_pairs`]): a policy
/// right about half the time whose outputs break the format about 30% of the time. A test
/// distribution of clean, sloppy and wrong responses; the labelers' τ is calibrated on real SFT
/// samples instead (see [`CALIBRATED_TAU`]), which are far more often wrong.
pub const CANDIDATE_MIX: [(Quality, f64); 4] = [
    (Quality::Clean, 0.35),
    (Quality::Sloppy, 0.15),
    (Quality::Wrong, 0.35),
    (Quality::WrongSloppy, 0.15),
];

/// Two different responses to one task, as a labeler would compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalibrationPair {
    pub task: Task,
    pub a: String,
    pub b: String,
}

/// A synthetic pair distribution for tests: a train-split task of a uniformly
/// chosen family, two responses drawn independently from [`CANDIDATE_MIX`], redrawn while
/// identical (identical responses tie and carry no preference).
pub fn calibration_pairs(seed: u64, n: usize) -> Vec<CalibrationPair> {
    let mut rng = world_rng(seed, 99);
    (0..n)
        .map(|_| {
            let family = *pick(&mut rng, &Family::ALL);
            let task = Task::generate(&mut rng, family, Split::Train, 4);
            let a = candidate(&task, &mut rng);
            let mut b = candidate(&task, &mut rng);
            while b == a {
                b = candidate(&task, &mut rng);
            }
            CalibrationPair { task, a, b }
        })
        .collect()
}

fn candidate<R: RngCore + ?Sized>(task: &Task, rng: &mut R) -> String {
    let mut u = unit(rng);
    for (quality, share) in CANDIDATE_MIX {
        if u < share {
            return respond(task, quality, rng).text;
        }
        u -= share;
    }
    respond(task, Quality::Clean, rng).text
}

/// Every pair of different responses to one prompt in `samples`: the pairs a labeler actually
/// compares when ranking them, for calibrating τ on a policy's own samples. An error names the
/// record (1-based) whose prompt the oracle cannot parse.
pub fn sample_pairs(samples: &[SampleRecord]) -> Result<Vec<CalibrationPair>> {
    let mut pairs = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let task = Task::parse(&s.prompt).map_err(|e| DataError::InRecord {
            record: i + 1,
            source: Box::new(e),
        })?;
        for (x, a) in s.responses.iter().enumerate() {
            for b in &s.responses[x + 1..] {
                if a != b {
                    pairs.push(CalibrationPair {
                        task: task.clone(),
                        a: a.clone(),
                        b: b.clone(),
                    });
                }
            }
        }
    }
    Ok(pairs)
}

/// Share of pairs the oracle scores exactly equal (which any labeler orders by coin flip).
pub fn oracle_tie_share(pairs: &[CalibrationPair]) -> f64 {
    let ties = score_gaps(pairs).iter().filter(|&&g| g == 0.0).count();
    ties as f64 / pairs.len().max(1) as f64
}

/// Fraction of pairs on which two labelers prefer the same response (measured).
pub fn agreement(x: &SimulatedLabeler, y: &SimulatedLabeler, pairs: &[CalibrationPair]) -> f64 {
    let prefers_a = |l: &SimulatedLabeler, p: &CalibrationPair| {
        let responses = [p.a.clone(), p.b.clone()];
        l.rank(&p.task, &responses)
            .map(|r| r.groups()[0] == [0])
            .unwrap_or(false)
    };
    let agree = pairs
        .iter()
        .filter(|p| prefers_a(x, p) == prefers_a(y, p))
        .count();
    agree as f64 / pairs.len().max(1) as f64
}

/// Expected agreement of two independent labelers at temperature `tau`: the mean over pairs of
/// `p² + (1 − p)²` with `p = σ(Δscore/τ)`.
pub fn expected_agreement(tau: f64, pairs: &[CalibrationPair]) -> f64 {
    mean_agreement(tau, &score_gaps(pairs))
}

fn score_gaps(pairs: &[CalibrationPair]) -> Vec<f64> {
    pairs
        .iter()
        .map(|p| grade(&p.task, &p.a).score - grade(&p.task, &p.b).score)
        .collect()
}

fn mean_agreement(tau: f64, gaps: &[f64]) -> f64 {
    let total: f64 = gaps
        .iter()
        .map(|&gap| {
            let q = if tau == 0.0 {
                match gap.partial_cmp(&0.0) {
                    Some(std::cmp::Ordering::Greater) => 1.0,
                    Some(std::cmp::Ordering::Less) => 0.0,
                    _ => 0.5,
                }
            } else {
                1.0 / (1.0 + (-gap / tau).exp())
            };
            q * q + (1.0 - q) * (1.0 - q)
        })
        .sum();
    total / gaps.len().max(1) as f64
}

/// The temperature at which [`expected_agreement`] equals `target`, by bisection on a log scale
/// (agreement falls as τ grows). `None` if `target` is out of reach on these pairs.
pub fn calibrate_tau(pairs: &[CalibrationPair], target: f64) -> Option<f64> {
    let gaps = score_gaps(pairs);
    let (mut lo, mut hi) = (1e-4_f64, 100.0_f64);
    if !(mean_agreement(hi, &gaps)..=mean_agreement(lo, &gaps)).contains(&target) {
        return None;
    }
    for _ in 0..60 {
        let mid = (lo * hi).sqrt();
        if mean_agreement(mid, &gaps) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some((lo * hi).sqrt())
}
