//! The dashboard's HTML, rendered on the server: the page layout with navigation and
//! filters, the sign-in form, tables, and SVG charts. Pure functions from data to markup;
//! the server gathers the data. Readable without JavaScript; a light and a dark theme follow
//! the system setting.

mod chart;
mod layout;

pub use chart::{ChartSeries, LineChart, XAxis};
pub use layout::{LIVE_JS, NavItem, login_page, page};
pub use maud::{Markup, PreEscaped};

/// A number for people: thousands separated, at most `digits` decimals, `–` when absent.
pub fn number(v: Option<f64>, digits: usize) -> String {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return "–".into();
    };
    let text = format!("{v:.digits$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_rounded() {
        assert_eq!(number(Some(1234567.891), 1), "1,234,567.9");
        assert_eq!(number(Some(-1234.0), 0), "-1,234");
        assert_eq!(number(Some(12.0), 2), "12.00");
        assert_eq!(number(None, 2), "–");
        assert_eq!(number(Some(f64::NAN), 2), "–");
    }
}
