//! Load from `wrk` (one thread, keep-alive connections, pinned to its own CPU) and what its
//! `--latency` report says.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::process::{pinned, Guarded};

/// How a run's requests carry their credential.
#[derive(Debug, Clone)]
pub enum Requests {
    /// Every request carries this `Authorization` value.
    Fixed(String),
    /// A Lua script picks each request's token, starting after this many tokens.
    Script { script: PathBuf, offset: u64 },
}

/// One wrk run.
#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    /// Headers every request carries besides `Host` and its credential (`-H` flags).
    pub headers: Vec<(String, String)>,
    pub requests: Requests,
    pub seconds: u64,
    pub connections: u32,
    pub cpu: Option<u32>,
}

/// What wrk reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    /// Responses that were not 2xx/3xx: a run with any is not a measurement of the happy path.
    pub non_2xx: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    /// CPU time wrk used: near the run's length, wrk rather than Envoy set the pace.
    pub client_cpu_seconds: f64,
}

/// Runs wrk; panics when it fails or its report cannot be read.
pub fn run(load: &Load) -> Outcome {
    let mut command = pinned(load.cpu, Path::new(&wrk_binary()));
    command
        .arg("-t1")
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.seconds))
        .arg("--latency")
        .arg("--timeout")
        .arg("10s");
    for (name, value) in &load.headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    match &load.requests {
        Requests::Fixed(authorization) => {
            command
                .arg("-H")
                .arg(format!("Authorization: {authorization}"));
        }
        Requests::Script { script, .. } => {
            command.arg("-s").arg(script);
        }
    }
    command.arg(&load.url);
    if let Requests::Script { offset, .. } = &load.requests {
        command.arg("--").arg(offset.to_string());
    }
    let out_path = std::env::temp_dir().join(format!("ara-bench-wrk-{}.out", std::process::id()));
    let out = std::fs::File::create(&out_path)
        .unwrap_or_else(|e| panic!("create {}: {e}", out_path.display()));
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("duplicate file handle"))
        .stderr(out);
    let mut wrk = Guarded::spawn(command, "wrk");
    let (status, cpu_seconds) = wrk
        .wait_at_most(Duration::from_secs(load.seconds + 30))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    if !status.success() {
        panic!("wrk failed ({status}):\n{text}");
    }
    let mut outcome =
        parse(&text).unwrap_or_else(|e| panic!("cannot read wrk's report ({e}):\n{text}"));
    outcome.client_cpu_seconds = cpu_seconds;
    outcome
}

/// `wrk`, from `WRK` or PATH.
pub fn wrk_binary() -> String {
    std::env::var("WRK")
        .ok()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "wrk".to_string())
}

/// The Lua script that gives every request the next token of `tokens_file` (one a line),
/// starting after the `offset` given as its argument, wrapping around at the end.
pub fn token_script(tokens_file: &Path) -> String {
    let path = tokens_file.display().to_string();
    let path = path.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"-- Written by examples/bench.rs: each request carries the next pre-minted token.
local tokens = {{}}
for line in io.lines("{path}") do
  if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
end
local index = 0
function init(args)
  index = (tonumber(args[1] or "0") or 0) % #tokens
end
function request()
  index = index % #tokens + 1
  wrk.headers["Authorization"] = tokens[index]
  return wrk.format()
end
"#
    )
}

/// Reads wrk's report: `Requests/sec`, the 50 % and 99 % lines of `--latency`, the request
/// count, non-2xx/3xx responses and socket errors.
pub fn parse(text: &str) -> Result<Outcome, String> {
    let mut outcome = Outcome {
        rps: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        requests: 0,
        non_2xx: 0,
        socket_errors: 0,
        client_cpu_seconds: 0.0,
    };
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["50%", value] => outcome.p50_us = duration_us(value)?,
                ["99%", value] => {
                    outcome.p99_us = duration_us(value)?;
                    in_distribution = false;
                }
                [_, _] => {}
                _ => in_distribution = false,
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            outcome.rps = rest
                .trim()
                .parse()
                .map_err(|e| format!("Requests/sec: {e}"))?;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            outcome.non_2xx = rest.trim().parse().map_err(|e| format!("Non-2xx: {e}"))?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            outcome.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            outcome.requests = count.trim().parse().map_err(|e| format!("requests: {e}"))?;
        }
    }
    if outcome.rps.is_nan() || outcome.p50_us.is_nan() || outcome.p99_us.is_nan() {
        return Err("no Requests/sec or no 50%/99% latency line".into());
    }
    Ok(outcome)
}

/// `452.00us`, `1.10ms`, `2.00s`, `1.00m` → microseconds.
fn duration_us(text: &str) -> Result<f64, String> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|e| format!("{text:?}: {e}"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return Err(format!("unknown unit in {text:?}")),
    };
    Ok(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 2s test @ http://127.0.0.1:4000/rest/api/2/myself
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  200.00us   9.87ms   90.00%
    Req/Sec    25.00k     1.00k   27.00k    80.00%
  Latency Distribution
     50%  452.00us
     75%    1.00ms
     90%    1.50ms
     99%    3.45ms
  50123 requests in 2.00s, 5.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  25061.50
Transfer/sec:      2.50MB
";

    #[test]
    fn a_report_gives_rate_percentiles_and_errors() {
        let outcome = parse(REPORT).unwrap();
        assert_eq!(outcome.rps, 25061.5);
        assert_eq!(outcome.p50_us, 452.0);
        assert_eq!(outcome.p99_us, 3450.0);
        assert_eq!(outcome.requests, 50123);
        assert_eq!(outcome.non_2xx, 7);
        assert_eq!(outcome.socket_errors, 3);
    }

    #[test]
    fn a_report_without_latency_lines_is_refused() {
        assert!(parse("Requests/sec: 10.0\n").is_err());
    }
}
