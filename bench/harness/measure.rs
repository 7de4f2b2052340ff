//! The measurements besides throughput: memory per cached token, plugin start time, and how
//! long the first request after a start waits for keys.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use super::envoy::{BenchEnvoy, Setup};
use crate::support::client::try_send;

/// How long any single wait for Envoy's first answer may last.
const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_millis(2);
/// Client threads sending the tokens whose cache cost is measured.
const SENDERS: usize = 2;

/// Envoy's resident memory around sending distinct tokens through a caching filter.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub tokens: usize,
    /// Before any measured request (after the warm-up).
    pub start_kib: u64,
    /// After as many requests with one token (cache hits): the control.
    pub after_same_kib: u64,
    /// After the first half of the distinct tokens.
    pub after_half_kib: u64,
    /// After the distinct tokens.
    pub after_distinct_kib: u64,
    /// Of `sampled` distinct tokens sent again, how many were cache hits.
    pub retained: u64,
    pub sampled: usize,
    /// Requests that did not get a 200.
    pub failures: u64,
}

impl Memory {
    /// Growth caused by the distinct tokens, in KiB.
    pub fn distinct_growth_kib(&self) -> i64 {
        self.after_distinct_kib as i64 - self.after_same_kib as i64
    }

    /// The cost of all the distinct tokens as the second half's growth scaled up, in KiB: the
    /// allocator may hold free memory at the start that the first tokens use without growing
    /// RSS, but not twice.
    pub fn second_half_estimate_kib(&self) -> f64 {
        let second = self.tokens - self.tokens / 2;
        (self.after_distinct_kib as f64 - self.after_half_kib as f64) * self.tokens as f64
            / second.max(1) as f64
    }

    /// The larger of the measured growth and the second-half estimate, in KiB.
    pub fn cost_kib(&self) -> f64 {
        (self.distinct_growth_kib() as f64).max(self.second_half_estimate_kib())
    }

    /// Growth caused by the same number of cache hits, in KiB.
    pub fn control_growth_kib(&self) -> i64 {
        self.after_same_kib as i64 - self.start_kib as i64
    }
}

/// Sends `warm` tokens and then `same` (`count` times) and `distinct` through `envoy`, reading
/// its RSS in between; then sends every tenth distinct token again and counts cache hits
/// through counter `hit_counter`.
pub fn cached_tokens_memory(
    envoy: &BenchEnvoy,
    hit_counter: &str,
    warm: &[String],
    same: &str,
    distinct: &[String],
) -> Memory {
    let url = envoy.url("/rest/api/2/myself");
    let mut failures = send_all(&url, warm);
    let repeated: Vec<String> = std::iter::repeat_n(same.to_string(), distinct.len()).collect();
    failures += send_all(&url, &repeated[..repeated.len().min(2000)]);
    settle();
    let start_kib = envoy.rss_kib();
    failures += send_all(&url, &repeated);
    settle();
    let after_same_kib = envoy.rss_kib();
    let (first_half, second_half) = distinct.split_at(distinct.len() / 2);
    failures += send_all(&url, first_half);
    settle();
    let after_half_kib = envoy.rss_kib();
    failures += send_all(&url, second_half);
    settle();
    let after_distinct_kib = envoy.rss_kib();
    let sample: Vec<String> = distinct.iter().step_by(10).cloned().collect();
    let hits_before = envoy.counter(hit_counter);
    failures += send_all(&url, &sample);
    let retained = envoy.counter(hit_counter).saturating_sub(hits_before);
    Memory {
        tokens: distinct.len(),
        start_kib,
        after_same_kib,
        after_half_kib,
        after_distinct_kib,
        retained,
        sampled: sample.len(),
        failures,
    }
}

/// Gives Envoy a moment to finish what the last responses started (stats, frees).
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

/// Sends one GET per token on keep-alive connections; returns how many were not 200.
fn send_all(url: &str, tokens: &[String]) -> u64 {
    if tokens.is_empty() {
        return 0;
    }
    let chunk = tokens.len().div_ceil(SENDERS);
    std::thread::scope(|scope| {
        let senders: Vec<_> = tokens
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(10))
                        .build();
                    part.iter()
                        .filter(|token| {
                            let sent = agent
                                .get(url)
                                .set("authorization", &format!("Bearer {token}"))
                                .call();
                            !matches!(sent, Ok(r) if r.status() == 200)
                        })
                        .count() as u64
                })
            })
            .collect();
        senders
            .into_iter()
            .map(|s| s.join().expect("sender thread"))
            .sum()
    })
}

/// A port free right now (bound, then released) for a listener that must be known in advance.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("reserve a port: {e}"))
        .port()
}

/// The first answer of a freshly spawned Envoy.
#[derive(Debug, Clone)]
pub struct FirstAnswer {
    /// From spawning Envoy to the end of the first answer that came back.
    pub since_spawn: Duration,
    /// From sending that request to its answer.
    pub waited: Duration,
    pub status: u16,
}

/// Spawns Envoy with `setup` (whose `listener_port` must be fixed) and sends
/// `authorization` to it, again and again until a connection is accepted and answered.
/// With `until_ok`, answers other than 200 are retried as well.
pub fn first_answer(
    setup: &Setup,
    root: &Path,
    name: &str,
    authorization: &str,
    until_ok: bool,
) -> FirstAnswer {
    assert_ne!(
        setup.listener_port, 0,
        "the listener port must be known before the start"
    );
    let mut envoy = BenchEnvoy::spawn(setup, root, name);
    let url = format!("http://127.0.0.1:{}/rest/api/2/myself", setup.listener_port);
    let deadline = envoy.spawned_at() + FIRST_ANSWER_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = envoy.exited() {
            panic!(
                "Envoy ({name}) exited ({status}) before answering\n{}",
                envoy.log_tail(40)
            );
        }
        let sent_at = Instant::now();
        match try_send("GET", &url, &[("authorization", authorization)]) {
            Ok(reply) if reply.status == 200 || !until_ok => {
                return FirstAnswer {
                    since_spawn: envoy.spawned_at().elapsed(),
                    waited: sent_at.elapsed(),
                    status: reply.status,
                }
            }
            Ok(_) | Err(_) => std::thread::sleep(RETRY),
        }
    }
    panic!(
        "Envoy ({name}) gave no answer within {FIRST_ANSWER_TIMEOUT:?}\n{}",
        envoy.log_tail(40)
    );
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
