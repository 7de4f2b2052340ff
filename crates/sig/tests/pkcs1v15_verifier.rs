//! The external PKCS#1 v1.5 verifier hook (issue 15): its own test binary, because the hook is
//! process-wide and every other test must run our arithmetic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atlassian_rest_auth_sig::rsa::{set_pkcs1v15_verifier, RsaKey};
use atlassian_rest_auth_sig::Hash;
use jwt_simple::prelude::*;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

const SIGNING_PEM: &str = include_str!("../../../tests/fixtures/keys/rsa-2048-signing.pem");

/// What the fake verifier answers: 0 `None`, 1 `Some(false)`, 2 `Some(true)`.
static ANSWER: AtomicU8 = AtomicU8::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
/// The tests share the hook's state: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn fake(spki: &[u8], hash: Hash, _message: &[u8], signature: &[u8]) -> Option<bool> {
    assert_eq!(hash, Hash::Sha256);
    assert_eq!(signature.len(), 256);
    assert_eq!(spki.first(), Some(&0x30));
    CALLS.fetch_add(1, Ordering::SeqCst);
    match ANSWER.load(Ordering::SeqCst) {
        0 => None,
        1 => Some(false),
        _ => Some(true),
    }
}

fn setup(answer: u8) -> (std::sync::MutexGuard<'static, ()>, RsaKey, Vec<u8>, Vec<u8>) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    set_pkcs1v15_verifier(fake);
    ANSWER.store(answer, Ordering::SeqCst);
    CALLS.store(0, Ordering::SeqCst);
    let pair = RS256KeyPair::from_pem(SIGNING_PEM).unwrap();
    let c = pair.public_key().to_components();
    let token = pair.sign(Claims::create(Duration::from_hours(1))).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = Base64UrlSafeNoPadding::decode_to_vec(sig, None).unwrap();
    let key = RsaKey::new(&c.n, &c.e).unwrap();
    (guard, key, input.as_bytes().to_vec(), sig)
}

#[test]
fn the_verifier_is_set_once() {
    let _state = setup(0);
    assert!(!set_pkcs1v15_verifier(fake));
}

#[test]
fn a_false_answer_is_final() {
    let (_g, key, input, sig) = setup(1);
    assert!(key.verify_pkcs1v15_own(Hash::Sha256, &input, &sig));
    assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
}

#[test]
fn a_true_answer_is_final() {
    let (_g, key, input, mut sig) = setup(2);
    assert!(key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
    sig[100] ^= 1;
    assert!(key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
}

#[test]
fn no_answer_falls_back_to_our_arithmetic() {
    let (_g, key, input, mut sig) = setup(0);
    assert!(key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
    sig[100] ^= 1;
    assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
}

#[test]
fn out_of_range_signatures_never_reach_the_verifier() {
    let (_g, key, input, sig) = setup(2);
    assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &sig[1..]));
    let mut longer = vec![0u8];
    longer.extend_from_slice(&sig);
    assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &longer));
    // s = n - 1 + 1 = n: not below the modulus.
    let n = RS256KeyPair::from_pem(SIGNING_PEM)
        .unwrap()
        .public_key()
        .to_components()
        .n;
    assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &n));
    assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &[0xff; 256]));
    // PSS is always ours.
    assert!(!key.verify_pss(Hash::Sha256, &input, &sig));
    assert_eq!(CALLS.load(Ordering::SeqCst), 0);
}
