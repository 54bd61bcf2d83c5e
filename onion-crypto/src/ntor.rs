//! The ntor handshake, "ntor-curve25519-sha256-1" (tor-spec 5.1.4; proposal 216), CREATE2
//! handshake type 0x0002.
//!
//! Client: [`NtorClient::start`] gives the 84-byte onion skin `ID | B | X` and a
//! [`NtorClientPending`] state; [`NtorClientPending::finish`] checks the 64-byte reply
//! `Y | AUTH` and yields a [`KeyGenerator`]. Relay: [`server`] answers an onion skin with
//! one of its secret onion keys (current or previous, selected in constant time).
//!
//! ```text
//! secret_input = EXP(Y,x) | EXP(B,x) | ID | B | X | Y | PROTOID
//! KEY_SEED     = H(secret_input, t_key)        (H(x,t) = HMAC-SHA256 keyed with t)
//! verify       = H(secret_input, t_verify)
//! auth_input   = verify | ID | B | Y | X | PROTOID | "Server"
//! AUTH         = H(auth_input, t_mac)
//! keys         = HKDF-SHA256(salt = t_key, ikm = secret_input, info = m_expand)
//! ```

use rand_core::CryptoRngCore;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, Zeroizing};

use crate::error::HandshakeError;
use crate::kdf::{hmac_sha256, KeyGenerator};
use crate::keys::{contributory, x25519, x25519_base, NtorOnionKey, NtorSecretKey, RsaIdentity};

/// Length of the client onion skin: `ID(20) | B(32) | X(32)`.
pub const NTOR_CLIENT_HANDSHAKE_LEN: usize = 84;
/// Length of the server reply: `Y(32) | AUTH(32)`.
pub const NTOR_SERVER_HANDSHAKE_LEN: usize = 64;

const PROTOID: &[u8] = b"ntor-curve25519-sha256-1";
const T_MAC: &[u8] = b"ntor-curve25519-sha256-1:mac";
const T_KEY: &[u8] = b"ntor-curve25519-sha256-1:key_extract";
const T_VERIFY: &[u8] = b"ntor-curve25519-sha256-1:verify";
const M_EXPAND: &[u8] = b"ntor-curve25519-sha256-1:key_expand";

/// Entry point of the client side of ntor.
#[derive(Debug, Clone, Copy)]
pub struct NtorClient;

/// A client ntor handshake waiting for the relay's reply. Holds the ephemeral secret `x`
/// (zeroized on drop).
pub struct NtorClientPending {
    x: Zeroizing<[u8; 32]>,
    pub_x: [u8; 32],
    id: RsaIdentity,
    b: NtorOnionKey,
}

impl core::fmt::Debug for NtorClientPending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NtorClientPending")
            .field("relay", &self.id)
            .finish_non_exhaustive()
    }
}

impl NtorClient {
    /// Start a handshake with the relay whose RSA identity is `relay_id` and whose ntor
    /// onion key is `onion_key`. Returns the pending state and the 84-byte CREATE2 body.
    pub fn start(
        rng: &mut impl CryptoRngCore,
        relay_id: &RsaIdentity,
        onion_key: &NtorOnionKey,
    ) -> (NtorClientPending, [u8; NTOR_CLIENT_HANDSHAKE_LEN]) {
        let mut x = [0u8; 32];
        rng.fill_bytes(&mut x);
        let r = Self::start_with_secret(x, relay_id, onion_key);
        x.zeroize();
        r
    }

    /// As [`NtorClient::start`] with a given ephemeral secret (for known-answer tests).
    pub(crate) fn start_with_secret(
        x: [u8; 32],
        relay_id: &RsaIdentity,
        onion_key: &NtorOnionKey,
    ) -> (NtorClientPending, [u8; NTOR_CLIENT_HANDSHAKE_LEN]) {
        let x = Zeroizing::new(x);
        let pub_x = x25519_base(&x);
        let mut msg = [0u8; NTOR_CLIENT_HANDSHAKE_LEN];
        msg[..20].copy_from_slice(relay_id.as_bytes());
        msg[20..52].copy_from_slice(onion_key.as_bytes());
        msg[52..].copy_from_slice(&pub_x);
        (
            NtorClientPending {
                x,
                pub_x,
                id: *relay_id,
                b: *onion_key,
            },
            msg,
        )
    }
}

/// Compute (KEY_SEED, AUTH) from the two DH results and the public values.
fn derive(
    xy: &[u8; 32],
    xb: &[u8; 32],
    id: &RsaIdentity,
    b: &[u8; 32],
    x: &[u8; 32],
    y: &[u8; 32],
) -> (Zeroizing<[u8; 32]>, [u8; 32]) {
    let mut secret_input = Zeroizing::new([0u8; 32 + 32 + 20 + 32 + 32 + 32 + 24]);
    {
        let s = &mut secret_input[..];
        s[..32].copy_from_slice(xy);
        s[32..64].copy_from_slice(xb);
        s[64..84].copy_from_slice(id.as_bytes());
        s[84..116].copy_from_slice(b);
        s[116..148].copy_from_slice(x);
        s[148..180].copy_from_slice(y);
        s[180..].copy_from_slice(PROTOID);
    }
    let key_seed = Zeroizing::new(hmac_sha256(T_KEY, &[&secret_input[..]]));
    let verify = Zeroizing::new(hmac_sha256(T_VERIFY, &[&secret_input[..]]));
    let auth = hmac_sha256(
        T_MAC,
        &[&verify[..], id.as_bytes(), b, y, x, PROTOID, b"Server"],
    );
    (key_seed, auth)
}

impl NtorClientPending {
    /// Check the relay's 64-byte reply `Y | AUTH` and derive the circuit keys.
    ///
    /// Fails with [`HandshakeError::BadLength`], [`HandshakeError::DegenerateKey`] (Y is a
    /// small-order point) or [`HandshakeError::BadAuth`] (any other corruption of the
    /// reply, or a relay without the onion key).
    pub fn finish(self, reply: &[u8]) -> Result<KeyGenerator, HandshakeError> {
        if reply.len() != NTOR_SERVER_HANDSHAKE_LEN {
            return Err(HandshakeError::BadLength {
                what: "ntor server reply",
                expected: NTOR_SERVER_HANDSHAKE_LEN,
                got: reply.len(),
            });
        }
        let mut y = [0u8; 32];
        y.copy_from_slice(&reply[..32]);
        let xy = x25519(&self.x, &y);
        let xb = x25519(&self.x, self.b.as_bytes());
        let contributory = contributory(&xy) & contributory(&xb);
        let (key_seed, auth) = derive(&xy, &xb, &self.id, self.b.as_bytes(), &self.pub_x, &y);
        let auth_ok: bool = auth.ct_eq(&reply[32..]).into();
        if !contributory {
            return Err(HandshakeError::DegenerateKey { field: "Y" });
        }
        if !auth_ok {
            return Err(HandshakeError::BadAuth { field: "AUTH" });
        }
        Ok(KeyGenerator::hkdf(*key_seed, M_EXPAND))
    }

    /// The relay identity this handshake is addressed to.
    pub fn relay_id(&self) -> &RsaIdentity {
        &self.id
    }
}

/// Relay side of ntor: answer the 84-byte onion skin `msg` as the relay `my_id`, holding
/// the secret onion keys `keys` (typically the current and the previous one).
///
/// The key named by the client's KEYID is selected in constant time: every key is
/// compared, and the matching secret is picked with conditional assignment, so timing does
/// not reveal which key (or whether any) matched. Returns the 64-byte reply and the keys.
pub fn server(
    rng: &mut impl CryptoRngCore,
    my_id: &RsaIdentity,
    keys: &[NtorSecretKey],
    msg: &[u8],
) -> Result<([u8; NTOR_SERVER_HANDSHAKE_LEN], KeyGenerator), HandshakeError> {
    let mut y = [0u8; 32];
    rng.fill_bytes(&mut y);
    let r = server_with_secret(y, my_id, keys, msg);
    y.zeroize();
    r
}

/// The head both ntor and ntor-v3 onion skins start with: the relay's identity (20 bytes of
/// RSA digest for ntor, the 32-byte ed25519 key for ntor-v3), the KEYID `B` naming one of
/// its onion keys, and the client's ephemeral key `X`. Both checks are computed in constant
/// time and only read (by the caller) after every secret-dependent step is done.
pub(crate) struct SkinHead {
    /// The identity in the skin equals ours.
    pub id_ok: Choice,
    /// `B` named one of our keys.
    pub found: Choice,
    /// The secret of that key (zero if none matched).
    pub b_secret: Zeroizing<[u8; 32]>,
    /// `B` as sent.
    pub pub_b: [u8; 32],
    /// `X` as sent.
    pub pub_x: [u8; 32],
}

impl SkinHead {
    /// Split `msg` (at least `my_id.len() + 64` bytes, checked by the caller) for the relay
    /// `my_id` holding `keys`.
    pub(crate) fn parse(
        my_id: &[u8],
        keys: &[NtorSecretKey],
        msg: &[u8],
    ) -> Result<SkinHead, HandshakeError> {
        if keys.is_empty() {
            return Err(HandshakeError::NoOnionKeys);
        }
        let n = my_id.len();
        let id_ok = my_id.ct_eq(&msg[..n]);
        let (b_secret, found) = select_key(keys, &msg[n..n + 32]);
        let mut pub_b = [0u8; 32];
        pub_b.copy_from_slice(&msg[n..n + 32]);
        let mut pub_x = [0u8; 32];
        pub_x.copy_from_slice(&msg[n + 32..n + 64]);
        Ok(SkinHead {
            id_ok,
            found,
            b_secret,
            pub_b,
            pub_x,
        })
    }

    /// The verdict, read once every secret-dependent computation is done: the skin names
    /// this relay and one of its keys, and the Diffie-Hellman results were contributory.
    pub(crate) fn check(&self, contributory: bool) -> Result<(), HandshakeError> {
        if !bool::from(self.id_ok) {
            return Err(HandshakeError::WrongRelayId);
        }
        if !bool::from(self.found) {
            return Err(HandshakeError::UnknownOnionKey);
        }
        if !contributory {
            return Err(HandshakeError::DegenerateKey { field: "X" });
        }
        Ok(())
    }
}

/// Constant-time selection of the secret key whose public part equals `want`.
fn select_key(keys: &[NtorSecretKey], want: &[u8]) -> (Zeroizing<[u8; 32]>, Choice) {
    let mut sel = Zeroizing::new([0u8; 32]);
    let mut found = Choice::from(0);
    for k in keys {
        let eq = k.public().as_bytes().ct_eq(want);
        let kb = k.to_bytes();
        for (s, b) in sel.iter_mut().zip(kb.iter()) {
            s.conditional_assign(b, eq);
        }
        found |= eq;
    }
    (sel, found)
}

pub(crate) fn server_with_secret(
    y: [u8; 32],
    my_id: &RsaIdentity,
    keys: &[NtorSecretKey],
    msg: &[u8],
) -> Result<([u8; NTOR_SERVER_HANDSHAKE_LEN], KeyGenerator), HandshakeError> {
    if msg.len() != NTOR_CLIENT_HANDSHAKE_LEN {
        return Err(HandshakeError::BadLength {
            what: "ntor client onion skin",
            expected: NTOR_CLIENT_HANDSHAKE_LEN,
            got: msg.len(),
        });
    }
    let head = SkinHead::parse(my_id.as_bytes(), keys, msg)?;
    let pub_y = x25519_base(&y);
    let xy = x25519(&y, &head.pub_x);
    let xb = x25519(&head.b_secret, &head.pub_x);
    let (key_seed, auth) = derive(&xy, &xb, my_id, &head.pub_b, &head.pub_x, &pub_y);
    head.check(contributory(&xy) & contributory(&xb))?;
    let mut reply = [0u8; NTOR_SERVER_HANDSHAKE_LEN];
    reply[..32].copy_from_slice(&pub_y);
    reply[32..].copy_from_slice(&auth);
    Ok((reply, KeyGenerator::hkdf(*key_seed, M_EXPAND)))
}
