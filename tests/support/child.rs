//! Helpers for the third-party servers the tests start (oidc-provider, the OAuth 1.0a
//! verifier): each prints `READY <port>` on stdout once it listens.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why a child never said `READY <port>`.
#[derive(Debug)]
pub enum NotReady {
    /// No such line within the time allowed.
    Timeout(Duration),
    /// A `READY` line without a port.
    BadLine(String),
    /// Its stdout closed first: it is exiting.
    Exited,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Timeout(limit) => write!(f, "no READY line after {limit:?}"),
            NotReady::BadLine(line) => write!(f, "bad READY line {line:?}"),
            NotReady::Exited => write!(f, "exited before it was ready"),
        }
    }
}

/// The port of the first `READY <port>` line on `lines` (the child's stdout), waiting at most
/// `limit`; other lines are skipped.
pub fn ready_port(lines: &mpsc::Receiver<String>, limit: Duration) -> Result<u16, NotReady> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NotReady::Timeout(limit));
        }
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(port) = line.strip_prefix("READY ") {
                    return port
                        .trim()
                        .parse()
                        .map_err(|_| NotReady::BadLine(line.clone()));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(NotReady::Exited),
        }
    }
}
