//! The numbers of one run: the throughput table, ratios against the baselines measured in the
//! same run, and the targets as met or missed.

use super::measure::median;

/// The no-op wasm filter sent a Jira client's request: the floor of the realistic rows.
pub const REALISTIC_FLOOR: &str = "0nR";

/// What a configuration is compared as, for the chart's colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Baseline,
    Native,
    /// A Rust proxy-wasm filter that does nothing: the floor of any wasm filter.
    NoopWasm,
    /// This filter on its `auth: none` path: its own floor.
    AuthNone,
    Filter,
}

/// One configuration's rounds.
#[derive(Debug, Clone)]
pub struct Row {
    /// Short id, as in the issue: `1`, `2`, `3`, `0n`, `0w`, `4`, `5 RS256`, `5 ES256`, `6`;
    /// an id ending in `R` (`0nR`, `4R`) is that configuration sent a Jira client's request.
    pub id: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    pub rps: Vec<f64>,
    pub p50_us: Vec<f64>,
    pub p99_us: Vec<f64>,
    /// Envoy's CPU time per request in each round, µs.
    pub cpu_us: Vec<f64>,
    /// Envoy's CPU time over each round's wall time (1.0: one CPU busy all the time).
    pub busy: Vec<f64>,
    /// wrk's CPU time over each round's wall time.
    pub client_busy: Vec<f64>,
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

impl Row {
    pub fn new(id: &'static str, label: &'static str, kind: Kind) -> Self {
        Row {
            id,
            label,
            kind,
            rps: Vec::new(),
            p50_us: Vec::new(),
            p99_us: Vec::new(),
            cpu_us: Vec::new(),
            busy: Vec::new(),
            client_busy: Vec::new(),
            requests: 0,
            non_2xx: 0,
            socket_errors: 0,
        }
    }

    /// Median requests per second over the rounds.
    pub fn rps(&self) -> f64 {
        median(&self.rps)
    }

    pub fn p50_us(&self) -> f64 {
        median(&self.p50_us)
    }

    pub fn p99_us(&self) -> f64 {
        median(&self.p99_us)
    }

    /// Median of Envoy's CPU µs per request over the rounds.
    pub fn cpu_us(&self) -> f64 {
        median(&self.cpu_us)
    }

    /// The configuration is sent a Jira client's request (headers, cookies, query string) rather
    /// than a bare one, and so is compared to (0nR), the no-op filter sent the same.
    pub fn realistic(&self) -> bool {
        self.id.ends_with('R')
    }

    /// Every response of every round was a 2xx and no socket failed.
    pub fn clean(&self) -> bool {
        self.non_2xx == 0 && self.socket_errors == 0
    }

    fn range(&self) -> String {
        let min = self.rps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.rps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if self.rps.is_empty() {
            "-".into()
        } else {
            format!("{min:.0}–{max:.0}")
        }
    }
}

/// Every configuration of the run, in the order measured.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    /// RPS of `id` divided by RPS of `base`.
    pub fn ratio(&self, id: &str, base: &str) -> f64 {
        match (self.row(id), self.row(base)) {
            (Some(a), Some(b)) => a.rps() / b.rps(),
            _ => f64::NAN,
        }
    }

    /// 1e6/RPS(id) − 1e6/RPS(base): µs of the worker's time `id` adds to each request.
    pub fn added_us(&self, id: &str, base: &str) -> f64 {
        match (self.row(id), self.row(base)) {
            (Some(a), Some(b)) => 1e6 / a.rps() - 1e6 / b.rps(),
            _ => f64::NAN,
        }
    }

    /// Envoy CPU µs per request of `id` minus that of `base`.
    pub fn added_cpu_us(&self, id: &str, base: &str) -> f64 {
        match (self.row(id), self.row(base)) {
            (Some(a), Some(b)) => a.cpu_us() - b.cpu_us(),
            _ => f64::NAN,
        }
    }

    /// The table as Markdown, columns padded so that it also reads well in a terminal. With
    /// (0nR) in the run, a column `÷ (0nR)` gives the realistic rows' ratio to it.
    pub fn markdown(&self) -> String {
        let realistic = self.row(REALISTIC_FLOOR).is_some();
        let mut header = vec![
            "configuration",
            "RPS",
            "RPS range",
            "p50",
            "p99",
            "÷ (1)",
            "÷ (2)",
            "÷ (3)",
            "÷ (0n)",
            "÷ (0w)",
            "added µs vs (1)",
            "Envoy CPU µs/req",
            "added CPU µs vs (1)",
        ];
        if realistic {
            header.insert(10, "÷ (0nR)");
        }
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for row in &self.rows {
            let flag = if row.clean() { "" } else { " ⚠" };
            let mut cells = vec![
                format!("({}) {}{flag}", row.id, row.label),
                format!("{:.0}", row.rps()),
                row.range(),
                format!("{:.2} ms", row.p50_us() / 1e3),
                format!("{:.2} ms", row.p99_us() / 1e3),
                format!("{:.3}", self.ratio(row.id, "1")),
                format!("{:.3}", self.ratio(row.id, "2")),
                format!("{:.3}", self.ratio(row.id, "3")),
                format!("{:.3}", self.ratio(row.id, "0n")),
                format!("{:.3}", self.ratio(row.id, "0w")),
                format!("{:+.1}", self.added_us(row.id, "1")),
                format!("{:.1}", row.cpu_us()),
                format!("{:+.1}", self.added_cpu_us(row.id, "1")),
            ];
            if realistic {
                let cell = if row.realistic() {
                    format!("{:.3}", self.ratio(row.id, REALISTIC_FLOOR))
                } else {
                    String::new()
                };
                cells.insert(10, cell);
            }
            lines.push(cells);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let render = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, width))| {
                    let pad = " ".repeat(width - cell.chars().count());
                    if c == 0 {
                        format!("{cell}{pad}")
                    } else {
                        format!("{pad}{cell}")
                    }
                })
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        // Left-aligned names, right-aligned numbers; each cell as wide as the column + 2 spaces.
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(c, w)| {
                if c == 0 {
                    "-".repeat(w + 2)
                } else {
                    format!("{}:", "-".repeat(w + 1))
                }
            })
            .collect();
        let mut out = render(&lines[0]) + "\n";
        out += &format!("|{}|\n", rule.join("|"));
        for line in &lines[1..] {
            out += &render(line);
            out.push('\n');
        }
        out
    }
}

/// A goal from the issue and how this run did against it.
#[derive(Debug, Clone)]
pub struct Target {
    pub goal: String,
    pub measured: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

impl Target {
    pub fn new(goal: impl Into<String>, measured: impl Into<String>, met: Option<bool>) -> Self {
        Target {
            goal: goal.into(),
            measured: measured.into(),
            met,
        }
    }

    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        }
    }
}

/// The targets as a Markdown table.
pub fn targets_markdown(targets: &[Target]) -> String {
    let mut out = String::from("| goal | measured | verdict |\n|---|---|---|\n");
    for t in targets {
        out += &format!("| {} | {} | {} |\n", t.goal, t.measured, t.verdict());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &'static str, rps: f64) -> Row {
        let mut row = Row::new(id, "x", Kind::Filter);
        row.rps = vec![rps, rps * 2.0, rps / 2.0];
        row
    }

    #[test]
    fn ratios_and_added_time_use_the_median_rate() {
        let table = Table {
            rows: vec![row("1", 10_000.0), row("4", 5_000.0)],
        };
        assert_eq!(table.ratio("4", "1"), 0.5);
        assert!((table.added_us("4", "1") - 100.0).abs() < 1e-9);
        assert!(table.ratio("4", "2").is_nan());
    }

    #[test]
    fn realistic_rows_get_a_ratio_to_their_own_floor() {
        let bare = Table {
            rows: vec![row("0n", 10_000.0), row("4", 5_000.0)],
        };
        assert!(!bare.markdown().contains("0nR"), "no column without (0nR)");
        let table = Table {
            rows: vec![
                row("0n", 10_000.0),
                row("4", 5_000.0),
                row("0nR", 8_000.0),
                row("4R", 4_000.0),
            ],
        };
        let md = table.markdown();
        let cells = |id: &str| -> Vec<String> {
            md.lines()
                .find(|l| l.starts_with(&format!("| ({id}) ")))
                .unwrap()
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        };
        let header: Vec<&str> = md
            .lines()
            .next()
            .unwrap()
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(cells("4R").len(), header.len());
        let column = header.iter().position(|c| *c == "÷ (0nR)").unwrap();
        assert_eq!(cells("4R")[column], "0.500");
        assert_eq!(cells("4")[column], "");
    }
}
