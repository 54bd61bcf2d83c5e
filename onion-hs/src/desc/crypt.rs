//! Descriptor layer encryption, rend-spec-v3 §2.5.3 \[HS-DESC-ENCRYPTION-KEYS\], and the
//! descriptor-cookie encryption of client authorization, §2.5.1.2.

use zeroize::Zeroize;

use crate::keys::{HsBlindedKey, Subcredential};
use crate::ops::{aes256_ctr_xor, ct_eq, hs_mac, shake256_kdf, S_IV_LEN, S_KEY_LEN};

use super::DescError;

/// Length of the descriptor cookie `N_hs_desc_enc`. rend-spec-v3 §2.5.1.2 says 32 bytes, but
/// C tor uses 16 (`HS_DESC_DESCRIPTOR_COOKIE_LEN`), and so does every descriptor on the network.
pub const COOKIE_LEN: usize = 16;
/// SALT length.
pub const SALT_LEN: usize = 16;
/// MAC length.
pub const MAC_LEN: usize = 32;
/// STRING_CONSTANT of the first (superencrypted) layer.
pub const SUPERENC_CONST: &[u8] = b"hsdir-superencrypted-data";
/// STRING_CONSTANT of the second (encrypted) layer.
pub const ENC_CONST: &[u8] = b"hsdir-encrypted-data";

/// Which layer, for keys and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// First layer ("superencrypted"): SECRET_DATA = blinded key.
    Outer,
    /// Second layer ("encrypted"): SECRET_DATA = blinded key | descriptor cookie (if any).
    Inner,
}

impl Layer {
    fn constant(self) -> &'static [u8] {
        match self {
            Layer::Outer => SUPERENC_CONST,
            Layer::Inner => ENC_CONST,
        }
    }
    /// A name for errors.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Outer => "superencrypted",
            Layer::Inner => "encrypted",
        }
    }
}

struct LayerKeys {
    key: [u8; S_KEY_LEN],
    iv: [u8; S_IV_LEN],
    mac: [u8; 32],
}

impl Drop for LayerKeys {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
        self.mac.zeroize();
    }
}

fn layer_keys(
    layer: Layer,
    blinded: &HsBlindedKey,
    cookie: Option<&[u8; COOKIE_LEN]>,
    subcred: &Subcredential,
    revision: u64,
    salt: &[u8; SALT_LEN],
) -> LayerKeys {
    let mut out = [0u8; S_KEY_LEN + S_IV_LEN + 32];
    let cookie: &[u8] = cookie.map(|c| &c[..]).unwrap_or(&[]);
    shake256_kdf(
        &[
            blinded.as_bytes(),
            cookie,
            &subcred.0,
            &revision.to_be_bytes(),
            salt,
            layer.constant(),
        ],
        &mut out,
    );
    let mut k = LayerKeys {
        key: [0; 32],
        iv: [0; 16],
        mac: [0; 32],
    };
    k.key.copy_from_slice(&out[..32]);
    k.iv.copy_from_slice(&out[32..48]);
    k.mac.copy_from_slice(&out[48..]);
    out.zeroize();
    k
}

fn d_mac(mac_key: &[u8; 32], salt: &[u8], ct: &[u8]) -> [u8; 32] {
    // D_MAC = H(mac_key_len | MAC_KEY | salt_len | SALT | ENCRYPTED)
    hs_mac(mac_key, &[&(salt.len() as u64).to_be_bytes(), salt, ct])
}

/// Encrypt a layer: returns `SALT | ENCRYPTED | MAC`.
pub fn encrypt(
    layer: Layer,
    plaintext: &[u8],
    blinded: &HsBlindedKey,
    cookie: Option<&[u8; COOKIE_LEN]>,
    subcred: &Subcredential,
    revision: u64,
    salt: &[u8; SALT_LEN],
) -> Vec<u8> {
    let k = layer_keys(layer, blinded, cookie, subcred, revision, salt);
    let mut out = Vec::with_capacity(SALT_LEN + plaintext.len() + MAC_LEN);
    out.extend_from_slice(salt);
    out.extend_from_slice(plaintext);
    aes256_ctr_xor(&k.key, &k.iv, &mut out[SALT_LEN..]);
    let mac = d_mac(&k.mac, salt, &out[SALT_LEN..]);
    out.extend_from_slice(&mac);
    out
}

/// Check the MAC and decrypt a layer (`SALT | ENCRYPTED | MAC`).
pub fn decrypt(
    layer: Layer,
    blob: &[u8],
    blinded: &HsBlindedKey,
    cookie: Option<&[u8; COOKIE_LEN]>,
    subcred: &Subcredential,
    revision: u64,
) -> Result<Vec<u8>, DescError> {
    if blob.len() < SALT_LEN + MAC_LEN {
        return Err(DescError::CiphertextTooShort {
            layer: layer.name(),
            len: blob.len(),
        });
    }
    let (salt, rest) = blob.split_at(SALT_LEN);
    let (ct, mac) = rest.split_at(rest.len() - MAC_LEN);
    let mut s = [0u8; SALT_LEN];
    s.copy_from_slice(salt);
    let k = layer_keys(layer, blinded, cookie, subcred, revision, &s);
    if !ct_eq(&d_mac(&k.mac, salt, ct), mac) {
        return Err(DescError::BadMac {
            layer: layer.name(),
        });
    }
    let mut pt = ct.to_vec();
    aes256_ctr_xor(&k.key, &k.iv, &mut pt);
    Ok(pt)
}

/// `CLIENT-ID` (8 bytes) and `COOKIE-KEY` (32 bytes) for one client:
/// `KEYS = KDF(N_hs_subcred | SECRET_SEED, 40)`.
pub fn client_keys(subcred: &Subcredential, secret_seed: &[u8; 32]) -> ([u8; 8], [u8; 32]) {
    let mut out = [0u8; 40];
    shake256_kdf(&[&subcred.0, secret_seed], &mut out);
    let mut id = [0u8; 8];
    let mut key = [0u8; 32];
    id.copy_from_slice(&out[..8]);
    key.copy_from_slice(&out[8..]);
    out.zeroize();
    (id, key)
}
