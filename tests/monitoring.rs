//! `deploy/monitoring/`: the example alert rules and Grafana dashboard refer only to metrics the
//! filter emits, with labels those metrics carry (the names and labels documented in
//! `docs/troubleshooting.md`, which `e2e_metrics` checks against a real Envoy's scrape); and
//! every copy of the `stats_config` that makes those labels equals `envoy.yaml`'s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use support::prometheus::{self, Documented, PREFIX};
use support::repo_root;

/// Labels Prometheus adds to every scraped series (target labels), which queries may group by.
const TARGET_LABELS: [&str; 4] = ["instance", "job", "namespace", "pod"];

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(text: &str, at: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{at}: not YAML: {e}"))
}

/// A metric a query names, and the label names its selector uses.
#[derive(Debug)]
struct Reference {
    series: String,
    labels: Vec<String>,
}

/// What a PromQL expression refers to: the filter's series (with their selector labels) and the
/// labels of its `by (...)` / `without (...)` clauses.
fn references(expr: &str) -> (Vec<Reference>, Vec<String>) {
    let mut refs = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find(PREFIX) {
        let name_len = rest[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len() - at);
        let series = rest[at..at + name_len].to_string();
        rest = &rest[at + name_len..];
        let mut labels = Vec::new();
        if let Some(selector) = rest.strip_prefix('{') {
            let end = selector.find('}').expect("a selector is closed");
            labels = selector[..end]
                .split(',')
                .map(|m| {
                    m.split(['=', '!', '~'])
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_string()
                })
                .filter(|l| !l.is_empty())
                .collect();
            rest = &selector[end..];
        }
        refs.push(Reference { series, labels });
    }
    let mut grouped = Vec::new();
    let words: Vec<(usize, &str)> = expr
        .match_indices(|c: char| c.is_ascii_alphabetic())
        .map(|(i, _)| i)
        .filter(|&i| {
            i == 0 || !expr[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|i| {
            let len = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len() - i);
            (i, &expr[i..i + len])
        })
        .collect();
    for (i, word) in words {
        if word != "by" && word != "without" {
            continue;
        }
        let after = expr[i + word.len()..].trim_start();
        let Some(list) = after.strip_prefix('(') else {
            continue;
        };
        let end = list.find(')').expect("a grouping is closed");
        grouped.extend(
            list[..end]
                .split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
    }
    (refs, grouped)
}

/// Checks `expr` (found at `at`) against the documented metrics; `legend` labels (`{{name}}`)
/// too. Returns the documented metrics it refers to.
fn check_expr(
    documented: &BTreeMap<String, Documented>,
    expr: &str,
    legend: &str,
    at: &str,
) -> BTreeSet<String> {
    let (refs, grouped) = references(expr);
    assert!(
        !refs.is_empty(),
        "{at}: refers to no metric of the filter: {expr}"
    );
    let mut metrics = BTreeSet::new();
    let mut known: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    for r in &refs {
        let (metric, labels) = prometheus::metric_of(documented, &r.series).unwrap_or_else(|| {
            panic!(
                "{at}: {} is not a metric the filter emits (docs/troubleshooting.md, \"Metrics to watch\")",
                r.series
            )
        });
        for label in &r.labels {
            assert!(
                labels.contains(label) || TARGET_LABELS.contains(&label.as_str()),
                "{at}: {} has no label {label:?} (it has {labels:?})",
                r.series
            );
        }
        metrics.insert(metric.to_string());
        known.extend(labels);
    }
    let legend_labels = legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_string()));
    for label in grouped.into_iter().chain(legend_labels) {
        assert!(
            known.contains(&label),
            "{at}: label {label:?} is on none of the metrics it refers to: {expr}"
        );
    }
    metrics
}

#[test]
fn the_documented_metrics_include_every_kind_the_filter_emits() {
    let documented = prometheus::documented();
    for (name, labels) in [
        ("atlassian_rest_auth_denied", &["reason", "provider"][..]),
        (
            "atlassian_rest_auth_dry_run_denied",
            &["reason", "provider"],
        ),
        ("atlassian_rest_auth_allowed", &["provider"]),
        ("atlassian_rest_auth_passed", &["why"]),
        ("atlassian_rest_auth_call_ms", &["provider"]),
        ("atlassian_rest_auth_calls_in_flight", &[]),
    ] {
        let d = documented
            .get(name)
            .unwrap_or_else(|| panic!("{name} undocumented"));
        let want: BTreeSet<String> = labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(d.labels, want, "{name}");
    }
    assert_eq!(
        documented["atlassian_rest_auth_call_ms"].kind,
        prometheus::Kind::Histogram
    );
    assert_eq!(
        documented["atlassian_rest_auth_calls_in_flight"].kind,
        prometheus::Kind::Gauge
    );
}

#[test]
fn alert_rules_refer_only_to_metrics_and_labels_the_filter_emits() {
    let path = "deploy/monitoring/alerts.yaml";
    let rules = yaml(&read(path), path);
    assert_eq!(rules["kind"], "PrometheusRule", "{path}");
    let documented = prometheus::documented();
    let mut used = BTreeSet::new();
    let mut alerts = 0;
    for group in rules["spec"]["groups"].as_array().expect("spec.groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("expr");
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{path}: {name}: summary"
            );
            used.extend(check_expr(
                &documented,
                expr,
                "",
                &format!("{path}: {name}"),
            ));
            alerts += 1;
        }
    }
    assert!(alerts >= 5, "{path}: {alerts} alerts");
    // What the issue asks to alert on: refusals by reason, 503s, JWKS fetch failures, provider
    // call latency, calls given up.
    for metric in [
        "atlassian_rest_auth_denied",
        "atlassian_rest_auth_jwks_failed",
        "atlassian_rest_auth_call_ms",
        "atlassian_rest_auth_calls_expired",
    ] {
        assert!(used.contains(metric), "{path}: no alert on {metric}");
    }
}

#[test]
fn dashboard_refers_only_to_metrics_and_labels_the_filter_emits() {
    let path = "deploy/monitoring/dashboard.json";
    let dashboard: Value = serde_json::from_str(&read(path)).expect("dashboard.json is JSON");
    assert!(
        dashboard["title"].is_string() && dashboard["uid"].is_string(),
        "{path}"
    );
    let documented = prometheus::documented();
    let mut used = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{path}: {title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let legend = t["legendFormat"].as_str().unwrap_or("");
            used.extend(check_expr(
                &documented,
                expr,
                legend,
                &format!("{path}: {title}"),
            ));
        }
    }
    // What the issue asks to show: decisions by outcome, denials by reason and provider, cache
    // hit ratio, provider latency, calls in flight.
    for metric in [
        "atlassian_rest_auth_allowed",
        "atlassian_rest_auth_denied",
        "atlassian_rest_auth_passed",
        "atlassian_rest_auth_dry_run_denied",
        "atlassian_rest_auth_cache_hit",
        "atlassian_rest_auth_cache_miss",
        "atlassian_rest_auth_call_ms",
        "atlassian_rest_auth_calls_in_flight",
    ] {
        assert!(used.contains(metric), "{path}: no panel shows {metric}");
    }
}

#[test]
fn a_query_naming_an_unknown_metric_or_label_is_caught() {
    let documented = prometheus::documented();
    for bad in [
        "sum(rate(atlassian_rest_auth_denied_total[5m]))",
        "sum(rate(atlassian_rest_auth_denied{why=\"x\"}[5m]))",
        "sum by (why) (rate(atlassian_rest_auth_denied[5m]))",
        "atlassian_rest_auth_call_ms",
        "sum(atlassian_rest_auth_calls_in_flight{provider=\"x\"})",
    ] {
        let caught = std::panic::catch_unwind(|| check_expr(&documented, bad, "", "test"));
        assert!(caught.is_err(), "not caught: {bad}");
    }
    let legend = std::panic::catch_unwind(|| {
        check_expr(
            &documented,
            "sum by (provider) (rate(atlassian_rest_auth_allowed[5m]))",
            "{{reason}}",
            "test",
        )
    });
    assert!(
        legend.is_err(),
        "a legend label the query lacks is not caught"
    );
}

/// `stats_config` of `envoy.yaml`: what the tests' Envoy runs with.
fn shipped_stats_config() -> Value {
    let config = yaml(&read("envoy.yaml"), "envoy.yaml")["stats_config"].clone();
    assert!(
        config["stats_tags"].is_array(),
        "envoy.yaml has no stats_config.stats_tags"
    );
    config
}

#[test]
fn every_copy_of_the_stats_tags_equals_envoy_yaml() {
    let shipped = shipped_stats_config();
    let mut copies: Vec<(String, Value)> = Vec::new();

    // The complete bootstrap in the custom provider's guide.
    let guide = read("docs/providers/custom.md");
    let block = guide
        .split("```yaml bootstrap\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("docs/providers/custom.md has a ```yaml bootstrap block");
    copies.push((
        "docs/providers/custom.md".into(),
        yaml(block, "custom.md bootstrap")["stats_config"].clone(),
    ));

    // Envoy Gateway: the EnvoyProxy's bootstrap merge.
    let path = "deploy/envoy-gateway/gateway.yaml";
    let text = read(path);
    for doc in serde_norway::Deserializer::from_str(&text) {
        let doc = <Value as serde::Deserialize>::deserialize(doc).unwrap();
        if doc["kind"] == "EnvoyProxy" {
            let merged = doc["spec"]["bootstrap"]["value"]
                .as_str()
                .expect("bootstrap.value");
            copies.push((path.into(), yaml(merged, path)["stats_config"].clone()));
        }
    }

    // Istio: the custom bootstrap ConfigMap.
    let path = "deploy/monitoring/istio-stats.yaml";
    let map = yaml(&read(path), path);
    assert_eq!(map["kind"], "ConfigMap", "{path}");
    let json: Value = serde_json::from_str(
        map["data"]["custom_bootstrap.json"]
            .as_str()
            .expect("data.custom_bootstrap.json"),
    )
    .expect("custom_bootstrap.json is JSON");
    copies.push((path.into(), json["stats_config"].clone()));

    assert_eq!(copies.len(), 3);
    for (at, copy) in copies {
        assert_eq!(
            copy, shipped,
            "{at}: stats_config differs from envoy.yaml's"
        );
    }
}
