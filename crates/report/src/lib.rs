//! `rlhf-report`: what every experiment's report is made of: statistics with honest uncertainty
//! (percentile-bootstrap confidence intervals, per-item win outcomes), plots written as SVG and PNG
//! (the PNG text drawn with an embedded font, so no system fonts are needed), and markdown tables.
//! No libtorch and no model code: callers pass plain numbers. This file only declares and
//! re-exports.
//!
//! ```
//! use rlhf_report::{bootstrap_mean_ci, fmt_interval, md_table, win_rate};
//!
//! let outcomes = win_rate(&[1.0, 0.5, 0.2, 0.9], &[0.0, 0.5, 0.7, 0.1]);
//! assert_eq!(outcomes, vec![1.0, 0.5, 0.0, 1.0]);
//! let ci = bootstrap_mean_ci(&outcomes, 1000, 0.95, 0);
//! assert!(ci.lo <= ci.mean && ci.mean <= ci.hi);
//! let table = md_table(&["metric", "value"], &[vec!["win rate".into(), fmt_interval(&ci, 3)]]);
//! assert!(table.starts_with("| metric | value |"));
//! ```

mod error;
mod markdown;
mod plot;
mod stats;

pub use error::{ReportError, Result};
pub use markdown::{fmt_interval, md_table};
pub use plot::{DEFAULT_SIZE, LineChart, ScatterChart, ScatterSeries, Series};
pub use stats::{Interval, TIE_EPS, bootstrap_mean_ci, bootstrap_seeds_ci, mean, win_rate};
