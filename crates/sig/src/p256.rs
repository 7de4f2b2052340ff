//! ECDSA P-256 with SHA-256 verification (JOSE ES256), SEC 1 v2 section 4.1.4 / FIPS 186-5.
//!
//! Speed comes from fixed-base tables of affine points `j * 2^(w*i) * P` (j up to 2^(w-1)): one
//! for G, built once per process with w = 7 (37 windows, 2,368 points, 151,552 bytes), and one
//! per key Q, built on the key's first verify with w = 5 (52 windows, 832 points, 53,248 bytes).
//! A scalar in signed base-2^w digits is then one mixed addition per digit and no doublings, and
//! both products of `u1*G + u2*Q` go into one Jacobian accumulator (89 additions in all). x(R)
//! is compared in Jacobian coordinates, so no field inversion is needed. Everything here is
//! public, so the arithmetic is variable-time. The field is our own (module `field`): nine 29-bit
//! limbs with 64-bit products and a multiply-free Montgomery reduction, made for V8's wasm32; the
//! `p256` crate's field (fiat-crypto, 32-bit limbs) is only used for the one inversion per table.
//! Measured in V8 (`examples/micro_p256.rs`) with the `p256` crate's field: w = 5/6/7/8 for G gave
//! about 170/157/145/138 us per verify; 7 is the knee before the table doubles again. Issue 15,
//! the own field, A/B in Node's V8 on a loaded 2-core Xeon (4 interleaved runs of 1,000): verify
//! min 121-125 -> 58-61 us, median 140-237 -> 69-110 us; a key's table 6.5 -> 1.2 ms; the
//! filter's .wasm 5.5 KB larger.

use std::fmt;
use std::sync::{Arc, OnceLock};

use p256::elliptic_curve::ff::{Field, PrimeField};
use p256::elliptic_curve::ops::Reduce;
use p256::{FieldBytes, Scalar};
use sha2::{Digest, Sha256};

use field::Fe;

/// Window width of the per-key tables: 52 windows of 16 points, 53,248 bytes.
const KEY_WINDOW_BITS: u32 = 5;
/// Window width of the process-wide table for G.
const G_WINDOW_BITS: u32 = 7;
/// The most digits a scalar needs, at the narrowest window (5 bits: 52 * 5 >= 257).
const MAX_DIGITS: usize = 52;
// signed_digits handles 5..=8 bits: i16 digits, at most MAX_DIGITS of them.
const _: () = assert!(KEY_WINDOW_BITS >= 5 && KEY_WINDOW_BITS <= 8);
const _: () = assert!(G_WINDOW_BITS >= 5 && G_WINDOW_BITS <= 8);

/// The curve coefficient b (SEC 2 / FIPS 186-5, P-256), big-endian.
const B_BYTES: [u8; 32] = hex32("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b");
/// The base point G, x then y, big-endian.
const GX_BYTES: [u8; 32] =
    hex32("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
const GY_BYTES: [u8; 32] =
    hex32("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
/// The group order n, big-endian.
const N_BYTES: [u8; 32] = hex32("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
/// p - n: an r below this also has r + n < p as a candidate x-coordinate.
const P_MINUS_N_BYTES: [u8; 32] =
    hex32("000000000000000000000000000000004319055358e8617b0c46353d039cdaae");

/// A P-256 public key with its fixed-base table, built lazily on the first verify.
/// Clones share the table.
#[derive(Clone)]
pub struct P256Key {
    /// `x || y`, big-endian: identity for equality and Debug.
    encoded: [u8; 64],
    point: Affine,
    table: Arc<OnceLock<Option<Table>>>,
}

impl P256Key {
    /// The key for a SEC1 uncompressed point (`04 || x || y`); `None` if it is not on the curve.
    pub fn from_sec1(point: &[u8]) -> Option<P256Key> {
        let (&tag, coordinates) = point.split_first()?;
        let encoded: [u8; 64] = coordinates.try_into().ok()?;
        if tag != 0x04 {
            return None;
        }
        let (x_bytes, y_bytes) = encoded.split_at(32);
        // from_repr refuses coordinates >= p; the identity has no uncompressed encoding.
        let x = fe_from_slice(x_bytes)?;
        let y = fe_from_slice(y_bytes)?;
        let affine = Affine { x, y };
        if !affine.is_on_curve()? {
            return None;
        }
        Some(P256Key {
            encoded,
            point: affine,
            table: Arc::new(OnceLock::new()),
        })
    }

    /// Verifies a JOSE signature (`r || s`, 64 bytes big-endian) of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(q_table) = self
            .table
            .get_or_init(|| Table::build(&self.point, KEY_WINDOW_BITS))
        else {
            return false;
        };
        let Some(g_table) = generator_table() else {
            return false;
        };
        verify_with(g_table, q_table, message, signature).unwrap_or(false)
    }

    /// Builds the key's table now instead of on the first verify (for benchmarks and warm-up).
    pub fn precompute(&self) {
        let _ = self
            .table
            .get_or_init(|| Table::build(&self.point, KEY_WINDOW_BITS));
        let _ = generator_table();
    }
}

impl PartialEq for P256Key {
    fn eq(&self, other: &Self) -> bool {
        self.encoded == other.encoded
    }
}

impl Eq for P256Key {}

impl fmt::Debug for P256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P256Key(x=")?;
        for byte in self.encoded.iter().take(4) {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

/// SEC 1 v2 section 4.1.4, steps 1-8, with the tables for G and Q.
fn verify_with(g_table: &Table, q_table: &Table, message: &[u8], signature: &[u8]) -> Option<bool> {
    let signature: &[u8; 64] = signature.try_into().ok()?;
    let (r_bytes, s_bytes) = signature.split_at(32);
    let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
    // Step 1: r and s in [1, n-1]; from_repr refuses values >= n, so nothing is reduced.
    let r = scalar_in_range(&r_bytes)?;
    let s = scalar_in_range(s_bytes)?;
    // Steps 2-3: e = leftmost 256 bits of SHA-256(M) = the whole hash, reduced mod n.
    let e = message_scalar(message);
    // Steps 4-5.
    let w = s.invert_vartime().into_option()?;
    let u1 = e * w;
    let u2 = r * w;
    // Both products go into one accumulator: the tables need no doublings.
    let mut acc = Jacobian::IDENTITY;
    g_table.add_multiple(&mut acc, &u1)?;
    q_table.add_multiple(&mut acc, &u2)?;
    // Step 6: the identity is rejected.
    if acc.infinity {
        return Some(false);
    }
    // Steps 7-8: x(R) = X / Z^2 and x(R) mod n == r, i.e. X == r' * Z^2 for r' = r or, when it is
    // still below p, r + n (x(R) lies in [0, p) and p < 2n).
    let zz = acc.z.square();
    let r_fe = fe_from_slice(&r_bytes)?;
    if acc.x == r_fe.multiply(&zz) {
        return Some(true);
    }
    if r_bytes < P_MINUS_N_BYTES {
        let n_fe = fe_from_slice(&N_BYTES)?;
        let r_plus_n = r_fe.add(&n_fe);
        return Some(acc.x == r_plus_n.multiply(&zz));
    }
    Some(false)
}

/// SHA-256 of `message` as an integer reduced mod n (n has 256 bits, so no truncation).
fn message_scalar(message: &[u8]) -> Scalar {
    let digest: [u8; 32] = Sha256::digest(message).into();
    <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(digest))
}

/// The scalar for 32 big-endian bytes if it lies in [1, n-1].
fn scalar_in_range(bytes: &[u8]) -> Option<Scalar> {
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    let scalar = Scalar::from_repr(FieldBytes::from(bytes)).into_option()?;
    if bool::from(scalar.is_zero()) {
        return None;
    }
    Some(scalar)
}

/// The field element for 32 big-endian bytes if it is below p.
fn fe_from_slice(bytes: &[u8]) -> Option<Fe> {
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    Fe::from_bytes(&bytes)
}

/// Signed base-2^bits digits (least significant first) of a scalar given big-endian, for
/// `bits` in 5..=8: each digit is in [-2^(bits-1) + 1, 2^(bits-1)] and `sum(d[i] * 2^(bits*i))`
/// equals the scalar. Returns the digits and how many there are: ceil(257 / bits), so the top
/// window of a 256-bit scalar plus a carry never needs another digit.
fn signed_digits(be: &[u8], bits: u32) -> ([i16; MAX_DIGITS], usize) {
    let mut limbs = [0u64; 4];
    for (limb, chunk) in limbs.iter_mut().zip(be.rchunks(8)) {
        for &byte in chunk {
            *limb = (*limb << 8) | u64::from(byte);
        }
    }
    let count = digit_count(bits).min(MAX_DIGITS);
    let full = 1u64 << bits;
    let half = full >> 1;
    let mask = full - 1;
    let mut digits = [0i16; MAX_DIGITS];
    let mut carry = 0u64;
    for (i, digit) in digits.iter_mut().take(count).enumerate() {
        let bit = i * bits as usize;
        let (limb, shift) = (bit / 64, bit % 64);
        let low = limbs.get(limb).copied().unwrap_or(0) >> shift;
        let high = match limbs.get(limb + 1) {
            Some(&next) if shift > 0 => next << (64 - shift),
            _ => 0,
        };
        let window = ((low | high) & mask) + carry;
        // window <= 2^bits; values above half become window - 2^bits with a carry.
        if window > half {
            *digit = window as i16 - full as i16;
            carry = 1;
        } else {
            *digit = window as i16;
            carry = 0;
        }
    }
    (digits, count)
}

/// Digits per scalar for a window width: ceil(257 / bits).
const fn digit_count(bits: u32) -> usize {
    257usize.div_ceil(bits as usize)
}

/// The process-wide table for G, built on first use.
fn generator_table() -> Option<&'static Table> {
    static G_TABLE: OnceLock<Option<Table>> = OnceLock::new();
    G_TABLE
        .get_or_init(|| {
            let g = Affine {
                x: fe_from_slice(&GX_BYTES)?,
                y: fe_from_slice(&GY_BYTES)?,
            };
            Table::build(&g, G_WINDOW_BITS)
        })
        .as_ref()
}

/// A point in affine coordinates, never the identity.
#[derive(Clone, Copy)]
struct Affine {
    x: Fe,
    y: Fe,
}

impl Affine {
    /// Whether y^2 = x^3 - 3x + b; `None` only if the constant b failed to decode.
    fn is_on_curve(&self) -> Option<bool> {
        let b = fe_from_slice(&B_BYTES)?;
        let x3 = self.x.square().multiply(&self.x);
        let three_x = self.x.double().add(&self.x);
        let rhs = x3.sub(&three_x).add(&b);
        Some(self.y.square() == rhs)
    }
}

/// `j * 2^(bits*i) * P` at index `i * 2^(bits-1) + j - 1`, for j in 1..=2^(bits-1) and i below
/// ceil(257 / bits), as 64-byte affine points (5 bits: 832 points, 53,248 bytes).
struct Table {
    bits: u32,
    points: Vec<Affine>,
}

impl Table {
    /// The table for `p`; `None` only if an impossible identity shows up.
    fn build(p: &Affine, bits: u32) -> Option<Table> {
        let entries = 1usize << (bits - 1);
        let windows = digit_count(bits);
        let mut jacobian = Vec::with_capacity(windows * entries);
        let mut base = Jacobian::from_affine(p);
        for _ in 0..windows {
            jacobian.push(base);
            let mut multiple = base.double();
            jacobian.push(multiple);
            for _ in 3..=entries {
                multiple = multiple.add(&base);
                jacobian.push(multiple);
            }
            // 2^bits * base = 2 * (2^(bits-1) * base).
            base = multiple.double();
        }
        Some(Table {
            bits,
            points: normalize(&jacobian)?,
        })
    }

    /// acc += k * P, one mixed addition per non-zero digit; `None` if an entry is missing.
    fn add_multiple(&self, acc: &mut Jacobian, k: &Scalar) -> Option<()> {
        let entries = 1usize << (self.bits - 1);
        let (digits, count) = signed_digits(&k.to_bytes(), self.bits);
        for (window, &digit) in digits.iter().take(count).enumerate() {
            if digit == 0 {
                continue;
            }
            let magnitude = usize::from(digit.unsigned_abs());
            let entry = self.points.get(window * entries + magnitude - 1)?;
            if digit < 0 {
                acc.add_affine(&entry.x, &entry.y.neg());
            } else {
                acc.add_affine(&entry.x, &entry.y);
            }
        }
        Some(())
    }
}

/// Affine forms of Jacobian points with one field inversion (Montgomery's trick); `None` if any
/// point is the identity.
fn normalize(points: &[Jacobian]) -> Option<Vec<Affine>> {
    let mut prefix = Vec::with_capacity(points.len());
    let mut running = Fe::ONE;
    for point in points {
        if point.infinity {
            return None;
        }
        prefix.push(running);
        running = running.multiply(&point.z);
    }
    let mut inverse = running.invert()?;
    let mut out = vec![
        Affine {
            x: Fe::ZERO,
            y: Fe::ZERO
        };
        points.len()
    ];
    for ((point, before), slot) in points.iter().zip(prefix.iter()).zip(out.iter_mut()).rev() {
        // inverse = 1 / (z_0 * ... * z_k); times the prefix up to k-1 gives 1 / z_k.
        let z_inv = inverse.multiply(before);
        inverse = inverse.multiply(&point.z);
        let z_inv2 = z_inv.square();
        *slot = Affine {
            x: point.x.multiply(&z_inv2),
            y: point.y.multiply(&z_inv2.multiply(&z_inv)),
        };
    }
    Some(out)
}

/// A point in Jacobian coordinates: (X / Z^2, Y / Z^3), or the identity.
#[derive(Clone, Copy)]
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
    infinity: bool,
}

impl Jacobian {
    const IDENTITY: Jacobian = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
        infinity: true,
    };

    fn from_affine(p: &Affine) -> Jacobian {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
            infinity: false,
        }
    }

    /// self += (x2, y2): 8M + 3S; equal or opposite points are handled.
    #[inline]
    fn add_affine(&mut self, x2: &Fe, y2: &Fe) {
        if self.infinity {
            *self = Jacobian {
                x: *x2,
                y: *y2,
                z: Fe::ONE,
                infinity: false,
            };
            return;
        }
        let z1z1 = self.z.square();
        let u2 = x2.multiply(&z1z1);
        let s2 = y2.multiply(&self.z).multiply(&z1z1);
        let h = u2.sub(&self.x);
        let r = s2.sub(&self.y);
        if h.is_zero() {
            *self = if r.is_zero() {
                self.double()
            } else {
                Jacobian::IDENTITY
            };
            return;
        }
        let hh = h.square();
        let hhh = h.multiply(&hh);
        let v = self.x.multiply(&hh);
        let x3 = r.square().sub(&hhh).sub(&v.double());
        let y3 = r.multiply(&v.sub(&x3)).sub(&self.y.multiply(&hhh));
        let z3 = self.z.multiply(&h);
        *self = Jacobian {
            x: x3,
            y: y3,
            z: z3,
            infinity: false,
        };
    }

    /// self + other for Jacobian points (table building only): 12M + 4S.
    fn add(&self, other: &Jacobian) -> Jacobian {
        if self.infinity {
            return *other;
        }
        if other.infinity {
            return *self;
        }
        let z1z1 = self.z.square();
        let z2z2 = other.z.square();
        let u1 = self.x.multiply(&z2z2);
        let u2 = other.x.multiply(&z1z1);
        let s1 = self.y.multiply(&other.z).multiply(&z2z2);
        let s2 = other.y.multiply(&self.z).multiply(&z1z1);
        let h = u2.sub(&u1);
        let r = s2.sub(&s1);
        if h.is_zero() {
            return if r.is_zero() {
                self.double()
            } else {
                Jacobian::IDENTITY
            };
        }
        let hh = h.square();
        let hhh = h.multiply(&hh);
        let v = u1.multiply(&hh);
        let x3 = r.square().sub(&hhh).sub(&v.double());
        let y3 = r.multiply(&v.sub(&x3)).sub(&s1.multiply(&hhh));
        let z3 = self.z.multiply(&other.z).multiply(&h);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
            infinity: false,
        }
    }

    /// 2 * self for a = -3 (dbl-2001-b): 3M + 5S.
    fn double(&self) -> Jacobian {
        if self.infinity || self.y.is_zero() {
            return Jacobian::IDENTITY;
        }
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x.multiply(&gamma);
        let t = self.x.sub(&delta).multiply(&self.x.add(&delta));
        let alpha = t.double().add(&t);
        let beta4 = beta.double().double();
        let x3 = alpha.square().sub(&beta4.double());
        let z3 = self.y.add(&self.z).square().sub(&gamma).sub(&delta);
        let gamma_sq8 = gamma.square().double().double().double();
        let y3 = alpha.multiply(&beta4.sub(&x3)).sub(&gamma_sq8);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
            infinity: false,
        }
    }
}

/// 64 hex digits to 32 bytes at compile time.
const fn hex32(hex: &str) -> [u8; 32] {
    let digits = hex.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(digits[2 * i]) << 4) | nibble(digits[2 * i + 1]);
        i += 1;
    }
    out
}

/// One hex digit's value; only ever evaluated on the constants above, at compile time.
const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => 0,
    }
}

/// The field of P-256 for wasm32 in V8, where a 64-bit multiply is cheap but there is no
/// 64x64->128 multiply and carry chains are slow: nine 29-bit limbs held in `u32`, products
/// summed into `i64` columns with no carries, then Montgomery reduction by limbs (R = 2^261)
/// that needs no multiply at all, because p = -1 mod 2^29 (so each quotient digit is the low
/// limb itself) and p + 1 = 2^256 - 2^224 + 2^192 + 2^96 is four shifted terms.
///
/// Invariant of every [`Fe`]: the value is a * R mod p for the element a, not necessarily below
/// p but below 2^257, limbs 0..=7 in [0, 2^29) and limb 8 in [0, 2^25). Sums stay within
/// an `i64` column: 9 products below 2^58 each, plus a few reduction terms below 2^53.
mod field {
    use p256::elliptic_curve::ff::{Field, PrimeField};
    use p256::elliptic_curve::hazmat::FieldArithmetic;
    use p256::{FieldBytes, NistP256};

    type Reference = <NistP256 as FieldArithmetic>::FieldElement;

    const BITS: u32 = 29;
    const MASK: i64 = (1 << BITS) - 1;
    /// p in 29-bit limbs, least significant first.
    const P: [i64; 9] = [
        MASK,
        MASK,
        MASK,
        511,
        0,
        0,
        262_144,
        534_773_760,
        16_777_215,
    ];
    /// R^2 mod p (R = 2^261): plain limbs times this, reduced, gives the Montgomery form.
    const R2: Fe = Fe([
        3072,
        0,
        536_805_376,
        534_773_759,
        532_676_607,
        536_870_911,
        536_870_911,
        536_870_910,
        19,
    ]);
    /// The plain integer 1: Montgomery form times this, reduced, gives the plain value.
    const PLAIN_ONE: Fe = Fe([1, 0, 0, 0, 0, 0, 0, 0, 0]);

    /// An element of GF(p) in Montgomery form (see the module's invariant).
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Fe([u32; 9]);

    impl Fe {
        pub(super) const ZERO: Fe = Fe([0; 9]);
        /// R mod p.
        pub(super) const ONE: Fe = Fe([
            32,
            0,
            0,
            536_854_528,
            536_870_911,
            536_870_911,
            528_482_303,
            67_108_863,
            0,
        ]);

        /// The element for 32 big-endian bytes if they encode a value below p.
        pub(super) fn from_bytes(bytes: &[u8; 32]) -> Option<Fe> {
            let mut words = [0u64; 4];
            for (word, chunk) in words.iter_mut().zip(bytes.rchunks(8)) {
                for &byte in chunk {
                    *word = (*word << 8) | u64::from(byte);
                }
            }
            let mut limbs = [0i64; 9];
            for (i, limb) in limbs.iter_mut().enumerate() {
                let bit = i * BITS as usize;
                let (word, shift) = (bit / 64, bit % 64);
                let low = words.get(word).copied().unwrap_or(0) >> shift;
                let high = match words.get(word + 1) {
                    Some(&next) if shift > 0 => next << (64 - shift),
                    _ => 0,
                };
                *limb = ((low | high) & MASK as u64) as i64;
            }
            if !below_p(&limbs) {
                return None;
            }
            Some(Fe::store(&limbs).multiply(&R2))
        }

        /// The canonical 32 big-endian bytes of the element.
        pub(super) fn to_bytes(self) -> [u8; 32] {
            let limbs = self.multiply(&PLAIN_ONE).canonical();
            let mut words = [0u64; 4];
            for (i, &limb) in limbs.iter().enumerate() {
                let bit = i * BITS as usize;
                let (word, shift) = (bit / 64, bit % 64);
                let limb = limb as u64;
                if let Some(w) = words.get_mut(word) {
                    *w |= limb << shift;
                }
                if shift + BITS as usize > 64 {
                    if let Some(w) = words.get_mut(word + 1) {
                        *w |= limb >> (64 - shift);
                    }
                }
            }
            let mut out = [0u8; 32];
            for (chunk, word) in out.rchunks_mut(8).zip(words) {
                chunk.copy_from_slice(&word.to_be_bytes());
            }
            out
        }

        /// 1 / self through the `p256` crate (table building only); `None` for zero.
        pub(super) fn invert(&self) -> Option<Fe> {
            let reference =
                Reference::from_repr(FieldBytes::from(self.to_bytes())).into_option()?;
            let inverse: [u8; 32] = Field::invert(&reference).into_option()?.to_repr().into();
            Fe::from_bytes(&inverse)
        }

        pub(super) fn is_zero(&self) -> bool {
            self.canonical() == [0; 9]
        }

        // Not inlined: the carries in every sum and difference, inlined at each of their ~40
        // uses, made the filter 13 KB larger (783,565 vs 770,131 bytes) for no speed in V8.
        #[inline(never)]
        pub(super) fn add(&self, other: &Fe) -> Fe {
            let (a, b) = (self.load(), other.load());
            let mut sum = [0i64; 9];
            for i in 0..9 {
                sum[i] = a[i] + b[i];
            }
            Fe::fold(sum)
        }

        #[inline]
        pub(super) fn double(&self) -> Fe {
            self.add(self)
        }

        /// self - other + 4p: positive, as other < 2^257 < 4p.
        #[inline(never)]
        pub(super) fn sub(&self, other: &Fe) -> Fe {
            let (a, b) = (self.load(), other.load());
            let mut difference = [0i64; 9];
            for i in 0..9 {
                difference[i] = a[i] - b[i] + 4 * P[i];
            }
            Fe::fold(difference)
        }

        #[inline]
        pub(super) fn neg(&self) -> Fe {
            Fe::ZERO.sub(self)
        }

        #[inline(never)]
        pub(super) fn multiply(&self, other: &Fe) -> Fe {
            let (a, b) = (self.load(), other.load());
            let mut columns = [0i64; 18];
            for i in 0..9 {
                for j in 0..9 {
                    columns[i + j] += a[i] * b[j];
                }
            }
            Fe::reduce(columns)
        }

        #[inline(never)]
        pub(super) fn square(&self) -> Fe {
            let a = self.load();
            let mut columns = [0i64; 18];
            for i in 0..9 {
                columns[2 * i] += a[i] * a[i];
                let twice = 2 * a[i];
                for j in i + 1..9 {
                    columns[i + j] += twice * a[j];
                }
            }
            Fe::reduce(columns)
        }

        #[inline(always)]
        fn load(&self) -> [i64; 9] {
            self.0.map(i64::from)
        }

        /// Limbs already within the invariant's ranges.
        #[inline(always)]
        fn store(limbs: &[i64; 9]) -> Fe {
            Fe(limbs.map(|limb| limb as u32))
        }

        /// Montgomery reduction of a product in columns: (T + M * p) / 2^261 for the M that makes
        /// the division exact. Since p = -1 mod 2^29, each digit of M is the current low column;
        /// adding digit * p is subtracting the digit (which clears the column) and adding
        /// digit * (2^256 - 2^224 + 2^192 + 2^96). The result is below T / 2^261 + p < 2^257.
        #[inline(always)]
        fn reduce(mut t: [i64; 18]) -> Fe {
            for i in 0..9 {
                let m = t[i] & MASK;
                t[i + 1] += t[i] >> BITS;
                // 96 = 3*29 + 9, 192 = 6*29 + 18, 224 = 7*29 + 21, 256 = 8*29 + 24.
                t[i + 3] += m << 9;
                t[i + 6] += m << 18;
                t[i + 7] -= m << 21;
                t[i + 8] += m << 24;
            }
            let mut limbs = [0i64; 9];
            limbs.copy_from_slice(&t[9..]);
            carry(&mut limbs);
            Fe::store(&limbs)
        }

        /// Limbs of a non-negative value below 2^260 back within the invariant: carries, then
        /// the bits from 2^256 up folded back as 2^256 = 2^224 - 2^192 - 2^96 + 1 (mod p).
        #[inline(always)]
        fn fold(mut limbs: [i64; 9]) -> Fe {
            carry(&mut limbs);
            let high = limbs[8] >> 24;
            limbs[8] &= (1 << 24) - 1;
            limbs[0] += high;
            limbs[3] -= high << 9;
            limbs[6] -= high << 18;
            limbs[7] += high << 21;
            carry(&mut limbs);
            Fe::store(&limbs)
        }

        /// The limbs of the value reduced below p.
        fn canonical(&self) -> [i64; 9] {
            let mut limbs = self.load();
            // The value is below 2^257 < 3p: at most two subtractions.
            for _ in 0..2 {
                if below_p(&limbs) {
                    break;
                }
                for i in 0..9 {
                    limbs[i] -= P[i];
                }
                carry(&mut limbs);
            }
            limbs
        }
    }

    impl PartialEq for Fe {
        fn eq(&self, other: &Fe) -> bool {
            self.canonical() == other.canonical()
        }
    }

    /// Signed carry propagation: limbs 0..=7 end in [0, 2^29), limb 8 takes the rest.
    #[inline(always)]
    fn carry(limbs: &mut [i64; 9]) {
        for i in 0..8 {
            limbs[i + 1] += limbs[i] >> BITS;
            limbs[i] &= MASK;
        }
    }

    /// Whether carried limbs hold a value below p.
    fn below_p(limbs: &[i64; 9]) -> bool {
        for i in (0..9).rev() {
            if limbs[i] != P[i] {
                return limbs[i] < P[i];
            }
        }
        false
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn reference(bytes: &[u8; 32]) -> Reference {
            Reference::from_repr(FieldBytes::from(*bytes)).unwrap()
        }

        fn bytes_of(r: &Reference) -> [u8; 32] {
            r.to_repr().into()
        }

        /// Values below p: edge cases, then xorshift pseudo-random ones (deterministic).
        fn samples() -> Vec<[u8; 32]> {
            let p = reference(&[0; 32]) - Reference::ONE; // p - 1
            let mut out: Vec<[u8; 32]> = Vec::new();
            for small in [0u64, 1, 2, 3, (1 << 29) - 1, 1 << 29, u64::MAX] {
                out.push(bytes_of(&Reference::from(small)));
                out.push(bytes_of(&(p - Reference::from(small)))); // p-1-small
            }
            // 2^k - 1 and 2^k for every k (all ones across limb boundaries), and -2^k.
            let mut power = Reference::ONE;
            for _ in 0..256 {
                out.push(bytes_of(&power));
                out.push(bytes_of(&(power - Reference::ONE)));
                out.push(bytes_of(&-power));
                power = power.double();
            }
            // Every 29-bit limb at its maximum, one at a time and all together (where below p).
            for limb in 0..9 {
                let mut limbs = [0i64; 9];
                limbs[limb] = if limb == 8 { (1 << 24) - 1 } else { MASK };
                if below_p(&limbs) {
                    out.push(Fe::store(&limbs).multiply(&PLAIN_ONE).to_bytes_plain());
                }
            }
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..3000 {
                let mut bytes = [0u8; 32];
                for chunk in bytes.chunks_mut(8) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    chunk.copy_from_slice(&state.to_le_bytes());
                }
                // Bias some samples to top bytes of p's shape.
                if state.is_multiple_of(5) {
                    bytes[..4].fill(0xff);
                }
                if Reference::from_repr(FieldBytes::from(bytes))
                    .is_some()
                    .into()
                {
                    out.push(bytes);
                }
            }
            out
        }

        impl Fe {
            /// For building samples from raw limbs: plain value of Montgomery-reduced limbs.
            fn to_bytes_plain(self) -> [u8; 32] {
                // self holds plain limbs (after multiply by PLAIN_ONE: value / R); undo with R2.
                self.multiply(&R2).to_bytes()
            }

            /// The same element with p or 2p added where that stays below 2^257 (lazy forms).
            fn lazy_forms(self) -> Vec<Fe> {
                let mut out = vec![self];
                let mut limbs = self.canonical();
                for _ in 0..2 {
                    for i in 0..9 {
                        limbs[i] += P[i];
                    }
                    carry(&mut limbs);
                    if limbs[8] < 1 << 25 {
                        out.push(Fe::store(&limbs));
                    }
                }
                out
            }
        }

        fn check_invariant(fe: &Fe) {
            for (i, &limb) in fe.0.iter().enumerate() {
                let bound = if i == 8 { 1 << 25 } else { 1 << 29 };
                assert!(limb < bound, "limb {i} = {limb}");
            }
        }

        #[test]
        fn bytes_round_trip_and_range() {
            for bytes in samples() {
                let fe = Fe::from_bytes(&bytes).unwrap();
                check_invariant(&fe);
                assert_eq!(fe.to_bytes(), bytes);
            }
            let p: [u8; 32] = [
                0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ];
            assert!(Fe::from_bytes(&p).is_none());
            assert!(Fe::from_bytes(&[0xff; 32]).is_none());
            let mut p_minus_1 = p;
            p_minus_1[31] = 0xfe;
            assert_eq!(Fe::from_bytes(&p_minus_1).unwrap().to_bytes(), p_minus_1);
            assert_eq!(Fe::ONE.to_bytes(), bytes_of(&Reference::ONE));
            assert_eq!(Fe::ZERO.to_bytes(), [0; 32]);
            assert!(Fe::ZERO.is_zero());
        }

        #[test]
        fn operations_match_the_p256_crate() {
            let values = samples();
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut pairs = 0;
            for (index, a_bytes) in values.iter().enumerate() {
                // Each value against its neighbour, an edge case and a pseudo-random partner.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let partners = [
                    index + 1,
                    index % 40,
                    (state % values.len() as u64) as usize,
                ];
                for partner in partners {
                    let b_bytes = &values[partner % values.len()];
                    let (ra, rb) = (reference(a_bytes), reference(b_bytes));
                    let a_forms = Fe::from_bytes(a_bytes).unwrap().lazy_forms();
                    let b_forms = Fe::from_bytes(b_bytes).unwrap().lazy_forms();
                    for a in &a_forms {
                        assert_eq!(a.to_bytes(), *a_bytes);
                        let results = [
                            (a.square(), ra.square()),
                            (a.double(), ra.double()),
                            (a.neg(), -ra),
                        ];
                        for (got, want) in results {
                            check_invariant(&got);
                            assert_eq!(got.to_bytes(), bytes_of(&want), "{a_bytes:02x?}");
                        }
                        assert_eq!(a.is_zero(), bool::from(ra.is_zero()));
                        for b in &b_forms {
                            let results = [
                                (a.multiply(b), ra * rb),
                                (a.add(b), ra + rb),
                                (a.sub(b), ra - rb),
                                // Lazy results fed on: sums and differences into products.
                                (a.add(b).multiply(&a.sub(b)), (ra + rb) * (ra - rb)),
                                (
                                    a.sub(b).square().sub(&a.add(b)),
                                    (ra - rb).square() - (ra + rb),
                                ),
                            ];
                            for (got, want) in results {
                                check_invariant(&got);
                                assert_eq!(got.to_bytes(), bytes_of(&want));
                            }
                            assert_eq!(a == b, ra == rb);
                            pairs += 1;
                        }
                    }
                }
            }
            assert!(pairs > 10_000, "{pairs}");
        }

        #[test]
        fn long_chains_stay_within_the_invariant() {
            // Repeated lazy operations never leave the invariant nor drift from the reference.
            let mut x = Fe::from_bytes(&[0xfe; 32]).unwrap_or(Fe::ONE);
            let mut rx = Reference::from_repr(FieldBytes::from(x.to_bytes())).unwrap();
            let y = Fe::ONE.neg();
            let ry = -Reference::ONE;
            for round in 0..5000 {
                (x, rx) = match round % 5 {
                    0 => (x.add(&x).add(&y), rx.double() + ry),
                    1 => (x.sub(&y).sub(&y), rx - ry - ry),
                    2 => (x.square(), rx.square()),
                    3 => (x.neg().multiply(&y), -rx * ry),
                    _ => (x.double().double().double(), rx.double().double().double()),
                };
                check_invariant(&x);
                assert_eq!(x.to_bytes(), bytes_of(&rx), "round {round}");
            }
        }

        #[test]
        fn inversion_matches() {
            for bytes in samples().iter().take(300) {
                let a = Fe::from_bytes(bytes).unwrap();
                match a.invert() {
                    Some(inverse) => assert_eq!(inverse.multiply(&a), Fe::ONE),
                    None => assert!(a.is_zero()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToSec1Point;
    use p256::{AffinePoint, ProjectivePoint};

    fn generator_sec1() -> Vec<u8> {
        let mut sec1 = vec![0x04];
        sec1.extend_from_slice(&GX_BYTES);
        sec1.extend_from_slice(&GY_BYTES);
        sec1
    }

    /// A key with secret d = 7 and a signature made with nonce k = 11 over `message`.
    fn signed(message: &[u8]) -> (P256Key, [u8; 64]) {
        let d = Scalar::from(7u64);
        let k = Scalar::from(11u64);
        let q = (ProjectivePoint::GENERATOR * d).to_affine();
        let key = P256Key::from_sec1(q.to_sec1_point(false).as_bytes()).unwrap();
        let r_point = (ProjectivePoint::GENERATOR * k).to_affine();
        let x = r_point.to_sec1_point(false).x().copied().unwrap();
        let r = <Scalar as Reduce<FieldBytes>>::reduce(&x);
        let e = message_scalar(message);
        let s = k.invert().unwrap() * (e + r * d);
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r.to_bytes());
        sig[32..].copy_from_slice(&s.to_bytes());
        (key, sig)
    }

    #[test]
    fn a_correct_signature_verifies() {
        let (key, sig) = signed(b"hello");
        assert!(key.verify(b"hello", &sig));
    }

    #[test]
    fn a_flipped_signature_bit_fails() {
        let (key, sig) = signed(b"hello");
        for bit in [0, 7, 255, 256, 300, 511] {
            let mut bad = sig;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.verify(b"hello", &bad), "bit {bit}");
        }
    }

    #[test]
    fn a_flipped_message_bit_fails() {
        let (key, sig) = signed(b"hello");
        assert!(!key.verify(b"hellp", &sig));
    }

    #[test]
    fn bad_signature_lengths_fail() {
        let (key, sig) = signed(b"hello");
        assert!(!key.verify(b"hello", &[]));
        assert!(!key.verify(b"hello", &sig[..63]));
        let mut long = sig.to_vec();
        long.push(0);
        assert!(!key.verify(b"hello", &long));
    }

    #[test]
    fn zero_r_or_s_fails() {
        let (key, sig) = signed(b"hello");
        let mut zero_r = sig;
        zero_r[..32].fill(0);
        assert!(!key.verify(b"hello", &zero_r));
        let mut zero_s = sig;
        zero_s[32..].fill(0);
        assert!(!key.verify(b"hello", &zero_s));
    }

    #[test]
    fn r_or_s_equal_to_n_fails() {
        let (key, sig) = signed(b"hello");
        let mut big_r = sig;
        big_r[..32].copy_from_slice(&N_BYTES);
        assert!(!key.verify(b"hello", &big_r));
        let mut big_s = sig;
        big_s[32..].copy_from_slice(&N_BYTES);
        assert!(!key.verify(b"hello", &big_s));
    }

    #[test]
    fn r_or_s_plus_n_is_not_reduced() {
        // r + n or s + n fit in 256 bits only when small; use s + n where s < 2^256 - n.
        let (key, sig) = signed(b"hello");
        let s = U256Be(sig[32..].try_into().unwrap());
        if let Some(s_plus_n) = s.add(&N_BYTES) {
            let mut bad = sig;
            bad[32..].copy_from_slice(&s_plus_n);
            assert!(!key.verify(b"hello", &bad));
        }
        let r = U256Be(sig[..32].try_into().unwrap());
        if let Some(r_plus_n) = r.add(&N_BYTES) {
            let mut bad = sig;
            bad[..32].copy_from_slice(&r_plus_n);
            assert!(!key.verify(b"hello", &bad));
        }
    }

    /// Big-endian 256-bit addition for the test above.
    struct U256Be([u8; 32]);
    impl U256Be {
        fn add(&self, other: &[u8; 32]) -> Option<[u8; 32]> {
            let mut out = [0u8; 32];
            let mut carry = 0u16;
            for i in (0..32).rev() {
                let sum = u16::from(self.0[i]) + u16::from(other[i]) + carry;
                out[i] = sum as u8;
                carry = sum >> 8;
            }
            (carry == 0).then_some(out)
        }
    }

    #[test]
    fn an_off_curve_point_is_refused() {
        let mut sec1 = generator_sec1();
        sec1[64] ^= 1;
        assert!(P256Key::from_sec1(&sec1).is_none());
    }

    #[test]
    fn the_identity_and_zero_points_are_refused() {
        assert!(P256Key::from_sec1(&[0x00]).is_none());
        assert!(P256Key::from_sec1(&[0u8; 65]).is_none());
        let mut zeros = [0u8; 65];
        zeros[0] = 0x04;
        assert!(P256Key::from_sec1(&zeros).is_none());
    }

    #[test]
    fn bad_encodings_are_refused() {
        let g = generator_sec1();
        assert!(P256Key::from_sec1(&g[..64]).is_none());
        let mut compressed_tag = g.clone();
        compressed_tag[0] = 0x02;
        assert!(P256Key::from_sec1(&compressed_tag).is_none());
        let mut long = g.clone();
        long.push(0);
        assert!(P256Key::from_sec1(&long).is_none());
        // x = p is out of range even though x mod p might give a valid point.
        let mut x_is_p = g;
        x_is_p[1..33].copy_from_slice(&hex32(
            "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
        ));
        assert!(P256Key::from_sec1(&x_is_p).is_none());
        assert!(P256Key::from_sec1(&[]).is_none());
    }

    #[test]
    fn the_generator_is_accepted_and_keys_compare_by_point() {
        let a = P256Key::from_sec1(&generator_sec1()).unwrap();
        let b = a.clone();
        assert_eq!(a, b);
        let (other, _) = signed(b"x");
        assert_ne!(a, other);
        assert_eq!(format!("{a:?}"), "P256Key(x=6b17d1f2..)");
    }

    #[test]
    fn signed_digits_recompose_the_scalar() {
        let mut scalars = vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE, -Scalar::from(2u64)];
        for seed in [1u64, 2, 31, 32, 33, 127, 128, 0xdead_beef, u64::MAX] {
            scalars.push(Scalar::from(seed));
            scalars.push(-Scalar::from(seed) - Scalar::from(seed.wrapping_mul(977)));
            scalars.push(Scalar::from(seed).invert().unwrap_or(Scalar::ONE));
        }
        for bits in 5..=8u32 {
            let half = 1i16 << (bits - 1);
            for k in &scalars {
                let (digits, count) = signed_digits(&k.to_bytes(), bits);
                assert_eq!(count, digit_count(bits));
                let mut acc = Scalar::ZERO;
                for &d in digits[..count].iter().rev() {
                    assert!((-half + 1..=half).contains(&d), "{d} at {bits} bits");
                    acc *= Scalar::from(1u64 << bits);
                    let m = Scalar::from(u64::from(d.unsigned_abs()));
                    acc += if d < 0 { -m } else { m };
                }
                assert_eq!(&acc, k, "{bits} bits");
            }
        }
    }

    /// x(u1*G + u2*Q) through the tables, or `None` for the identity.
    fn table_sum_x(g: &Table, q: &Table, u1: &Scalar, u2: &Scalar) -> Option<FieldBytes> {
        let mut acc = Jacobian::IDENTITY;
        g.add_multiple(&mut acc, u1).unwrap();
        q.add_multiple(&mut acc, u2).unwrap();
        if acc.infinity {
            return None;
        }
        let z_inv = acc.z.invert().unwrap();
        Some(FieldBytes::from(acc.x.multiply(&z_inv.square()).to_bytes()))
    }

    #[test]
    fn table_multiplication_matches_p256() {
        let q = (ProjectivePoint::GENERATOR * Scalar::from(7u64)).to_affine();
        let q_affine = Affine {
            x: fe_from_slice(q.to_sec1_point(false).x().unwrap()).unwrap(),
            y: fe_from_slice(q.to_sec1_point(false).y().unwrap()).unwrap(),
        };
        let g = Affine {
            x: fe_from_slice(&GX_BYTES).unwrap(),
            y: fe_from_slice(&GY_BYTES).unwrap(),
        };
        for bits in 5..=8u32 {
            let g_table = Table::build(&g, bits).unwrap();
            let q_table = Table::build(&q_affine, KEY_WINDOW_BITS).unwrap();
            for (a, b) in [(1u64, 2u64), (5, 0), (0, 9), (123_456_789, 987_654_321)] {
                let u1 = -Scalar::from(a);
                let u2 = Scalar::from(b) * Scalar::from(a + 3).invert().unwrap();
                let expected: AffinePoint =
                    (ProjectivePoint::GENERATOR * u1 + ProjectivePoint::from(q) * u2).to_affine();
                let encoded = expected.to_sec1_point(false);
                let got = table_sum_x(&g_table, &q_table, &u1, &u2);
                assert_eq!(got.as_ref(), encoded.x(), "{bits} bits, {a} {b}");
            }
        }
    }

    #[test]
    fn opposite_points_sum_to_the_identity() {
        // u*G + (-u)*G is the identity: the key table of G and G's own table meet there.
        let g = P256Key::from_sec1(&generator_sec1()).unwrap();
        g.precompute();
        let table = g.table.get().unwrap().as_ref().unwrap();
        for u in [Scalar::from(12345u64), -Scalar::from(3u64), Scalar::ONE] {
            assert_eq!(
                table_sum_x(generator_table().unwrap(), table, &u, &-u),
                None
            );
            // u*G + u*G = 2u*G.
            let expected = (ProjectivePoint::GENERATOR * (u + u)).to_affine();
            let got = table_sum_x(generator_table().unwrap(), table, &u, &u);
            assert_eq!(got.as_ref(), expected.to_sec1_point(false).x());
        }
    }

    #[test]
    fn mixed_addition_of_equal_and_opposite_points() {
        let g = Affine {
            x: fe_from_slice(&GX_BYTES).unwrap(),
            y: fe_from_slice(&GY_BYTES).unwrap(),
        };
        // A non-trivial Z: 3G computed as 2G + G in Jacobian form.
        let three = Jacobian::from_affine(&g)
            .double()
            .add(&Jacobian::from_affine(&g));
        let three_affine = normalize(&[three]).unwrap()[0];
        let mut doubled = three;
        doubled.add_affine(&three_affine.x, &three_affine.y);
        let six = normalize(&[doubled]).unwrap()[0];
        let expected = (ProjectivePoint::GENERATOR * Scalar::from(6u64)).to_affine();
        assert_eq!(
            &FieldBytes::from(six.x.to_bytes()),
            expected.to_sec1_point(false).x().unwrap()
        );
        assert_eq!(
            &FieldBytes::from(six.y.to_bytes()),
            expected.to_sec1_point(false).y().unwrap()
        );
        let mut cancelled = three;
        cancelled.add_affine(&three_affine.x, &three_affine.y.neg());
        assert!(cancelled.infinity);
        assert!(
            Jacobian::from_affine(&g)
                .add(&Jacobian::from_affine(&Affine {
                    x: g.x,
                    y: g.y.neg()
                }))
                .infinity
        );
    }

    #[test]
    fn arbitrary_signatures_fail_without_panicking() {
        let (key, sig) = signed(b"hello");
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let mut bytes = [0u8; 64];
            for chunk in bytes.chunks_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            // Mix random halves with the real ones and with all-ones (> n).
            match round % 4 {
                1 => bytes[..32].copy_from_slice(&sig[..32]),
                2 => bytes[32..].copy_from_slice(&sig[32..]),
                3 => bytes[..32].fill(0xff),
                _ => {}
            }
            assert!(!key.verify(b"hello", &bytes));
            assert!(!key.verify(b"hello", &bytes[..(round % 64)]));
        }
    }
}
