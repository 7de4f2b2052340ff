//! `bench/results.svg`: throughput and p99 latency per configuration, two bar panels sharing
//! one column of configuration names. Plain SVG written from the numbers, no library.

use std::fmt::Write as _;

use super::report::{Kind, Table};

const WIDTH: f64 = 980.0;
const LABEL_RIGHT: f64 = 250.0;
const PANEL_WIDTH: f64 = 320.0;
const PANEL_GAP: f64 = 70.0;
const TOP: f64 = 78.0;
const ROW: f64 = 30.0;
const BAR: f64 = 18.0;

/// One panel: a value per row, its axis title and how a value is printed.
struct Panel<'a> {
    title: &'a str,
    axis: &'a str,
    values: Vec<f64>,
    format: fn(f64) -> String,
}

/// The chart for `table`, with `subtitle` (machine, run length) under the title.
pub fn svg(table: &Table, subtitle: &str) -> String {
    let rows = table.rows.len() as f64;
    let plot_bottom = TOP + rows * ROW;
    let height = plot_bottom + 96.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" font-size="16" font-weight="bold" text-anchor="middle">atlassian-rest-auth in Envoy: throughput and tail latency per configuration</text>"#,
        WIDTH / 2.0
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="44" fill="#555555" text-anchor="middle">{}</text>"##,
        WIDTH / 2.0,
        escape(subtitle)
    );
    for (i, row) in table.rows.iter().enumerate() {
        let y = TOP + i as f64 * ROW + ROW / 2.0 + 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{y}" text-anchor="end">({}) {}</text>"#,
            LABEL_RIGHT - 8.0,
            escape(row.id),
            escape(row.label)
        );
    }
    let panels = [
        Panel {
            title: "Throughput (higher is better)",
            axis: "requests per second (median of rounds)",
            values: table.rows.iter().map(|r| r.rps()).collect(),
            format: |v| format!("{v:.0}"),
        },
        Panel {
            title: "p99 latency (lower is better)",
            axis: "milliseconds (wrk, 32 connections)",
            values: table.rows.iter().map(|r| r.p99_us() / 1e3).collect(),
            format: |v| format!("{v:.2}"),
        },
    ];
    for (p, panel) in panels.iter().enumerate() {
        let left = LABEL_RIGHT + p as f64 * (PANEL_WIDTH + PANEL_GAP);
        draw_panel(&mut out, panel, table, left, plot_bottom);
    }
    legend(&mut out, plot_bottom + 72.0);
    out.push_str("</svg>\n");
    out
}

fn draw_panel(out: &mut String, panel: &Panel<'_>, table: &Table, left: f64, bottom: f64) {
    let max = panel
        .values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (axis_max, step) = axis(max);
    let x = |v: f64| left + (v / axis_max).clamp(0.0, 1.0) * PANEL_WIDTH;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-weight="bold" text-anchor="middle">{}</text>"#,
        left + PANEL_WIDTH / 2.0,
        TOP - 14.0,
        escape(panel.title)
    );
    let mut tick = 0.0;
    while tick <= axis_max * 1.000_001 {
        let tx = x(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{bottom}" stroke="#e6e6e6"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#333333">{}</text>"##,
            bottom + 16.0,
            (panel.format)(tick).trim_end_matches(".00")
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{TOP}" x2="{left}" y2="{bottom}" stroke="#333333"/><line x1="{left}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#333333"/>"##,
        left + PANEL_WIDTH
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + PANEL_WIDTH / 2.0,
        bottom + 36.0,
        escape(panel.axis)
    );
    for (i, (row, value)) in table.rows.iter().zip(&panel.values).enumerate() {
        if !value.is_finite() {
            continue;
        }
        let y = TOP + i as f64 * ROW + (ROW - BAR) / 2.0;
        let end = x(*value);
        let _ = writeln!(
            out,
            r##"<rect x="{left}" y="{y:.1}" width="{:.1}" height="{BAR}" fill="{}"><title>({}) {}: {}</title></rect><text x="{:.1}" y="{:.1}" fill="#222222">{}</text>"##,
            end - left,
            colour(row.kind),
            escape(row.id),
            escape(row.label),
            (panel.format)(*value),
            end + 4.0,
            y + BAR - 4.0,
            (panel.format)(*value)
        );
    }
}

fn legend(out: &mut String, y: f64) {
    let entries = [
        (Kind::Baseline, "Envoy alone"),
        (Kind::Native, "Envoy jwt_authn (native C++)"),
        (Kind::NoopWasm, "no-op Rust wasm filter"),
        (Kind::AuthNone, "this filter, auth none"),
        (Kind::Filter, "this filter authenticating"),
    ];
    let mut x = 40.0;
    for (kind, text) in entries {
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{y}">{}</text>"#,
            y - 10.0,
            colour(kind),
            x + 16.0,
            escape(text)
        );
        x += 30.0 + 6.3 * text.chars().count() as f64;
    }
}

fn colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Baseline => "#8c8c8c",
        Kind::Native => "#4c78a8",
        Kind::NoopWasm => "#b279a2",
        Kind::AuthNone => "#72b7b2",
        Kind::Filter => "#f58518",
    }
}

/// An axis end above `max` with room for the value labels, and a round tick step (1, 2, 5 × 10^n).
fn axis(max: f64) -> (f64, f64) {
    if max <= 0.0 {
        return (1.0, 0.25);
    }
    let rough = max * 1.25 / 4.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    ((max * 1.25 / step).ceil() * step, step)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_ends_above_the_largest_value_on_a_round_step() {
        let (end, step) = axis(23_456.0);
        assert!(end >= 23_456.0 * 1.2);
        assert_eq!(step, 10_000.0);
        assert_eq!(axis(0.0), (1.0, 0.25));
    }
}
