//! Envoy's `/stats/prometheus` text, and the filter's metrics as `docs/troubleshooting.md`
//! documents them ("Metrics to watch"): what alert rules and dashboards may refer to.

use std::collections::{BTreeMap, BTreeSet};

use super::repo_root;

/// Every Prometheus name of the filter starts with this.
pub const PREFIX: &str = "atlassian_rest_auth_";

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (comments left out).
pub fn parse(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
                None => (head, BTreeMap::new()),
            };
            Some(Series {
                name: name.to_string(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// `a="x",b="y"` (values hold no `"` here: the filter's label values are names and reasons).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k.trim().to_string(), v.trim_end_matches('"').to_string()))
        })
        .collect()
}

/// What a documented metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Shown as `<name>_bucket` (label `le` too), `<name>_sum` and `<name>_count`.
    Histogram,
}

/// A metric of the filter as documented: its kind and label names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documented {
    pub kind: Kind,
    pub labels: BTreeSet<String>,
}

/// The filter's metrics by Prometheus name, from the table in `docs/troubleshooting.md`'s
/// "Metrics to watch": each row's `atlassian_rest_auth_<name>{label,...}` code span; a row
/// that says `(histogram)` or `(gauge)` is one.
pub fn documented() -> BTreeMap<String, Documented> {
    let path = repo_root().join("docs/troubleshooting.md");
    let text = std::fs::read_to_string(&path).expect("docs/troubleshooting.md");
    let section = text
        .split("\n## Metrics to watch")
        .nth(1)
        .expect("troubleshooting.md has a \"Metrics to watch\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut metrics = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with('|')) {
        let kind = if row.contains("(histogram)") {
            Kind::Histogram
        } else if row.contains("(gauge)") {
            Kind::Gauge
        } else {
            Kind::Counter
        };
        for span in row.split('`').skip(1).step_by(2) {
            let Some(rest) = span.strip_prefix(PREFIX) else {
                continue;
            };
            let (name, labels) = match rest.split_once('{') {
                Some((name, labels)) => (
                    name,
                    labels
                        .trim_end_matches('}')
                        .split(',')
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect(),
                ),
                None => (rest, BTreeSet::new()),
            };
            let series_of_histogram = kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix));
            if series_of_histogram {
                continue; // `<name>_bucket` etc. spell out the histogram's series.
            }
            metrics.insert(format!("{PREFIX}{name}"), Documented { kind, labels });
        }
    }
    metrics
}

/// The documented metric a series name belongs to, and the labels that series may carry:
/// a histogram's `_bucket` (with `le`), `_sum` and `_count`, or the metric itself.
pub fn metric_of<'d>(
    documented: &'d BTreeMap<String, Documented>,
    series: &str,
) -> Option<(&'d str, BTreeSet<String>)> {
    if let Some((name, d)) = documented.get_key_value(series) {
        if d.kind != Kind::Histogram {
            return Some((name, d.labels.clone()));
        }
    }
    for (suffix, extra) in [("_bucket", Some("le")), ("_sum", None), ("_count", None)] {
        let Some(base) = series.strip_suffix(suffix) else {
            continue;
        };
        if let Some((name, d)) = documented.get_key_value(base) {
            if d.kind == Kind::Histogram {
                let mut labels = d.labels.clone();
                labels.extend(extra.map(str::to_string));
                return Some((name, labels));
            }
        }
    }
    None
}
