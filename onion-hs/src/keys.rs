//! Onion-service keys, key blinding and (sub)credentials.
//!
//! - Key blinding: rend-spec-v3 Appendix A.2 \[KEYBLIND\]. For a time period,
//!   `h = H("Derive temporary signing key" | INT_1(0) | A | B | N)` with
//!   `N = "key-blind" | INT_8(period_num) | INT_8(period_length)`; after clamping `h`,
//!   `A' = h·A` and `a' = h·a mod l`, `RH' = SHA-512("Derive temporary signing key hash input" | RH)[:32]`.
//! - Credential and subcredential: rend-spec-v3 §2.1 \[SUBCRED\].
//!
//! The public side only handles public data (the identity key and the period), so it uses a
//! variable-time multiplication; the secret side is constant time.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, VerifyingKey};
use onion_crypto::keys::{Ed25519Keypair, Ed25519Signer, ExpandedEd25519Keypair};
use sha2::{Digest as _, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::address::OnionAddress;
use crate::ops::sha3_256;
use crate::time::TimePeriod;

const BLIND_STRING: &[u8] = b"Derive temporary signing key\0";
const RH_BLIND_STRING: &[u8] = b"Derive temporary signing key hash input";
/// The ed25519 base point written as in rend-spec-v3 A.2.
const BASEPOINT_STR: &[u8] = b"(15112221349535400772501151409588531511454012693041857206046113283949847762202, 46316835694926478169428394003475163141307993866256225615783033603165251855960)";

/// Errors about key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HsKeyError {
    /// 32 bytes that are not the encoding of a curve point.
    #[error("ed25519 public key is not a valid curve point")]
    NotOnCurve,
    /// A point of small order or with a torsion component (C tor rejects these too).
    #[error("ed25519 public key has a torsion component or small order")]
    Torsion,
    /// A key file with an unexpected length or header.
    #[error("key file: {0}")]
    BadKeyFile(&'static str),
    /// The secret key does not match the public key it was given with.
    #[error("secret key does not match public key")]
    Mismatch,
}

fn decompress_checked(bytes: &[u8; 32]) -> Result<(EdwardsPoint, VerifyingKey), HsKeyError> {
    let p = CompressedEdwardsY(*bytes)
        .decompress()
        .ok_or(HsKeyError::NotOnCurve)?;
    if p.is_small_order() || !p.is_torsion_free() {
        return Err(HsKeyError::Torsion);
    }
    Ok((p, VerifyingKey::from(p)))
}

/// An onion service's public identity key `KP_hs_id` (the key in the onion address).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HsIdKey {
    vk: VerifyingKey,
}

impl core::fmt::Debug for HsIdKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "HsIdKey({})", crate::util::b64_nopad(self.vk.as_bytes()))
    }
}

impl HsIdKey {
    /// Decode and validate (on curve, torsion free) a 32-byte identity key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, HsKeyError> {
        let (_, vk) = decompress_checked(bytes)?;
        Ok(HsIdKey { vk })
    }

    /// The 32-byte encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.vk.as_bytes()
    }

    /// The onion address of this key.
    pub fn address(&self) -> crate::address::OnionAddress {
        crate::address::OnionAddress::from_public_key(*self.as_bytes())
    }

    /// `N_hs_cred = H("credential" | KP_hs_id)`, rend-spec-v3 §2.1.
    pub fn credential(&self) -> Credential {
        Credential(sha3_256(&[b"credential", self.as_bytes()]))
    }

    /// The blinding factor `h` (before clamping) for a time period, rend-spec-v3 A.2.
    pub fn blinding_factor(&self, period: TimePeriod) -> [u8; 32] {
        let mut n = [0u8; 9 + 16];
        n[..9].copy_from_slice(b"key-blind");
        n[9..17].copy_from_slice(&period.num().to_be_bytes());
        n[17..].copy_from_slice(&u64::from(period.length_minutes()).to_be_bytes());
        sha3_256(&[BLIND_STRING, self.as_bytes(), BASEPOINT_STR, &n])
    }

    /// The blinded public key `KP_hs_blind_id` for a time period.
    pub fn blind(&self, period: TimePeriod) -> HsBlindedKey {
        self.blind_with_param(&self.blinding_factor(period))
    }

    /// Blind with a raw 32-byte parameter (clamped here), as C tor's
    /// `ed25519_public_blind` does: `A' = clamp(param)·A`.
    pub fn blind_with_param(&self, param: &[u8; 32]) -> HsBlindedKey {
        // clamp(param) = 8·k for an integer k < 2^252; A' = k·(8·A). 8·A is in the prime-order
        // subgroup, so k may be reduced mod l. All data here is public: variable time is fine.
        let k = clamped_div8(param);
        let a8 = self.vk.to_edwards().mul_by_cofactor();
        let p = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &a8, &Scalar::ZERO);
        HsBlindedKey {
            vk: VerifyingKey::from(p),
        }
    }
}

/// `clamp(bytes) / 8` as a scalar (mod l).
fn clamped_div8(param: &[u8; 32]) -> Scalar {
    let mut c = *param;
    c[0] &= 248;
    c[31] &= 63;
    c[31] |= 64;
    // Shift right by 3 bits (little-endian).
    let mut d = [0u8; 32];
    for i in 0..32 {
        let hi = if i + 1 < 32 { c[i + 1] << 5 } else { 0 };
        d[i] = (c[i] >> 3) | hi;
    }
    let s = Scalar::from_bytes_mod_order(d);
    c.zeroize();
    d.zeroize();
    s
}

fn clamped_scalar(param: &[u8; 32]) -> Scalar {
    let mut c = *param;
    c[0] &= 248;
    c[31] &= 63;
    c[31] |= 64;
    let s = Scalar::from_bytes_mod_order(c);
    c.zeroize();
    s
}

/// An ed25519 key pair in expanded form (scalar `a` and hash prefix `RH`), as C tor stores it.
///
/// Used for the service identity key and for blinded keys. The key itself is onion-crypto's
/// [`ExpandedEd25519Keypair`] (which zeroizes its secret on drop); this adds the onion-service
/// operations (identity key, blinding) and keeps the public key at hand for borrowing.
pub struct ExpandedKeypair {
    kp: ExpandedEd25519Keypair,
    public: VerifyingKey,
}

impl ExpandedKeypair {
    /// From a 64-byte expanded secret key (`a | RH`). The scalar is taken as stored (C tor's
    /// type0 keys are already clamped), reduced mod l.
    pub fn from_expanded_bytes(bytes: &[u8; 64]) -> Self {
        Self::from_crypto(ExpandedEd25519Keypair::from_expanded_bytes(bytes))
    }

    fn from_crypto(kp: ExpandedEd25519Keypair) -> Self {
        let public = kp.public_key();
        ExpandedKeypair { kp, public }
    }

    /// From a 32-byte RFC 8032 seed (`SHA-512(seed)`, clamped).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::from_crypto(Ed25519Keypair::from_seed(seed).to_expanded())
    }

    /// A fresh random key pair.
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let kp = Self::from_seed(&seed);
        seed.zeroize();
        kp
    }

    /// The 64-byte expanded secret key `a | RH`.
    pub fn to_expanded_bytes(&self) -> [u8; 64] {
        *self.kp.to_expanded_bytes()
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> &[u8; 32] {
        self.public.as_bytes()
    }

    /// The public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The public key as an identity key.
    pub fn id_key(&self) -> HsIdKey {
        HsIdKey { vk: self.public }
    }

    /// Ed25519 signature of `msg` (RFC 8032, with this expanded key).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Ed25519Signer::sign(&self.kp, msg)
    }

    /// Blind this key pair for a time period (secret side of rend-spec-v3 A.2).
    pub fn blind(&self, period: TimePeriod) -> HsBlindedKeypair {
        let mut h = self.id_key().blinding_factor(period);
        let kp = self.blind_with_param(&h);
        h.zeroize();
        kp
    }

    /// Blind with a raw 32-byte parameter: `a' = clamp(param)·a mod l`,
    /// `RH' = SHA-512("Derive temporary signing key hash input" | RH)[:32]`.
    pub fn blind_with_param(&self, param: &[u8; 32]) -> HsBlindedKeypair {
        let raw = self.kp.to_expanded_bytes();
        let mut a = [0u8; 32];
        a.copy_from_slice(&raw[..32]);
        let scalar = clamped_scalar(param) * Scalar::from_bytes_mod_order(a);
        a.zeroize();
        let mut rh = Sha512::new();
        rh.update(RH_BLIND_STRING);
        rh.update(&raw[32..]);
        let mut full: [u8; 64] = rh.finalize().into();
        let mut blinded = Zeroizing::new([0u8; 64]);
        blinded[..32].copy_from_slice(&scalar.to_bytes());
        blinded[32..].copy_from_slice(&full[..32]);
        full.zeroize();
        HsBlindedKeypair {
            kp: ExpandedKeypair::from_expanded_bytes(&blinded),
        }
    }
}

/// A blinded public key `KP_hs_blind_id` for one time period.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HsBlindedKey {
    vk: VerifyingKey,
}

impl core::fmt::Debug for HsBlindedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "HsBlindedKey({})",
            crate::util::b64_nopad(self.vk.as_bytes())
        )
    }
}

impl HsBlindedKey {
    /// Decode a blinded key (from a certificate or descriptor); must be a valid point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, HsKeyError> {
        let vk = VerifyingKey::from_bytes(bytes).map_err(|_| HsKeyError::NotOnCurve)?;
        Ok(HsBlindedKey { vk })
    }

    /// The 32-byte encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.vk.as_bytes()
    }

    /// The key for signature verification.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.vk
    }

    /// `N_hs_subcred = H("subcredential" | N_hs_cred | KP_hs_blind_id)`, rend-spec-v3 §2.1.
    pub fn subcredential(&self, cred: &Credential) -> Subcredential {
        Subcredential(sha3_256(&[b"subcredential", &cred.0, self.as_bytes()]))
    }
}

/// A blinded key pair (`KS_hs_blind_id`, `KP_hs_blind_id`): signs descriptor signing-key
/// certificates for one period. Zeroized on drop.
pub struct HsBlindedKeypair {
    kp: ExpandedKeypair,
}

impl HsBlindedKeypair {
    /// The public half.
    pub fn public(&self) -> HsBlindedKey {
        HsBlindedKey { vk: self.kp.public }
    }

    /// The 64-byte expanded secret key (`a' | RH'`).
    pub fn to_expanded_bytes(&self) -> [u8; 64] {
        self.kp.to_expanded_bytes()
    }

    /// Ed25519 signature with the blinded key.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        self.kp.sign(msg)
    }
}

/// `N_hs_cred`, the service credential (constant for the service).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Credential(pub [u8; 32]);

/// `N_hs_subcred`, the per-period subcredential; needed to decrypt descriptors and for hs-ntor.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Subcredential(pub [u8; 32]);

impl core::fmt::Debug for Credential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Credential(..)")
    }
}
impl core::fmt::Debug for Subcredential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Subcredential(..)")
    }
}

impl OnionAddress {
    /// The identity key of the address as a validated ed25519 point (on the curve, no
    /// torsion component; rend-spec-v3 §6 \[ONIONADDRESS\] carries the raw 32 bytes).
    pub fn identity_key(&self) -> Result<HsIdKey, HsKeyError> {
        HsIdKey::from_bytes(self.public_key_bytes())
    }
}
