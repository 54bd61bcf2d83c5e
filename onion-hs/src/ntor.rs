//! hs-ntor, rend-spec-v3 §3.3.2 \[NTOR-WITH-EXTRA-DATA\], and the rendezvous key expansion of
//! §4.2.1 that keys the end-to-end "virtual hop" between client and service.
//!
//! Client: [`HsNtorClient::new`] gives `X` and the keys that encrypt and MAC the INTRODUCE1
//! payload; [`HsNtorClient::finish`] checks the service's `Y | AUTH` from RENDEZVOUS2 and gives
//! the [`HsRendKeys`]. Service: [`service_intro_keys`] recomputes the INTRODUCE keys from `X`,
//! then [`service_finish`] makes `Y | AUTH` for RENDEZVOUS1 and the same [`HsRendKeys`].

use rand_core::CryptoRngCore;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::keys::Subcredential;
use crate::ops::{ct_eq, hs_mac, shake256_kdf};

/// PROTOID.
pub const PROTOID: &[u8] = b"tor-hs-ntor-curve25519-sha3-256-1";
const T_HSENC: &[u8] = b"tor-hs-ntor-curve25519-sha3-256-1:hs_key_extract";
const T_HSVERIFY: &[u8] = b"tor-hs-ntor-curve25519-sha3-256-1:hs_verify";
const T_HSMAC: &[u8] = b"tor-hs-ntor-curve25519-sha3-256-1:hs_mac";
const M_HSEXPAND: &[u8] = b"tor-hs-ntor-curve25519-sha3-256-1:hs_key_expand";

/// Handshake failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NtorError {
    /// A Diffie-Hellman result was all zero (a small-order public key).
    #[error("hs-ntor: degenerate public key (all-zero shared secret)")]
    DegenerateKey,
    /// The service's AUTH value does not match.
    #[error("hs-ntor: AUTH_INPUT_MAC mismatch in RENDEZVOUS2")]
    BadAuth,
    /// HANDSHAKE_INFO of the wrong length.
    #[error("hs-ntor: handshake info is {0} bytes, expected 64")]
    BadLength(usize),
}

/// The ed25519 form (sign bit 0) of an x25519 public key, as proposal 228 Appendix A and the
/// descriptor's `enc-key-cert` use it.
pub fn x25519_to_ed25519(key: &[u8; 32]) -> Option<[u8; 32]> {
    onion_crypto::keys::ed25519_from_curve25519_public(&onion_crypto::keys::NtorOnionKey(*key), 0)
        .ok()
        .map(|k| k.to_bytes())
}

/// `ENC_KEY` and `MAC_KEY` protecting the INTRODUCE1 encrypted section.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IntroKeys {
    /// `ENC_KEY` (AES-256-CTR, zero IV).
    pub enc_key: [u8; 32],
    /// `MAC_KEY`.
    pub mac_key: [u8; 32],
}

/// The end-to-end keys of the rendezvous circuit (§4.2.1): `K = KDF(NTOR_KEY_SEED | m_hsexpand,
/// 2·HASH_LEN + 2·S_KEY_LEN)` split as `Df | Db | Kf | Kb`. They key tor1 relay crypto with
/// SHA3-256 digests and AES-256-CTR (§3.3.2); the client encrypts with `Kf` and digests with
/// `Df`, the service the reverse.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HsRendKeys {
    /// Forward digest seed `Df`.
    pub df: [u8; 32],
    /// Backward digest seed `Db`.
    pub db: [u8; 32],
    /// Forward key `Kf`.
    pub kf: [u8; 32],
    /// Backward key `Kb`.
    pub kb: [u8; 32],
}

impl HsRendKeys {
    /// Expand `NTOR_KEY_SEED`.
    pub fn from_seed(ntor_key_seed: &[u8; 32]) -> Self {
        let mut k = [0u8; 128];
        shake256_kdf(&[ntor_key_seed, M_HSEXPAND], &mut k);
        let mut r = HsRendKeys {
            df: [0; 32],
            db: [0; 32],
            kf: [0; 32],
            kb: [0; 32],
        };
        r.df.copy_from_slice(&k[..32]);
        r.db.copy_from_slice(&k[32..64]);
        r.kf.copy_from_slice(&k[64..96]);
        r.kb.copy_from_slice(&k[96..]);
        k.zeroize();
        r
    }

    /// The client's end of the virtual hop (sends with `Kf`/`Df`, receives with `Kb`/`Db`),
    /// to add to the rendezvous circuit after the rendezvous point.
    pub fn client_layer(&self) -> Result<onion_crypto::tor1::HsClientHop, onion_crypto::Tor1Error> {
        let mut k = self.to_bytes();
        let hop = onion_crypto::tor1::HsClientHop::from_key_material(&k);
        k.zeroize();
        hop
    }

    /// The service's end of the virtual hop (sends with `Kb`/`Db`, receives with `Kf`/`Df`).
    pub fn service_layer(
        &self,
    ) -> Result<onion_crypto::tor1::HsClientHop, onion_crypto::Tor1Error> {
        let mut k = self.to_bytes();
        let hop = onion_crypto::tor1::HsClientHop::from_key_material_reversed(&k);
        k.zeroize();
        hop
    }

    /// The 128 bytes `Df | Db | Kf | Kb`.
    pub fn to_bytes(&self) -> [u8; 128] {
        let mut o = [0u8; 128];
        o[..32].copy_from_slice(&self.df);
        o[32..64].copy_from_slice(&self.db);
        o[64..96].copy_from_slice(&self.kf);
        o[96..].copy_from_slice(&self.kb);
        o
    }
}

fn dh(sk: &StaticSecret, pk: &[u8; 32]) -> Result<[u8; 32], NtorError> {
    let s = sk.diffie_hellman(&XPublic::from(*pk)).to_bytes();
    if s.iter().all(|&b| b == 0) {
        return Err(NtorError::DegenerateKey);
    }
    Ok(s)
}

fn intro_keys(
    exp_bx: &[u8; 32],
    auth_key: &[u8; 32],
    x_pub: &[u8; 32],
    b_pub: &[u8; 32],
    subcred: &Subcredential,
) -> IntroKeys {
    // KDF(intro_secret_hs_input | t_hsenc | info), info = m_hsexpand | N_hs_subcred
    let mut out = [0u8; 64];
    shake256_kdf(
        &[
            exp_bx, auth_key, x_pub, b_pub, PROTOID, T_HSENC, M_HSEXPAND, &subcred.0,
        ],
        &mut out,
    );
    let mut k = IntroKeys {
        enc_key: [0; 32],
        mac_key: [0; 32],
    };
    k.enc_key.copy_from_slice(&out[..32]);
    k.mac_key.copy_from_slice(&out[32..]);
    out.zeroize();
    k
}

/// `(NTOR_KEY_SEED, AUTH_INPUT_MAC)` from the two DH results.
fn rend_finish(
    exp_xy: &[u8; 32],
    exp_xb: &[u8; 32],
    auth_key: &[u8; 32],
    b_pub: &[u8; 32],
    x_pub: &[u8; 32],
    y_pub: &[u8; 32],
) -> ([u8; 32], [u8; 32]) {
    let mut input = Vec::with_capacity(32 * 6 + PROTOID.len());
    for p in [exp_xy, exp_xb, auth_key, b_pub, x_pub, y_pub] {
        input.extend_from_slice(p);
    }
    input.extend_from_slice(PROTOID);
    let seed = hs_mac(&input, &[T_HSENC]);
    let mut verify = hs_mac(&input, &[T_HSVERIFY]);
    input.zeroize();
    let auth = hs_mac(
        &[
            &verify[..],
            auth_key,
            b_pub,
            y_pub,
            x_pub,
            PROTOID,
            b"Server",
        ]
        .concat(),
        &[T_HSMAC],
    );
    verify.zeroize();
    (seed, auth)
}

/// The client's half-finished handshake, kept from INTRODUCE1 until RENDEZVOUS2.
#[derive(ZeroizeOnDrop)]
pub struct HsNtorClient {
    x: StaticSecret,
    #[zeroize(skip)]
    x_pub: [u8; 32],
    #[zeroize(skip)]
    b_pub: [u8; 32],
    #[zeroize(skip)]
    auth_key: [u8; 32],
}

impl HsNtorClient {
    /// Start: draw `x`, compute `X` and the INTRODUCE1 keys for the introduction point with
    /// auth key `auth_key` (`KP_hs_ipt_sid`) and service encryption key `b_pub` (`KP_hss_ntor`).
    pub fn new(
        rng: &mut impl CryptoRngCore,
        auth_key: &[u8; 32],
        b_pub: &[u8; 32],
        subcred: &Subcredential,
    ) -> Result<(Self, IntroKeys), NtorError> {
        let mut xb = [0u8; 32];
        rng.fill_bytes(&mut xb);
        let r = Self::with_secret(xb, auth_key, b_pub, subcred);
        xb.zeroize();
        r
    }

    /// As [`HsNtorClient::new`] with a given secret `x` (for known-answer tests).
    pub fn with_secret(
        x: [u8; 32],
        auth_key: &[u8; 32],
        b_pub: &[u8; 32],
        subcred: &Subcredential,
    ) -> Result<(Self, IntroKeys), NtorError> {
        let x = StaticSecret::from(x);
        let x_pub = XPublic::from(&x).to_bytes();
        let mut exp = dh(&x, b_pub)?;
        let keys = intro_keys(&exp, auth_key, &x_pub, b_pub, subcred);
        exp.zeroize();
        Ok((
            HsNtorClient {
                x,
                x_pub,
                b_pub: *b_pub,
                auth_key: *auth_key,
            },
            keys,
        ))
    }

    /// `X`, the client's public key (CLIENT_PK of INTRODUCE1).
    pub fn public_key(&self) -> &[u8; 32] {
        &self.x_pub
    }

    /// Complete with RENDEZVOUS2's HANDSHAKE_INFO (`Y | AUTH`).
    pub fn finish(&self, handshake_info: &[u8]) -> Result<HsRendKeys, NtorError> {
        let info: &[u8; 64] = handshake_info
            .try_into()
            .map_err(|_| NtorError::BadLength(handshake_info.len()))?;
        let mut y = [0u8; 32];
        y.copy_from_slice(&info[..32]);
        let mut exp_xy = dh(&self.x, &y)?;
        let mut exp_xb = dh(&self.x, &self.b_pub)?;
        let (mut seed, auth) = rend_finish(
            &exp_xy,
            &exp_xb,
            &self.auth_key,
            &self.b_pub,
            &self.x_pub,
            &y,
        );
        exp_xy.zeroize();
        exp_xb.zeroize();
        if !ct_eq(&auth, &info[32..]) {
            seed.zeroize();
            return Err(NtorError::BadAuth);
        }
        let keys = HsRendKeys::from_seed(&seed);
        seed.zeroize();
        Ok(keys)
    }
}

/// Service: the INTRODUCE2 keys from the client's `X`, with the intro point's encryption key
/// pair (`b`, `B`) and auth key.
pub fn service_intro_keys(
    b: &StaticSecret,
    auth_key: &[u8; 32],
    x_pub: &[u8; 32],
    subcred: &Subcredential,
) -> Result<IntroKeys, NtorError> {
    let b_pub = XPublic::from(b).to_bytes();
    let mut exp = dh(b, x_pub)?;
    let k = intro_keys(&exp, auth_key, x_pub, &b_pub, subcred);
    exp.zeroize();
    Ok(k)
}

/// Service: draw `y` and produce RENDEZVOUS1's HANDSHAKE_INFO (`Y | AUTH_INPUT_MAC`) and the
/// rendezvous keys.
pub fn service_finish(
    rng: &mut impl CryptoRngCore,
    b: &StaticSecret,
    auth_key: &[u8; 32],
    x_pub: &[u8; 32],
) -> Result<([u8; 64], HsRendKeys), NtorError> {
    let mut yb = [0u8; 32];
    rng.fill_bytes(&mut yb);
    let r = service_finish_with_secret(yb, b, auth_key, x_pub);
    yb.zeroize();
    r
}

/// As [`service_finish`] with a given secret `y` (for known-answer tests).
pub fn service_finish_with_secret(
    y: [u8; 32],
    b: &StaticSecret,
    auth_key: &[u8; 32],
    x_pub: &[u8; 32],
) -> Result<([u8; 64], HsRendKeys), NtorError> {
    let y = StaticSecret::from(y);
    let y_pub = XPublic::from(&y).to_bytes();
    let b_pub = XPublic::from(b).to_bytes();
    let mut exp_xy = dh(&y, x_pub)?;
    let mut exp_xb = dh(b, x_pub)?;
    let (mut seed, auth) = rend_finish(&exp_xy, &exp_xb, auth_key, &b_pub, x_pub, &y_pub);
    exp_xy.zeroize();
    exp_xb.zeroize();
    let keys = HsRendKeys::from_seed(&seed);
    seed.zeroize();
    let mut info = [0u8; 64];
    info[..32].copy_from_slice(&y_pub);
    info[32..].copy_from_slice(&auth);
    Ok((info, keys))
}

/// `NTOR_KEY_SEED` and `AUTH_INPUT_MAC` for given secrets (known-answer tests only need this to
/// pin intermediate values).
#[doc(hidden)]
pub fn kat_seed_and_auth(
    y: [u8; 32],
    b: &StaticSecret,
    auth_key: &[u8; 32],
    x_pub: &[u8; 32],
) -> Result<([u8; 32], [u8; 32]), NtorError> {
    let y = StaticSecret::from(y);
    let y_pub = XPublic::from(&y).to_bytes();
    let b_pub = XPublic::from(b).to_bytes();
    let exp_xy = dh(&y, x_pub)?;
    let exp_xb = dh(b, x_pub)?;
    Ok(rend_finish(
        &exp_xy, &exp_xb, auth_key, &b_pub, x_pub, &y_pub,
    ))
}
