//! `sig::p256::P256Key` against Wycheproof's ECDSA P-256 SHA-256 P1363 vectors, RFC 7515's ES256
//! example and tokens signed by jwt-simple.

// Test helpers outside #[test] functions: a broken fixture should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atlassian_rest_auth::sig::p256::P256Key;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use wycheproof::ecdsa::{TestName, TestSet};
use wycheproof::TestResult;

const SIGNING_PEM: &str = include_str!("fixtures/keys/ec-p256-signing.pem");

/// Every test in `ecdsa_secp256r1_sha256_p1363_test.json`: valid ones verify, invalid ones fail.
/// P1363 is the raw `r || s` form that JOSE uses, so wrong-length signatures are invalid.
/// `acceptable` results (none in wycheproof 0.7.0's copy of this file) must fail: every flag this
/// file uses is either a plain valid edge case or a real defect, and a JWT verifier has no reason
/// to accept a signature Wycheproof calls merely tolerable.
#[test]
fn wycheproof_p256_sha256_p1363_vectors_agree() {
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let (mut valid, mut invalid, mut acceptable) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for group in &set.test_groups {
        let key = P256Key::from_sec1(&group.key.key);
        for test in &group.tests {
            let accepted = key.as_ref().is_some_and(|k| k.verify(&test.msg, &test.sig));
            let expected = match test.result {
                TestResult::Valid => {
                    valid += 1;
                    true
                }
                TestResult::Invalid => {
                    invalid += 1;
                    false
                }
                TestResult::Acceptable => {
                    acceptable += 1;
                    false
                }
            };
            if accepted != expected {
                failures.push(format!(
                    "tcId {} ({:?}, {:?}, {}): got {}",
                    test.tc_id, test.result, test.flags, test.comment, accepted
                ));
            }
        }
    }
    let total = valid + invalid + acceptable;
    println!("wycheproof p256 p1363: {total} tests ({valid} valid, {invalid} invalid, {acceptable} acceptable)");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(total, set.number_of_tests);
    assert_eq!(
        total, 262,
        "the vector file changed: recheck the acceptable policy"
    );
    assert!(valid >= 150 && invalid >= 80);
}

/// Every key in the file is a valid point, so none may be refused.
#[test]
fn wycheproof_p256_keys_all_parse() {
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    for group in &set.test_groups {
        assert!(
            P256Key::from_sec1(&group.key.key).is_some(),
            "{:?}",
            group.key.key
        );
    }
}

/// The DER file's valid signatures, re-encoded as `r || s`, verify too: more keys and messages.
#[test]
fn wycheproof_p256_sha256_der_valid_vectors_verify() {
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256).unwrap();
    let mut checked = 0usize;
    for group in &set.test_groups {
        let key = P256Key::from_sec1(&group.key.key).unwrap();
        for test in group.tests.iter().filter(|t| t.result == TestResult::Valid) {
            let raw = der_to_raw(&test.sig).unwrap_or_else(|| panic!("tcId {}", test.tc_id));
            assert!(
                key.verify(&test.msg, &raw),
                "tcId {} ({})",
                test.tc_id,
                test.comment
            );
            checked += 1;
        }
    }
    println!("wycheproof p256 der: {checked} valid signatures verified as r || s");
    assert!(checked >= 150, "only {checked} valid DER tests");
}

/// `SEQUENCE { INTEGER r, INTEGER s }` (short-form lengths) to 64 bytes `r || s`.
fn der_to_raw(der: &[u8]) -> Option<[u8; 64]> {
    let (&tag, rest) = der.split_first()?;
    let (&len, body) = rest.split_first()?;
    if tag != 0x30 || usize::from(len) != body.len() {
        return None;
    }
    let mut out = [0u8; 64];
    let mut body = body;
    for half in out.chunks_mut(32) {
        let (&tag, rest) = body.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if tag != 0x02 || rest.len() < len {
            return None;
        }
        let (int, next) = rest.split_at(len);
        let int = &int[int.iter().take_while(|&&b| b == 0).count()..];
        if int.len() > 32 {
            return None;
        }
        half[32 - int.len()..].copy_from_slice(int);
        body = next;
    }
    body.is_empty().then_some(out)
}

/// RFC 7515 appendix A.3 (ES256): the JWK of A.3.1 and the JWS Compact Serialization of A.3.1.
const RFC7515_A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const RFC7515_A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const RFC7515_A3_JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

fn rfc7515_key() -> P256Key {
    let mut sec1 = vec![0x04];
    sec1.extend(URL_SAFE_NO_PAD.decode(RFC7515_A3_X).unwrap());
    sec1.extend(URL_SAFE_NO_PAD.decode(RFC7515_A3_Y).unwrap());
    P256Key::from_sec1(&sec1).unwrap()
}

/// The JWS signing input and the decoded signature of a compact JWS.
fn split(token: &str) -> (String, Vec<u8>) {
    let (input, signature) = token.rsplit_once('.').unwrap();
    (
        input.to_string(),
        URL_SAFE_NO_PAD.decode(signature).unwrap(),
    )
}

#[test]
fn rfc7515_a3_example_verifies() {
    let (input, signature) = split(RFC7515_A3_JWS);
    assert_eq!(signature.len(), 64);
    assert!(rfc7515_key().verify(input.as_bytes(), &signature));
}

#[test]
fn rfc7515_a3_example_fails_when_altered() {
    let key = rfc7515_key();
    let (input, signature) = split(RFC7515_A3_JWS);
    let mut bad = signature.clone();
    bad[63] ^= 1;
    assert!(!key.verify(input.as_bytes(), &bad));
    let mut altered = input.into_bytes();
    altered[5] ^= 1;
    assert!(!key.verify(&altered, &signature));
}

fn fixture_keys() -> (ES256KeyPair, P256Key) {
    let pair = ES256KeyPair::from_pem(SIGNING_PEM).unwrap();
    let sec1 = pair.public_key().public_key().to_bytes_uncompressed();
    (pair, P256Key::from_sec1(&sec1).unwrap())
}

#[test]
fn jwt_simple_token_verifies() {
    let (pair, key) = fixture_keys();
    let token = pair
        .sign(Claims::create(Duration::from_hours(1)).with_subject("alice"))
        .unwrap();
    let (input, signature) = split(&token);
    assert!(key.verify(input.as_bytes(), &signature));
}

#[test]
fn jwt_simple_token_fails_after_a_flipped_bit() {
    let (pair, key) = fixture_keys();
    let token = pair
        .sign(Claims::create(Duration::from_hours(1)).with_subject("alice"))
        .unwrap();
    let (input, signature) = split(&token);
    for bit in [0usize, 100, 255, 256, 400, 511] {
        let mut bad = signature.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(!key.verify(input.as_bytes(), &bad), "signature bit {bit}");
    }
    let bytes = input.as_bytes();
    for bit in [0usize, 77, bytes.len() * 8 - 1] {
        let mut bad = bytes.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(!key.verify(&bad, &signature), "message bit {bit}");
    }
}

#[test]
fn jwt_simple_random_messages_agree() {
    let (pair, key) = fixture_keys();
    let other = ES256KeyPair::generate();
    let other_key =
        P256Key::from_sec1(&other.public_key().public_key().to_bytes_uncompressed()).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut checked = 0;
    for i in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let subject = format!("user-{state:016x}-{}", "x".repeat(i % 40));
        let token = pair
            .sign(Claims::create(Duration::from_hours(1)).with_subject(subject))
            .unwrap();
        let (input, signature) = split(&token);
        assert!(key.verify(input.as_bytes(), &signature), "token {i}");
        assert!(
            !other_key.verify(input.as_bytes(), &signature),
            "token {i} under another key"
        );
        // jwt-simple's own verifier agrees.
        assert!(pair
            .public_key()
            .verify_token::<NoCustomClaims>(&token, None)
            .is_ok());
        // A signature of another message does not carry over.
        let mut tampered = input.clone().into_bytes();
        tampered.push(b'.');
        assert!(!key.verify(&tampered, &signature));
        checked += 1;
    }
    assert_eq!(checked, 300);
}

#[test]
fn clones_share_one_table_and_compare_equal() {
    let (_, key) = fixture_keys();
    let clone = key.clone();
    assert_eq!(key, clone);
    assert_ne!(key, rfc7515_key());
    let (input, signature) = split(RFC7515_A3_JWS);
    assert!(!key.verify(input.as_bytes(), &signature));
    assert!(format!("{key:?}").starts_with("P256Key("));
}
