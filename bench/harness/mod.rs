//! The `make bench` harness, included by `examples/bench.rs` with `#[path]`: Envoy pinned to one
//! CPU with a `direct_response` upstream, wrk pinned to another, minted token sets, the Jira
//! client's request of the realistic rows, the extra measurements, and the report (Markdown
//! table, SVG chart).

pub mod chart;
pub mod envoy;
pub mod jira;
pub mod measure;
pub mod process;
pub mod report;
pub mod token_sets;
pub mod wrk;
