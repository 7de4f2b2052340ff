//! Micro-benchmark: µs per RSA verify with the fixture key, `sig::rsa` against jwt-simple.
//!
//! Native: `cargo run --release --example micro_rsa`. In V8 (the engine Envoy runs the filter
//! in): `cargo build --release --example micro_rsa --target wasm32-wasip1`, then
//! `node bench/micro/run.mjs target/wasm32-wasip1/release/examples/micro_rsa.wasm [ITERATIONS]`.

use std::error::Error;
use std::hint::black_box;
use std::time::Instant;

use atlassian_rest_auth::sig::rsa::RsaKey;
use atlassian_rest_auth::sig::Hash;
use jwt_simple::prelude::*;

const SIGNING_PEM: &str = include_str!("../tests/fixtures/keys/rsa-2048-signing.pem");

/// µs per call of `f` over `iterations` calls, after a tenth as many unmeasured warm-up calls.
fn time_us(iterations: u32, mut f: impl FnMut() -> bool) -> Result<f64, Box<dyn Error>> {
    for _ in 0..iterations / 10 + 1 {
        if !black_box(f()) {
            return Err("verification failed".into());
        }
    }
    let start = Instant::now();
    for _ in 0..iterations {
        if !black_box(f()) {
            return Err("verification failed".into());
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations))
}

/// The signing input and the decoded signature of a compact JWS.
fn split_token(token: &str) -> Result<(Vec<u8>, Vec<u8>), Box<dyn Error>> {
    let (input, sig) = token.rsplit_once('.').ok_or("not a compact JWS")?;
    Ok((
        input.as_bytes().to_vec(),
        Base64UrlSafeNoPadding::decode_to_vec(sig, None)?,
    ))
}

fn main() -> Result<(), Box<dyn Error>> {
    let iterations: u32 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 300,
    };
    let rs256 = RS256KeyPair::from_pem(SIGNING_PEM)?;
    let ps256 = PS256KeyPair::from_pem(SIGNING_PEM)?;
    let rs256_public = rs256.public_key();
    let ps256_public = ps256.public_key();
    let components = rs256_public.to_components();

    let start = Instant::now();
    let key = RsaKey::new(&components.n, &components.e).ok_or("fixture key refused")?;
    let setup_us = start.elapsed().as_secs_f64() * 1e6;

    let claims = || Claims::create(Duration::from_hours(1));
    let rs_token = rs256.sign(claims())?;
    let ps_token = ps256.sign(claims())?;
    let (rs_input, rs_sig) = split_token(&rs_token)?;
    let (ps_input, ps_sig) = split_token(&ps_token)?;

    let jwt_rs256 = time_us(iterations, || {
        rs256_public
            .verify_token::<NoCustomClaims>(black_box(&rs_token), None)
            .is_ok()
    })?;
    let jwt_ps256 = time_us(iterations, || {
        ps256_public
            .verify_token::<NoCustomClaims>(black_box(&ps_token), None)
            .is_ok()
    })?;
    let ours_rs256 = time_us(iterations, || {
        key.verify_pkcs1v15(Hash::Sha256, black_box(&rs_input), black_box(&rs_sig))
    })?;
    let ours_ps256 = time_us(iterations, || {
        key.verify_pss(Hash::Sha256, black_box(&ps_input), black_box(&ps_sig))
    })?;

    println!("micro_rsa: 2048-bit fixture key, {iterations} iterations each");
    println!("  RsaKey::new (once per JWKS key)       {setup_us:9.1} µs");
    println!("  jwt-simple RS256 verify_token         {jwt_rs256:9.1} µs");
    println!("  jwt-simple PS256 verify_token         {jwt_ps256:9.1} µs");
    println!("  sig::rsa verify_pkcs1v15 (SHA-256)    {ours_rs256:9.1} µs");
    println!("  sig::rsa verify_pss (SHA-256)         {ours_ps256:9.1} µs");
    Ok(())
}
