//! Plots for reports, each written twice from one drawing routine: `stem.svg` (for the web and
//! markdown) and `stem.png` (for anything that cannot show SVG). Text in the PNG is drawn with
//! DejaVu Sans embedded in the binary (plotters' `ab_glyph` backend), so rendering needs no
//! system fonts and looks the same on every machine.
//!
//! Two kinds, enough for the experiments: [`LineChart`] (curves such as win rate against model
//! size, optional confidence bands, optional log-x) and [`ScatterChart`] (paired scores such as
//! oracle against reward model, optional `y = x` diagonal).
//!
//! Not here: statistics (`stats.rs`), layout of a report (the caller).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{ReportError, Result};

/// Width and height in pixels of a PNG (and the SVG's canvas) unless a chart says otherwise.
pub const DEFAULT_SIZE: (u32, u32) = (800, 500);

/// Tableau 10: distinct, colour-blind-friendlier than plotters' default palette.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const FONT: &str = "sans-serif";

/// One curve of a [`LineChart`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend entry; an empty name stays out of the legend.
    pub name: String,
    /// (x, y), drawn in the given order.
    pub points: Vec<(f64, f64)>,
    /// (x, lo, hi) of a confidence band, shaded behind the curve.
    pub band: Option<Vec<(f64, f64, f64)>>,
}

/// Curves against a common x axis.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Logarithmic x axis (model sizes, compute); every x must then be positive.
    pub log_x: bool,
    /// Pixels (width, height).
    pub size: (u32, u32),
}

impl Default for LineChart {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            log_x: false,
            size: DEFAULT_SIZE,
        }
    }
}

/// One set of points of a [`ScatterChart`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScatterSeries {
    /// Legend entry; an empty name stays out of the legend.
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Paired values, e.g. the oracle's score against the reward model's for each response.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<ScatterSeries>,
    /// Draw the `y = x` line (where A and B score the same).
    pub diagonal: bool,
    /// Pixels (width, height).
    pub size: (u32, u32),
}

impl Default for ScatterChart {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            diagonal: false,
            size: DEFAULT_SIZE,
        }
    }
}

impl LineChart {
    /// Writes `stem.svg` and `stem.png` and returns their paths in that order.
    pub fn save(&self, stem: &Path) -> Result<[PathBuf; 2]> {
        let spec = Spec {
            title: &self.title,
            x_label: &self.x_label,
            y_label: &self.y_label,
            lines: &self.series,
            scatters: &[],
            diagonal: false,
            log_x: self.log_x,
            size: self.size,
        };
        spec.save(stem)
    }
}

impl ScatterChart {
    /// Writes `stem.svg` and `stem.png` and returns their paths in that order.
    pub fn save(&self, stem: &Path) -> Result<[PathBuf; 2]> {
        let spec = Spec {
            title: &self.title,
            x_label: &self.x_label,
            y_label: &self.y_label,
            lines: &[],
            scatters: &self.series,
            diagonal: self.diagonal,
            log_x: false,
            size: self.size,
        };
        spec.save(stem)
    }
}

/// Both chart kinds as one description, so that there is one drawing routine.
struct Spec<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    lines: &'a [Series],
    scatters: &'a [ScatterSeries],
    diagonal: bool,
    log_x: bool,
    size: (u32, u32),
}

/// `stem` + `ext`, keeping any dots already in the stem (`run.v2` → `run.v2.svg`).
fn with_suffix(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// Registers the embedded font once per process; every text drawn goes through it.
fn register_font() -> std::result::Result<(), String> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans font does not parse".to_string())
    })
    .clone()
}

impl Spec<'_> {
    fn save(&self, stem: &Path) -> Result<[PathBuf; 2]> {
        let svg_path = with_suffix(stem, ".svg");
        let png_path = with_suffix(stem, ".png");
        let plot_err = |path: &Path| {
            let path = path.to_path_buf();
            move |message: String| ReportError::Plot { path, message }
        };
        register_font().map_err(plot_err(&svg_path))?;
        let (xr, yr) = self.ranges().map_err(|problem| ReportError::Data {
            path: svg_path.clone(),
            problem,
        })?;
        let (w, h) = (self.size.0.max(1), self.size.1.max(1));

        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            self.render(&root, &xr, &yr)
                .and_then(|()| root.present().map_err(|e| e.to_string()))
                .map_err(plot_err(&svg_path))?;
        }
        std::fs::write(&svg_path, svg).map_err(|source| ReportError::Io {
            path: svg_path.clone(),
            op: "write",
            source,
        })?;

        {
            let root = BitMapBackend::new(&png_path, (w, h)).into_drawing_area();
            self.render(&root, &xr, &yr)
                .and_then(|()| root.present().map_err(|e| e.to_string()))
                .map_err(plot_err(&png_path))?;
        }
        Ok([svg_path, png_path])
    }

    /// Finite points of every series (bands included), for the axis ranges.
    fn all_points(&self) -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for s in self.lines {
            pts.extend(&s.points);
            for &(x, lo, hi) in s.band.iter().flatten() {
                pts.extend([(x, lo), (x, hi)]);
            }
        }
        for s in self.scatters {
            pts.extend(&s.points);
        }
        pts.retain(|(x, y)| x.is_finite() && y.is_finite());
        pts
    }

    /// Axis ranges with a 5% margin (multiplicative on a log axis); a flat range is widened.
    fn ranges(&self) -> std::result::Result<(Range<f64>, Range<f64>), String> {
        let pts = self.all_points();
        if self.log_x {
            if let Some((x, _)) = pts.iter().find(|(x, _)| *x <= 0.0) {
                return Err(format!("x = {x} cannot be shown on a logarithmic axis"));
            }
        }
        let bounds = |v: Vec<f64>| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) }
        };
        let (x0, x1) = bounds(pts.iter().map(|p| p.0).collect());
        let (y0, y1) = bounds(pts.iter().map(|p| p.1).collect());
        let (y0, y1) = pad(y0, y1);
        if self.diagonal {
            // A square-ish frame, so the diagonal means "equal" at a glance.
            let (lo, hi) = pad(x0.min(y0), x1.max(y1));
            return Ok((lo..hi, lo..hi));
        }
        let xr = if self.log_x {
            let (l0, l1) = pad(x0.log10(), x1.log10());
            10f64.powf(l0)..10f64.powf(l1)
        } else {
            let (a, b) = pad(x0, x1);
            a..b
        };
        Ok((xr, y0..y1))
    }

    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
        xr: &Range<f64>,
        yr: &Range<f64>,
    ) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(self.title, (FONT, 22))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(64);
        if self.log_x {
            let chart = builder
                .build_cartesian_2d(xr.clone().log_scale(), yr.clone())
                .map_err(|e| e.to_string())?;
            self.draw_body(chart)
        } else {
            let chart = builder
                .build_cartesian_2d(xr.clone(), yr.clone())
                .map_err(|e| e.to_string())?;
            self.draw_body(chart)
        }
    }

    fn draw_body<'a, DB, X>(
        &self,
        mut chart: ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    ) -> std::result::Result<(), String>
    where
        DB: DrawingBackend + 'a,
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(self.x_label)
            .y_desc(self.y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08));
        if self.log_x {
            // Decades read as 1e5, 1e6 rather than 100000.0, 1000000.0.
            mesh.x_label_formatter(&compact);
        }
        mesh.draw().map_err(e)?;
        let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let mut named = false;
        if self.diagonal {
            let (x, y) = (chart.x_range(), chart.y_range());
            let (lo, hi) = (x.start.max(y.start), x.end.min(y.end));
            chart
                .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.35)))
                .map_err(e)?
                .label("y = x")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.35)));
            named = true;
        }
        for (i, s) in self.lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            if let Some(band) = &s.band {
                let band: Vec<_> = band
                    .iter()
                    .filter(|b| b.0.is_finite() && b.1.is_finite() && b.2.is_finite())
                    .collect();
                let outline: Vec<(f64, f64)> = band
                    .iter()
                    .map(|b| (b.0, b.1))
                    .chain(band.iter().rev().map(|b| (b.0, b.2)))
                    .collect();
                chart
                    .draw_series([Polygon::new(outline, color.mix(0.18).filled())])
                    .map_err(e)?;
            }
            let pts: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
            let ann = chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(e)?;
            if !s.name.is_empty() {
                named = true;
                ann.label(s.name.as_str()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(e)?;
        }
        for (i, s) in self.scatters.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            // Translucent, so that coinciding points (discrete scores) show as darker dots.
            let pts = s.points.iter().filter(finite);
            let ann = chart
                .draw_series(pts.map(|&p| Circle::new(p, 3, color.mix(0.4).filled())))
                .map_err(e)?;
            if !s.name.is_empty() {
                named = true;
                ann.label(s.name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
            }
        }
        if named {
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(e)?;
        }
        Ok(())
    }
}

/// Widens [lo, hi] by 5% each side; a flat or empty range becomes lo ± 0.5.
fn pad(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    if span.is_finite() && span > 0.0 {
        (lo - 0.05 * span, hi + 0.05 * span)
    } else {
        (lo - 0.5, hi + 0.5)
    }
}

/// A tick label for a log axis: scientific notation outside [1e-3, 1e4), else the plain number.
fn compact(v: &f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e4).contains(&a) {
        format!("{v:e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_labels() {
        assert_eq!(compact(&100000.0), "1e5");
        assert_eq!(compact(&2.5e6), "2.5e6");
        assert_eq!(compact(&10.0), "10");
        assert_eq!(compact(&0.25), "0.25");
        assert_eq!(compact(&0.0), "0");
    }
}
