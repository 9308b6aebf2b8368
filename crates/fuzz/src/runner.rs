//! Runs a property over generated cases and holds every case to bounds: wall time, Rust heap
//! (through [`crate::CountingAlloc`]) and, at the end, the process's peak resident size (which
//! also sees memory libtorch allocates). A panic, a broken property or a broken bound fails the
//! test with the smallest input proptest can shrink it to. An abort ends the process, which the
//! test harness (or `scripts/fuzz.sh`) reports.
//!
//! Figures go to stderr as one line per property:
//! `FUZZ <name>: <cases> cases, <accepted> accepted, <refused> refused, 0 failed, <s> s, ...`.

use std::cell::Cell;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::alloc::{heap_now, heap_peak, reset_heap_peak};

/// What one case may cost.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Wall time of one case (generous: CI machines are shared).
    pub time: Duration,
    /// Rust heap one case may add at its peak.
    pub heap: usize,
    /// Peak resident size of the whole process at the end of the campaign.
    pub rss: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            time: Duration::from_secs(2),
            heap: 512 << 20,
            // libtorch alone takes ~0.5 GB resident once loaded.
            rss: 1 << 30,
        }
    }
}

/// How the reader answered a case that kept the property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The mutated file still loaded.
    Accepted,
    /// The reader refused it with a proper error.
    Refused,
}

/// The process's peak resident set size so far.
pub fn max_rss_bytes() -> usize {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usize::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}

/// A `proptest!` configuration running `cases(default_cases)` cases with no failure files,
/// for suites that use the macro directly (the servers' request bodies, tokenizer files).
pub fn config(default_cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: cases(default_cases),
        failure_persistence: None,
        ..Default::default()
    }
}

/// Cases to run: `PROPTEST_CASES` when set, else `default_cases`.
fn cases(default_cases: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases)
}

/// Runs `check` on generated inputs; `check` returns the outcome of a case that keeps the
/// property, or what broke it. Panics (failing the calling test) on the first failure, with the
/// shrunk input.
pub fn run<S>(
    name: &str,
    default_cases: u32,
    bounds: Bounds,
    strategy: S,
    check: impl Fn(&S::Value) -> Result<Outcome, String>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let cases = cases(default_cases);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let (accepted, refused) = (Cell::new(0u64), Cell::new(0u64));
    let slowest = Cell::new(Duration::ZERO);
    let heaviest = Cell::new(0usize);
    let t0 = Instant::now();
    let result = runner.run(&strategy, |input| {
        let base = heap_now();
        reset_heap_peak();
        let start = Instant::now();
        let outcome = check(&input);
        let took = start.elapsed();
        let heap = heap_peak().saturating_sub(base);
        slowest.set(slowest.get().max(took));
        heaviest.set(heaviest.get().max(heap));
        if took > bounds.time {
            return Err(TestCaseError::fail(format!(
                "took {took:?} (bound {:?})",
                bounds.time
            )));
        }
        if heap > bounds.heap {
            return Err(TestCaseError::fail(format!(
                "peak heap +{} MiB (bound {} MiB)",
                heap >> 20,
                bounds.heap >> 20
            )));
        }
        match outcome {
            Ok(Outcome::Accepted) => accepted.set(accepted.get() + 1),
            Ok(Outcome::Refused) => refused.set(refused.get() + 1),
            Err(why) => return Err(TestCaseError::fail(why)),
        }
        Ok(())
    });
    let rss = max_rss_bytes();
    eprintln!(
        "FUZZ {name}: {cases} cases, {} accepted, {} refused, {} failed, {:.1} s, slowest case \
         {:.0} ms, peak heap per case {:.1} MiB, max RSS {} MiB",
        accepted.get(),
        refused.get(),
        u32::from(result.is_err()),
        t0.elapsed().as_secs_f64(),
        slowest.get().as_secs_f64() * 1e3,
        heaviest.get() as f64 / (1 << 20) as f64,
        rss >> 20,
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => {
            panic!("{name}: {why}\nsmallest failing input: {input:#?}")
        }
        Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
    }
    assert!(
        rss <= bounds.rss,
        "{name}: max RSS {} MiB > {} MiB",
        rss >> 20,
        bounds.rss >> 20
    );
}
