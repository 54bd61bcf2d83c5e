//! RSA keys as Tor uses them (tor-spec 0.3, dir-spec 1.3 "signatures").
//!
//! * The relay identity is `SHA-1(PKCS#1 DER of the public key)` ([`RsaPublicKey::identity`]).
//! * Signatures are PKCS#1 v1.5. Two forms exist: the standard one with a DigestInfo
//!   prefix (X.509 certificates, [`RsaPublicKey::verify_prefixed`]) and Tor's own
//!   "unprefixed" form, where the padded block holds the bare digest (or the bare data):
//!   directory signatures (`router-signature`, `directory-signature`), the RSA→ed25519
//!   cross-certificate and the TAP onion-key cross-certificate
//!   ([`RsaPublicKey::verify_unprefixed`]).
//! * [`RsaKeypair`] signs, for relays and tests. RSA-1024 key generation takes tens of
//!   milliseconds (more in debug builds): keep tests that generate keys few.
//!
//! The `rsa` crate's private-key operation is not constant time (RUSTSEC-2023-0071,
//! "Marvin"); it matters for decryption oracles, which Tor does not expose, and signing
//! here always uses blinding (`sign_with_rng`).

use alloc::vec;
use alloc::vec::Vec;

use ::rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use ::rsa::traits::PublicKeyParts;
use ::rsa::{BigUint, Pkcs1v15Sign};
use base64::Engine as _;
use digest::const_oid::AssociatedOid;
use digest::Digest;
use rand_core::CryptoRngCore;
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::keys::{RsaIdentity, B64_LENIENT};

/// Largest RSA modulus accepted from the network or documents (bits). Tor uses 1024 for
/// relay keys and up to 3072 for directory authority identity keys; 8192 bounds the work
/// a hostile document can cause.
pub const MAX_RSA_BITS: usize = 8192;

/// An RSA public key, with what verification needs precomputed once (its Montgomery form).
#[derive(Clone)]
pub struct RsaPublicKey(::rsa::RsaPublicKey, MontKey);

impl PartialEq for RsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        // The Montgomery constants are a function of the key.
        self.0 == other.0
    }
}

impl Eq for RsaPublicKey {}

impl core::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RsaPublicKey({} bits, {})", self.bits(), self.identity())
    }
}

impl RsaPublicKey {
    /// Decode a PKCS#1 `RSAPublicKey` DER structure (what Tor documents carry between
    /// `-----BEGIN RSA PUBLIC KEY-----` lines).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let k = ::rsa::pkcs1::RsaPublicKey::try_from(der).map_err(|_| KeyError::BadRsaDer)?;
        let n = BigUint::from_bytes_be(k.modulus.as_bytes());
        let e = BigUint::from_bytes_be(k.public_exponent.as_bytes());
        let key = ::rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
            .map_err(|_| KeyError::BadRsaKey("modulus or exponent out of range"))?;
        Ok(Self::from_rsa(key))
    }

    /// Wraps a key the `rsa` crate has already validated (odd modulus, exponent at most
    /// 2^33 - 1), precomputing its Montgomery constants.
    fn from_rsa(key: ::rsa::RsaPublicKey) -> Self {
        let mont = MontKey::new(key.n(), key.e());
        RsaPublicKey(key, mont)
    }

    /// Decode the PEM form `-----BEGIN RSA PUBLIC KEY----- ... -----END RSA PUBLIC KEY-----`.
    pub fn from_pkcs1_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_decode(pem, "RSA PUBLIC KEY").ok_or(KeyError::BadEncoding {
            encoding: "PEM",
            what: "RSA public key",
        })?;
        Self::from_pkcs1_der(&der)
    }

    /// The PKCS#1 DER encoding (the input of the identity digest).
    pub fn to_pkcs1_der(&self) -> Vec<u8> {
        match self.0.to_pkcs1_der() {
            Ok(d) => d.into_vec(),
            // Encoding a valid key cannot fail; an empty vector would make every digest
            // comparison fail safely.
            Err(_) => Vec::new(),
        }
    }

    /// The Tor RSA identity: SHA-1 of the PKCS#1 DER encoding.
    pub fn identity(&self) -> RsaIdentity {
        RsaIdentity(Sha1::digest(self.to_pkcs1_der()).into())
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.0.n().bits()
    }

    /// Is this a key Tor accepts as a relay identity or onion key: 1024 bits, e = 65537
    /// (tor-spec 0.3)?
    pub fn check_relay_key(&self) -> Result<(), KeyError> {
        if self.bits() != 1024 {
            return Err(KeyError::BadRsaKey("relay RSA keys must be 1024 bits"));
        }
        if *self.0.e() != BigUint::from(65537u32) {
            return Err(KeyError::BadRsaKey(
                "relay RSA keys must use exponent 65537",
            ));
        }
        Ok(())
    }

    /// Verify a standard PKCS#1 v1.5 signature (DigestInfo for `D`, then the digest) over
    /// `digest`, the already computed hash of the signed data.
    pub fn verify_prefixed<D: Digest + AssociatedOid>(
        &self,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<(), KeyError> {
        self.verify_pkcs1v15(&Pkcs1v15Sign::new::<D>(), digest, signature)
    }

    /// Verify a Tor "unprefixed" PKCS#1 v1.5 signature: the padded block holds `data`
    /// itself (a bare SHA-1 or SHA-256 digest for directory signatures, 52 raw bytes for
    /// the onion-key cross-certificate).
    pub fn verify_unprefixed(&self, data: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        self.verify_pkcs1v15(&Pkcs1v15Sign::new_unprefixed(), data, signature)
    }

    /// PKCS#1 v1.5 signature verification (RFC 8017 8.2.2): `signature` must be exactly
    /// the modulus size and below the modulus; `signature^e mod n` must equal
    /// `00 01 FF..FF 00 || prefix || hashed` with at least 8 bytes of FF. The same checks,
    /// in the same order, as the `rsa` crate's `Pkcs1v15Sign` verification, but with the
    /// modular exponentiation of [`MontKey::pow_e`], which costs one Montgomery
    /// multiplication per exponent bit instead of a fixed 4-bit window over a whole
    /// 64-bit word and a fresh `R^2 mod n` division on every call.
    fn verify_pkcs1v15(
        &self,
        scheme: &Pkcs1v15Sign,
        hashed: &[u8],
        signature: &[u8],
    ) -> Result<(), KeyError> {
        if let Some(len) = scheme.hash_len {
            if hashed.len() != len {
                return Err(KeyError::BadRsaSignature);
            }
        }
        let k = self.size();
        let t_len = scheme.prefix.len() + hashed.len();
        if signature.len() != k || k < t_len + 11 {
            return Err(KeyError::BadRsaSignature);
        }
        let em = self
            .1
            .pow_e(signature, k)
            .ok_or(KeyError::BadRsaSignature)?;
        let mut expected = Vec::with_capacity(k);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(k - t_len - 1, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(&scheme.prefix);
        expected.extend_from_slice(hashed);
        if bool::from(em.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(KeyError::BadRsaSignature)
        }
    }

    /// The wrapped `rsa` crate key.
    pub fn as_rsa(&self) -> &::rsa::RsaPublicKey {
        &self.0
    }

    /// Size of a signature made by this key, in bytes.
    pub fn size(&self) -> usize {
        self.0.size()
    }
}

/// An RSA private key (relay identity or onion key, or a test key). Zeroized on drop by
/// the `rsa` crate.
#[derive(Clone)]
pub struct RsaKeypair {
    secret: ::rsa::RsaPrivateKey,
    public: RsaPublicKey,
}

impl core::fmt::Debug for RsaKeypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RsaKeypair({:?})", self.public)
    }
}

impl RsaKeypair {
    /// Generate an RSA-1024 key with e = 65537, as relays use. Slow: tens of milliseconds.
    pub fn generate_1024(rng: &mut impl CryptoRngCore) -> Result<Self, KeyError> {
        Self::generate(rng, 1024)
    }

    /// Generate a key of `bits` bits with e = 65537.
    pub fn generate(rng: &mut impl CryptoRngCore, bits: usize) -> Result<Self, KeyError> {
        let secret = ::rsa::RsaPrivateKey::new(rng, bits)
            .map_err(|_| KeyError::RsaOperation("key generation"))?;
        let public = RsaPublicKey::from_rsa(secret.to_public_key());
        Ok(RsaKeypair { secret, public })
    }

    /// Decode a PKCS#1 `RSAPrivateKey` DER structure (C tor's `secret_id_key` body).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let secret = ::rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|_| KeyError::BadRsaDer)?;
        let public = RsaPublicKey::from_rsa(secret.to_public_key());
        Ok(RsaKeypair { secret, public })
    }

    /// The PKCS#1 DER encoding of the private key (zeroized on drop).
    pub fn to_pkcs1_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.secret
            .to_pkcs1_der()
            .map(|d| Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|_| KeyError::RsaOperation("PKCS#1 encoding"))
    }

    /// The public key.
    pub fn public(&self) -> &RsaPublicKey {
        &self.public
    }

    /// Standard PKCS#1 v1.5 signature over the digest `digest` computed with `D`.
    pub fn sign_prefixed<D: Digest + AssociatedOid>(
        &self,
        rng: &mut impl CryptoRngCore,
        digest: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        self.secret
            .sign_with_rng(rng, Pkcs1v15Sign::new::<D>(), digest)
            .map_err(|_| KeyError::RsaOperation("signing"))
    }

    /// Tor's unprefixed PKCS#1 v1.5 signature over `data` (see
    /// [`RsaPublicKey::verify_unprefixed`]).
    pub fn sign_unprefixed(
        &self,
        rng: &mut impl CryptoRngCore,
        data: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        self.secret
            .sign_with_rng(rng, Pkcs1v15Sign::new_unprefixed(), data)
            .map_err(|_| KeyError::RsaOperation("signing"))
    }

    /// The wrapped `rsa` crate key.
    pub fn as_rsa(&self) -> &::rsa::RsaPrivateKey {
        &self.secret
    }
}

/// The Montgomery form of an RSA public key (odd modulus `n` of `s` 64-bit limbs,
/// `R = 2^(64 s)`), computed once per key so that a verification is only the modular
/// exponentiation by the public exponent: square-and-multiply over the bits of `e`
/// (16 squarings and 1 multiplication for e = 65537) with Montgomery multiplication.
/// Public values only: nothing here needs to run in constant time.
#[derive(Clone)]
struct MontKey {
    /// The modulus, least significant limb first.
    n: Vec<u64>,
    /// `-n^-1 mod 2^64`.
    n0inv: u64,
    /// `R^2 mod n`, to enter Montgomery form.
    rr: Vec<u64>,
    /// The public exponent.
    e: u64,
}

impl MontKey {
    /// `n` must be odd and `e` at most 64 bits, as the `rsa` crate's key validation
    /// guarantees; any other key gets a `MontKey` whose [`MontKey::pow_e`] refuses.
    fn new(n: &BigUint, e: &BigUint) -> Self {
        let n_limbs = to_limbs(n, 0);
        let e_bytes = e.to_bytes_be();
        let e = if e_bytes.len() <= 8 {
            e_bytes.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
        } else {
            0
        };
        let n0 = n_limbs.first().copied().unwrap_or(0);
        if n0 & 1 == 0 || e == 0 || n <= &BigUint::from(1u32) {
            return MontKey {
                n: Vec::new(),
                n0inv: 0,
                rr: Vec::new(),
                e: 0,
            };
        }
        // Newton's iteration doubles the correct low bits: n0 is its own inverse mod 8.
        let mut inv = n0;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let mut key = MontKey {
            n: n_limbs,
            n0inv: inv.wrapping_neg(),
            rr: Vec::new(),
            e,
        };
        key.rr = key.r_squared();
        key
    }

    /// `R^2 mod n` without a long division (which costs more than the rest of a key's
    /// decoding): doublings modulo `n` from `2^(bits-1)` up to `2^64 R mod n`, the
    /// Montgomery form of `2^64`, then its `s`-th power by Montgomery square-and-multiply,
    /// the Montgomery form of `2^(64 s) = R`, which is `R^2 mod n`.
    fn r_squared(&self) -> Vec<u64> {
        let n = &self.n;
        let s = n.len();
        let top = n[s - 1];
        let bits = 64 * s - top.leading_zeros() as usize;
        let mut r = vec![0u64; s];
        r[(bits - 1) / 64] = 1 << ((bits - 1) % 64);
        for _ in 0..(64 * s - bits + 1 + 64) {
            let mut carry = 0u64;
            for l in r.iter_mut() {
                let next = *l >> 63;
                *l = (*l << 1) | carry;
                carry = next;
            }
            if carry != 0 || !less_than(&r, n) {
                sub_in_place(&mut r, n);
            }
        }
        let mut t = vec![0u64; s + 2];
        let mut acc = r.clone();
        let mut tmp = vec![0u64; s];
        let high = usize::BITS - 1 - s.leading_zeros();
        for bit in (0..high).rev() {
            self.mul(&acc, &acc, &mut t, &mut tmp);
            if (s >> bit) & 1 == 1 {
                self.mul(&tmp, &r, &mut t, &mut acc);
            } else {
                core::mem::swap(&mut acc, &mut tmp);
            }
        }
        acc
    }

    /// `x^e mod n` as `k` big-endian bytes, where `x` is the big-endian `sig`; `None` if
    /// `sig` does not fit in `k` bytes, `k` bytes do not fit in the modulus' limbs, or
    /// `x` is not below the modulus.
    fn pow_e(&self, sig: &[u8], k: usize) -> Option<Vec<u8>> {
        let s = self.n.len();
        if s == 0 || self.e == 0 || sig.len() > 8 * s || k > 8 * s {
            return None;
        }
        let mut x = vec![0u64; s];
        for (i, &b) in sig.iter().rev().enumerate() {
            x[i / 8] |= u64::from(b) << (8 * (i % 8));
        }
        if !less_than(&x, &self.n) {
            return None;
        }
        let mut t = vec![0u64; s + 2];
        let mut xm = vec![0u64; s];
        self.mul(&x, &self.rr, &mut t, &mut xm);
        let mut z = xm.clone();
        let mut tmp = vec![0u64; s];
        let top = 63 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            self.mul(&z, &z, &mut t, &mut tmp);
            if (self.e >> bit) & 1 == 1 {
                self.mul(&tmp, &xm, &mut t, &mut z);
            } else {
                core::mem::swap(&mut z, &mut tmp);
            }
        }
        let mut one = vec![0u64; s];
        one[0] = 1;
        self.mul(&z, &one, &mut t, &mut tmp);
        let mut out = Vec::with_capacity(k);
        for i in (0..k).rev() {
            out.push((tmp[i / 8] >> (8 * (i % 8))) as u8);
        }
        Some(out)
    }

    /// Montgomery multiplication (CIOS, multiplication and reduction in one pass):
    /// `out = a b R^-1 mod n` for `a, b < n`, fully reduced. `t` is scratch space of
    /// `s + 2` limbs.
    fn mul(&self, a: &[u64], b: &[u64], t: &mut [u64], out: &mut [u64]) {
        let n = &self.n[..];
        let s = n.len();
        let (a, t) = (&a[..s], &mut t[..s + 1]);
        t.iter_mut().for_each(|l| *l = 0);
        for &bi in &b[..s] {
            // m makes the lowest limb of t + a bi + m n zero.
            let m = t[0]
                .wrapping_add(a[0].wrapping_mul(bi))
                .wrapping_mul(self.n0inv);
            let v1 = u128::from(t[0]) + u128::from(a[0]) * u128::from(bi);
            let mut c1 = (v1 >> 64) as u64;
            let v2 = u128::from(v1 as u64) + u128::from(m) * u128::from(n[0]);
            let mut c2 = (v2 >> 64) as u64;
            for j in 1..s {
                let v1 = u128::from(t[j]) + u128::from(a[j]) * u128::from(bi) + u128::from(c1);
                c1 = (v1 >> 64) as u64;
                let v2 = u128::from(v1 as u64) + u128::from(m) * u128::from(n[j]) + u128::from(c2);
                c2 = (v2 >> 64) as u64;
                t[j - 1] = v2 as u64;
            }
            let v = u128::from(t[s]) + u128::from(c1) + u128::from(c2);
            t[s - 1] = v as u64;
            t[s] = (v >> 64) as u64;
        }
        // t < 2n: subtract n once if t >= n.
        out[..s].copy_from_slice(&t[..s]);
        if t[s] != 0 || !less_than(&t[..s], n) {
            sub_in_place(&mut out[..s], n);
        }
    }
}

/// `a -= b` modulo `2^(64 len)`, little-endian limbs of equal length.
fn sub_in_place(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(y);
        let (d2, b2) = d1.overflowing_sub(borrow);
        *x = d2;
        borrow = u64::from(b1 | b2);
    }
}

/// Little-endian 64-bit limbs of `v`, at least `min` of them.
fn to_limbs(v: &BigUint, min: usize) -> Vec<u64> {
    let bytes = v.to_bytes_le();
    let mut limbs = vec![0u64; bytes.len().div_ceil(8).max(min)];
    for (i, &b) in bytes.iter().enumerate() {
        limbs[i / 8] |= u64::from(b) << (8 * (i % 8));
    }
    limbs
}

/// `a < b` for little-endian limb slices of equal length.
fn less_than(a: &[u64], b: &[u64]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// Decode the base64 body between `-----BEGIN {label}-----` and `-----END {label}-----`.
/// Returns `None` on any framing or base64 error.
pub fn pem_decode(pem: &str, label: &str) -> Option<Vec<u8>> {
    let s = pem.trim();
    let rest = s
        .strip_prefix("-----BEGIN ")?
        .strip_prefix(label)?
        .strip_prefix("-----")?;
    let end = rest.find("-----END ")?;
    let (body, tail) = rest.split_at(end);
    let tail = tail
        .strip_prefix("-----END ")?
        .strip_prefix(label)?
        .strip_prefix("-----")?;
    if !tail.trim().is_empty() {
        return None;
    }
    let compact: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    B64_LENIENT.decode(compact).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use sha2::Sha256;

    fn random_below(rng: &mut ChaCha20Rng, n: &BigUint) -> BigUint {
        let mut b = vec![0u8; n.to_bytes_be().len() + 8];
        rng.fill_bytes(&mut b);
        BigUint::from_bytes_be(&b) % n
    }

    /// The Montgomery exponentiation agrees with the generic `modpow` for odd moduli of
    /// many sizes (limb multiples and not), RSA exponents and bases at the edges.
    #[test]
    fn pow_e_matches_modpow() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for bits in [65usize, 127, 128, 1000, 1024, 1536, 2048, 3072, 4096] {
            for e in [3u64, 17, 65537, (1 << 33) - 1, 0xffff_ffff_ffff_fffd] {
                let mut nb = vec![0u8; bits.div_ceil(8)];
                rng.fill_bytes(&mut nb);
                let excess = nb.len() * 8 - bits;
                nb[0] &= 0xff >> excess;
                nb[0] |= 0x80 >> excess;
                *nb.last_mut().unwrap() |= 1;
                let n = BigUint::from_bytes_be(&nb);
                let e_big = BigUint::from(e);
                let mont = MontKey::new(&n, &e_big);
                let rr = (BigUint::from(1u32) << (128 * mont.n.len())) % &n;
                assert_eq!(
                    mont.rr,
                    to_limbs(&rr, mont.n.len()),
                    "R^2 mod n, bits {bits}"
                );
                let k = nb.len();
                let mut bases = vec![
                    BigUint::from(0u32),
                    BigUint::from(1u32),
                    BigUint::from(2u32),
                    &n - BigUint::from(1u32),
                ];
                for _ in 0..4 {
                    bases.push(random_below(&mut rng, &n));
                }
                for x in bases {
                    let xb = x.to_bytes_be();
                    let mut sig = vec![0u8; k - xb.len()];
                    sig.extend_from_slice(&xb);
                    let want = x.modpow(&e_big, &n).to_bytes_be();
                    let mut want_padded = vec![0u8; k - want.len()];
                    want_padded.extend_from_slice(&want);
                    assert_eq!(
                        mont.pow_e(&sig, k),
                        Some(want_padded),
                        "bits {bits} e {e} x {x}"
                    );
                }
                // The modulus itself and anything above it are refused.
                assert_eq!(mont.pow_e(&nb, k), None);
                assert_eq!(mont.pow_e(&vec![0xff; k], k), None);
            }
        }
    }

    /// Verification gives the same answer as the `rsa` crate's own PKCS#1 v1.5
    /// verification on valid signatures and on every kind of bad one.
    #[test]
    fn verify_agrees_with_rsa_crate() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let key = RsaKeypair::generate_1024(&mut rng).unwrap();
        let public = key.public();
        let d256: [u8; 32] = Sha256::digest(b"data").into();
        let d1: [u8; 20] = Sha1::digest(b"data").into();
        let good_p = key.sign_prefixed::<Sha256>(&mut rng, &d256).unwrap();
        let good_u = key.sign_unprefixed(&mut rng, &d1).unwrap();
        let n = public.as_rsa().n().to_bytes_be();
        let mut n_minus_1 = n.clone();
        *n_minus_1.last_mut().unwrap() -= 1;
        let mut flipped = good_p.clone();
        flipped[60] ^= 4;
        let mut random = vec![0u8; 128];
        rng.fill_bytes(&mut random);
        random[0] &= 0x7f;
        let sigs: Vec<Vec<u8>> = vec![
            good_p.clone(),
            good_u.clone(),
            flipped,
            random,
            n.clone(),
            n_minus_1,
            vec![0u8; 128],
            vec![0xffu8; 128],
            good_p[1..].to_vec(),
            [&[0u8][..], &good_p[..]].concat(),
            Vec::new(),
        ];
        for sig in &sigs {
            for data in [&d256[..], &d1[..], &d256[..31], &[0u8; 100][..]] {
                let old = public
                    .as_rsa()
                    .verify(Pkcs1v15Sign::new::<Sha256>(), data, sig)
                    .is_ok();
                assert_eq!(public.verify_prefixed::<Sha256>(data, sig).is_ok(), old);
                let old = public
                    .as_rsa()
                    .verify(Pkcs1v15Sign::new_unprefixed(), data, sig)
                    .is_ok();
                assert_eq!(public.verify_unprefixed(data, sig).is_ok(), old);
            }
        }
        assert!(public.verify_prefixed::<Sha256>(&d256, &good_p).is_ok());
        assert!(public.verify_unprefixed(&d1, &good_u).is_ok());
        // A key decoded from DER verifies as the generated one does.
        let decoded = RsaPublicKey::from_pkcs1_der(&public.to_pkcs1_der()).unwrap();
        assert_eq!(&decoded, public);
        assert!(decoded.verify_prefixed::<Sha256>(&d256, &good_p).is_ok());
    }
}
