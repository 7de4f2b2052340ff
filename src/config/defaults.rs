//! The values of fields the JSON leaves out (SPEC section 2 shows them in its example).

use super::{AuthorizationForward, BasicMode, UnknownBearer};
use crate::rules::AuthMode;

pub(super) fn default_realm() -> String {
    "atlassian".into()
}
pub(super) fn default_basic() -> BasicMode {
    BasicMode::Passthrough
}
pub(super) fn default_unknown_bearer() -> UnknownBearer {
    UnknownBearer::Reject
}
pub(super) fn default_auth() -> AuthMode {
    AuthMode::Optional
}
pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_clock_skew_seconds() -> u64 {
    60
}
pub(super) fn default_jwks_refresh_seconds() -> u64 {
    600
}
pub(super) fn default_jwks_max_stale_seconds() -> u64 {
    86_400
}
pub(super) fn default_cache_seconds() -> u64 {
    300
}
pub(super) fn default_timeout_ms() -> u64 {
    5000
}
pub(super) fn default_max_concurrent_calls() -> u32 {
    64
}
pub(super) fn default_cache_entries() -> u32 {
    8192
}
pub(super) fn default_username_header() -> String {
    "x-forwarded-user".into()
}
pub(super) fn default_authorization() -> AuthorizationForward {
    AuthorizationForward::Remove
}
