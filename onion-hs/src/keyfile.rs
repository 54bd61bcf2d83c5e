//! C tor's onion-service key files: the service's `hs_ed25519_public_key` and
//! `hs_ed25519_secret_key` (a 32-byte `== ed25519v1-...: type0 ==` header, then the key), an
//! authorized client's `authorized_clients/<name>.auth` and a client's `*.auth_private`
//! (rend-spec-v3 §1.9.1 \[CLIENT-AUTH\]).

use zeroize::Zeroize;

use crate::keys::{ExpandedKeypair, HsIdKey, HsKeyError};

impl HsIdKey {
    /// Read C tor's `hs_ed25519_public_key` file (32-byte header `== ed25519v1-public: type0 ==`
    /// then the key).
    pub fn from_tor_file(data: &[u8]) -> Result<Self, HsKeyError> {
        let key = parse_tor_key_file(data, b"== ed25519v1-public: type0 ==", 32)?;
        let mut k = [0u8; 32];
        k.copy_from_slice(key);
        Self::from_bytes(&k)
    }
}

impl ExpandedKeypair {
    /// Read C tor's `hs_ed25519_secret_key` file (header `== ed25519v1-secret: type0 ==`, then
    /// the 64-byte expanded key).
    pub fn from_tor_file(data: &[u8]) -> Result<Self, HsKeyError> {
        let key = parse_tor_key_file(data, b"== ed25519v1-secret: type0 ==", 64)?;
        let mut k = [0u8; 64];
        k.copy_from_slice(key);
        let kp = Self::from_expanded_bytes(&k);
        k.zeroize();
        Ok(kp)
    }
}

fn parse_tor_key_file<'a>(
    data: &'a [u8],
    header: &[u8],
    key_len: usize,
) -> Result<&'a [u8], HsKeyError> {
    if data.len() != 32 + key_len {
        return Err(HsKeyError::BadKeyFile("unexpected length"));
    }
    let (h, key) = data.split_at(32);
    let hlen = header.len();
    if &h[..hlen] != header || h[hlen..].iter().any(|&b| b != 0) {
        return Err(HsKeyError::BadKeyFile("unexpected header"));
    }
    Ok(key)
}

/// Parse an authorized client's public key (`KP_hsc_desc_enc`, x25519) as C tor stores it in
/// a service's `authorized_clients/<name>.auth`: `descriptor:x25519:<base32 key>` (rend-spec-v3
/// §1.9.1 \[CLIENT-AUTH\]; the key is 52 base32 characters, either case). Surrounding
/// whitespace is ignored.
pub fn parse_authorized_client(text: &str) -> Result<x25519_dalek::PublicKey, HsKeyError> {
    let key = text
        .trim()
        .strip_prefix("descriptor:x25519:")
        .ok_or(HsKeyError::BadKeyFile(
            "expected descriptor:x25519:<base32 key>",
        ))?;
    let bytes: [u8; 32] = (key.len() == 52)
        .then(|| data_encoding::BASE32_NOPAD.decode(key.to_ascii_uppercase().as_bytes()))
        .and_then(Result::ok)
        .and_then(|v| v.try_into().ok())
        .ok_or(HsKeyError::BadKeyFile(
            "authorized client key is not 32 bytes of base32",
        ))?;
    Ok(x25519_dalek::PublicKey::from(bytes))
}

/// Parse a client authorization secret key (`KS_hsc_desc_enc`, x25519) as C tor stores it in
/// `ClientOnionAuthDir/*.auth_private`: `<address>:descriptor:x25519:<base32 key>`, or the
/// bare base32 (52 characters), hex (64) or base64 (43/44) key. Returns the key and, for the
/// file form, the address it is for.
pub fn parse_client_auth_key(
    text: &str,
) -> Result<(x25519_dalek::StaticSecret, Option<crate::OnionAddress>), HsKeyError> {
    let text = text.trim();
    let (addr, key) = match text.rsplit_once(':') {
        Some((head, key)) => {
            let mut parts = head.split(':');
            let addr = parts.next().unwrap_or("");
            if parts.next() != Some("descriptor") || parts.next() != Some("x25519") {
                return Err(HsKeyError::BadKeyFile(
                    "expected <address>:descriptor:x25519:<key>",
                ));
            }
            let a = crate::OnionAddress::parse(addr)
                .map_err(|_| HsKeyError::BadKeyFile("bad onion address in client key file"))?;
            (Some(a), key)
        }
        None => (None, text),
    };
    let bytes: Option<[u8; 32]> = match key.len() {
        52 => data_encoding::BASE32_NOPAD
            .decode(key.to_ascii_uppercase().as_bytes())
            .ok()
            .and_then(|v| v.try_into().ok()),
        64 => (0..32)
            .map(|i| {
                key.get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .and_then(|v| v.try_into().ok()),
        43 | 44 => crate::util::b64_decode_array::<32>(key),
        _ => None,
    };
    let mut bytes = bytes.ok_or(HsKeyError::BadKeyFile(
        "client key is not 32 bytes of base32, hex or base64",
    ))?;
    let sk = x25519_dalek::StaticSecret::from(bytes);
    bytes.zeroize();
    Ok((sk, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &[u8], key: &[u8]) -> Vec<u8> {
        let mut f = header.to_vec();
        f.resize(32, 0);
        f.extend_from_slice(key);
        f
    }

    #[test]
    fn tor_key_files_round_trip_and_name_the_problem() {
        let kp = ExpandedKeypair::from_seed(&[7; 32]);
        let secret = file(b"== ed25519v1-secret: type0 ==", &kp.to_expanded_bytes());
        let public = file(b"== ed25519v1-public: type0 ==", kp.public_bytes());
        let back = ExpandedKeypair::from_tor_file(&secret).unwrap();
        assert_eq!(back.public_bytes(), kp.public_bytes());
        assert_eq!(
            HsIdKey::from_tor_file(&public).unwrap().as_bytes(),
            kp.public_bytes()
        );
        // The public header on a secret file, a short file, junk after the header's text.
        assert_eq!(
            ExpandedKeypair::from_tor_file(&file(b"== ed25519v1-public: type0 ==", &[0; 64])).err(),
            Some(HsKeyError::BadKeyFile("unexpected header"))
        );
        assert_eq!(
            HsIdKey::from_tor_file(&public[..63]).err(),
            Some(HsKeyError::BadKeyFile("unexpected length"))
        );
        let mut junk = public.clone();
        junk[31] = 1;
        assert_eq!(
            HsIdKey::from_tor_file(&junk).err(),
            Some(HsKeyError::BadKeyFile("unexpected header"))
        );
    }
}
