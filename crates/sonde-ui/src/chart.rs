//! Line charts as inline SVG: time (or a number) on x, a value on y, gaps where a point has
//! no value, an optional threshold line (an SLO) or diagonal (a reliability diagram), a text
//! alternative, and the chart's data as CSV or JSON for download.

use maud::{Markup, html};
use serde::Serialize;

/// One line.
#[derive(Debug, Clone, Serialize)]
pub struct ChartSeries {
    /// Legend label.
    pub label: String,
    /// (x, value) points; x is epoch ms on a time axis. `None` breaks the line.
    pub points: Vec<(f64, Option<f64>)>,
}

/// What the x axis shows.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum XAxis {
    /// Epoch milliseconds, labelled as UTC clock times.
    #[default]
    Time,
    /// Plain numbers (e.g. a predicted probability), with the axis name.
    Number {
        /// Axis name.
        name: String,
    },
}

/// A chart.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LineChart {
    /// Title (also the accessible name).
    pub title: String,
    /// Unit of the y axis, e.g. `ms`.
    pub unit: String,
    /// The lines.
    pub series: Vec<ChartSeries>,
    /// A horizontal reference line (value, label).
    pub threshold: Option<(f64, String)>,
    /// The x axis.
    pub x: XAxis,
    /// The x range to show (a page's time window), instead of the data's extent.
    #[serde(skip)]
    pub x_range: Option<(f64, f64)>,
    /// Draw a dot at every point (sparse data such as calibration bins).
    #[serde(skip)]
    pub markers: bool,
    /// Draw the y = x diagonal (perfect calibration).
    #[serde(skip)]
    pub diagonal: bool,
}

const W: f64 = 960.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// Colors distinguishable in both themes and by most color-blind readers (Okabe–Ito).
const COLORS: [&str; 6] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00",
];

/// A round step near `span / 4`.
fn nice_step(span: f64) -> f64 {
    let raw = (span / 4.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn clock(ms: f64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|d| d.format("%H:%M").to_string())
        .unwrap_or_default()
}

impl LineChart {
    /// The chart as SVG.
    pub fn render(&self) -> Markup {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.1))
            .chain(self.threshold.as_ref().map(|t| t.0))
            .chain(self.diagonal.then_some(x1).filter(|x| x.is_finite()));
        let ymax = ys.fold(0.0f64, f64::max);
        let step = nice_step(if ymax > 0.0 { ymax } else { 1.0 });
        let top = (ymax / step).ceil().max(1.0) * step;
        let (x0, x1) = match (&self.x, x0 > x1) {
            _ if self.x_range.is_some_and(|(a, b)| b > a) => self.x_range.unwrap_or((0.0, 1.0)),
            (_, true) => (0.0, 1.0),
            (XAxis::Time, false) => (x0, x1.max(x0 + 1.0)),
            // Numbers start at zero, like the y axis, so a diagonal is a diagonal.
            (XAxis::Number { .. }, false) => {
                let hi = x1.max(if self.diagonal { top } else { 0.0 });
                (0.0_f64.min(x0), if hi > 0.0 { hi } else { 1.0 })
            }
        };
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let sy = |y: f64| TOP + (1.0 - y / top) * (H - TOP - BOTTOM);
        let paths: Vec<(usize, String)> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut d = String::new();
                let mut pen_down = false;
                for (x, y) in &s.points {
                    match y {
                        Some(y) => {
                            d.push_str(&format!(
                                "{}{:.1},{:.1} ",
                                if pen_down { "L" } else { "M" },
                                sx(*x),
                                sy(*y)
                            ));
                            pen_down = true;
                        }
                        None => pen_down = false,
                    }
                }
                (i, d)
            })
            .collect();
        let yticks: Vec<f64> = (0..=((top / step).round() as i64))
            .map(|k| k as f64 * step)
            .collect();
        let xticks: Vec<f64> = (0..=4).map(|k| x0 + (x1 - x0) * k as f64 / 4.0).collect();
        let xlabel = |x: f64| match &self.x {
            XAxis::Time => clock(x),
            XAxis::Number { .. } => crate::number(Some(x), if x1 - x0 < 4.0 { 2 } else { 0 }),
        };
        let summary = self
            .series
            .iter()
            .map(|s| {
                let last = s.points.iter().rev().find_map(|p| p.1);
                format!(
                    "{}: latest {} {}",
                    s.label,
                    crate::number(last, 1),
                    self.unit
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        html! {
            figure {
                svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(format!("{}. {}", self.title, summary)) {
                    title { (self.title) }
                    @for y in &yticks {
                        line.grid x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", sy(*y))) y2=(format!("{:.1}", sy(*y))) {}
                        text x=(LEFT - 6.0) y=(format!("{:.1}", sy(*y) + 4.0)) text-anchor="end" { (crate::number(Some(*y), if step < 1.0 { 2 } else { 0 })) }
                    }
                    @for (k, x) in xticks.iter().enumerate() {
                        text x=(format!("{:.1}", sx(*x))) y=(H - 8.0) text-anchor=(match k { 0 => "start", 4 => "end", _ => "middle" }) { (xlabel(*x)) }
                    }
                    @if let Some((v, label)) = &self.threshold {
                        line x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", sy(*v))) y2=(format!("{:.1}", sy(*v))) stroke="#cf222e" stroke-dasharray="6 4" stroke-width="1.5" {}
                        text x=(W - RIGHT) y=(format!("{:.1}", sy(*v) - 4.0)) text-anchor="end" { (label) }
                    }
                    @if self.diagonal {
                        line.grid x1=(format!("{:.1}", sx(0.0))) y1=(format!("{:.1}", sy(0.0))) x2=(format!("{:.1}", sx(x1.min(top)))) y2=(format!("{:.1}", sy(x1.min(top)))) stroke-dasharray="4 4" {}
                    }
                    @for (i, d) in &paths {
                        path d=(d) fill="none" stroke=(COLORS[i % COLORS.len()]) stroke-width="2" {}
                    }
                    @for (i, s) in self.series.iter().enumerate() {
                        @for (x, y) in dots(&s.points, self.markers) {
                            circle cx=(format!("{:.1}", sx(x))) cy=(format!("{:.1}", sy(y))) r="3.5" fill=(COLORS[i % COLORS.len()]) {}
                        }
                    }
                }
                figcaption {
                    (self.title) " (" (self.unit) @if let XAxis::Number { name } = &self.x { " against " (name) } "): "
                    @for (i, s) in self.series.iter().enumerate() {
                        span style=(format!("color:{}", COLORS[i % COLORS.len()])) { "■ " }
                        (s.label) " "
                    }
                }
            }
        }
    }
}

/// The points drawn as dots: all of them with `markers`, else those without a neighbour
/// (a line needs two points; a lone minute would not show).
fn dots(points: &[(f64, Option<f64>)], markers: bool) -> Vec<(f64, f64)> {
    points
        .iter()
        .enumerate()
        .filter_map(|(i, (x, y))| {
            let y = (*y)?;
            let has =
                |j: Option<usize>| j.and_then(|j| points.get(j)).is_some_and(|p| p.1.is_some());
            (markers || !(has(i.checked_sub(1)) || has(Some(i + 1)))).then_some((*x, y))
        })
        .collect()
}

impl LineChart {
    /// The chart's data as CSV, one row per point: `series,x,value` (x as RFC 3339 on a time
    /// axis; an empty value where the line breaks).
    pub fn to_csv(&self) -> String {
        let mut out = String::from("series,x,value\n");
        for s in &self.series {
            for (x, y) in &s.points {
                let x = match self.x {
                    XAxis::Time => rfc3339(*x),
                    XAxis::Number { .. } => x.to_string(),
                };
                let y = y.map(|v| v.to_string()).unwrap_or_default();
                out.push_str(&format!("{},{x},{y}\n", csv_field(&s.label)));
            }
        }
        out
    }
}

/// A CSV field, quoted when it holds a separator, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Epoch ms as RFC 3339 UTC.
fn rfc3339(ms: f64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_break_at_gaps_and_escape_labels() {
        let chart = LineChart {
            title: "p99 <latency>".into(),
            unit: "ms".into(),
            series: vec![ChartSeries {
                label: "a&b".into(),
                points: vec![
                    (0.0, Some(10.0)),
                    (60_000.0, None),
                    (120_000.0, Some(20.0)),
                    (180_000.0, Some(40.0)),
                ],
            }],
            threshold: Some((150.0, "SLO 150 ms".into())),
            ..LineChart::default()
        }
        .render()
        .into_string();
        // Two pen-downs: the gap starts a new subpath.
        let d = chart
            .split("d=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("");
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
        assert!(chart.contains("p99 &lt;latency&gt;"));
        assert!(chart.contains("a&amp;b"));
        assert!(chart.contains("SLO 150 ms"));
        assert!(chart.contains("latest 40.0 ms"));
        // The lone first point is a dot; the two joined ones are a line.
        assert_eq!(chart.matches("<circle").count(), 1, "{chart}");
        // The threshold sets the scale: 150 fits under the top tick.
        assert!(
            chart.contains(">150<") || chart.contains(">200<"),
            "{chart}"
        );
    }

    #[test]
    fn data_downloads_as_csv_with_quoted_labels() {
        let chart = LineChart {
            title: "t".into(),
            unit: "ms".into(),
            series: vec![ChartSeries {
                label: "p99, \"all\"".into(),
                points: vec![
                    (1_700_000_000_000.0, Some(12.5)),
                    (1_700_000_060_000.0, None),
                ],
            }],
            ..LineChart::default()
        };
        assert_eq!(
            chart.to_csv(),
            "series,x,value\n\"p99, \"\"all\"\"\",2023-11-14T22:13:20Z,12.5\n\"p99, \"\"all\"\"\",2023-11-14T22:14:20Z,\n"
        );
    }

    #[test]
    fn a_reliability_diagram_has_dots_and_a_diagonal_on_a_number_axis() {
        let svg = LineChart {
            title: "Reliability".into(),
            unit: "observed rate".into(),
            series: vec![ChartSeries {
                label: "control".into(),
                points: vec![(0.1, Some(0.05)), (0.5, Some(0.4)), (0.9, Some(0.7))],
            }],
            x: XAxis::Number {
                name: "predicted".into(),
            },
            markers: true,
            diagonal: true,
            ..LineChart::default()
        }
        .render()
        .into_string();
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("stroke-dasharray=\"4 4\""));
        assert!(svg.contains("against predicted"));
        assert!(svg.contains(">0.50<"), "x ticks are numbers: {svg}");
    }
}
