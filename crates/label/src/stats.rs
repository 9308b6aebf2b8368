//! What the collected labels say: per-labeler counts and time per task, and how often labelers
//! agree with each other (the fraction of response pairs both rank decisively that they order
//! the same way; InstructGPT reports about 73% between its labelers). Also the export to the
//! `{"prompt", "responses", "ranking"}` records `rlhf reward` trains on.
//!
//! Not here: the queries (`db.rs`).

use std::collections::BTreeMap;

use rlhf_data::{Ranking, RankingRecord};
use serde::Serialize;

use crate::db::Submission;

/// One line per submission (each labeler's ranking is its own comparison data, as in
/// InstructGPT), with who labeled it and their flags and comment for auditing; `rlhf reward`
/// reads `prompt`, `responses` and `ranking` and ignores the rest.
#[derive(Debug, Serialize)]
pub struct ExportRecord<'a> {
    #[serde(flatten)]
    pub record: RankingRecord,
    pub labeler: &'a str,
    pub flags: &'a BTreeMap<usize, Vec<crate::db::Flag>>,
    pub comment: &'a str,
}

pub fn export(subs: &[Submission]) -> crate::Result<Vec<ExportRecord<'_>>> {
    subs.iter()
        .map(|s| {
            let record =
                RankingRecord::new(s.prompt.clone(), s.responses.clone(), s.ranking.clone())
                    .map_err(|e| crate::LabelError::Corrupt(format!("submission {}: {e}", s.id)))?;
            Ok(ExportRecord {
                record,
                labeler: &s.labeler,
                flags: &s.flags,
                comment: &s.comment,
            })
        })
        .collect()
}

/// Position of each response in a ranking (its group index: equal means tied).
fn positions(r: &Ranking, k: usize) -> Vec<usize> {
    let mut pos = vec![usize::MAX; k];
    for (g, group) in r.groups().iter().enumerate() {
        for &i in group {
            pos[i] = g;
        }
    }
    pos
}

/// (pairs both rankings order, pairs they order the same way).
pub fn pair_agreement(a: &Ranking, b: &Ranking, k: usize) -> (usize, usize) {
    let (pa, pb) = (positions(a, k), positions(b, k));
    let (mut both, mut same) = (0, 0);
    for i in 0..k {
        for j in i + 1..k {
            let (da, db) = (pa[i].cmp(&pa[j]), pb[i].cmp(&pb[j]));
            if da.is_ne() && db.is_ne() {
                both += 1;
                same += usize::from(da == db);
            }
        }
    }
    (both, same)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelerStats {
    pub labeler: String,
    pub submissions: usize,
    /// Median seconds from a task being shown to its submission.
    pub median_seconds: Option<f64>,
    pub mean_seconds: Option<f64>,
    pub flags: usize,
    pub comments: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Agreement {
    pub a: String,
    pub b: String,
    /// Tasks both labeled.
    pub tasks: usize,
    /// Response pairs both ranked decisively.
    pub pairs: usize,
    pub agreement: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub submissions: usize,
    pub tasks_labeled: usize,
    pub labelers: Vec<LabelerStats>,
    /// Every pair of labelers with a task in common.
    pub agreement: Vec<Agreement>,
    /// Over all pairs of labelers and tasks.
    pub overall_agreement: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn stats(subs: &[Submission]) -> Stats {
    let mut by_labeler: BTreeMap<&str, Vec<&Submission>> = BTreeMap::new();
    let mut by_task: BTreeMap<i64, Vec<&Submission>> = BTreeMap::new();
    for s in subs {
        by_labeler.entry(&s.labeler).or_default().push(s);
        by_task.entry(s.task_id).or_default().push(s);
    }
    let labelers = by_labeler
        .iter()
        .map(|(name, list)| {
            let secs: Vec<f64> = list
                .iter()
                .map(|s| (s.submitted_ms - s.shown_ms).max(0) as f64 / 1000.0)
                .collect();
            let mean = (!secs.is_empty()).then(|| secs.iter().sum::<f64>() / secs.len() as f64);
            LabelerStats {
                labeler: name.to_string(),
                submissions: list.len(),
                median_seconds: median(secs),
                mean_seconds: mean,
                flags: list
                    .iter()
                    .map(|s| s.flags.values().map(Vec::len).sum::<usize>())
                    .sum(),
                comments: list.iter().filter(|s| !s.comment.trim().is_empty()).count(),
            }
        })
        .collect();
    let mut pairs: BTreeMap<(String, String), (usize, usize, usize)> = BTreeMap::new();
    for list in by_task.values() {
        for (i, x) in list.iter().enumerate() {
            for y in &list[i + 1..] {
                let (a, b) = if x.labeler <= y.labeler {
                    (x, y)
                } else {
                    (y, x)
                };
                let (both, same) = pair_agreement(&a.ranking, &b.ranking, a.responses.len());
                let e = pairs
                    .entry((a.labeler.clone(), b.labeler.clone()))
                    .or_default();
                (e.0, e.1, e.2) = (e.0 + 1, e.1 + both, e.2 + same);
            }
        }
    }
    let ratio = |same: usize, both: usize| (both > 0).then(|| same as f64 / both as f64);
    let (all_both, all_same) = pairs
        .values()
        .fold((0, 0), |(b, s), &(_, both, same)| (b + both, s + same));
    Stats {
        submissions: subs.len(),
        tasks_labeled: by_task.len(),
        labelers,
        agreement: pairs
            .into_iter()
            .map(|((a, b), (tasks, both, same))| Agreement {
                a,
                b,
                tasks,
                pairs: both,
                agreement: ratio(same, both),
            })
            .collect(),
        overall_agreement: ratio(all_same, all_both),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(groups: &[&[usize]], k: usize) -> Ranking {
        Ranking::new(groups.iter().map(|g| g.to_vec()).collect(), k).unwrap()
    }

    #[test]
    fn agreement_counts_only_pairs_both_rank_decisively() {
        // a: 0 > 1 > 2 > 3 ; b: 1 > 0 > (2 = 3)
        let a = rank(&[&[0], &[1], &[2], &[3]], 4);
        let b = rank(&[&[1], &[0], &[2, 3]], 4);
        // Pairs: (0,1) disagree, (0,2) agree, (0,3) agree, (1,2) agree, (1,3) agree, (2,3) tied in b.
        assert_eq!(pair_agreement(&a, &b, 4), (5, 4));
        assert_eq!(pair_agreement(&a, &a, 4), (6, 6));
    }

    fn sub(id: i64, task: i64, who: &str, r: Ranking, shown: i64, done: i64) -> Submission {
        Submission {
            id,
            task_id: task,
            labeler: who.into(),
            prompt: format!("p{task}"),
            responses: vec!["a".into(), "b".into(), "c".into()],
            ranking: r,
            flags: BTreeMap::new(),
            comment: String::new(),
            shown_ms: shown,
            submitted_ms: done,
        }
    }

    #[test]
    fn stats_per_labeler_and_pairwise() {
        let fwd = rank(&[&[0], &[1], &[2]], 3);
        let rev = rank(&[&[2], &[1], &[0]], 3);
        let subs = vec![
            sub(1, 1, "ann", fwd.clone(), 0, 10_000),
            sub(2, 1, "bob", fwd.clone(), 0, 20_000),
            sub(3, 2, "ann", fwd.clone(), 0, 30_000),
            sub(4, 2, "bob", rev, 0, 40_000),
            sub(5, 3, "cat", fwd, 0, 5_000),
        ];
        let s = stats(&subs);
        assert_eq!((s.submissions, s.tasks_labeled), (5, 3));
        assert_eq!(s.labelers[0].labeler, "ann");
        assert_eq!(s.labelers[0].median_seconds, Some(20.0));
        assert_eq!(s.agreement.len(), 1);
        let ab = &s.agreement[0];
        assert_eq!(
            (ab.a.as_str(), ab.b.as_str(), ab.tasks, ab.pairs),
            ("ann", "bob", 2, 6)
        );
        assert_eq!(ab.agreement, Some(0.5));
        assert_eq!(s.overall_agreement, Some(0.5));
    }
}
