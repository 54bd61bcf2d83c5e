//! The symmetric primitives of rend-spec-v3 §0.3 ("Cryptographic building blocks"): H = SHA3-256,
//! KDF = SHAKE-256, MAC(key, msg) = H(htonll(len(key)) | key | msg), STREAM = AES-256-CTR.
//!
//! H, KDF and MAC are `onion-crypto`'s ([`onion_crypto::kdf`]), re-exported under the names this
//! crate has always used; STREAM uses onion-crypto's AES-256-CTR type. What remains here is the
//! onion-service convention of feeding a message in several parts without concatenating it.

use cipher::{KeyIvInit, StreamCipher};
use subtle::ConstantTimeEq;

/// `H(parts...)`: SHA3-256 over the concatenation of `parts` (onion-crypto's).
pub use onion_crypto::kdf::sha3_256;
/// `KDF(parts..., out.len())`: SHAKE-256 over the concatenation of `parts`, filling `out`
/// (onion-crypto's `shake256`).
pub use onion_crypto::kdf::shake256 as shake256_kdf;

/// Length of H's output (SHA3-256), `HASH_LEN` / `MAC_LEN` of rend-spec-v3 §0.3.
pub const HASH_LEN: usize = 32;
/// Length of the stream cipher key (AES-256), `S_KEY_LEN`.
pub const S_KEY_LEN: usize = 32;
/// Length of the stream cipher IV, `S_IV_LEN`.
pub const S_IV_LEN: usize = 16;

/// `MAC(key, msg) = H(htonll(len(key)) | key | msg)` of rend-spec-v3 §0.3, with the message
/// given as the concatenation of `msg_parts` (so callers need not concatenate). Equal to
/// [`onion_crypto::kdf::hs_mac`] over the concatenated message.
pub fn hs_mac(key: &[u8], msg_parts: &[&[u8]]) -> [u8; 32] {
    let len = (key.len() as u64).to_be_bytes();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(msg_parts.len() + 2);
    parts.push(&len);
    parts.push(key);
    parts.extend_from_slice(msg_parts);
    sha3_256(&parts)
}

/// XOR `buf` in place with AES-256-CTR keystream (key, iv): rend-spec-v3's `STREAM(iv, k)`.
pub fn aes256_ctr_xor(key: &[u8; 32], iv: &[u8; 16], buf: &mut [u8]) {
    let mut c = onion_crypto::tor1::Aes256Ctr::new(key.into(), iv.into());
    c.apply_keystream(buf);
}

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs_mac_in_parts_equals_onion_crypto_hs_mac() {
        let key = b"a mac key of some length";
        let whole = onion_crypto::kdf::hs_mac(key, b"part one, part two");
        assert_eq!(hs_mac(key, &[b"part one, ", b"part two"]), whole);
        assert_eq!(hs_mac(key, &[b"part one, part two"]), whole);
    }
}
