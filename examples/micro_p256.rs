//! Micro-benchmark of ES256 verification: jwt-simple's `verify_token` against `sig::p256`.
//! Run natively with `cargo run --release --example micro_p256`, or in V8 with
//! `node bench/micro/run.mjs <target>/wasm32-wasip1/release/examples/micro_p256.wasm [ITERATIONS]`.

// A developer tool, not code on a request path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use atlassian_rest_auth::sig::p256::P256Key;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;

const SIGNING_PEM: &str = include_str!("../tests/fixtures/keys/ec-p256-signing.pem");

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let pair = ES256KeyPair::from_pem(SIGNING_PEM).unwrap();
    let public = pair.public_key();
    let token = pair
        .sign(Claims::create(Duration::from_hours(1)).with_subject("alice"))
        .unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let sec1 = public.public_key().to_bytes_uncompressed();

    // One-off costs: the key's table is built on the first verify, G's table once per process.
    let start = Instant::now();
    let key = P256Key::from_sec1(&sec1).unwrap();
    let parse = start.elapsed();
    let start = Instant::now();
    assert!(key.verify(input.as_bytes(), &signature));
    let first = start.elapsed();
    let other = P256Key::from_sec1(&sec1).unwrap();
    let start = Instant::now();
    other.precompute();
    let key_table = start.elapsed();
    println!("from_sec1 (on-curve check): {:8.1} us", micros(parse));
    println!(
        "first verify (G table + key table + verify): {:8.1} us",
        micros(first)
    );
    println!("key table alone: {:8.1} us", micros(key_table));

    // Warm up both, then time.
    for _ in 0..20 {
        assert!(public.verify_token::<NoCustomClaims>(&token, None).is_ok());
        assert!(key.verify(input.as_bytes(), &signature));
    }
    // Batches of 20, interleaved so that load on a shared machine hits both alike; the minimum
    // batch is the least disturbed, the median the typical one.
    let batches = (iterations / 20).max(1);
    let (mut theirs, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..20 {
            black_box(
                public
                    .verify_token::<NoCustomClaims>(black_box(&token), None)
                    .is_ok(),
            );
        }
        theirs.push(micros(start.elapsed()) / 20.0);
        let start = Instant::now();
        for _ in 0..20 {
            black_box(key.verify(black_box(input.as_bytes()), black_box(&signature)));
        }
        ours.push(micros(start.elapsed()) / 20.0);
    }
    let (theirs_min, theirs_median) = min_median(&mut theirs);
    let (ours_min, ours_median) = min_median(&mut ours);
    let n = batches * 20;
    println!("jwt-simple ES256PublicKey::verify_token: min {theirs_min:7.1} median {theirs_median:7.1} us/verify ({n} iterations)");
    println!("sig::p256 P256Key::verify:               min {ours_min:7.1} median {ours_median:7.1} us/verify ({n} iterations)");
    let ours = ours_min;
    let g_table = micros(first) - micros(key_table) - ours;
    println!("G table (first verify - key table - verify, approx.): {g_table:8.1} us");
    primitives(iterations);
}

/// The building blocks' costs, to see where a verify's time goes.
fn primitives(iterations: u32) {
    use p256::elliptic_curve::ff::PrimeField;
    use p256::elliptic_curve::hazmat::FieldArithmetic;
    use sha2::Digest;
    type Fe = <p256::NistP256 as FieldArithmetic>::FieldElement;
    let rounds = iterations * 100;
    let mut x = Fe::from_u64(0x1234_5678_9abc_def0);
    let y = Fe::from_u64(0x0fed_cba9_8765_4321).square();
    let start = Instant::now();
    for _ in 0..rounds {
        x = black_box(x.multiply(&y));
    }
    println!(
        "p256 crate field multiply (verify uses its own field): {:8.3} us",
        micros(start.elapsed()) / f64::from(rounds)
    );
    let start = Instant::now();
    for _ in 0..rounds {
        x = black_box(x.add(&y));
    }
    println!(
        "p256 crate field add:      {:8.3} us",
        micros(start.elapsed()) / f64::from(rounds)
    );
    let mut s = p256::Scalar::from(0x1234_5678_9abc_def0u64).square();
    let start = Instant::now();
    for _ in 0..iterations {
        s = black_box(s.invert_vartime().unwrap());
    }
    println!(
        "scalar invert_vartime: {:8.1} us",
        micros(start.elapsed()) / f64::from(iterations)
    );
    let t = s.square();
    let start = Instant::now();
    for _ in 0..rounds {
        s = black_box(s * t);
    }
    println!(
        "scalar multiply: {:8.3} us",
        micros(start.elapsed()) / f64::from(rounds)
    );
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(sha2::Sha256::digest(black_box([7u8; 300])));
    }
    println!(
        "sha256 of 300 bytes: {:8.1} us",
        micros(start.elapsed()) / f64::from(iterations)
    );
    black_box(x.to_repr());
}

fn min_median(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[0], samples[samples.len() / 2])
}

fn micros(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
