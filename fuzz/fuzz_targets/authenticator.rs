//! The whole request path through the filter's own worker (`Worker`, the lifecycle Envoy runs)
//! on an in-memory host (`FakeHost`): any method, path and `Authorization`, against the flow
//! configurations (every provider kind, API tokens, dry run), with any provider reply to every
//! call the worker sends, until the request is decided. Every verdict must keep
//! `check_verdict`'s promises; a request past its deadline must always be decided; a lookup
//! takes at most two calls (Facebook's check, then its userinfo) and an answer, once stored,
//! is never asked for again; the gauge of calls in flight agrees with the worker; the same
//! request decided again by the same worker decides the same way (from its memo or the shared
//! cache) unless the provider was unavailable; a result the core asks to remember decides the
//! same way from the shared cache alone (a second worker, nothing in its memo).
//!
//! Input: flags byte (bit 0 CORS headers; bits 1-2 the `idp` provider's keys: fresh, none,
//! stale, failing; bits 3-4 the configuration; bits 5-6 the rate-limit headers of a lookup reply:
//! none, `x-ratelimit-remaining: 0`, `retry-after: 5`, `x-ratelimit-remaining: 12`), 4 bytes
//! offset of `now`, then `method \n path \n authorization \n status \n reply body` (an empty
//! authorization line means no header; status is decimal text). Each input gets a fresh worker
//! (a copy of one whose keys were seeded once per thread): nothing one input leaves in a memo or
//! in shared data reaches the next.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use atlassian_rest_auth::authenticator::{RequestHead, Verdict};
use atlassian_rest_auth::time::UnixTime;
use atlassian_rest_auth::worker::fake::FakeHost;
use atlassian_rest_auth::worker::{
    Admission, CallPurpose, CallReply, RequestId, Worker, CALLS_IN_FLIGHT,
};
use atlassian_rest_auth_fuzz::{
    auth_of, check_verdict, fields, flow_configs, now_from, trace, JWKS, NOW_SECS,
};
use libfuzzer_sys::fuzz_target;

/// Rounds of "send what is queued, answer every call" before the deadline is let pass.
const ROUNDS: usize = 4;
/// Past every wait the flow configurations allow (twice the longest `timeout_ms`, plus margins).
const PAST_EVERY_DEADLINE_MS: i64 = 2 * 5000 + 5000;
/// The request under test, and the one that repeats it.
const FIRST: RequestId = 1;
const AGAIN: RequestId = 2;

/// A worker for configuration `config` whose `idp` keys are in state `state` (fresh, none,
/// stale, failing), and its shared data; seeded once per thread (parsing and warming the fixture
/// keys for every input took most of this target's time) and copied for each input.
fn seeded(config: usize, state: u8) -> (Worker, FakeHost) {
    thread_local! {
        static SEEDED: RefCell<HashMap<(usize, u8), (Worker, FakeHost)>> = RefCell::new(HashMap::new());
    }
    SEEDED.with(|seeded| {
        let mut seeded = seeded.borrow_mut();
        let (worker, host) = seeded
            .entry((config, state))
            .or_insert_with(|| seed(config, state));
        (worker.clone(), host.snapshot())
    })
}

/// The worker after its first tick, the `idp` keys fetched as `state` says; the calls for the
/// other providers' keys and discovery stay out, for the input to answer.
fn seed(config: usize, state: u8) -> (Worker, FakeHost) {
    let mut worker = Worker::new(auth_of(&flow_configs()[config]));
    let fetched_at = match state {
        0 => Some(NOW_SECS),
        2 => Some(NOW_SECS - 90_000),
        _ => None,
    };
    let mut host = FakeHost::at(UnixTime::from_secs(fetched_at.unwrap_or(NOW_SECS)));
    worker.on_tick(&mut host);
    // Only the `idp` keys are seeded; every other provider's first fetch is left to the input.
    let calls: Vec<_> = host.calls.keys().copied().collect();
    let idp = worker.authenticator().config.provider_named("idp");
    for id in calls {
        let idp_jwks = matches!(worker.call_purpose(id), Some(CallPurpose::Fetch { provider, .. }) if Some(provider) == idp);
        if !idp_jwks || state == 1 {
            continue;
        }
        host.take(id);
        let reply = match state {
            3 => CallReply {
                status: 500,
                ..CallReply::default()
            },
            _ => CallReply {
                status: 200,
                headers: [None, None],
                body: Some(JWKS.as_bytes().to_vec()),
            },
        };
        worker.on_call_reply(&mut host, id, reply);
    }
    (worker, host)
}

/// Answers every call the worker has out with `reply` (the body left out when the worker
/// would not read that much); counts the lookup calls per token step.
fn answer_all(worker: &mut Worker, host: &mut FakeHost, reply: &CallReply, lookups: &mut usize) {
    let calls: Vec<_> = host.calls.keys().copied().collect();
    for id in calls {
        host.take(id);
        let Some(limit) = worker.reply_limit(id) else {
            continue;
        };
        if let Some(CallPurpose::Lookup { provider, step }) = worker.call_purpose(id) {
            *lookups += 1;
            if trace() {
                eprintln!("  {step:?} of provider {provider:?} HTTP {}", reply.status);
            }
        }
        let body = reply.body.clone().filter(|b| b.len() <= limit);
        worker.on_call_reply(
            host,
            id,
            CallReply {
                body,
                ..reply.clone()
            },
        );
    }
}

/// Runs request `id` to its verdict: rounds of sending and answering, then the deadline.
fn run(
    worker: &mut Worker,
    host: &mut FakeHost,
    id: RequestId,
    head: &RequestHead,
    reply: &CallReply,
    lookups: &mut usize,
) -> Verdict {
    if let Admission::Decided(verdict) = worker.on_request(host, id, head.clone()) {
        return verdict;
    }
    for _ in 0..ROUNDS {
        worker.on_wake(host);
        worker.on_tick(host);
        answer_all(worker, host, reply, lookups);
        if let Some(verdict) = host.verdict_for(id) {
            return verdict.clone();
        }
    }
    // Past its deadline a request is always decided: Envoy would hold it forever otherwise.
    host.advance(PAST_EVERY_DEADLINE_MS);
    worker.on_tick(host);
    match host.verdict_for(id) {
        Some(verdict) => verdict.clone(),
        None => panic!(
            "undecided past the deadline ({} calls out)",
            host.calls.len()
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let flags = data[0];
    let config = usize::from((flags >> 3) & 3) % 3;
    let now = now_from(&data[1..5]);
    let parts = fields(&data[5..], 5);
    let text = |i: usize| {
        parts
            .get(i)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default()
    };
    let authorization = Some(text(2)).filter(|a| !a.is_empty());
    let head = RequestHead {
        method: text(0),
        path: text(1),
        authorization,
        cors_headers: flags & 1 == 1,
        form_body: false,
    };
    let status: u32 = text(3).trim().parse().unwrap_or(200);
    let body = parts.get(4).copied().unwrap_or_default().to_vec();
    let headers = match (flags >> 5) & 3 {
        0 => [None, None],
        1 => [Some("0".to_string()), None],
        2 => [None, Some("5".to_string())],
        _ => [Some("12".to_string()), None],
    };
    let reply = CallReply {
        status,
        headers,
        body: Some(body),
    };

    let (mut worker, mut host) = seeded(config, (flags >> 1) & 3);
    host.now = Some(now);
    let mut lookups = 0;
    let verdict = run(&mut worker, &mut host, FIRST, &head, &reply, &mut lookups);
    if trace() {
        eprintln!(
            "{} {} -> {verdict} (remember: {})",
            head.method,
            head.path,
            verdict.remember.is_some()
        );
    }
    check_verdict(worker.authenticator(), &verdict);
    assert!(lookups <= 2, "{lookups} lookup calls for one token");
    let in_flight = host.gauges.get(CALLS_IN_FLIGHT).copied().unwrap_or(0);
    assert_eq!(
        usize::try_from(in_flight).ok(),
        Some(worker.calls_in_flight()),
        "the gauge disagrees with the worker"
    );

    // The same request again, on the same worker and at the same time as the decision.
    let unavailable = verdict.decision.status() == 503
        || verdict
            .denied()
            .is_some_and(|e| e.class() == atlassian_rest_auth::error::ErrorClass::Unavailable);
    let again = run(&mut worker, &mut host, AGAIN, &head, &reply, &mut lookups);
    check_verdict(worker.authenticator(), &again);
    if !unavailable {
        assert!(
            lookups <= 2,
            "an answer the provider gave was asked for again ({lookups} lookup calls)"
        );
        if verdict.remember.is_some() || again.identity().is_some() && verdict.identity().is_some()
        {
            assert_eq!(
                again.decision, verdict.decision,
                "decided otherwise the second time: {again} after {verdict}"
            );
        }
    }
    // What the core asked to remember decides alone, for a worker that never saw the token.
    if verdict.remember.is_some() {
        let (mut fresh, _) = seeded(config, (flags >> 1) & 3);
        let mut other = host.sharing();
        match fresh.on_request(&mut other, FIRST, head.clone()) {
            Admission::Decided(from_cache) => {
                check_verdict(fresh.authenticator(), &from_cache);
                assert_eq!(
                    from_cache.decision, verdict.decision,
                    "decided otherwise from the cache: {from_cache} after {verdict}"
                );
            }
            Admission::Paused => {
                panic!("a remembered result left the request undecided: {verdict}")
            }
        }
    }
});
