//! Line charts as inline SVG: time on x, a value on y, gaps where a point has no value,
//! an optional threshold line (an SLO), and a text alternative.

use maud::{Markup, html};

/// One line.
#[derive(Debug, Clone)]
pub struct ChartSeries {
    /// Legend label.
    pub label: String,
    /// (epoch ms, value) points; `None` breaks the line.
    pub points: Vec<(i64, Option<f64>)>,
}

/// A chart.
#[derive(Debug, Clone)]
pub struct LineChart {
    /// Title (also the accessible name).
    pub title: String,
    /// Unit of the y axis, e.g. `ms`.
    pub unit: String,
    /// The lines.
    pub series: Vec<ChartSeries>,
    /// A horizontal reference line (value, label).
    pub threshold: Option<(f64, String)>,
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

fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (h, m) = ((secs / 3600) % 24, (secs / 60) % 60);
    format!("{h:02}:{m:02}")
}

impl LineChart {
    /// The chart as SVG.
    pub fn render(&self) -> Markup {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let (x0, x1) = xs.fold((i64::MAX, i64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.1))
            .chain(self.threshold.as_ref().map(|t| t.0));
        let ymax = ys.fold(0.0f64, f64::max);
        let step = nice_step(if ymax > 0.0 { ymax } else { 1.0 });
        let top = (ymax / step).ceil().max(1.0) * step;
        let (x0, x1) = if x0 > x1 {
            (0, 1)
        } else {
            (x0, x1.max(x0 + 1))
        };
        let sx = |x: i64| LEFT + (x - x0) as f64 / (x1 - x0) as f64 * (W - LEFT - RIGHT);
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
        let xticks: Vec<i64> = (0..=4).map(|k| x0 + (x1 - x0) * k / 4).collect();
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
                    @for x in &xticks {
                        text x=(format!("{:.1}", sx(*x))) y=(H - 8.0) text-anchor="middle" { (clock(*x)) }
                    }
                    @if let Some((v, label)) = &self.threshold {
                        line x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", sy(*v))) y2=(format!("{:.1}", sy(*v))) stroke="#cf222e" stroke-dasharray="6 4" stroke-width="1.5" {}
                        text x=(W - RIGHT) y=(format!("{:.1}", sy(*v) - 4.0)) text-anchor="end" { (label) }
                    }
                    @for (i, d) in &paths {
                        path d=(d) fill="none" stroke=(COLORS[i % COLORS.len()]) stroke-width="2" {}
                    }
                }
                figcaption {
                    (self.title) " (" (self.unit) "): "
                    @for (i, s) in self.series.iter().enumerate() {
                        span style=(format!("color:{}", COLORS[i % COLORS.len()])) { "■ " }
                        (s.label) " "
                    }
                }
            }
        }
    }
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
                    (0, Some(10.0)),
                    (60_000, None),
                    (120_000, Some(20.0)),
                    (180_000, Some(40.0)),
                ],
            }],
            threshold: Some((150.0, "SLO 150 ms".into())),
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
        // The threshold sets the scale: 150 fits under the top tick.
        assert!(
            chart.contains(">150<") || chart.contains(">200<"),
            "{chart}"
        );
    }
}
