//! OAuth 1.0a two-legged impersonation (issue 13): the request to forward, signed with RSA-SHA1
//! for the resolved user, as Jira, Confluence and Bitbucket accept it through an Application Link.
//!
//! The product reads the user from the query parameter `xoauth_requestor_id` and checks the
//! signature (RFC 5849 section 3.4.1) over the method, its own base URL plus the request path,
//! every query parameter, the form-urlencoded body of a POST and the `oauth_*` parameters of the
//! `Authorization` header. The private-key operation is the `rsa` crate's, always blinded.

use crate::error::AuthError;
use crate::outbound::form_encode;
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::rand_core::{TryCryptoRng, TryRng};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::traits::PublicKeyParts;
use sha1::Sha1;
use std::fmt;
use zeroize::Zeroizing;

/// Query and form parameters a client may not send: the product would read the client's copy
/// (it takes the first value of a repeated parameter) as the consumer's or the user's.
const RESERVED_PREFIX: &str = "oauth_";
const RESERVED_NAMES: [&str; 2] = ["xoauth_requestor_id", "user_id"];

/// A decoded parameter: name and value.
type Parameter = (String, String);

/// Random bytes of a nonce: 128 bits, sent as 32 hex digits.
const NONCE_BYTES: usize = 16;

/// A trusted OAuth 1.0a consumer of the product: signs every forwarded request for its user.
///
/// `Debug` shows the consumer key and origin, never the key.
pub struct AtlassianOauth1 {
    consumer_key: String,
    /// `scheme://host[:port]` as the product reconstructs its own URL (its base URL).
    origin: String,
    key: SigningKey<Sha1>,
}

/// A request signed for one user: what replaces `:path` and `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The path with the client's reserved parameters removed and `xoauth_requestor_id` added.
    pub path: String,
    /// The `Authorization: OAuth ...` value.
    pub authorization: String,
}

impl AtlassianOauth1 {
    /// A consumer from an unencrypted PEM key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    ///
    /// `consumer_key` and `origin` are taken as given (the configuration checks them); the key
    /// size too (`key_bits`). Errors never quote the key.
    pub fn new(consumer_key: &str, origin: &str, private_key_pem: &str) -> Result<Self, String> {
        Ok(AtlassianOauth1 {
            consumer_key: consumer_key.to_string(),
            origin: origin.to_string(),
            key: parse_private_key(private_key_pem)?,
        })
    }

    /// The modulus size of the private key in bits.
    pub fn key_bits(&self) -> usize {
        self.key.as_ref().n().bit_width() as usize
    }

    /// Whether the request body takes part in the signature: method POST and content type
    /// `application/x-www-form-urlencoded` (case-insensitive, parameters such as charset allowed).
    ///
    /// Tomcat, the products' container, parses form bodies of POST only.
    pub fn signs_body(method: &str, content_type: Option<&str>) -> bool {
        let media_type = content_type
            .and_then(|t| t.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        method == "POST" && media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }

    /// The request to forward, signed for `username` at `now_secs`.
    ///
    /// `path` is the `:path` Envoy forwards (after any route rewrite: the product signs what it
    /// receives, so a route that rewrites the path must rewrite it before this filter sees it).
    /// Every client `oauth_*`, `xoauth_requestor_id` and `user_id` query parameter is removed (the
    /// rest of the query keeps its bytes) and `xoauth_requestor_id=<username>` appended. The
    /// signature (RFC 5849 section 3.4.1) covers the method, origin + path without the query,
    /// the remaining query parameters, the user, the `oauth_*` parameters and, when `form_body`
    /// is `Some`, the body's form parameters. `random` fills a buffer from a CSPRNG (false: none
    /// available): the nonce and the RSA blinding.
    ///
    /// 400 (`MalformedParameters`) for a query or body the product would read differently (bad
    /// escape, not UTF-8), 400 (`ReservedFormParameter`) for a body carrying a reserved name
    /// (it cannot be removed without rewriting the body); 500 without randomness.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        form_body: Option<&[u8]>,
        username: &str,
        now_secs: u64,
        random: &mut dyn FnMut(&mut [u8]) -> bool,
    ) -> Result<Signed, AuthError> {
        let (resource, query) = path.split_once('?').unwrap_or((path, ""));
        if !resource.starts_with('/') {
            return Err(AuthError::MalformedPath);
        }
        let (mut params, kept) = query_parameters(query)?;
        if let Some(body) = form_body {
            params.extend(form_parameters(body)?);
        }

        let mut nonce = [0u8; NONCE_BYTES];
        if !random(&mut nonce) {
            return Err(AuthError::NoRandomness);
        }
        let nonce = hex(&nonce);
        let timestamp = now_secs.to_string();
        let oauth = [
            ("oauth_consumer_key", self.consumer_key.as_str()),
            ("oauth_token", ""),
            ("oauth_signature_method", "RSA-SHA1"),
            ("oauth_timestamp", timestamp.as_str()),
            ("oauth_nonce", nonce.as_str()),
            ("oauth_version", "1.0"),
        ];
        params.push(("xoauth_requestor_id".to_string(), username.to_string()));
        params.extend(oauth.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let base = base_string(method, &self.origin, resource, &params);

        let signature = self.rsa_sha1(&base, random)?;

        // RFC 5849 section 3.5.1: names and values percent-encoded, values quoted.
        let authorization = oauth
            .iter()
            .chain(&[("oauth_signature", signature.as_str())])
            .map(|(name, value)| format!("{}=\"{}\"", form_encode(name), form_encode(value)))
            .collect::<Vec<_>>()
            .join(", ");

        let mut forwarded = format!("{resource}?");
        for segment in kept {
            forwarded.push_str(segment);
            forwarded.push('&');
        }
        forwarded.push_str("xoauth_requestor_id=");
        forwarded.push_str(&form_encode(username));
        Ok(Signed {
            path: forwarded,
            authorization: format!("OAuth {authorization}"),
        })
    }
}

impl AtlassianOauth1 {
    /// RFC 5849 section 3.4.3: the base64 RSASSA-PKCS1-v1_5 SHA-1 signature of `base`, blinded.
    fn rsa_sha1(
        &self,
        base: &str,
        random: &mut dyn FnMut(&mut [u8]) -> bool,
    ) -> Result<String, AuthError> {
        let mut rng = HostRng {
            random,
            failed: false,
        };
        // RandomizedSigner, not Signer: without the crate's `getrandom` feature the plain `sign`
        // runs the private-key operation unblinded; with an RNG it blinds the base, the exponent
        // and the CRT moduli.
        match self.key.try_sign_with_rng(&mut rng, base.as_bytes()) {
            Ok(signature) => {
                Ok(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()))
            }
            Err(_) if rng.failed => Err(AuthError::NoRandomness),
            Err(_) => Err(AuthError::SigningFailed),
        }
    }
}

impl fmt::Debug for AtlassianOauth1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtlassianOauth1")
            .field("consumer_key", &self.consumer_key)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// RFC 5849 section 3.4.1: `METHOD&uri&parameters`, each part percent-encoded (section 3.6);
/// the parameters (decoded) encoded, sorted by name then value, joined as `n=v&n=v`.
fn base_string(method: &str, origin: &str, resource: &str, params: &[Parameter]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(n, v)| (form_encode(n), form_encode(v)))
        .collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    // The path is taken as received: it is already percent-encoded, as the product reads it.
    format!(
        "{}&{}&{}",
        form_encode(&method.to_ascii_uppercase()),
        form_encode(&format!("{origin}{resource}")),
        form_encode(&normalized)
    )
}

/// The decoded parameters of a query without the reserved ones, and the segments to forward
/// (each as the client sent it).
fn query_parameters(query: &str) -> Result<(Vec<Parameter>, Vec<&str>), AuthError> {
    let mut params = Vec::new();
    let mut kept = Vec::new();
    for segment in query.split('&') {
        match parse_parameter(segment)? {
            Some(p) if is_reserved(&p.0) => {}
            Some(p) => {
                params.push(p);
                kept.push(segment);
            }
            // `=x`: Tomcat ignores a parameter without a name; so does the signature.
            None if !segment.is_empty() => kept.push(segment),
            None => {}
        }
    }
    Ok((params, kept))
}

/// The decoded parameters of a form body; `ReservedFormParameter` if one is reserved.
fn form_parameters(body: &[u8]) -> Result<Vec<Parameter>, AuthError> {
    let body = std::str::from_utf8(body).map_err(|_| AuthError::MalformedParameters)?;
    let mut params = Vec::new();
    for segment in body.split('&') {
        if let Some(p) = parse_parameter(segment)? {
            if is_reserved(&p.0) {
                return Err(AuthError::ReservedFormParameter);
            }
            params.push(p);
        }
    }
    Ok(params)
}

/// One `name[=value]` of a query or form body, decoded as `application/x-www-form-urlencoded`
/// (`+` is a space); `None` for a parameter without a name. A name without `=` has an empty value.
///
/// A bad escape or non-UTF-8 text is `MalformedParameters`: the product's decoder refuses or
/// drops it, so it could not check a signature over it either way.
fn parse_parameter(segment: &str) -> Result<Option<Parameter>, AuthError> {
    let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some((form_decode(name)?, form_decode(value)?)))
}

fn form_decode(text: &str) -> Result<String, AuthError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(AuthError::MalformedParameters)?;
                decoded.push(hex);
                i += 3;
            }
            b'+' => {
                decoded.push(b' ');
                i += 1;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| AuthError::MalformedParameters)
}

/// Reserved whatever the case: a parameter the product (or anything before it) may read as the
/// consumer's or the user's never passes from a client.
fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with(RESERVED_PREFIX) || RESERVED_NAMES.contains(&lower.as_str())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The private key of an unencrypted PEM, PKCS#8 or PKCS#1; the decoded DER is wiped after use.
fn parse_private_key(pem: &str) -> Result<SigningKey<Sha1>, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let not_pem =
        "not a PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)";
    let (label, rest) = pem
        .trim()
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .ok_or(not_pem)?;
    if label == "ENCRYPTED PRIVATE KEY" || rest.contains("Proc-Type:") {
        return Err(
            "encrypted keys are not supported: give the key unencrypted through the VM environment"
                .into(),
        );
    }
    if label != "PRIVATE KEY" && label != "RSA PRIVATE KEY" {
        // The label of a certificate or public key, quoted only when it looks like one.
        let known = label.len() <= 40 && label.bytes().all(|b| b.is_ascii_uppercase() || b == b' ');
        return Err(if known {
            format!("a PEM {label:?}, not a private key: {not_pem}")
        } else {
            not_pem.to_string()
        });
    }
    // Line breaks are not required: an environment variable may hold the PEM on one line.
    let (body, _) = rest
        .split_once(&format!("-----END {label}-----"))
        .ok_or("not a PEM private key: no matching END line")?;
    let text: Zeroizing<String> =
        Zeroizing::new(body.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    let mut der = Zeroizing::new(vec![0u8; text.len()]);
    let len = base64::engine::general_purpose::STANDARD
        .decode_slice(text.as_bytes(), &mut der[..])
        .map_err(|_| "not a PEM private key: bad base64")?;
    let der = der.get(..len).unwrap_or_default();
    let key = if label == "PRIVATE KEY" {
        rsa::PrivateKey::from_pkcs8_der(der)
            .map_err(|_| "not a valid RSA private key (PKCS#8, 1024 to 8192 bits)")?
    } else {
        rsa::PrivateKey::from_pkcs1_der(der)
            .map_err(|_| "not a valid RSA private key (PKCS#1, 1024 to 8192 bits)")?
    };
    Ok(SigningKey::<Sha1>::new(key))
}

/// The blinding RNG of the private-key operation: the caller's CSPRNG.
struct HostRng<'a> {
    random: &'a mut dyn FnMut(&mut [u8]) -> bool,
    failed: bool,
}

#[derive(Debug)]
struct RandomUnavailable;

impl fmt::Display for RandomUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no randomness")
    }
}

impl core::error::Error for RandomUnavailable {}

impl TryRng for HostRng<'_> {
    type Error = RandomUnavailable;

    fn try_next_u32(&mut self) -> Result<u32, RandomUnavailable> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, RandomUnavailable> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RandomUnavailable> {
        if (self.random)(dst) {
            Ok(())
        } else {
            self.failed = true;
            Err(RandomUnavailable)
        }
    }
}

impl TryCryptoRng for HostRng<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;
    use rsa::signature::{Keypair, Verifier};

    const CONSUMER_PEM: &str = include_str!("../tests/fixtures/keys/oauth1-consumer-2048.pem");
    /// The RSA-SHA1 test case of the OAuth wiki, "TestCases", section "RSA-SHA1 (section 9.3)":
    /// http://wiki.oauth.net/w/page/12238556/TestCases (public test data, a 1024-bit key).
    const WIKI_PEM: &str = include_str!("../tests/fixtures/keys/oauth-wiki-rsa-sha1-1024.pem");
    const NOW: u64 = 1_764_777_600;

    fn consumer(origin: &str) -> AtlassianOauth1 {
        AtlassianOauth1::new("jira-proxy", origin, CONSUMER_PEM).unwrap()
    }

    /// A "CSPRNG" of 0x11 bytes: nonce `1111…`, so the base string is known in advance.
    fn ones(buf: &mut [u8]) -> bool {
        buf.fill(0x11);
        true
    }

    fn os_random(buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }

    /// The decoded value of `name` in an `Authorization: OAuth` value.
    fn oauth_param(authorization: &str, name: &str) -> String {
        let rest = authorization.strip_prefix("OAuth ").unwrap();
        let (_, value) = rest
            .split(", ")
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| *n == name)
            .unwrap();
        form_decode(value.trim_matches('"')).unwrap()
    }

    /// Whether the request's signature verifies, with the crate's verifier, over `base`.
    fn verifies(oauth: &AtlassianOauth1, signed: &Signed, base: &str) -> bool {
        let signature = base64::engine::general_purpose::STANDARD
            .decode(oauth_param(&signed.authorization, "oauth_signature"))
            .unwrap();
        let signature = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).unwrap();
        oauth
            .key
            .verifying_key()
            .verify(base.as_bytes(), &signature)
            .is_ok()
    }

    #[test]
    fn rfc5849_base_string_example_is_reproduced() {
        // RFC 5849 section 3.4.1.1 (HMAC credentials: the base string, not its signature).
        let (mut params, _) = query_parameters("b5=%3D%253D&a3=a&c%40=&a2=r%20b").unwrap();
        params.extend(form_parameters(b"c2&a3=2+q").unwrap());
        for (n, v) in [
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
        ] {
            params.push((n.to_string(), v.to_string()));
        }
        assert_eq!(
            base_string("POST", "http://example.com", "/request", &params),
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
             %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
             key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
             ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
             9d7dh3k39sjv7"
        );
    }

    #[test]
    fn wiki_rsa_sha1_vector_is_reproduced_through_the_blinded_signer() {
        let oauth = AtlassianOauth1::new("dpf43f3p2l4k3l03", "http://photos.example.net", WIKI_PEM)
            .unwrap();
        let (mut params, _) = query_parameters("file=vacaction.jpg&size=original").unwrap();
        for (n, v) in [
            ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
            ("oauth_nonce", "13917289812797014437"),
            ("oauth_signature_method", "RSA-SHA1"),
            ("oauth_timestamp", "1196666512"),
            ("oauth_version", "1.0"),
        ] {
            params.push((n.to_string(), v.to_string()));
        }
        let base = base_string("GET", "http://photos.example.net", "/photos", &params);
        assert_eq!(
            base,
            "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacaction.jpg%26\
             oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3D13917289812797014437\
             %26oauth_signature_method%3DRSA-SHA1%26oauth_timestamp%3D1196666512%26\
             oauth_version%3D1.0%26size%3Doriginal"
        );
        let mut blinding_calls = 0;
        let mut counting = |buf: &mut [u8]| {
            blinding_calls += 1;
            os_random(buf)
        };
        assert_eq!(
            oauth.rsa_sha1(&base, &mut counting).unwrap(),
            "jvTp/wX1TYtByB1m+Pbyo0lnCOLIsyGCH7wke8AUs3BpnwZJtAuEJkvQL2/9n4s5wUmUl4aC\
             I4BwpraNx4RtEXMe5qg5T1LVTGliMRpKasKsW//e+RinhejgCuzoH26dyF8iY2ZZ/5D1ilge\
             ijhV/vBka5twt399mXwaYdCwFYE="
        );
        assert!(
            blinding_calls > 0,
            "the private-key operation was not blinded"
        );
    }

    #[test]
    fn signed_request_carries_the_user_and_verifies_over_the_rfc5849_base_string() {
        let oauth = consumer("https://jira.example.com");
        let path =
            "/jira/rest/api/2/search?jql=project%20%3D%20X+AND+a~%22b%22&maxResults=5&fields";
        let signed = oauth
            .sign("GET", path, None, "alice", NOW, &mut ones)
            .unwrap();
        assert_eq!(signed.path, format!("{path}&xoauth_requestor_id=alice"));
        for (name, value) in [
            ("oauth_consumer_key", "jira-proxy"),
            ("oauth_token", ""),
            ("oauth_signature_method", "RSA-SHA1"),
            ("oauth_timestamp", "1764777600"),
            ("oauth_nonce", "11111111111111111111111111111111"),
            ("oauth_version", "1.0"),
        ] {
            assert_eq!(oauth_param(&signed.authorization, name), value, "{name}");
        }
        // Computed independently with Python oauthlib 4.0.1 (`signature_base_string`).
        let base = "GET&https%3A%2F%2Fjira.example.com%2Fjira%2Frest%2Fapi%2F2%2Fsearch&fields\
            %3D%26jql%3Dproject%2520%253D%2520X%2520AND%2520a~%2522b%2522%26maxResults%3D5%26\
            oauth_consumer_key%3Djira-proxy%26oauth_nonce%3D11111111111111111111111111111111%26\
            oauth_signature_method%3DRSA-SHA1%26oauth_timestamp%3D1764777600%26oauth_token%3D\
            %26oauth_version%3D1.0%26xoauth_requestor_id%3Dalice";
        assert!(verifies(&oauth, &signed, base));
        assert!(!verifies(&oauth, &signed, &base.replace("alice", "admin")));
    }

    #[test]
    fn username_with_spaces_non_ascii_and_delimiters_is_encoded() {
        let oauth = consumer("https://jira.example.com");
        let signed = oauth
            .sign(
                "GET",
                "/rest/api/2/myself",
                None,
                "José a&b=c+d",
                NOW,
                &mut ones,
            )
            .unwrap();
        assert_eq!(
            signed.path,
            "/rest/api/2/myself?xoauth_requestor_id=Jos%C3%A9%20a%26b%3Dc%2Bd"
        );
        let base = "GET&https%3A%2F%2Fjira.example.com%2Frest%2Fapi%2F2%2Fmyself&oauth_consumer_\
            key%3Djira-proxy%26oauth_nonce%3D11111111111111111111111111111111%26oauth_signature\
            _method%3DRSA-SHA1%26oauth_timestamp%3D1764777600%26oauth_token%3D%26oauth_version\
            %3D1.0%26xoauth_requestor_id%3DJos%25C3%25A9%2520a%2526b%253Dc%252Bd";
        assert!(verifies(&oauth, &signed, base));
    }

    #[test]
    fn form_body_of_a_post_is_signed() {
        let oauth = consumer("http://jira.example.com:8080");
        let body = b"c2&a3=2+q&name=J%C3%B6rg";
        let signed = oauth
            .sign("POST", "/rest/x?a=1", Some(body), "bob", NOW, &mut ones)
            .unwrap();
        assert_eq!(signed.path, "/rest/x?a=1&xoauth_requestor_id=bob");
        let base = "POST&http%3A%2F%2Fjira.example.com%3A8080%2Frest%2Fx&a%3D1%26a3%3D2%2520q%26\
            c2%3D%26name%3DJ%25C3%25B6rg%26oauth_consumer_key%3Djira-proxy%26oauth_nonce%3D1111\
            1111111111111111111111111111%26oauth_signature_method%3DRSA-SHA1%26oauth_timestamp%3D\
            1764777600%26oauth_token%3D%26oauth_version%3D1.0%26xoauth_requestor_id%3Dbob";
        assert!(verifies(&oauth, &signed, base));
        let unsigned_body = oauth
            .sign("POST", "/rest/x?a=1", None, "bob", NOW, &mut ones)
            .unwrap();
        assert!(!verifies(&oauth, &unsigned_body, base));
    }

    #[test]
    fn only_a_form_urlencoded_post_has_its_body_signed() {
        let form = Some("application/x-www-form-urlencoded");
        assert!(AtlassianOauth1::signs_body("POST", form));
        assert!(AtlassianOauth1::signs_body(
            "POST",
            Some("Application/X-WWW-Form-URLencoded ; charset=UTF-8")
        ));
        assert!(!AtlassianOauth1::signs_body("PUT", form));
        assert!(!AtlassianOauth1::signs_body("GET", form));
        assert!(!AtlassianOauth1::signs_body(
            "POST",
            Some("application/json")
        ));
        assert!(!AtlassianOauth1::signs_body(
            "POST",
            Some("application/x-www-form-urlencodedx")
        ));
        assert!(!AtlassianOauth1::signs_body("POST", None));
    }

    #[test]
    fn client_reserved_query_parameters_are_stripped_and_the_rest_keeps_its_bytes() {
        let oauth = consumer("https://jira.example.com");
        let path = "/rest/api/2/issue/X-1?xoauth_requestor_id=admin&expand=a%2cb+c\
                    &oauth_signature=forged&xoauth%5Frequestor%5Fid=admin&user_id=admin\
                    &xoauth_requestor_id=root&OAUTH_TOKEN=t&flag&oauth%5ftoken=x&=ignored";
        let signed = oauth
            .sign("GET", path, None, "alice", NOW, &mut ones)
            .unwrap();
        assert_eq!(
            signed.path,
            "/rest/api/2/issue/X-1?expand=a%2cb+c&flag&=ignored&xoauth_requestor_id=alice"
        );
        let base = "GET&https%3A%2F%2Fjira.example.com%2Frest%2Fapi%2F2%2Fissue%2FX-1&expand%3D\
            a%252Cb%2520c%26flag%3D%26oauth_consumer_key%3Djira-proxy%26oauth_nonce%3D111111111\
            11111111111111111111111%26oauth_signature_method%3DRSA-SHA1%26oauth_timestamp%3D176\
            4777600%26oauth_token%3D%26oauth_version%3D1.0%26xoauth_requestor_id%3Dalice";
        assert!(verifies(&oauth, &signed, base));
    }

    #[test]
    fn reserved_parameter_in_a_form_body_is_a_bad_request() {
        let oauth = consumer("https://jira.example.com");
        for body in [
            &b"a=1&xoauth_requestor_id=admin"[..],
            b"user_id=admin",
            b"oauth_token=x",
            b"xoauth%5Frequestor%5Fid=admin",
        ] {
            let err = oauth
                .sign("POST", "/rest/x", Some(body), "alice", NOW, &mut ones)
                .unwrap_err();
            assert_eq!(err, AuthError::ReservedFormParameter);
            assert_eq!(err.class(), ErrorClass::BadRequest);
        }
    }

    #[test]
    fn malformed_escapes_and_non_utf8_parameters_are_a_bad_request() {
        let oauth = consumer("https://jira.example.com");
        for (path, body) in [
            ("/rest/x?a=%zz", None),
            ("/rest/x?a=%4", None),
            ("/rest/x?a=%C3", None),
            ("/rest/x", Some(&b"a=%G1"[..])),
            ("/rest/x", Some(&b"a=\xff"[..])),
        ] {
            let err = oauth
                .sign("POST", path, body, "alice", NOW, &mut ones)
                .unwrap_err();
            assert_eq!(err, AuthError::MalformedParameters, "{path}");
            assert_eq!(err.class(), ErrorClass::BadRequest);
        }
    }

    #[test]
    fn no_randomness_is_an_internal_error() {
        let oauth = consumer("https://jira.example.com");
        let err = oauth
            .sign("GET", "/rest/x", None, "alice", NOW, &mut |_| false)
            .unwrap_err();
        assert_eq!(err, AuthError::NoRandomness);
        assert_eq!(err.class(), ErrorClass::Internal);
        // Randomness for the nonce, none for the blinding: still refused, never unblinded.
        let mut calls = 0;
        let err = oauth
            .sign("GET", "/rest/x", None, "alice", NOW, &mut |buf| {
                calls += 1;
                calls == 1 && ones(buf)
            })
            .unwrap_err();
        assert_eq!(err, AuthError::NoRandomness);
    }

    #[test]
    fn every_request_gets_a_new_nonce() {
        let oauth = consumer("https://jira.example.com");
        let a = oauth.sign("GET", "/rest/x", None, "alice", NOW, &mut os_random);
        let b = oauth.sign("GET", "/rest/x", None, "alice", NOW, &mut os_random);
        let nonce = |s: Signed| oauth_param(&s.authorization, "oauth_nonce");
        let (a, b) = (nonce(a.unwrap()), nonce(b.unwrap()));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn path_that_is_not_absolute_is_refused() {
        let oauth = consumer("https://jira.example.com");
        let err = oauth.sign("GET", "*", None, "alice", NOW, &mut ones);
        assert_eq!(err.unwrap_err(), AuthError::MalformedPath);
    }

    #[test]
    fn pkcs1_key_is_read_like_its_pkcs8_form() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let pkcs1 = consumer("https://j")
            .key
            .as_ref()
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::CRLF)
            .unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let from_pkcs1 = AtlassianOauth1::new("jira-proxy", "https://j", &pkcs1).unwrap();
        assert_eq!(from_pkcs1.key_bits(), 2048);
        let a = consumer("https://j").rsa_sha1("x", &mut ones).unwrap();
        assert_eq!(from_pkcs1.rsa_sha1("x", &mut ones).unwrap(), a);
    }

    #[test]
    fn pem_on_one_line_is_read() {
        let one_line = CONSUMER_PEM.replace('\n', " ");
        let oauth = AtlassianOauth1::new("jira-proxy", "https://j", &one_line).unwrap();
        assert_eq!(oauth.key_bits(), 2048);
    }

    #[test]
    fn encrypted_or_foreign_pem_is_refused_without_quoting_it() {
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w\n\
                         -----END ENCRYPTED PRIVATE KEY-----\n";
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                      DEK-Info: AES-128-CBC,00\n\nMIIE\n-----END RSA PRIVATE KEY-----\n";
        for pem in [encrypted, legacy] {
            let err = AtlassianOauth1::new("k", "https://j", pem).unwrap_err();
            assert!(err.contains("encrypted keys are not supported"), "{err}");
        }
        let ec = include_str!("../tests/fixtures/keys/ec-p256-signing.pem");
        let truncated = &CONSUMER_PEM[..200];
        // No label: everything up to the END line would be read as one.
        let no_label = format!("-----BEGIN {}", &CONSUMER_PEM[28..]);
        let certificate = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----";
        for (pem, says) in [
            (ec, "not a valid RSA private key (PKCS#8"),
            (truncated, "no matching END line"),
            (&no_label, "not a PEM private key"),
            ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "not a PEM private key"),
            ("", "not a PEM private key"),
            (certificate, "a PEM \"CERTIFICATE\", not a private key"),
        ] {
            let err = AtlassianOauth1::new("k", "https://j", pem).unwrap_err();
            assert!(err.contains(says) && !err.contains("MII"), "{err}");
        }
    }

    #[test]
    fn debug_shows_consumer_and_origin_but_not_the_key() {
        assert_eq!(
            format!("{:?}", consumer("https://jira.example.com")),
            r#"AtlassianOauth1 { consumer_key: "jira-proxy", origin: "https://jira.example.com", .. }"#
        );
    }
}
