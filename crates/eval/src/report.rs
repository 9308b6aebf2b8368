//! An evaluation as files and text: `eval.json` (every number), `responses.jsonl` (every pair
//! with its verdict), `report.md` (a table and examples) and, for scoring judges, a scatter plot
//! of A's score against B's; and the same table as terminal lines.
//!
//! Not here: the numbers (`compare.rs`), the statistics and plotting (`rlhf-report`).

use std::path::Path;

use rlhf_data::{write_jsonl, write_text};
use rlhf_report::{Interval, ScatterChart, ScatterSeries, fmt_interval, md_table};
use serde_json::{Value, json};

use crate::compare::Comparison;
use crate::error::Result;
use crate::evaluate::Evaluation;

/// Rows of (metric, value): the terminal summary and the markdown table show the same.
pub fn summary_rows(c: &Comparison) -> Vec<Vec<String>> {
    let mut rows = vec![
        vec!["win rate of A over B".into(), fmt_interval(&c.win_rate, 3)],
        vec![
            "wins / ties / losses".into(),
            format!("{} / {} / {}", c.wins, c.ties, c.losses),
        ],
    ];
    if let (Some(a), Some(b)) = (&c.score_a, &c.score_b) {
        rows.push(vec!["mean score of A".into(), fmt_interval(a, 3)]);
        rows.push(vec!["mean score of B".into(), fmt_interval(b, 3)]);
    }
    if let Some(kl) = &c.kl {
        rows.push(vec![
            "KL(A‖B), nats per sequence".into(),
            fmt_interval(kl, 3),
        ]);
    }
    if let Some(k) = c.kl_per_token {
        rows.push(vec!["KL(A‖B), nats per token".into(), format!("{k:.4}")]);
    }
    for (name, len) in [("A", c.length_a), ("B", c.length_b)] {
        if let Some(l) = len {
            rows.push(vec![
                format!("mean length of {name}, tokens"),
                format!("{l:.1}"),
            ]);
        }
    }
    rows
}

/// The terminal summary of an evaluation.
pub fn summary_text(e: &Evaluation) -> String {
    let c = &e.comparison;
    let mut out = format!(
        "eval: {} prompts, judge {}, temperature {}, seed {} (95% bootstrap intervals)\n",
        c.n, e.judge_spec, e.config.temperature, e.config.seed
    );
    for r in summary_rows(c) {
        out += &format!("  {:<30} {}\n", r[0], r[1]);
    }
    out
}

fn interval_json(ci: &Interval) -> Value {
    // serde_json writes NaN as null, which is what "no data" should read as.
    json!({ "mean": ci.mean, "lo": ci.lo, "hi": ci.hi })
}

/// `eval.json`: the evaluation's inputs, settings and every number.
pub fn eval_json(e: &Evaluation) -> Value {
    let c = &e.comparison;
    let mut doc = json!({
        "model": e.model, "baseline": e.baseline, "prompts": e.prompts,
        "judge": e.judge_spec, "n": c.n, "samples_per_prompt": c.samples_per_prompt,
        "temperature": e.config.temperature,
        "max_new_tokens": e.config.max_new_tokens, "seed": e.config.seed,
        "bootstrap_resamples": c.bootstrap_resamples, "confidence": c.confidence,
        "win_rate": interval_json(&c.win_rate), "wins": c.wins, "ties": c.ties,
        "losses": c.losses,
        "score_a": c.score_a.as_ref().map(interval_json),
        "score_b": c.score_b.as_ref().map(interval_json),
        "kl": c.kl.as_ref().map(interval_json), "kl_per_token": c.kl_per_token,
        "length_a": c.length_a, "length_b": c.length_b,
    });
    if let Some(m) = &e.judge_model {
        doc["judge_model"] = json!(m);
        doc["judge_unparsed"] = json!(c.unparsed);
    }
    doc
}

/// Writes eval.json, responses.jsonl, report.md and (scoring judges) scores.svg/.png into `out`;
/// returns the file names written.
pub fn write_evaluation(out: &Path, e: &Evaluation) -> Result<Vec<&'static str>> {
    std::fs::create_dir_all(out).map_err(|err| crate::EvalError::io("create", out, err))?;
    let c = &e.comparison;
    write_jsonl(out.join("responses.jsonl"), &c.items)?;
    write_text(
        out.join("eval.json"),
        &(serde_json::to_string_pretty(&eval_json(e))? + "\n"),
    )?;
    let mut files = vec!["eval.json", "responses.jsonl", "report.md"];
    if c.score_a.is_some() {
        let points = c
            .items
            .iter()
            .filter_map(|i| Some((i.score_b?, i.score_a?)))
            .collect();
        ScatterChart {
            title: format!("Score per prompt ({})", c.judge),
            x_label: "baseline (B)".into(),
            y_label: "model (A)".into(),
            series: vec![ScatterSeries {
                name: "prompts (above the diagonal: A wins)".into(),
                points,
            }],
            diagonal: true,
            size: (640, 600),
        }
        .save(&out.join("scores"))?;
        files.extend(["scores.svg", "scores.png"]);
    }
    write_text(out.join("report.md"), &report_md(e))?;
    Ok(files)
}

/// `report.md`: the settings, the summary table, and the first examples.
pub fn report_md(e: &Evaluation) -> String {
    let c = &e.comparison;
    let mut md = format!(
        "# Evaluation\n\nA = `{}`, B = `{}`, on the first {} prompts of `{}` ({} sample(s) of \
         each model per prompt); judge `{}`, temperature {}, seed {}, at most {} new tokens. \
         Intervals are 95% percentile-bootstrap intervals over prompts ({} resamples); ties \
         count as half a win.\n\n",
        e.model.display(),
        e.baseline.display(),
        c.n / c.samples_per_prompt.max(1),
        e.prompts.display(),
        c.samples_per_prompt,
        e.judge_spec,
        e.config.temperature,
        e.config.seed,
        e.config.max_new_tokens,
        c.bootstrap_resamples
    );
    md += &md_table(&["metric", "value"], &summary_rows(c));
    if c.score_a.is_some() {
        md += "\n![Score of A against score of B, one point per prompt](scores.svg)\n";
    }
    md += "\n## Examples\n\n";
    let cut = |t: &str| -> String {
        let c: String = t.chars().take(160).collect();
        if c.len() < t.len() { c + "…" } else { c }
    };
    let rows: Vec<Vec<String>> = c
        .items
        .iter()
        .take(5)
        .map(|i| {
            vec![
                cut(&i.prompt),
                cut(&i.response_a),
                cut(&i.response_b),
                format!("{}", i.outcome),
            ]
        })
        .collect();
    md += &md_table(&["prompt", "A", "B", "outcome for A"], &rows);
    md
}
