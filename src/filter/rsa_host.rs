//! RSASSA-PKCS1-v1_5 by Envoy's BoringSSL (issue 15): the `sig` crate's external verifier,
//! calling Envoy's foreign function `verify_signature` (`crate::host_verify` encodes it).
//! Where the host cannot answer, `sig` verifies with its own arithmetic.

use crate::host_verify::{decode_result, encode_arguments, FUNCTION};
use crate::sig::Hash;
use log::{info, warn};
use proxy_wasm::hostcalls;
use std::sync::atomic::{AtomicU8, Ordering};

/// Not called yet.
const UNTRIED: u8 = 0;
/// Answered once: used from then on.
const HOST: u8 = 1;
/// Failed on the first call: never called again.
const OWN: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNTRIED);

/// Makes `sig` ask the host first (once per VM; later calls do nothing).
pub(super) fn register() {
    crate::sig::rsa::set_pkcs1v15_verifier(verify);
}

/// Never logs the key, the signature or the message.
fn verify(spki: &[u8], hash: Hash, message: &[u8], signature: &[u8]) -> Option<bool> {
    let state = STATE.load(Ordering::Relaxed);
    if state == OWN {
        return None;
    }
    let arguments = encode_arguments(spki, hash, message, signature);
    let answer = match hostcalls::call_foreign_function(FUNCTION, Some(&arguments)) {
        Ok(Some(result)) => decode_result(&result).ok_or("a malformed result".to_owned()),
        Ok(None) => Err("no result".to_owned()),
        Err(status) => Err(format!("{status:?}")),
    };
    match (state, answer) {
        (_, Ok(answer)) => {
            if state == UNTRIED {
                STATE.store(HOST, Ordering::Relaxed);
                info!("atlassian-rest-auth: RSA PKCS#1 v1.5 signatures (RS256/RS384/RS512) are verified by Envoy (foreign function {FUNCTION})");
            }
            Some(answer)
        }
        (UNTRIED, Err(why)) => {
            STATE.store(OWN, Ordering::Relaxed);
            info!("atlassian-rest-auth: RSA PKCS#1 v1.5 signatures (RS256/RS384/RS512) are verified by the filter's own arithmetic (Envoy's foreign function {FUNCTION}: {why})");
            None
        }
        (_, Err(why)) => {
            warn!("atlassian-rest-auth: Envoy's {FUNCTION} failed ({why}): this signature is verified by the filter's own arithmetic");
            None
        }
    }
}
