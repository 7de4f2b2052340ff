//! RSA PKCS#1 v1.5 and PSS verification (RFC 8017) with e = 65537.
//!
//! wasm32 has no 64x64->128 multiply, so numbers are held in limbs of w = 26 or 28 bits, each in
//! a `u64`: a product of two limbs takes 2w bits, and a column can absorb the sum of 2 * limbs
//! such products before it overflows, so the Montgomery inner loop is two multiply-adds per
//! limb with no carry handling (carries are settled once per row). `s^65537 mod n` is one
//! conversion, 16 Montgomery squarings and one Montgomery multiply. Keys and signatures are
//! public, so nothing here needs constant time.

use sha2::{Digest, Sha256, Sha384, Sha512};
use std::sync::OnceLock;

use super::Hash;

/// A verifier of RSASSA-PKCS1-v1_5 outside this crate (issue 15: Envoy's BoringSSL through a
/// proxy-wasm foreign function): `spki` is the key's DER SubjectPublicKeyInfo. `Some(answer)` is
/// final; `None` means it cannot answer, and our own arithmetic decides.
pub type Pkcs1v15Verifier =
    fn(spki: &[u8], hash: Hash, message: &[u8], signature: &[u8]) -> Option<bool>;

static PKCS1V15_VERIFIER: OnceLock<Pkcs1v15Verifier> = OnceLock::new();

/// Sets the process-wide PKCS#1 v1.5 verifier, once: `false` if one was already set. Natively
/// none is set, so every native caller runs our arithmetic.
pub fn set_pkcs1v15_verifier(verifier: Pkcs1v15Verifier) -> bool {
    PKCS1V15_VERIFIER.set(verifier).is_ok()
}

/// The only public exponent accepted, big-endian without leading zeros.
const E_65537: [u8; 3] = [0x01, 0x00, 0x01];
const MIN_MODULUS_BITS: usize = 2048;
const MAX_MODULUS_BITS: usize = 4096;

/// Limb width for moduli up to `WIDE_LIMBS_MAX_BITS` bits: at most 100 limbs, so a column sum
/// stays below 2 * 100 * 2^56 + 2^36 < 2^64.
const WIDE_LIMB_BITS: u32 = 28;
const WIDE_LIMBS_MAX_BITS: usize = 100 * 28 - 1;
/// Limb width for larger moduli: at most 158 limbs for 4096 bits, 2 * 158 * 2^52 + 2^38 < 2^64.
const NARROW_LIMB_BITS: u32 = 26;

// RFC 8017 section 9.2 note 1: DER of DigestInfo up to the hash value.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA384_DIGEST_INFO: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const SHA512_DIGEST_INFO: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// A public key with its Montgomery constants, computed once per JWKS key.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaKey {
    /// The modulus in little-endian limbs of `limb_bits` bits; limbs * limb_bits > modBits, so
    /// R = 2^(limbs * limb_bits) > 2n.
    n: Vec<u64>,
    /// The limb width w.
    limb_bits: u32,
    /// -n^-1 mod 2^w.
    n0_inv: u64,
    /// R^2 mod n.
    rr: Vec<u64>,
    /// The modulus length in bytes (k in RFC 8017).
    k: usize,
    /// The modulus length in bits (modBits in RFC 8017).
    mod_bits: usize,
    /// The DER SubjectPublicKeyInfo (RFC 5280, RFC 8017 appendix A.1.1), for the external
    /// verifier.
    spki: Vec<u8>,
}

impl RsaKey {
    /// The key for big-endian modulus `n` and exponent `e`; `None` unless e = 65537, `n` is odd
    /// and 2048 to 4096 bits long.
    pub fn new(n: &[u8], e: &[u8]) -> Option<RsaKey> {
        if strip_leading_zeros(e) != E_65537 {
            return None;
        }
        let n_bytes = strip_leading_zeros(n);
        let top = *n_bytes.first()?;
        let low = *n_bytes.last()?;
        if low & 1 == 0 {
            return None;
        }
        let k = n_bytes.len();
        let mod_bits = (k - 1) * 8 + (8 - top.leading_zeros() as usize);
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&mod_bits) {
            return None;
        }
        let limb_bits = if mod_bits <= WIDE_LIMBS_MAX_BITS {
            WIDE_LIMB_BITS
        } else {
            NARROW_LIMB_BITS
        };
        // One spare bit above n, so that R > 2n and a Montgomery result below 2n fits.
        let limbs = (mod_bits + 1).div_ceil(limb_bits as usize);
        let n_limbs = limbs_from_be(n_bytes, limb_bits, limbs)?;
        let n0 = *n_limbs.first()?;
        let mask = (1u64 << limb_bits) - 1;
        let n0_inv = u64::from(neg_inverse(n0 as u32)) & mask;
        let rr = r_squared(&n_limbs, limb_bits, mod_bits);
        Some(RsaKey {
            n: n_limbs,
            limb_bits,
            n0_inv,
            rr,
            k,
            mod_bits,
            spki: spki_der(n_bytes, &E_65537),
        })
    }

    /// The key's DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// RSASSA-PKCS1-v1_5 (RFC 8017 section 8.2.2) over `message`: by the external verifier if
    /// one is set and answers (`set_pkcs1v15_verifier`), else by our arithmetic.
    pub fn verify_pkcs1v15(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        // Step 1 (length) and s < n are checked here whoever does the arithmetic.
        if !self.signature_in_range(signature) {
            return false;
        }
        if let Some(verify) = PKCS1V15_VERIFIER.get() {
            if let Some(answer) = verify(&self.spki, hash, message, signature) {
                return answer;
            }
        }
        self.verify_pkcs1v15_own(hash, message, signature)
    }

    /// RSASSA-PKCS1-v1_5 by this crate's arithmetic only.
    pub fn verify_pkcs1v15_own(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        // RFC 8017 section 8.2.2 step 3: encode the expected EM' and compare it to EM in full,
        // rather than parsing the padding (no room for lenient DER or garbage after the hash).
        let prefix: &[u8] = match hash {
            Hash::Sha256 => &SHA256_DIGEST_INFO,
            Hash::Sha384 => &SHA384_DIGEST_INFO,
            Hash::Sha512 => &SHA512_DIGEST_INFO,
        };
        let digest = digest(hash, &[message]);
        let t_len = prefix.len() + digest.len();
        // RFC 8017 section 9.2 step 3: emLen >= tLen + 11 (always true for 2048 bits and up).
        let Some(ps_len) = self.k.checked_sub(t_len + 3).filter(|&len| len >= 8) else {
            return false;
        };
        let mut expected = Vec::with_capacity(self.k);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(2 + ps_len, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(prefix);
        expected.extend_from_slice(&digest);
        em == expected
    }

    /// RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash (RFC 7518 section 3.5).
    pub fn verify_pss(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let Some(m) = self.public_op(signature) else {
            return false;
        };
        // RFC 8017 section 8.1.2 step 2c: EM = I2OSP(m, emLen) with emBits = modBits - 1, so
        // when emBits is a multiple of 8 the k-byte value must start with a zero byte.
        let em_bits = self.mod_bits - 1;
        let em_len = em_bits.div_ceil(8);
        let Some(em) = m.len().checked_sub(em_len).and_then(|extra| {
            let (head, em) = m.split_at_checked(extra)?;
            head.iter().all(|&b| b == 0).then_some(em)
        }) else {
            return false;
        };
        emsa_pss_verify(hash, message, em, em_bits)
    }

    /// RFC 8017 section 8.2.2 step 1 and 5.2.2 step 1: k bytes, and below n.
    fn signature_in_range(&self, signature: &[u8]) -> bool {
        signature.len() == self.k
            && limbs_from_be(signature, self.limb_bits, self.n.len())
                .is_some_and(|s| less_than(&s, &self.n))
    }

    /// RSAVP1 (RFC 8017 section 5.2.2) as k big-endian bytes; `None` unless the signature is
    /// exactly k bytes and its value is below n (section 8.2.2 step 1, section 5.2.2 step 1).
    fn public_op(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.k {
            return None;
        }
        let s = limbs_from_be(signature, self.limb_bits, self.n.len())?;
        if !less_than(&s, &self.n) {
            return None;
        }
        let m = self.pow_65537(&s);
        let mut bytes = limbs_to_be(&m, self.limb_bits);
        // m < n < 2^(8k): the bytes above the k-th are zero.
        let extra = bytes.len().checked_sub(self.k)?;
        bytes.drain(..extra);
        Some(bytes)
    }

    /// s^65537 mod n, fully reduced, for s < n.
    fn pow_65537(&self, s: &[u64]) -> Vec<u64> {
        let len = self.n.len();
        let mut scratch = vec![0u64; 2 * len];
        let mut doubled = vec![0u64; len];
        let mut x = vec![0u64; len];
        let mut y = vec![0u64; len];
        // x = s * R mod n, the Montgomery form of s.
        self.mont_mul(&mut x, s, &self.rr, &mut scratch);
        for _ in 0..16 {
            self.mont_sqr(&mut y, &x, &mut scratch, &mut doubled);
            std::mem::swap(&mut x, &mut y);
        }
        // x = s^65536 * R; times plain s and R^-1 leaves s^65537 in normal form.
        self.mont_mul(&mut y, &x, s, &mut scratch);
        y
    }

    /// out = a * b * R^-1 mod n for a, b < n; `scratch` holds 2 * limbs words.
    fn mont_mul(&self, out: &mut [u64], a: &[u64], b: &[u64], scratch: &mut [u64]) {
        let n = self.n.as_slice();
        let len = n.len();
        let mask = (1u64 << self.limb_bits) - 1;
        let a0 = a.first().copied().unwrap_or(0);
        scratch.fill(0);
        // Row i adds a * b[i] + m * n at word i, with m chosen so that word i becomes a multiple
        // of 2^w; its carry moves to word i + 1 and word i is done. Words are not normalised in
        // between (see the limb width constants for why they cannot overflow).
        for (i, &bi) in b.iter().enumerate() {
            let Some(window) = scratch.get_mut(i..i + len) else {
                return;
            };
            let Some(&w0) = window.first() else {
                return;
            };
            let m = (w0
                .wrapping_add(a0.wrapping_mul(bi))
                .wrapping_mul(self.n0_inv))
                & mask;
            for ((w, &aj), &nj) in window.iter_mut().zip(a).zip(n) {
                *w = w
                    .wrapping_add(aj.wrapping_mul(bi))
                    .wrapping_add(nj.wrapping_mul(m));
            }
            if let [w0, w1, ..] = window {
                *w1 = w1.wrapping_add(*w0 >> self.limb_bits);
            }
        }
        self.normalize(out, scratch);
    }

    /// out = a^2 * R^-1 mod n for a < n: the square with each cross product computed once,
    /// then a Montgomery reduction; `scratch` holds 2 * limbs words, `doubled` limbs words.
    fn mont_sqr(&self, out: &mut [u64], a: &[u64], scratch: &mut [u64], doubled: &mut [u64]) {
        let n = self.n.as_slice();
        let len = n.len();
        let mask = (1u64 << self.limb_bits) - 1;
        scratch.fill(0);
        for (d, &ai) in doubled.iter_mut().zip(a) {
            *d = ai << 1;
        }
        // a^2 = sum a[i]^2 at word 2i + sum 2 a[i] a[j] (i < j) at word i + j.
        for (i, &ai) in a.iter().enumerate() {
            let (Some(rest), Some(window)) =
                (doubled.get(i + 1..), scratch.get_mut(2 * i..i + len))
            else {
                return;
            };
            let Some((square, cross)) = window.split_first_mut() else {
                return;
            };
            *square = square.wrapping_add(ai.wrapping_mul(ai));
            for (w, &dj) in cross.iter_mut().zip(rest) {
                *w = w.wrapping_add(ai.wrapping_mul(dj));
            }
        }
        // Montgomery reduction, one word at a time as in `mont_mul`.
        for i in 0..len {
            let Some(window) = scratch.get_mut(i..i + len) else {
                return;
            };
            let Some(&w0) = window.first() else {
                return;
            };
            let m = w0.wrapping_mul(self.n0_inv) & mask;
            for (w, &nj) in window.iter_mut().zip(n) {
                *w = w.wrapping_add(nj.wrapping_mul(m));
            }
            if let [w0, w1, ..] = window {
                *w1 = w1.wrapping_add(*w0 >> self.limb_bits);
            }
        }
        self.normalize(out, scratch);
    }

    /// out = t mod n in w-bit limbs, where words limbs..2 * limbs of `scratch` hold t < 2n with
    /// unnormalised words (the result of a Montgomery step).
    fn normalize(&self, out: &mut [u64], scratch: &[u64]) {
        let len = self.n.len();
        let mask = (1u64 << self.limb_bits) - 1;
        let mut carry = 0u64;
        for (o, &t) in out.iter_mut().zip(scratch.iter().skip(len)) {
            let v = t.wrapping_add(carry);
            *o = v & mask;
            carry = v >> self.limb_bits;
        }
        // t < 2n < R, so nothing is left over; if it were, subtracting n is still right.
        if carry != 0 || !less_than(out, &self.n) {
            sub_in_place(out, &self.n, self.limb_bits);
        }
    }
}

/// `bytes` without its leading zero bytes.
fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.get(zeros..).unwrap_or(&[])
}

/// Big-endian bytes as `limbs` little-endian limbs of `limb_bits` bits; `None` if the value
/// does not fit in them.
fn limbs_from_be(bytes: &[u8], limb_bits: u32, limbs: usize) -> Option<Vec<u64>> {
    let mask = (1u64 << limb_bits) - 1;
    let mut out = Vec::with_capacity(limbs + 2);
    let mut acc = 0u64;
    let mut acc_bits = 0u32;
    for &byte in bytes.iter().rev() {
        acc |= u64::from(byte) << acc_bits;
        acc_bits += 8;
        if acc_bits >= limb_bits {
            out.push(acc & mask);
            acc >>= limb_bits;
            acc_bits -= limb_bits;
        }
    }
    out.push(acc);
    // Dropping high bits would let two encodings map to one value: refuse instead.
    if out
        .get(limbs..)
        .is_some_and(|high| high.iter().any(|&limb| limb != 0))
    {
        return None;
    }
    out.resize(limbs, 0);
    Some(out)
}

/// Normalised little-endian limbs of `limb_bits` bits as big-endian bytes (with leading zeros).
fn limbs_to_be(limbs: &[u64], limb_bits: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((limbs.len() * limb_bits as usize).div_ceil(8));
    let mut acc = 0u64;
    let mut acc_bits = 0u32;
    for &limb in limbs {
        acc |= limb << acc_bits;
        acc_bits += limb_bits;
        while acc_bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            acc_bits -= 8;
        }
    }
    if acc_bits > 0 {
        out.push(acc as u8);
    }
    out.reverse();
    out
}

/// a < b for normalised numbers of the same limb count.
fn less_than(a: &[u64], b: &[u64]) -> bool {
    for (&x, &y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a = a - b mod 2^(limb_bits * limbs), for normalised limbs.
fn sub_in_place(a: &mut [u64], b: &[u64], limb_bits: u32) {
    let mask = (1u64 << limb_bits) - 1;
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let d = x.wrapping_sub(y).wrapping_sub(borrow);
        *x = d & mask;
        borrow = d >> 63;
    }
}

/// -n0^-1 mod 2^32 for odd n0, by Newton's iteration (each step doubles the correct bits).
fn neg_inverse(n0: u32) -> u32 {
    // n0 * n0 = 1 mod 8 for odd n0: 3 bits to start, then 6, 12, 24, 48.
    let mut inv = n0;
    for _ in 0..4 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

/// R^2 mod n with R = 2^(limb_bits * limbs), by doubling 2^(modBits - 1) (which is below n).
fn r_squared(n: &[u64], limb_bits: u32, mod_bits: usize) -> Vec<u64> {
    let mask = (1u64 << limb_bits) - 1;
    let bits = limb_bits as usize;
    let mut x = vec![0u64; n.len()];
    let top_bit = mod_bits - 1;
    if let Some(limb) = x.get_mut(top_bit / bits) {
        *limb = 1 << (top_bit % bits);
    }
    let doublings = (2 * bits * n.len()).saturating_sub(top_bit);
    for _ in 0..doublings {
        let mut carry = 0u64;
        for limb in x.iter_mut() {
            let doubled = (*limb << 1) | carry;
            *limb = doubled & mask;
            carry = doubled >> limb_bits;
        }
        // x < n before doubling, so 2x < 2n and one subtraction reduces it (a carry out of the
        // top limb cannot happen: 2n < R).
        if carry != 0 || !less_than(&x, n) {
            sub_in_place(&mut x, n, limb_bits);
        }
    }
    x
}

/// DER SubjectPublicKeyInfo { rsaEncryption, NULL; BIT STRING RSAPublicKey { n, e } } for
/// big-endian `n` and `e` without leading zeros.
fn spki_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    // rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut integers = der_integer(n);
    integers.extend_from_slice(&der_integer(e));
    let rsa_public_key = der_tlv(0x30, &integers);
    let mut bits = vec![0x00]; // no unused bits
    bits.extend_from_slice(&rsa_public_key);
    let mut body = ALGORITHM.to_vec();
    body.extend_from_slice(&der_tlv(0x03, &bits));
    der_tlv(0x30, &body)
}

/// A DER INTEGER of the non-negative big-endian `value` (no leading zeros).
fn der_integer(value: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(value.len() + 1);
    if value.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0x00);
    }
    content.extend_from_slice(value);
    der_tlv(0x02, &content)
}

/// DER tag, definite length and content.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 4);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// EMSA-PSS-VERIFY (RFC 8017 section 9.1.2) with MGF1 of `hash` and sLen = hLen.
fn emsa_pss_verify(hash: Hash, message: &[u8], em: &[u8], em_bits: usize) -> bool {
    let h_len = hash_len(hash);
    let s_len = h_len;
    let em_len = em.len();
    // Step 3.
    if em_len < h_len + s_len + 2 {
        return false;
    }
    // Steps 4 and 5.
    let Some((masked_db, rest)) = em.split_at_checked(em_len - h_len - 1) else {
        return false;
    };
    let Some((h, trailer)) = rest.split_at_checked(h_len) else {
        return false;
    };
    if trailer != [0xbc] {
        return false;
    }
    // Step 6: the leftmost 8 * emLen - emBits bits of maskedDB must be zero.
    let Some(zero_bits) = (8 * em_len).checked_sub(em_bits).filter(|&bits| bits < 8) else {
        return false;
    };
    let top_mask = 0xffu8 >> zero_bits;
    let Some(&first) = masked_db.first() else {
        return false;
    };
    if first & !top_mask != 0 {
        return false;
    }
    // Steps 7 to 9.
    let db_mask = mgf1(hash, h, masked_db.len());
    let mut db: Vec<u8> = masked_db
        .iter()
        .zip(&db_mask)
        .map(|(&m, &k)| m ^ k)
        .collect();
    if let Some(b) = db.first_mut() {
        *b &= top_mask;
    }
    // Step 10: PS zeros, then 0x01, then the salt.
    let ps_len = em_len - h_len - s_len - 2;
    let Some((ps, rest)) = db.split_at_checked(ps_len) else {
        return false;
    };
    let Some((&separator, salt)) = rest.split_first() else {
        return false;
    };
    if ps.iter().any(|&b| b != 0) || separator != 0x01 || salt.len() != s_len {
        return false;
    }
    // Steps 12 to 14.
    let m_hash = digest(hash, &[message]);
    let h_prime = digest(hash, &[&[0u8; 8], &m_hash, salt]);
    h == h_prime.as_slice()
}

/// MGF1 (RFC 8017 appendix B.2.1) of `seed` with `hash`, `len` bytes.
fn mgf1(hash: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash_len(hash));
    let mut counter = 0u32;
    while out.len() < len {
        out.extend_from_slice(&digest(hash, &[seed, &counter.to_be_bytes()]));
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// The output length of `hash` in bytes.
fn hash_len(hash: Hash) -> usize {
    match hash {
        Hash::Sha256 => 32,
        Hash::Sha384 => 48,
        Hash::Sha512 => 64,
    }
}

/// `hash` of the concatenation of `parts`.
fn digest(hash: Hash, parts: &[&[u8]]) -> Vec<u8> {
    fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut hasher = D::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.finalize().to_vec()
    }
    match hash {
        Hash::Sha256 => run::<Sha256>(parts),
        Hash::Sha384 => run::<Sha384>(parts),
        Hash::Sha512 => run::<Sha512>(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::*;
    use num_bigint::BigUint;

    const SIGNING_PEM: &str = include_str!("../../../tests/fixtures/keys/rsa-2048-signing.pem");

    /// The fixture key's n and e, and an RS256 signing input with its signature.
    fn fixture() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let pair = RS256KeyPair::from_pem(SIGNING_PEM).unwrap();
        let components = pair.public_key().to_components();
        let token = pair.sign(Claims::create(Duration::from_hours(1))).unwrap();
        let (input, sig) = split_token(&token);
        (components.n, components.e, input, sig)
    }

    fn split_token(token: &str) -> (Vec<u8>, Vec<u8>) {
        let (input, sig) = token.rsplit_once('.').unwrap();
        (
            input.as_bytes().to_vec(),
            Base64UrlSafeNoPadding::decode_to_vec(sig, None).unwrap(),
        )
    }

    fn fixture_key() -> RsaKey {
        let (n, e, _, _) = fixture();
        RsaKey::new(&n, &e).unwrap()
    }

    /// An odd modulus of exactly `bits` bits (not a real RSA modulus: enough for `new`).
    fn odd_modulus(bits: usize) -> Vec<u8> {
        let mut n = vec![0x5au8; bits.div_ceil(8)];
        n[0] = 1 << ((bits - 1) % 8);
        *n.last_mut().unwrap() |= 1;
        n
    }

    #[test]
    fn der_lengths_use_the_short_and_long_forms() {
        assert_eq!(der_tlv(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        assert_eq!(der_tlv(0x04, &[0; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(der_tlv(0x04, &[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(der_tlv(0x04, &[0; 0x100])[..4], [0x04, 0x82, 0x01, 0x00]);
        assert_eq!(der_integer(&[0x7f]), [0x02, 1, 0x7f]);
        assert_eq!(der_integer(&[0x80]), [0x02, 2, 0x00, 0x80]);
        assert_eq!(der_integer(&E_65537), [0x02, 3, 0x01, 0x00, 0x01]);
    }

    #[test]
    fn spki_of_the_fixture_key_matches_openssl() {
        // `openssl pkey -in rsa-2048-signing.pem -pubout -outform DER`.
        let expected = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/keys/rsa-2048-signing.spki.der"
        ))
        .unwrap();
        assert_eq!(fixture_key().spki_der(), expected);
    }

    #[test]
    fn valid_rs256_signature_verifies() {
        let (n, e, input, sig) = fixture();
        let key = RsaKey::new(&n, &e).unwrap();
        assert!(key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
    }

    #[test]
    fn signature_of_wrong_length_is_rejected() {
        let (n, e, input, sig) = fixture();
        let key = RsaKey::new(&n, &e).unwrap();
        let mut longer = vec![0u8];
        longer.extend_from_slice(&sig);
        assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &longer));
        assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &sig[1..]));
        assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &[]));
        assert!(!key.verify_pss(Hash::Sha256, &input, &longer));
        assert!(!key.verify_pss(Hash::Sha256, &input, &[]));
    }

    #[test]
    fn signature_not_below_modulus_is_rejected() {
        let (n, e, input, _) = fixture();
        let key = RsaKey::new(&n, &e).unwrap();
        let all_ones = vec![0xffu8; n.len()];
        for sig in [n.clone(), all_ones] {
            assert!(key.public_op(&sig).is_none());
            assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
            assert!(!key.verify_pss(Hash::Sha256, &input, &sig));
        }
    }

    #[test]
    fn signature_just_below_modulus_is_computed() {
        let (n, e, _, _) = fixture();
        let key = RsaKey::new(&n, &e).unwrap();
        // (n - 1)^65537 = (-1)^65537 = n - 1 (mod n).
        let mut n_minus_1 = n.clone();
        *n_minus_1.last_mut().unwrap() -= 1;
        assert_eq!(key.public_op(&n_minus_1).unwrap(), n_minus_1);
    }

    #[test]
    fn zero_and_one_signatures_are_rejected() {
        let (n, e, input, _) = fixture();
        let key = RsaKey::new(&n, &e).unwrap();
        let zero = vec![0u8; n.len()];
        assert_eq!(key.public_op(&zero).unwrap(), zero);
        let mut one = zero.clone();
        *one.last_mut().unwrap() = 1;
        assert_eq!(key.public_op(&one).unwrap(), one);
        for sig in [zero, one] {
            assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
            assert!(!key.verify_pss(Hash::Sha256, &input, &sig));
        }
    }

    #[test]
    fn exponent_other_than_65537_is_refused() {
        let n = odd_modulus(2048);
        assert!(RsaKey::new(&n, &[0x01, 0x00, 0x01]).is_some());
        assert!(RsaKey::new(&n, &[0x00, 0x01, 0x00, 0x01]).is_some());
        for e in [
            &[][..],
            &[0x03],
            &[0x01, 0x00, 0x00, 0x01],
            &[0x01, 0x00, 0x01, 0x00],
            &[0x01],
        ] {
            assert!(RsaKey::new(&n, e).is_none(), "e = {e:?}");
        }
    }

    #[test]
    fn even_modulus_is_refused() {
        let mut n = odd_modulus(2048);
        *n.last_mut().unwrap() &= 0xfe;
        assert!(RsaKey::new(&n, &E_65537).is_none());
    }

    #[test]
    fn modulus_sizes_outside_2048_to_4096_bits_are_refused() {
        for bits in [0, 8, 1024, 2047, 4097, 8192] {
            let n = if bits == 0 {
                Vec::new()
            } else {
                odd_modulus(bits)
            };
            assert!(RsaKey::new(&n, &E_65537).is_none(), "{bits} bits");
        }
        for bits in [2048, 2049, 3072, 4095, 4096] {
            assert!(
                RsaKey::new(&odd_modulus(bits), &E_65537).is_some(),
                "{bits} bits"
            );
        }
    }

    #[test]
    fn leading_zero_bytes_of_modulus_are_stripped() {
        let (n, e, input, sig) = fixture();
        let mut padded = vec![0u8, 0, 0];
        padded.extend_from_slice(&n);
        let key = RsaKey::new(&padded, &e).unwrap();
        assert!(key == RsaKey::new(&n, &e).unwrap());
        assert!(key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
    }

    #[test]
    fn montgomery_constants_are_consistent() {
        let key = fixture_key();
        let mask = (1u64 << key.limb_bits) - 1;
        assert_eq!(key.limb_bits, WIDE_LIMB_BITS);
        assert_eq!((key.n[0] * key.n0_inv) & mask, mask);
        assert!(less_than(&key.rr, &key.n));
        let len = key.n.len();
        // Montgomery form of 1 is R mod n; R^2 * 1 / R = R, and R * 1 / R = 1.
        let mut one = vec![0u64; len];
        one[0] = 1;
        let mut scratch = vec![0u64; 2 * len];
        let mut r = vec![0u64; len];
        key.mont_mul(&mut r, &key.rr, &one, &mut scratch);
        let mut back = vec![0u64; len];
        key.mont_mul(&mut back, &r, &one, &mut scratch);
        assert_eq!(back, one);
        // Squaring agrees with multiplying by itself.
        let mut doubled = vec![0u64; len];
        let mut sq = vec![0u64; len];
        let mut mul = vec![0u64; len];
        key.mont_sqr(&mut sq, &key.rr, &mut scratch, &mut doubled);
        key.mont_mul(&mut mul, &key.rr, &key.rr, &mut scratch);
        assert_eq!(sq, mul);
    }

    #[test]
    fn limbs_round_trip_and_refuse_overflow() {
        let bytes: Vec<u8> = (1..=64).collect();
        for bits in [WIDE_LIMB_BITS, NARROW_LIMB_BITS] {
            let limbs = (bytes.len() * 8).div_ceil(bits as usize);
            let round = limbs_to_be(&limbs_from_be(&bytes, bits, limbs).unwrap(), bits);
            assert_eq!(strip_leading_zeros(&round), &bytes[..]);
            assert!(limbs_from_be(&bytes, bits, limbs - 1).is_none());
        }
    }

    #[test]
    fn signature_with_bits_beyond_the_limbs_is_rejected() {
        // A 2099-bit modulus has 263-byte (2104-bit) signatures, but 75 limbs of 28 bits hold
        // 2100 bits: the top bits of an oversized value must get it refused, not dropped.
        let key = RsaKey::new(&odd_modulus(2099), &E_65537).unwrap();
        assert_eq!(
            (key.k, key.n.len(), key.limb_bits),
            (263, 75, WIDE_LIMB_BITS)
        );
        let mut sig = vec![0u8; key.k];
        sig[0] = 0x10;
        assert!(limbs_from_be(&sig, key.limb_bits, key.n.len()).is_none());
        assert!(key.public_op(&sig).is_none());
        for bits in [2049, 2800, 4096] {
            let key = RsaKey::new(&odd_modulus(bits), &E_65537).unwrap();
            assert!(key.public_op(&vec![0xffu8; key.k]).is_none(), "{bits} bits");
        }
    }

    #[test]
    fn flipped_signature_bit_anywhere_fails() {
        let (n, e, input, sig) = fixture();
        let key = RsaKey::new(&n, &e).unwrap();
        for bit in 0..sig.len() * 8 {
            let mut bad = sig.clone();
            bad[bit / 8] ^= 0x80 >> (bit % 8);
            assert!(
                !key.verify_pkcs1v15(Hash::Sha256, &input, &bad),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn flipped_message_bit_anywhere_fails() {
        let (n, e, input, sig) = fixture();
        let key = RsaKey::new(&n, &e).unwrap();
        for bit in 0..input.len() * 8 {
            let mut bad = input.clone();
            bad[bit / 8] ^= 0x80 >> (bit % 8);
            assert!(!key.verify_pkcs1v15(Hash::Sha256, &bad, &sig), "bit {bit}");
        }
    }

    #[test]
    fn pkcs1_signature_does_not_verify_with_other_hash_or_as_pss() {
        let (n, e, input, sig) = fixture();
        let key = RsaKey::new(&n, &e).unwrap();
        assert!(!key.verify_pkcs1v15(Hash::Sha384, &input, &sig));
        assert!(!key.verify_pkcs1v15(Hash::Sha512, &input, &sig));
        assert!(!key.verify_pss(Hash::Sha256, &input, &sig));
    }

    #[test]
    fn ps256_signature_verifies_and_flipped_bit_anywhere_fails() {
        let pair = PS256KeyPair::from_pem(SIGNING_PEM).unwrap();
        let token = pair.sign(Claims::create(Duration::from_hours(1))).unwrap();
        let (input, sig) = split_token(&token);
        let key = fixture_key();
        assert!(key.verify_pss(Hash::Sha256, &input, &sig));
        assert!(!key.verify_pss(Hash::Sha384, &input, &sig));
        assert!(!key.verify_pkcs1v15(Hash::Sha256, &input, &sig));
        for bit in 0..sig.len() * 8 {
            let mut bad = sig.clone();
            bad[bit / 8] ^= 0x80 >> (bit % 8);
            assert!(!key.verify_pss(Hash::Sha256, &input, &bad), "bit {bit}");
        }
    }

    #[test]
    fn key_of_4096_bits_is_accepted_and_verifies() {
        let pair = RS512KeyPair::generate(4096).unwrap();
        let components = pair.public_key().to_components();
        let key = RsaKey::new(&components.n, &components.e).unwrap();
        assert_eq!((key.limb_bits, key.n.len()), (NARROW_LIMB_BITS, 158));
        let token = pair.sign(Claims::create(Duration::from_hours(1))).unwrap();
        let (input, sig) = split_token(&token);
        assert!(key.verify_pkcs1v15(Hash::Sha512, &input, &sig));
        let mut bad = sig.clone();
        bad[200] ^= 1;
        assert!(!key.verify_pkcs1v15(Hash::Sha512, &input, &bad));
    }

    #[test]
    fn arbitrary_bytes_never_verify_or_panic() {
        let key = fixture_key();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in [0usize, 1, 255, 256, 257, 512] {
            for _ in 0..8 {
                let sig: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                    assert!(!key.verify_pkcs1v15(hash, b"x", &sig));
                    assert!(!key.verify_pss(hash, b"x", &sig));
                }
            }
        }
    }

    /// splitmix64 with a fixed seed, so that a failing differential case reproduces exactly.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// A uniformly random number below 2^bits.
        fn below_power_of_two(&mut self, bits: usize) -> BigUint {
            let digits = (0..bits.div_ceil(32))
                .map(|_| self.next_u64() as u32)
                .collect();
            BigUint::new(digits) & ones(bits)
        }
    }

    /// 2^bits - 1.
    fn ones(bits: usize) -> BigUint {
        (BigUint::from(1u8) << bits) - 1u8
    }

    /// Odd moduli of exactly `bits` bits for limb width `w`, each named for failure messages and
    /// paired with its number of random values: `random` random moduli get `random_values`,
    /// then the edge shapes (all ones, 2^(k-1) + 1, every full limb below the top maximal, low
    /// limb 1 and the rest maximal) get an eighth of that, as their fixed values matter most.
    fn differential_moduli(
        bits: usize,
        w: usize,
        random: usize,
        random_values: usize,
        rng: &mut SplitMix64,
    ) -> Vec<(String, BigUint, usize)> {
        let top = BigUint::from(1u8) << (bits - 1);
        let mut moduli: Vec<(String, BigUint, usize)> = (0..random)
            .map(|i| {
                let n = rng.below_power_of_two(bits) | &top | BigUint::from(1u8);
                (format!("random #{i}"), n, random_values)
            })
            .collect();
        let edge_values = random_values / 8;
        moduli.push(("2^k - 1".into(), ones(bits), edge_values));
        moduli.push(("2^(k-1) + 1".into(), &top + 1u8, edge_values));
        moduli.push((
            "2^(k-1) + full limbs maximal".into(),
            &top + ones((bits - 1) / w * w),
            edge_values,
        ));
        moduli.push((
            "2^k - 2^w + 1".into(),
            ones(bits) - ones(w) + 1u8,
            edge_values,
        ));
        moduli
    }

    /// Values below the `bits`-bit modulus n: 0, 1, 2, n - 1, n - 2, every full limb maximal,
    /// 2^(k-1) - 1, then `random` uniform ones.
    fn differential_values(
        n: &BigUint,
        bits: usize,
        w: usize,
        random: usize,
        rng: &mut SplitMix64,
    ) -> Vec<BigUint> {
        let mut values = vec![
            BigUint::from(0u8),
            BigUint::from(1u8),
            BigUint::from(2u8),
            n - 1u8,
            n - 2u8,
            ones((bits - 1) / w * w),
            ones(bits - 1),
        ];
        values.extend((0..random).map(|_| rng.below_power_of_two(bits) % n));
        values
    }

    /// `value` as exactly `len` big-endian bytes.
    fn to_be_padded(value: &BigUint, len: usize) -> Vec<u8> {
        let bytes = value.to_bytes_be();
        let mut out = vec![0u8; len - bytes.len()];
        out.extend_from_slice(&bytes);
        out
    }

    /// Compares `public_op` (s^65537 mod n) with `BigUint::modpow` for each
    /// (bits, limb width, random moduli, random values per random modulus) and returns how many
    /// comparisons ran.
    fn compare_pow_with_num_bigint(sizes: &[(usize, u32, usize, usize)], seed: u64) -> usize {
        let mut rng = SplitMix64(seed);
        let e = BigUint::from(65537u32);
        let mut comparisons = 0;
        for &(bits, limb_bits, random_moduli, random_values) in sizes {
            let w = limb_bits as usize;
            for (shape, n, random) in
                differential_moduli(bits, w, random_moduli, random_values, &mut rng)
            {
                let key = RsaKey::new(&n.to_bytes_be(), &E_65537).unwrap();
                assert_eq!(
                    (key.mod_bits, key.limb_bits),
                    (bits, limb_bits),
                    "{bits} bits, {shape}"
                );
                for s in differential_values(&n, bits, w, random, &mut rng) {
                    let got = key.public_op(&to_be_padded(&s, key.k)).unwrap();
                    let got = BigUint::from_bytes_be(&got);
                    let expected = s.modpow(&e, &n);
                    assert!(
                        got == expected,
                        "{bits}-bit n ({shape}) = {n:x}\ns = {s:x}\nexpected {expected:x}\ngot {got:x}"
                    );
                    comparisons += 1;
                }
            }
        }
        comparisons
    }

    // An unoptimised exponentiation costs about 0.25 us per limb^2 (6 ms at 4096 bits, 158
    // limbs): larger moduli get fewer random values so that each test stays within a few seconds.

    #[test]
    fn pow_65537_matches_num_bigint_with_28_bit_limbs() {
        let sizes = [(2048, 28, 2, 200), (2056, 28, 2, 200), (2799, 28, 2, 200)];
        let comparisons = compare_pow_with_num_bigint(&sizes, 0x28);
        println!("28-bit limbs: {comparisons} comparisons with num-bigint");
    }

    #[test]
    fn pow_65537_matches_num_bigint_with_26_bit_limbs() {
        let sizes = [
            (2800, 26, 1, 200),
            (2801, 26, 1, 200),
            (3072, 26, 1, 150),
            (4095, 26, 1, 60),
            (4096, 26, 1, 60),
        ];
        let comparisons = compare_pow_with_num_bigint(&sizes, 0x26);
        println!("26-bit limbs: {comparisons} comparisons with num-bigint");
    }

    #[test]
    fn worst_case_column_sum_fits_in_u64() {
        // Montgomery intermediates look random, so the comparisons above never come near the
        // worst column; check the bound itself for the longest key of each limb width.
        for bits in [2799, 4096] {
            let key = RsaKey::new(&ones(bits).to_bytes_be(), &E_65537).unwrap();
            let (limbs, w) = (key.n.len() as u128, key.limb_bits);
            let mask = (1u128 << w) - 1;
            // Up to `limbs` rows each add two products of limbs below 2^w, plus the carry from
            // the word below (a u64 shifted right by w).
            let column = 2 * limbs * mask * mask + (1u128 << (64 - w));
            assert!(column < 1 << 64, "{bits} bits: {limbs} limbs of {w} bits");
        }
    }

    #[test]
    fn moduli_and_exponents_of_the_wrong_shape_are_refused() {
        let one = BigUint::from(1u8);
        for bits in [2048, 2800, 4096] {
            let n = ones(bits).to_bytes_be();
            assert!(RsaKey::new(&n, &E_65537).is_some(), "{bits} bits");
            for e in [3u32, 17, 65535, 65536, 65539, 65537 << 8, 65537 | 1 << 24] {
                assert!(
                    RsaKey::new(&n, &e.to_be_bytes()).is_none(),
                    "{bits} bits, e = {e}"
                );
            }
            for even in [
                ones(bits) - 1u8,
                &one << (bits - 1),
                (&one << (bits - 1)) + 2u8,
            ] {
                assert!(
                    RsaKey::new(&even.to_bytes_be(), &E_65537).is_none(),
                    "{bits} bits, n = {even:x}"
                );
            }
        }
        for bits in [2047, 4097] {
            for n in [ones(bits), (&one << (bits - 1)) + 1u8] {
                assert!(
                    RsaKey::new(&n.to_bytes_be(), &E_65537).is_none(),
                    "{bits} bits, n = {n:x}"
                );
            }
        }
    }
}
