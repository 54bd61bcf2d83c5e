//! The ntor-v3 handshake, "ntor3-curve25519-sha3_256-1" (proposal 332; tor-spec 5.1.4.x),
//! CREATE2 handshake type 0x0003, with encrypted extra data in both directions.
//!
//! Client: [`NtorV3Client::start`] sends `ID(32) | B(32) | X(32) | ENC(CM) | MAC(32)`;
//! [`NtorV3ClientPending::finish`] checks `Y(32) | AUTH(32) | ENC(SM)` and returns the
//! relay's message `SM` and a [`KeyGenerator`]. Relay: [`NtorV3Server::receive`] checks the
//! client's MAC and decrypts `CM`; [`NtorV3ServerPending::reply`] encrypts `SM` and
//! finishes. Both sides must agree on the verification string `VER` (C tor uses
//! `"circuit extend"` for CREATE2).
//!
//! Primitives (proposal 332 A.1): `ENCAP(s) = htonll(len(s)) | s`,
//! `H(s, t) = SHA3-256(ENCAP(t) | s)`, `MAC(k, m, t) = SHA3-256(ENCAP(t) | ENCAP(k) | m)`,
//! `KDF(s, t) = SHAKE-256(ENCAP(t) | s)`, `ENC = AES-256-CTR` with a zero IV.

use alloc::vec::Vec;
use cipher::{KeyIvInit, StreamCipher};
use digest::{ExtendableOutput, Update, XofReader};
use rand_core::CryptoRngCore;
use sha3::{Sha3_256, Shake256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::HandshakeError;
use crate::kdf::{encap_len, KeyGenerator};
use crate::keys::{
    contributory, x25519, x25519_base, Ed25519Identity, NtorOnionKey, NtorSecretKey,
};
use crate::ntor::SkinHead;
use crate::tor1::Aes256Ctr;

const PROTOID: &[u8] = b"ntor3-curve25519-sha3_256-1";
const T_MSGKDF: &[u8] = b"ntor3-curve25519-sha3_256-1:kdf_phase1";
const T_MSGMAC: &[u8] = b"ntor3-curve25519-sha3_256-1:msg_mac";
const T_KEY_SEED: &[u8] = b"ntor3-curve25519-sha3_256-1:key_seed";
const T_VERIFY: &[u8] = b"ntor3-curve25519-sha3_256-1:verify";
const T_FINAL: &[u8] = b"ntor3-curve25519-sha3_256-1:kdf_final";
const T_AUTH: &[u8] = b"ntor3-curve25519-sha3_256-1:auth_final";

/// Fixed part of the client handshake: `ID | B | X | MAC`.
pub const NTOR_V3_CLIENT_OVERHEAD: usize = 32 * 4;
/// Fixed part of the server handshake: `Y | AUTH`.
pub const NTOR_V3_SERVER_OVERHEAD: usize = 64;
/// The verification string C tor uses for CREATE2 / EXTEND2.
pub const CIRCUIT_EXTEND_VERIFICATION: &[u8] = b"circuit extend";

fn sha3_tweaked(t: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha3_256::default();
    Update::update(&mut h, &encap_len(t));
    Update::update(&mut h, t);
    for p in parts {
        Update::update(&mut h, p);
    }
    sha3::Digest::finalize(h).into()
}

fn mac(k: &[u8], t: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha3_256::default();
    Update::update(&mut h, &encap_len(t));
    Update::update(&mut h, t);
    Update::update(&mut h, &encap_len(k));
    Update::update(&mut h, k);
    for p in parts {
        Update::update(&mut h, p);
    }
    sha3::Digest::finalize(h).into()
}

fn aes256ctr(key: &[u8; 32], data: &mut [u8]) {
    let iv = [0u8; 16];
    let mut c = Aes256Ctr::new(key.into(), &iv.into());
    c.apply_keystream(data);
}

/// Phase-1 keys `(ENC_K1, MAC_K1) = KDF_msgkdf(Bx | ID | X | B | PROTOID | ENCAP(VER))`.
fn phase1(
    bx: &[u8; 32],
    id: &[u8; 32],
    x: &[u8; 32],
    b: &[u8; 32],
    ver: &[u8],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mut h = Shake256::default();
    for p in [&encap_len(T_MSGKDF)[..], T_MSGKDF, bx, id, x, b, PROTOID] {
        Update::update(&mut h, p);
    }
    Update::update(&mut h, &encap_len(ver));
    Update::update(&mut h, ver);
    let mut r = h.finalize_xof();
    let mut enc = Zeroizing::new([0u8; 32]);
    let mut mk = Zeroizing::new([0u8; 32]);
    r.read(&mut enc[..]);
    r.read(&mut mk[..]);
    (enc, mk)
}

type Secret32 = Zeroizing<[u8; 32]>;

/// Phase 2: `(key_seed, verify, ENC_KEY)` from both DH results and the public values.
fn phase2(
    xy: &[u8; 32],
    xb: &[u8; 32],
    id: &[u8; 32],
    b: &[u8; 32],
    x: &[u8; 32],
    y: &[u8; 32],
    ver: &[u8],
) -> (Secret32, Secret32, Secret32) {
    let ver_len = encap_len(ver);
    let secret_input: [&[u8]; 9] = [xy, xb, id, b, x, y, PROTOID, &ver_len, ver];
    let key_seed = Zeroizing::new(sha3_tweaked(T_KEY_SEED, &secret_input));
    let verify = Zeroizing::new(sha3_tweaked(T_VERIFY, &secret_input));
    let mut h = Shake256::default();
    Update::update(&mut h, &encap_len(T_FINAL));
    Update::update(&mut h, T_FINAL);
    Update::update(&mut h, &key_seed[..]);
    let mut enc_key = Zeroizing::new([0u8; 32]);
    h.finalize_xof().read(&mut enc_key[..]);
    (key_seed, verify, enc_key)
}

/// `AUTH = H_auth(verify | ID | B | Y | X | MAC | ENCAP(MSG) | PROTOID | "Server")`.
fn auth(
    verify: &[u8; 32],
    id: &[u8; 32],
    b: &[u8; 32],
    x: &[u8; 32],
    y: &[u8; 32],
    client_mac: &[u8; 32],
    server_encrypted_msg: &[u8],
) -> [u8; 32] {
    sha3_tweaked(
        T_AUTH,
        &[
            verify,
            id,
            b,
            y,
            x,
            client_mac,
            &encap_len(server_encrypted_msg),
            server_encrypted_msg,
            PROTOID,
            b"Server",
        ],
    )
}

/// Entry point of the client side of ntor-v3.
#[derive(Debug, Clone, Copy)]
pub struct NtorV3Client;

/// A client ntor-v3 handshake waiting for the relay's reply (zeroized on drop).
pub struct NtorV3ClientPending {
    x: Zeroizing<[u8; 32]>,
    pub_x: [u8; 32],
    id: Ed25519Identity,
    b: NtorOnionKey,
    bx: Zeroizing<[u8; 32]>,
    bx_ok: bool,
    msg_mac: [u8; 32],
    ver: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for NtorV3ClientPending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NtorV3ClientPending")
            .field("relay", &self.id)
            .finish_non_exhaustive()
    }
}

impl NtorV3Client {
    /// Start a handshake with the relay `relay_id` (its ed25519 identity) and ntor onion key
    /// `onion_key`, carrying the (encrypted, authenticated) message `client_msg` and bound
    /// to the verification string `verification`. Returns the pending state and the CREATE2
    /// handshake data (`128 + client_msg.len()` bytes).
    pub fn start(
        rng: &mut impl CryptoRngCore,
        relay_id: &Ed25519Identity,
        onion_key: &NtorOnionKey,
        client_msg: &[u8],
        verification: &[u8],
    ) -> (NtorV3ClientPending, Vec<u8>) {
        let mut x = [0u8; 32];
        rng.fill_bytes(&mut x);
        let r = Self::start_with_secret(x, relay_id, onion_key, client_msg, verification);
        x.zeroize();
        r
    }

    pub(crate) fn start_with_secret(
        x: [u8; 32],
        relay_id: &Ed25519Identity,
        onion_key: &NtorOnionKey,
        client_msg: &[u8],
        verification: &[u8],
    ) -> (NtorV3ClientPending, Vec<u8>) {
        let x = Zeroizing::new(x);
        let pub_x = x25519_base(&x);
        let bx = x25519(&x, onion_key.as_bytes());
        let bx_ok = contributory(&bx);
        let (enc_k1, mac_k1) = phase1(
            &bx,
            relay_id.as_bytes(),
            &pub_x,
            onion_key.as_bytes(),
            verification,
        );
        let mut out = Vec::with_capacity(NTOR_V3_CLIENT_OVERHEAD + client_msg.len());
        out.extend_from_slice(relay_id.as_bytes());
        out.extend_from_slice(onion_key.as_bytes());
        out.extend_from_slice(&pub_x);
        out.extend_from_slice(client_msg);
        aes256ctr(&enc_k1, &mut out[96..]);
        let msg_mac = mac(&mac_k1[..], T_MSGMAC, &[&out[..]]);
        out.extend_from_slice(&msg_mac);
        (
            NtorV3ClientPending {
                x,
                pub_x,
                id: *relay_id,
                b: *onion_key,
                bx,
                bx_ok,
                msg_mac,
                ver: Zeroizing::new(verification.to_vec()),
            },
            out,
        )
    }
}

impl NtorV3ClientPending {
    /// Check the relay's reply `Y | AUTH | ENC(SM)`; on success return the relay's
    /// decrypted message `SM` and the circuit key generator.
    pub fn finish(self, reply: &[u8]) -> Result<(Vec<u8>, KeyGenerator), HandshakeError> {
        if reply.len() < NTOR_V3_SERVER_OVERHEAD {
            return Err(HandshakeError::BadLength {
                what: "ntor-v3 server reply",
                expected: NTOR_V3_SERVER_OVERHEAD,
                got: reply.len(),
            });
        }
        let mut y = [0u8; 32];
        y.copy_from_slice(&reply[..32]);
        let enc_msg = &reply[64..];
        let xy = x25519(&self.x, &y);
        let contributory = contributory(&xy) & self.bx_ok;
        let (key_seed, verify, enc_key) = phase2(
            &xy,
            &self.bx,
            self.id.as_bytes(),
            self.b.as_bytes(),
            &self.pub_x,
            &y,
            &self.ver,
        );
        let expected = auth(
            &verify,
            self.id.as_bytes(),
            self.b.as_bytes(),
            &self.pub_x,
            &y,
            &self.msg_mac,
            enc_msg,
        );
        let auth_ok: bool = expected.ct_eq(&reply[32..64]).into();
        if !contributory {
            return Err(HandshakeError::DegenerateKey { field: "Y" });
        }
        if !auth_ok {
            return Err(HandshakeError::BadAuth { field: "AUTH" });
        }
        let mut sm = enc_msg.to_vec();
        aes256ctr(&enc_key, &mut sm);
        Ok((sm, KeyGenerator::shake(*key_seed, T_FINAL, 32)))
    }

    /// The relay identity this handshake is addressed to.
    pub fn relay_id(&self) -> &Ed25519Identity {
        &self.id
    }
}

/// Entry point of the relay side of ntor-v3.
#[derive(Debug, Clone, Copy)]
pub struct NtorV3Server;

/// A relay that has accepted a client's ntor-v3 onion skin and must now compose its reply.
pub struct NtorV3ServerPending {
    pub_b: [u8; 32],
    xb: Zeroizing<[u8; 32]>,
    pub_x: [u8; 32],
    id: Ed25519Identity,
    msg_mac: [u8; 32],
    ver: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for NtorV3ServerPending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NtorV3ServerPending(..)")
    }
}

impl NtorV3Server {
    /// Check a client's handshake addressed to `my_id` and one of `keys` (selected in
    /// constant time), verify its MAC and decrypt its message. Returns the pending state
    /// and the client's message `CM`.
    pub fn receive(
        my_id: &Ed25519Identity,
        keys: &[NtorSecretKey],
        verification: &[u8],
        msg: &[u8],
    ) -> Result<(NtorV3ServerPending, Vec<u8>), HandshakeError> {
        if msg.len() < NTOR_V3_CLIENT_OVERHEAD {
            return Err(HandshakeError::BadLength {
                what: "ntor-v3 client handshake",
                expected: NTOR_V3_CLIENT_OVERHEAD,
                got: msg.len(),
            });
        }
        let head = SkinHead::parse(my_id.as_bytes(), keys, msg)?;
        let (pub_b, pub_x) = (head.pub_b, head.pub_x);
        let mac_at = msg.len() - 32;
        let xb = x25519(&head.b_secret, &pub_x);
        let (enc_k1, mac_k1) = phase1(&xb, my_id.as_bytes(), &pub_x, &pub_b, verification);
        let expected = mac(&mac_k1[..], T_MSGMAC, &[&msg[..mac_at]]);
        let mac_ok: bool = expected.ct_eq(&msg[mac_at..]).into();
        head.check(contributory(&xb))?;
        if !mac_ok {
            return Err(HandshakeError::BadClientMac);
        }
        let mut cm = msg[96..mac_at].to_vec();
        aes256ctr(&enc_k1, &mut cm);
        Ok((
            NtorV3ServerPending {
                pub_b,
                xb,
                pub_x,
                id: *my_id,
                msg_mac: expected,
                ver: Zeroizing::new(verification.to_vec()),
            },
            cm,
        ))
    }
}

impl NtorV3ServerPending {
    /// Compose the reply carrying `server_msg`; returns the handshake reply bytes
    /// (`64 + server_msg.len()`) and the circuit key generator.
    pub fn reply(
        self,
        rng: &mut impl CryptoRngCore,
        server_msg: &[u8],
    ) -> Result<(Vec<u8>, KeyGenerator), HandshakeError> {
        let mut y = [0u8; 32];
        rng.fill_bytes(&mut y);
        let r = self.reply_with_secret(y, server_msg);
        y.zeroize();
        r
    }

    pub(crate) fn reply_with_secret(
        self,
        y: [u8; 32],
        server_msg: &[u8],
    ) -> Result<(Vec<u8>, KeyGenerator), HandshakeError> {
        let y = Zeroizing::new(y);
        let pub_y = x25519_base(&y);
        let xy = x25519(&y, &self.pub_x);
        if !contributory(&xy) {
            return Err(HandshakeError::DegenerateKey { field: "X" });
        }
        let (key_seed, verify, enc_key) = phase2(
            &xy,
            &self.xb,
            self.id.as_bytes(),
            &self.pub_b,
            &self.pub_x,
            &pub_y,
            &self.ver,
        );
        let mut enc_msg = server_msg.to_vec();
        aes256ctr(&enc_key, &mut enc_msg);
        let auth = auth(
            &verify,
            self.id.as_bytes(),
            &self.pub_b,
            &self.pub_x,
            &pub_y,
            &self.msg_mac,
            &enc_msg,
        );
        let mut out = Vec::with_capacity(NTOR_V3_SERVER_OVERHEAD + enc_msg.len());
        out.extend_from_slice(&pub_y);
        out.extend_from_slice(&auth);
        out.extend_from_slice(&enc_msg);
        Ok((out, KeyGenerator::shake(*key_seed, T_FINAL, 32)))
    }
}
