//! Markdown for reports: a pipe table and the `mean [lo, hi]` form of an interval.
//!
//! Not here: the report's prose (each command writes its own).

use crate::stats::Interval;

/// A GitHub-flavoured markdown table. Rows shorter than the header are padded with empty cells;
/// `|` is escaped and newlines and other control characters become spaces, so that a response
/// text cannot break the table.
pub fn md_table<S: AsRef<str>>(headers: &[&str], rows: &[Vec<S>]) -> String {
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut out = line(headers.iter().map(|h| escape(h)).collect());
    out += &line(headers.iter().map(|_| "---".to_string()).collect());
    for row in rows {
        let cells = (0..headers.len())
            .map(|i| row.get(i).map_or(String::new(), |c| escape(c.as_ref())))
            .collect();
        out += &line(cells);
    }
    out
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|")
        .replace(|c: char| c.is_control(), " ")
}

/// `mean [lo, hi]` with `decimals` digits after the point; `n/a` when there was no data.
pub fn fmt_interval(ci: &Interval, decimals: usize) -> String {
    if ci.mean.is_nan() {
        return "n/a".into();
    }
    format!(
        "{:.d$} [{:.d$}, {:.d$}]",
        ci.mean,
        ci.lo,
        ci.hi,
        d = decimals
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_and_escapes() {
        let t = md_table(&["a", "b"], &[vec!["x|y"], vec!["1", "2\n3\u{11}"]]);
        assert_eq!(t, "| a | b |\n| --- | --- |\n| x\\|y |  |\n| 1 | 2 3  |\n");
    }

    #[test]
    fn interval_format() {
        let ci = Interval {
            mean: 0.5,
            lo: 0.25,
            hi: 0.75,
        };
        assert_eq!(fmt_interval(&ci, 2), "0.50 [0.25, 0.75]");
        let none = Interval {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
        assert_eq!(fmt_interval(&none, 2), "n/a");
    }
}
