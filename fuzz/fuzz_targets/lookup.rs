//! `lookup::LookupStep::on_reply` for every step and provider kind, with any status, rate-limit
//! headers and body: statuses map as SPEC section 5 says (a rate limit is an outage, never a
//! verdict on the token), usernames that come out are safe header values, and the cache entry
//! made from the answer survives shared data.
//!
//! Input: step byte (bits 0-1 the step; bits 2-3 the reply's rate-limit headers: none,
//! `x-ratelimit-remaining: 0`, `retry-after: 5`, `x-ratelimit-remaining: 12`), provider byte,
//! status (2 bytes, big-endian), offset of `now` (4 bytes), body.
#![no_main]

use atlassian_rest_auth::cache::{CacheEntry, EntryState};
use atlassian_rest_auth::digest::TokenDigest;
use atlassian_rest_auth::identity::Username;
use atlassian_rest_auth::lookup::{
    lifetime, LookupStep, Outage, Progress, ReplyHead, MAX_ANSWER_BYTES,
};
use atlassian_rest_auth_fuzz::{flow_auth, now_from, trace};
use libfuzzer_sys::fuzz_target;

const STEPS: [LookupStep; 4] = [
    LookupStep::Userinfo,
    LookupStep::Introspection,
    LookupStep::GithubApp,
    LookupStep::FacebookDebug,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let auth = flow_auth();
    let config = &auth.config;
    let step = STEPS[usize::from(data[0] & 3)];
    let Some(id) = config
        .provider_ids()
        .nth(usize::from(data[1]) % config.providers.len())
    else {
        return;
    };
    let provider = config.provider(id).expect("an id of this configuration");
    let status = u32::from(u16::from_be_bytes([data[2], data[3]]));
    let now = now_from(&data[4..8]);
    let body = &data[8..];
    let head = match (data[0] >> 2) & 3 {
        0 => ReplyHead::status(status),
        1 => ReplyHead {
            ratelimit_remaining: Some("0"),
            ..ReplyHead::status(status)
        },
        2 => ReplyHead {
            retry_after: Some("5"),
            ..ReplyHead::status(status)
        },
        _ => ReplyHead {
            ratelimit_remaining: Some("12"),
            ..ReplyHead::status(status)
        },
    };
    // GitHub and others: 429, or 403 with the calls used up or a wait asked for.
    let rate_limited = status == 429 || status == 403 && matches!((data[0] >> 2) & 3, 1 | 2);
    // RFC 7662 section 2.3: introspection's 401/403 (GitHub's app check: 401) refuse the
    // filter's own client credentials, never the token.
    let client_refused = !rate_limited
        && (matches!(status, 401 | 403) && step == LookupStep::Introspection
            || status == 401 && step == LookupStep::GithubApp);
    let progress = step.on_reply(provider, head, body, now);
    if trace() {
        eprintln!(
            "{step:?} of {} HTTP {status} {head:?} -> {progress:?}",
            provider.name
        );
    }
    let state = match progress {
        Progress::Next(next) => {
            assert!(
                step == LookupStep::FacebookDebug && next == LookupStep::Userinfo && status == 200,
                "{step:?} -> {next:?}"
            );
            return;
        }
        Progress::Unavailable(outage) => {
            assert_eq!(
                matches!(outage, Outage::ClientRefused(_)),
                client_refused,
                "HTTP {status} from {step:?}: {outage:?}"
            );
            assert_eq!(
                matches!(outage, Outage::RateLimited(_)),
                rate_limited,
                "HTTP {status} {head:?} from {step:?}: {outage:?}"
            );
            assert!(
                status != 200 || outage == Outage::Unparsable,
                "HTTP 200 unavailable: {outage:?}"
            );
            EntryState::Unavailable
        }
        Progress::Done(state) => {
            assert_ne!(
                state,
                EntryState::Unavailable,
                "an outage is Progress::Unavailable"
            );
            state
        }
    };
    assert!(
        !rate_limited || state == EntryState::Unavailable,
        "a rate limit decided the token: {state:?}"
    );
    match (&state, status) {
        (EntryState::Pending { .. }, _) => panic!("a reply left the lookup pending"),
        (EntryState::Unavailable, _) => {}
        (EntryState::Refused { .. }, 401 | 403) if !client_refused => {}
        (_, 401 | 403) => panic!("{status} from {step:?} must refuse the token or be the filter's credentials: {state:?}"),
        (EntryState::Valid { username, .. }, _) => {
            assert_eq!(status, 200);
            assert!(body.len() <= MAX_ANSWER_BYTES);
            assert!(Username::parse(username.clone()).is_ok(), "unsafe username accepted: {username:?}");
        }
        (EntryState::Refused { .. }, 200 | 400) => {}
        (EntryState::Refused { .. }, 404 | 422) => assert_eq!(step, LookupStep::GithubApp),
        (EntryState::Refused { .. }, _) => panic!("HTTP {status} refused the token instead of 503"),
    }
    if status != 200 {
        assert!(
            !matches!(state, EntryState::Valid { .. }),
            "HTTP {status} accepted"
        );
    }
    let until = lifetime(&state, provider, now, None);
    assert!(until >= now);
    let entry = auth.cache_entry(id, TokenDigest::of(body), state, now, None);
    assert_eq!(
        CacheEntry::parse(&entry.to_bytes()).as_ref(),
        Some(&entry),
        "entry does not survive shared data"
    );
});
