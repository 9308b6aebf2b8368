//! How long-running library work reports progress without drawing anything itself: the CLI
//! draws bars from these calls, tests and benches pass [`Quiet`].

/// Receives progress from long work (sampling, judging, an experiment's phases).
pub trait Observer {
    /// A new phase of `total` units begins (e.g. "sampling A", 300 responses).
    fn phase(&mut self, name: &str, total: u64);
    /// `done` units of the current phase are finished.
    fn advance(&mut self, done: u64);
    /// A line worth keeping in the log (a result as soon as it is known).
    fn note(&mut self, line: &str);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn phase(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn note(&mut self, _: &str) {}
}
