//! What a real Jira REST client sends, for the bench's "realistic request" rows: a browser's
//! XHR to `/rest/api/2/search` with a query string and about fifteen headers, among them a
//! Cookie of about 1 KiB (session, XSRF, remember-me and load-balancer cookies). The
//! `Authorization` header is the row's own credential and is not among these.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// A JQL search as Jira's issue navigator sends it.
pub const PATH: &str = "/rest/api/2/search?jql=project%20%3D%20ABC%20AND%20status%20%3D%20%22In%20Progress%22%20ORDER%20BY%20updated%20DESC&startAt=0&maxResults=50&fields=summary,status,assignee,updated";

/// The request headers besides `Host` (wrk and the check client set it) and `Authorization`.
pub fn headers() -> Vec<(String, String)> {
    [
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/131.0.0.0 Safari/537.36",
        ),
        ("Accept", "application/json, text/javascript, */*; q=0.01"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "en-GB,en;q=0.9,de;q=0.8"),
        ("Content-Type", "application/json"),
        ("X-Atlassian-Token", "no-check"),
        ("X-Requested-With", "XMLHttpRequest"),
        (
            "Referer",
            "https://jira.example.com/issues/?jql=project%20%3D%20ABC",
        ),
        ("Origin", "https://jira.example.com"),
        ("Cache-Control", "no-cache"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Mode", "cors"),
        ("Connection", "keep-alive"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .chain([("Cookie".to_string(), cookie())])
    .collect()
}

/// A Jira Data Center browser session's cookies behind an AWS and an F5 load balancer
/// (about 1 KiB): fixed values, so every run sends the same bytes.
pub fn cookie() -> String {
    let alb = opaque("AWSALB", 105);
    [
        format!("JSESSIONID={}", hex_of("JSESSIONID", 16).to_uppercase()),
        format!(
            "atlassian.xsrf.token=B7QX-4K2M-Z8PL-R3TV_{}_lin",
            hex_of("xsrf", 20)
        ),
        format!(
            "seraph.rememberme.cookie=104233%3A{}",
            hex_of("rememberme", 20)
        ),
        format!("AWSALB={alb}"),
        format!("AWSALBCORS={alb}"),
        "BIGipServer~jira~pool_jira_8080=rd5o00000000000000000000ffff0a000a0f.36895".to_string(),
        format!("ajs_anonymous_id=%22{}%22", uuid_of("ajs_anonymous_id")),
        format!("ajs_user_id=%22{}%22", hex_of("ajs_user_id", 20)),
        "_ga=GA1.2.1638247150.1733155200".to_string(),
        "_gid=GA1.2.902184613.1733241600".to_string(),
        "jira.editor.user.mode=wysiwyg".to_string(),
        format!("atl.xsrf.token={}", opaque("atl.xsrf", 48)),
        format!("__Host-atl-session={}", opaque("atl-session", 150)),
    ]
    .join("; ")
}

/// `bytes` bytes derived from `seed`.
fn derived(seed: &str, bytes: usize) -> Vec<u8> {
    (0u32..)
        .flat_map(|block| Sha256::digest(format!("{seed}/{block}")).to_vec())
        .take(bytes)
        .collect()
}

fn hex_of(seed: &str, bytes: usize) -> String {
    derived(seed, bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Standard Base64 of `bytes` bytes: how load balancers write their opaque cookies.
fn opaque(seed: &str, bytes: usize) -> String {
    STANDARD.encode(derived(seed, bytes))
}

fn uuid_of(seed: &str) -> String {
    let hex = hex_of(seed, 16);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jira_request_carries_fifteen_headers_and_a_kibibyte_of_cookies() {
        let headers = headers();
        // With Host and Authorization, which the row adds.
        assert!(
            (14..=18).contains(&(headers.len() + 2)),
            "{}",
            headers.len()
        );
        let cookie = cookie();
        assert!((900..=1200).contains(&cookie.len()), "{}", cookie.len());
        assert!(cookie.is_ascii() && !cookie.contains(['\r', '\n', ',']));
        assert_eq!(cookie, super::cookie(), "the same bytes every run");
        assert!(headers
            .iter()
            .all(|(name, _)| !name.eq_ignore_ascii_case("authorization")));
    }
}
