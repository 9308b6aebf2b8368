//! `rlhf-fuzz`: the harness behind the hostile-input property suites of the readers (each crate's
//! `tests/fuzz.rs`): seed files, mutations of them, and a runner that checks every case for
//! bounded time and memory and prints the campaign's figures.
//!
//! The property itself (load the mutated file; `Ok`, or an error naming the file and the line or
//! key) belongs to each suite; this crate knows nothing of GGUF, safetensors, JSONL or TOML
//! beyond "bytes" and "text". It is a dev-dependency only. Cases per property:
//! `PROPTEST_CASES` (CI runs the suites' defaults; `scripts/fuzz.sh --cases N` a long campaign).

mod alloc;
mod mutate;
mod runner;

pub use alloc::{CountingAlloc, heap_now, heap_peak, reset_heap_peak};
pub use mutate::{Mutation, Seed, mutations};
/// For suites that build their own strategies next to the mutations.
pub use proptest;
pub use runner::{Bounds, Outcome, config, max_rss_bytes, run};
