//! Plots end to end: both files are written, the SVG is SVG and names its series, the PNG has the
//! PNG signature and the requested size, log-x works, and bad data fails with the path.

use std::path::Path;

use rlhf_report::{LineChart, ReportError, ScatterChart, ScatterSeries, Series};

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "not a PNG: {}",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn assert_svg(path: &Path, needles: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    let body = text.trim_start_matches(|c: char| c.is_whitespace());
    let body = body
        .strip_prefix("<?xml")
        .map_or(body, |r| &r[r.find("?>").unwrap() + 2..]);
    assert!(
        body.trim_start().starts_with("<svg"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(text.trim_end().ends_with("</svg>"));
    for n in needles {
        assert!(text.contains(n), "missing {n:?} in {}", path.display());
    }
}

#[test]
fn line_chart_writes_svg_and_png_of_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let chart = LineChart {
        title: "Win rate against SFT".into(),
        x_label: "PPO step".into(),
        y_label: "win rate".into(),
        series: vec![
            Series {
                name: "ppo-ptx".into(),
                points: vec![(0.0, 0.5), (100.0, 0.62), (200.0, 0.7)],
                band: Some(vec![
                    (0.0, 0.45, 0.55),
                    (100.0, 0.55, 0.69),
                    (200.0, 0.64, 0.76),
                ]),
            },
            Series {
                name: "ppo".into(),
                points: vec![(0.0, 0.5), (100.0, 0.6), (200.0, f64::NAN)],
                band: None,
            },
        ],
        size: (640, 360),
        ..Default::default()
    };
    let [svg, png] = chart.save(&dir.path().join("win.rate")).unwrap();
    assert_eq!(svg, dir.path().join("win.rate.svg"));
    assert_eq!(png, dir.path().join("win.rate.png"));
    assert_svg(&svg, &["ppo-ptx", "Win rate against SFT", "PPO step"]);
    assert_eq!(png_size(&png), (640, 360));
}

#[test]
fn log_x_with_positive_x() {
    let dir = tempfile::tempdir().unwrap();
    let chart = LineChart {
        title: "Accuracy against parameters".into(),
        x_label: "parameters".into(),
        y_label: "accuracy".into(),
        series: vec![Series {
            name: "chain of thought".into(),
            points: vec![(1e5, 0.1), (1e6, 0.2), (1e7, 0.6), (1e8, 0.9)],
            band: None,
        }],
        log_x: true,
        ..Default::default()
    };
    let [svg, png] = chart.save(&dir.path().join("scale")).unwrap();
    assert_svg(&svg, &["chain of thought"]);
    assert_eq!(png_size(&png), rlhf_report::DEFAULT_SIZE);

    let bad = LineChart {
        series: vec![Series {
            name: "x".into(),
            points: vec![(0.0, 1.0), (10.0, 2.0)],
            band: None,
        }],
        log_x: true,
        ..Default::default()
    };
    let err = bad.save(&dir.path().join("bad")).unwrap_err();
    assert!(matches!(err, ReportError::Data { .. }), "{err}");
    assert!(err.to_string().contains("bad.svg") && err.to_string().contains("logarithmic"));
}

#[test]
fn scatter_chart_with_diagonal_and_flat_or_empty_data() {
    let dir = tempfile::tempdir().unwrap();
    let chart = ScatterChart {
        title: "Score per prompt".into(),
        x_label: "baseline".into(),
        y_label: "model".into(),
        series: vec![ScatterSeries {
            name: "prompts".into(),
            points: vec![(0.3, 1.3), (1.3, 1.3), (0.0, 0.3), (-0.2, 0.1)],
        }],
        diagonal: true,
        size: (500, 500),
    };
    let [svg, png] = chart.save(&dir.path().join("scores")).unwrap();
    assert_svg(&svg, &["prompts", "y = x"]);
    assert_eq!(png_size(&png), (500, 500));

    // One repeated point and no points at all still draw.
    let flat = ScatterChart {
        series: vec![ScatterSeries {
            name: "same".into(),
            points: vec![(1.0, 1.0); 3],
        }],
        ..Default::default()
    };
    flat.save(&dir.path().join("flat")).unwrap();
    ScatterChart::default()
        .save(&dir.path().join("empty"))
        .unwrap();
}

#[test]
fn unwritable_path_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("missing-dir").join("plot");
    let err = LineChart::default().save(&stem).unwrap_err();
    assert!(err.to_string().contains("missing-dir"), "{err}");
}
