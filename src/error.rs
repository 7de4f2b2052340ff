//! Errors: precise inside, one fixed short phrase each outside (the `error_description`).

use thiserror::Error;

/// Why a request was not authenticated; `Display` is the client-facing `error_description`.
///
/// Phrases are fixed: never token text or key material. Details go to the debug log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("malformed authorization header")]
    MalformedHeader,
    #[error("unsupported authorization scheme")]
    UnsupportedScheme,
    #[error("basic authentication not accepted")]
    BasicRejected,
    #[error("malformed api token")]
    ApiTokenMalformed,
    #[error("unknown api token")]
    ApiTokenUnknown,
    #[error("api token expired")]
    ApiTokenExpired,
    #[error("api token of another user")]
    ApiTokenWrongUser,
    #[error("token too large")]
    TokenTooLarge,
    #[error("malformed token")]
    MalformedToken,
    #[error("unsupported critical header")]
    UnsupportedCritical,
    #[error("no provider accepts this token")]
    NoProvider,
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("issuer not allowed here")]
    ProviderNotAllowed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("unknown key id")]
    UnknownKeyId,
    #[error("invalid signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token has no expiration")]
    MissingExpiration,
    #[error("audience not allowed")]
    AudienceMismatch,
    #[error("no username in token")]
    NoUsername,
    #[error("invalid username")]
    InvalidUsername,
    #[error("wrong token use")]
    WrongTokenUse,
    #[error("token rejected by provider")]
    ProviderRejected,
    #[error("required claim missing")]
    InsufficientScope,
    #[error("signing keys unavailable")]
    KeysUnavailable,
    #[error("identity provider unavailable")]
    ProviderUnavailable,
    /// The host cannot tell the time: no token can be judged.
    #[error("clock unavailable")]
    NoClock,
    #[error("malformed request path")]
    MalformedPath,
    /// A query or form parameter the product would not decode (bad escape, not UTF-8).
    #[error("malformed request parameters")]
    MalformedParameters,
    /// A form body names `oauth_*`, `xoauth_requestor_id` or `user_id`: only the filter may.
    #[error("reserved parameter in form body")]
    ReservedFormParameter,
    /// No random bytes for an OAuth nonce or the RSA blinding.
    #[error("randomness unavailable")]
    NoRandomness,
    /// The RSA private-key operation failed.
    #[error("request signing failed")]
    SigningFailed,
    /// A form body to sign over never reached the filter: Envoy holds request bodies back from
    /// a Wasm filter that paused the headers unless `allow_on_headers_stop_iteration` is set.
    #[error("form body not delivered")]
    FormBodyNotDelivered,
    #[error("internal error")]
    Internal(&'static str),
}

/// Which reply an error becomes (SPEC section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 401 without `error=`: nothing was presented (RFC 6750 section 3.1).
    NoCredentials,
    /// 401 `invalid_token`.
    InvalidToken,
    /// 403 `insufficient_scope`.
    Forbidden,
    /// 503: the provider cannot be reached and nothing cached can decide.
    Unavailable,
    /// 500: a state that cannot happen.
    Internal,
    /// 400: the request has no single reading: its path (no rule could be trusted to match
    /// it) or, when the filter signs it, its parameters.
    BadRequest,
}

impl AuthError {
    /// A stable snake_case name for metrics: the description with underscores.
    pub fn code(&self) -> String {
        match self {
            AuthError::Internal(_) => "internal_error".to_string(),
            other => other.to_string().replace(' ', "_"),
        }
    }

    /// The reply class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            AuthError::Missing => ErrorClass::NoCredentials,
            AuthError::InsufficientScope => ErrorClass::Forbidden,
            AuthError::KeysUnavailable | AuthError::ProviderUnavailable | AuthError::NoClock => {
                ErrorClass::Unavailable
            }
            AuthError::Internal(_)
            | AuthError::NoRandomness
            | AuthError::SigningFailed
            | AuthError::FormBodyNotDelivered => ErrorClass::Internal,
            AuthError::MalformedPath
            | AuthError::MalformedParameters
            | AuthError::ReservedFormParameter => ErrorClass::BadRequest,
            _ => ErrorClass::InvalidToken,
        }
    }
}

/// A configuration error: the dotted field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a JWKS document was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwksError {
    #[error("JWKS larger than {0} bytes")]
    TooLarge(usize),
    #[error("JWKS is not valid JSON: {0}")]
    Json(String),
    #[error("JWKS has more than {0} keys")]
    TooManyKeys(usize),
    #[error("JWKS nested deeper than {0}")]
    TooDeep(usize),
    #[error("JWKS has no usable signing key")]
    NoUsableKey,
}
