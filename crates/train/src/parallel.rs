//! What the trainers share under data parallelism (`rlhf_model::dist`): the start from rank 0's
//! weights, a sampling stream per rank, each rank's part of a global minibatch, and metrics
//! averaged over the ranks. Each is a no-op, or the one-process value, without a group.

use rlhf_model::dist::Group;

use crate::error::{Result, TrainError};
use crate::optim::AdamW;
use crate::step::Metrics;

/// Copies rank 0's optimised weights into every rank's. Same files and seeds give the same
/// weights everywhere already; this makes it so whatever a rank's initialisation did.
pub fn start_from_rank0(opt: &AdamW, group: Option<&Group>) -> Result<()> {
    if let Some(group) = group {
        tch::no_grad(|| {
            group.broadcast(
                opt.flat_parameters(),
                0,
                "the broadcast of rank 0's initial weights",
            )
        })?;
    }
    Ok(())
}

/// The sampling seed of `rank` for a step whose one-process seed is `seed`: rank 0 keeps it,
/// the others get streams of their own.
pub fn rank_seed(seed: u64, rank: usize) -> u64 {
    seed.wrapping_add((rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// This rank's part of one global minibatch `chunk` (global row indices) when it holds rows
/// `rank·rows .. (rank+1)·rows` of the global batch: its local row indices, and its share of
/// the minibatch's total `weight` (summed over the ranks), by which its mean loss is scaled so
/// that the ranks' gradients add up to one process's. One process: every row, share 1.
pub fn my_rows(
    chunk: &[usize],
    rows: usize,
    group: Option<&Group>,
    weight: impl Fn(usize) -> f64,
) -> Result<(Vec<i64>, f64)> {
    let rank = group.map_or(0, Group::rank);
    let mine: Vec<i64> = chunk
        .iter()
        .filter(|&&g| g / rows == rank)
        .map(|&g| (g % rows) as i64)
        .collect();
    let Some(group) = group else {
        return Ok((mine, 1.0));
    };
    let local: f64 = mine.iter().map(|&i| weight(i as usize)).sum();
    let mut total = [local];
    group.all_reduce_f64(&mut total, "the all-reduce of the minibatch's size")?;
    let share = if total[0] > 0.0 {
        local / total[0]
    } else {
        0.0
    };
    Ok((mine, share))
}

/// Replaces every metric by its mean over the ranks (each holds an equal share of the samples;
/// what is global already, such as the KL or a held-out evaluation, stays as it is). The ranks
/// must log the same keys: checked first.
pub fn mean_over_ranks(m: &mut Metrics, group: &Group, iteration: u64) -> Result<()> {
    let world = group.world() as f64;
    let mut count = [m.len() as f64];
    group.all_reduce_f64(&mut count, "the all-reduce of the metrics' count")?;
    if count[0] != world * m.len() as f64 {
        return Err(TrainError::Invalid(format!(
            "iteration {iteration}: the ranks logged different metrics ({} here, {} in all)",
            m.len(),
            count[0]
        )));
    }
    let mut values: Vec<f64> = m.values().copied().collect();
    group.all_reduce_f64(
        &mut values,
        &format!("the all-reduce of iteration {iteration}'s metrics"),
    )?;
    for (v, sum) in m.values_mut().zip(values) {
        *v = sum / world;
    }
    Ok(())
}
