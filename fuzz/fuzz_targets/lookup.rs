//! `lookup::LookupStep::on_reply` for every step and provider kind, with any status and body:
//! statuses map as SPEC section 5 says, usernames that come out are safe header values, and
//! the cache entry made from the answer survives shared data.
//!
//! Input: step byte, provider byte, status (2 bytes, big-endian), offset of `now` (4 bytes), body.
#![no_main]

use atlassian_rest_auth::cache::{CacheEntry, EntryState};
use atlassian_rest_auth::digest::TokenDigest;
use atlassian_rest_auth::identity::Username;
use atlassian_rest_auth::lookup::{lifetime, LookupStep, Outage, Progress, ReplyHead, MAX_ANSWER_BYTES};
use atlassian_rest_auth_fuzz::{flow_auth, now_from, trace};
use libfuzzer_sys::fuzz_target;

const STEPS: [LookupStep; 4] = [LookupStep::Userinfo, LookupStep::Introspection, LookupStep::GithubApp, LookupStep::FacebookDebug];

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let auth = flow_auth();
    let config = &auth.config;
    let step = STEPS[usize::from(data[0]) % STEPS.len()];
    let index = usize::from(data[1]) % config.providers.len();
    let provider = &config.providers[index];
    let status = u32::from(u16::from_be_bytes([data[2], data[3]]));
    let now = now_from(&data[4..8]);
    let body = &data[8..];
    let progress = step.on_reply(provider, ReplyHead::status(status), body, now);
    if trace() {
        eprintln!("{step:?} of {} HTTP {status} -> {progress:?}", provider.name);
    }
    let state = match progress {
        Progress::Next(next) => {
            assert!(step == LookupStep::FacebookDebug && next == LookupStep::Userinfo && status == 200, "{step:?} -> {next:?}");
            return;
        }
        Progress::Unavailable(outage) => {
            // RFC 7662 section 2.3: introspection's 401/403 (GitHub's app check: 401) refuse the
            // filter's own client credentials, never the token.
            let client_refused = matches!(status, 401 | 403) && step == LookupStep::Introspection || status == 401 && step == LookupStep::GithubApp;
            assert_eq!(matches!(outage, Outage::ClientRefused(_)), client_refused, "HTTP {status} from {step:?}: {outage:?}");
            assert!(status != 200 || outage == Outage::Unparsable, "HTTP 200 unavailable: {outage:?}");
            EntryState::Unavailable
        }
        Progress::Done(state) => {
            assert_ne!(state, EntryState::Unavailable, "an outage is Progress::Unavailable");
            state
        }
    };
    let client_refused = matches!(status, 401 | 403) && step == LookupStep::Introspection || status == 401 && step == LookupStep::GithubApp;
    match (&state, status) {
        (EntryState::Pending, _) => panic!("a reply left the lookup pending"),
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
        assert!(!matches!(state, EntryState::Valid { .. }), "HTTP {status} accepted");
    }
    let until = lifetime(&state, provider, now, None);
    assert!(until >= now);
    let entry = auth.cache_entry(index, TokenDigest::of(body), state, now, None);
    assert_eq!(CacheEntry::parse(&entry.to_bytes()).as_ref(), Some(&entry), "entry does not survive shared data");
});
