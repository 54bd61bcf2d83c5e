//! C tor's key and certificate file formats, as bytes in and out (reading and writing the
//! files, their names and their 0600 permissions are the embedder's job).
//!
//! C tor keeps a relay's keys in `DataDirectory/keys/` (tor-spec 0.3 names the keys; the
//! formats are C tor's, `crypto_write_tagged_contents_to_file` and OpenSSL's PEM):
//!
//! | file | contents | here |
//! |---|---|---|
//! | `secret_id_key` | RSA-1024 identity, PKCS#1 `RSA PRIVATE KEY` PEM | [`encode_rsa_secret_key`], [`decode_rsa_secret_key`] |
//! | `secret_onion_key`, `.old` | RSA-1024 TAP onion key, same PEM | same |
//! | `ed25519_master_id_secret_key` | tag `== ed25519v1-secret: type0 ==`, 64-byte expanded key | [`encode_ed25519_secret_key`], [`decode_ed25519_secret_key`] |
//! | `ed25519_master_id_public_key` | tag `== ed25519v1-public: type0 ==`, 32-byte key | [`encode_ed25519_public_key`], [`decode_ed25519_public_key`] |
//! | `ed25519_signing_secret_key` | tag `== ed25519v1-secret: type4 ==`, 64-byte expanded key | as the master key |
//! | `ed25519_signing_cert` | tag `== ed25519v1-cert: type4 ==`, the cert-spec type-4 certificate | [`encode_ed25519_cert`], [`decode_ed25519_cert`] |
//! | `secret_onion_key_ntor`, `.old` | tag `== c25519v1: onion ==`, 32-byte secret and 32-byte public key | [`encode_ntor_secret_key`], [`decode_ntor_secret_key`] |
//!
//! A tagged file is a 32-byte header, `== TYPE: TAG ==` padded with NUL bytes, followed by
//! the data. The ed25519 secret-key tag is `type` and the certificate type the key is
//! certified by (0 for the master identity, 4 for the signing key).
//!
//! The passphrase-encrypted master key (`ed25519_master_id_secret_key_encrypted`, scrypt
//! and a "pwbox") is not supported: keep the master key offline instead and supply the
//! signing key with its certificate.
//!
//! Decoders never panic; every secret buffer they and the encoders make is zeroized on
//! drop.

use alloc::string::String;
use alloc::vec::Vec;

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::cert::UncheckedEd25519Cert;
use crate::error::{CertError, KeyError};
use crate::keys::{Ed25519Identity, ExpandedEd25519Keypair, NtorSecretKey};
use crate::rsa::{pem_decode, RsaKeypair};

/// Length of a tagged file's header.
pub const HEADER_LEN: usize = 32;

/// File name of the RSA identity key in C tor's key directory.
pub const SECRET_ID_KEY: &str = "secret_id_key";
/// File name of the TAP onion key.
pub const SECRET_ONION_KEY: &str = "secret_onion_key";
/// File name of the previous TAP onion key.
pub const SECRET_ONION_KEY_OLD: &str = "secret_onion_key.old";
/// File name of the ed25519 master identity secret key.
pub const ED25519_MASTER_ID_SECRET_KEY: &str = "ed25519_master_id_secret_key";
/// File name of the ed25519 master identity public key.
pub const ED25519_MASTER_ID_PUBLIC_KEY: &str = "ed25519_master_id_public_key";
/// File name of the ed25519 signing secret key.
pub const ED25519_SIGNING_SECRET_KEY: &str = "ed25519_signing_secret_key";
/// File name of the Id->Signing certificate.
pub const ED25519_SIGNING_CERT: &str = "ed25519_signing_cert";
/// File name of the ntor onion key.
pub const SECRET_ONION_KEY_NTOR: &str = "secret_onion_key_ntor";
/// File name of the previous ntor onion key.
pub const SECRET_ONION_KEY_NTOR_OLD: &str = "secret_onion_key_ntor.old";

/// Tag of the master identity key files (`type0`).
pub const TAG_MASTER: &str = "type0";
/// Tag of the signing key and signing certificate files (`type4`: certified by a type-4
/// certificate).
pub const TAG_SIGNING: &str = "type4";

const ED25519_SECRET: &str = "ed25519v1-secret";
const ED25519_PUBLIC: &str = "ed25519v1-public";
const ED25519_CERT: &str = "ed25519v1-cert";
const C25519: &str = "c25519v1";
const NTOR_TAG: &str = "onion";
/// Largest certificate accepted in a certificate file (cert-spec certificates carry at most
/// 255 extensions, each at most 65535 bytes, but a relay's type-4 certificate is 140 bytes;
/// C tor reads at most 256 bytes).
const MAX_CERT_FILE_DATA: usize = 256;
/// Largest PEM file accepted: an RSA-1024 private key is under 900 bytes; 8192-bit keys
/// are under 7 KiB.
const MAX_PEM_LEN: usize = 16 * 1024;

const PEM_LABEL: &str = "RSA PRIVATE KEY";

fn bad(what: &'static str) -> KeyError {
    KeyError::BadKeyFile(what)
}

/// Encodes a tagged file: `== TYPE: TAG ==` NUL-padded to 32 bytes, then `data`. The
/// header text must fit in 31 bytes, as C tor requires.
pub fn encode_tagged(typestring: &str, tag: &str, data: &[u8]) -> Result<Vec<u8>, KeyError> {
    let header_len = 3 + typestring.len() + 2 + tag.len() + 3;
    if header_len >= HEADER_LEN {
        return Err(bad("tagged file header longer than 31 bytes"));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(b"== ");
    out.extend_from_slice(typestring.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b" ==");
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(data);
    Ok(out)
}

/// Decodes a tagged file of type `typestring` holding at most `max_data` bytes of data, as
/// C tor's `crypto_read_tagged_contents_from_file` does: the header starts with `== `, its
/// text ends with ` ==` followed only by NUL bytes, and names `typestring` then `: `.
/// Returns the tag and the data.
pub fn decode_tagged<'a>(
    file: &'a [u8],
    typestring: &str,
    max_data: usize,
) -> Result<(&'a str, &'a [u8]), KeyError> {
    if file.len() < HEADER_LEN {
        return Err(bad("shorter than the 32-byte header"));
    }
    if file.len() - HEADER_LEN > max_data {
        return Err(bad("longer than its type allows"));
    }
    let (header, data) = file.split_at(HEADER_LEN);
    let text_len = header.iter().position(|&b| b == 0).unwrap_or(HEADER_LEN);
    let (text, pad) = header.split_at(text_len);
    if pad.iter().any(|&b| b != 0) {
        return Err(bad("header padding is not all NUL"));
    }
    let text = core::str::from_utf8(text).map_err(|_| bad("header is not text"))?;
    let inner = text
        .strip_prefix("== ")
        .and_then(|t| t.strip_suffix(" =="))
        .ok_or(bad("header is not of the form == TYPE: TAG =="))?;
    let tag = inner
        .strip_prefix(typestring)
        .and_then(|t| t.strip_prefix(": "))
        .ok_or(bad("file is of another type"))?;
    Ok((tag, data))
}

/// Encodes an ed25519 secret key file (`ed25519_master_id_secret_key` with [`TAG_MASTER`],
/// `ed25519_signing_secret_key` with [`TAG_SIGNING`]): the 64-byte expanded secret key.
pub fn encode_ed25519_secret_key(
    key: &ExpandedEd25519Keypair,
    tag: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let raw = key.to_expanded_bytes();
    encode_tagged(ED25519_SECRET, tag, &raw[..]).map(Zeroizing::new)
}

/// Decodes an ed25519 secret key file whose tag must be `tag` (C tor refuses a file with
/// another tag).
pub fn decode_ed25519_secret_key(
    file: &[u8],
    tag: &str,
) -> Result<ExpandedEd25519Keypair, KeyError> {
    let (got, data) = decode_tagged(file, ED25519_SECRET, 64)?;
    if got != tag {
        return Err(bad("ed25519 secret key file has the wrong tag"));
    }
    let bytes: &[u8; 64] = data
        .try_into()
        .map_err(|_| bad("ed25519 secret key must be 64 bytes"))?;
    let mut raw = Zeroizing::new(*bytes);
    let kp = ExpandedEd25519Keypair::from_expanded_bytes(&raw);
    zeroize::Zeroize::zeroize(&mut *raw);
    Ok(kp)
}

/// Encodes `ed25519_master_id_public_key` (tag `type0`).
pub fn encode_ed25519_public_key(key: &Ed25519Identity) -> Vec<u8> {
    // The header "== ed25519v1-public: type0 ==" is 29 bytes: it always fits.
    encode_tagged(ED25519_PUBLIC, TAG_MASTER, key.as_bytes()).unwrap_or_default()
}

/// Decodes `ed25519_master_id_public_key`: tag `type0`, 32 bytes that must be a valid
/// ed25519 point.
pub fn decode_ed25519_public_key(file: &[u8]) -> Result<Ed25519Identity, KeyError> {
    let (tag, data) = decode_tagged(file, ED25519_PUBLIC, 32)?;
    if tag != TAG_MASTER {
        return Err(bad("ed25519 public key file has the wrong tag"));
    }
    let bytes: [u8; 32] = data
        .try_into()
        .map_err(|_| bad("ed25519 public key must be 32 bytes"))?;
    let id = Ed25519Identity(bytes);
    id.to_public_key()?;
    Ok(id)
}

/// Encodes `ed25519_signing_cert` (tag `type4`) around an encoded certificate.
pub fn encode_ed25519_cert(cert: &[u8]) -> Result<Vec<u8>, KeyError> {
    if cert.len() > MAX_CERT_FILE_DATA {
        return Err(bad("certificate longer than 256 bytes"));
    }
    encode_tagged(ED25519_CERT, TAG_SIGNING, cert)
}

/// Decodes `ed25519_signing_cert`: tag `type4`, then a certificate that must decode
/// (cert-spec 2.1; its signature and expiry are checked by whoever uses it).
pub fn decode_ed25519_cert(file: &[u8]) -> Result<UncheckedEd25519Cert, CertError> {
    let (tag, data) = decode_tagged(file, ED25519_CERT, MAX_CERT_FILE_DATA)?;
    if tag != TAG_SIGNING {
        return Err(bad("ed25519 certificate file has the wrong tag").into());
    }
    UncheckedEd25519Cert::decode(data)
}

/// Encodes `secret_onion_key_ntor`: tag `onion`, the 32-byte secret, the 32-byte public
/// key.
pub fn encode_ntor_secret_key(key: &NtorSecretKey) -> Zeroizing<Vec<u8>> {
    let mut data = Zeroizing::new([0u8; 64]);
    data[..32].copy_from_slice(&key.to_bytes()[..]);
    data[32..].copy_from_slice(key.public().as_bytes());
    // "== c25519v1: onion ==" is 21 bytes: it always fits.
    Zeroizing::new(encode_tagged(C25519, NTOR_TAG, &data[..]).unwrap_or_default())
}

/// Decodes `secret_onion_key_ntor` (or its `.old`): tag `onion`, 64 bytes, the public key
/// matching the secret.
pub fn decode_ntor_secret_key(file: &[u8]) -> Result<NtorSecretKey, KeyError> {
    let (tag, data) = decode_tagged(file, C25519, 64)?;
    if tag != NTOR_TAG {
        return Err(bad("ntor key file has the wrong tag"));
    }
    if data.len() != 64 {
        return Err(bad("ntor key file must hold 64 bytes"));
    }
    NtorSecretKey::from_tor_key_file(file)
}

/// Encodes an RSA private key as C tor 0.4.9 writes `secret_id_key` and
/// `secret_onion_key`: PKCS#1 `RSAPrivateKey` DER in base64, 64 characters a line, between
/// `-----BEGIN RSA PRIVATE KEY-----` and `-----END RSA PRIVATE KEY-----`, each line ending
/// in a newline, and the file ending in one NUL byte (C tor writes the string's
/// terminator too).
pub fn encode_rsa_secret_key(key: &RsaKeypair) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let der = key.to_pkcs1_der()?;
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&der[..]));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    out.push_str("-----BEGIN RSA PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII: every chunk is valid UTF-8.
        out.push_str(core::str::from_utf8(chunk).map_err(|_| bad("base64"))?);
        out.push('\n');
    }
    out.push_str("-----END RSA PRIVATE KEY-----\n");
    let mut bytes = Zeroizing::new(Vec::with_capacity(out.len() + 1));
    bytes.extend_from_slice(out.as_bytes());
    bytes.push(0);
    Ok(bytes)
}

/// Decodes an RSA private key PEM file (`secret_id_key`, `secret_onion_key`), with or
/// without C tor's trailing NUL byte. The key's size and exponent are not checked here (see
/// [`crate::rsa::RsaPublicKey::check_relay_key`]).
pub fn decode_rsa_secret_key(file: &[u8]) -> Result<RsaKeypair, KeyError> {
    if file.len() > MAX_PEM_LEN {
        return Err(bad("PEM file longer than 16 KiB"));
    }
    let file = file.strip_suffix(&[0]).unwrap_or(file);
    let text = core::str::from_utf8(file).map_err(|_| bad("PEM file is not text"))?;
    let der = Zeroizing::new(pem_decode(text, PEM_LABEL).ok_or(KeyError::BadEncoding {
        encoding: "PEM",
        what: "RSA private key",
    })?);
    RsaKeypair::from_pkcs1_der(&der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{CertType, Timestamp};
    use crate::keys::Ed25519Signer;
    use alloc::vec;

    fn fixture(name: &str) -> Vec<u8> {
        let path = alloc::format!("{}/testdata/keygen0/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).expect("fixture")
    }

    /// Every file C tor 0.4.9.11 made for `keygen0` decodes, the keys agree with one
    /// another and with the fingerprints C tor printed, and encoding gives back the same
    /// bytes.
    #[test]
    fn c_tor_key_directory_round_trips() {
        let id = fixture(SECRET_ID_KEY);
        let rsa = decode_rsa_secret_key(&id).expect("secret_id_key");
        assert_eq!(
            rsa.public().identity().to_string(),
            "4CDD3D7A3C5F211B999FCBC2AB99229040C8707D"
        );
        rsa.public().check_relay_key().expect("1024-bit, e=65537");
        assert_eq!(&encode_rsa_secret_key(&rsa).expect("pem")[..], &id[..]);

        let tap = fixture(SECRET_ONION_KEY);
        let tap_key = decode_rsa_secret_key(&tap).expect("secret_onion_key");
        assert_eq!(&encode_rsa_secret_key(&tap_key).expect("pem")[..], &tap[..]);
        // Without the NUL it decodes too.
        assert!(decode_rsa_secret_key(&tap[..tap.len() - 1]).is_ok());

        let master_pub = fixture(ED25519_MASTER_ID_PUBLIC_KEY);
        let master_id = decode_ed25519_public_key(&master_pub).expect("public key");
        assert_eq!(
            master_id.to_string(),
            "mQM39TC6QVEng5wu8EoGuP2bYae2OBDib7Hr+gVqkMU"
        );
        assert_eq!(encode_ed25519_public_key(&master_id), master_pub);

        let master_sec = fixture(ED25519_MASTER_ID_SECRET_KEY);
        let master = decode_ed25519_secret_key(&master_sec, TAG_MASTER).expect("master");
        assert_eq!(master.identity(), master_id);
        assert_eq!(
            &encode_ed25519_secret_key(&master, TAG_MASTER).expect("enc")[..],
            &master_sec[..]
        );
        // The signing key's file has tag type4, not type0.
        let signing_sec = fixture(ED25519_SIGNING_SECRET_KEY);
        assert_eq!(
            decode_ed25519_secret_key(&signing_sec, TAG_MASTER).err(),
            Some(KeyError::BadKeyFile(
                "ed25519 secret key file has the wrong tag"
            ))
        );
        let signing = decode_ed25519_secret_key(&signing_sec, TAG_SIGNING).expect("signing");
        assert_eq!(
            &encode_ed25519_secret_key(&signing, TAG_SIGNING).expect("enc")[..],
            &signing_sec[..]
        );

        let cert_file = fixture(ED25519_SIGNING_CERT);
        let cert = decode_ed25519_cert(&cert_file).expect("cert");
        assert_eq!(cert.cert_type(), CertType::IDENTITY_V_SIGNING);
        assert_eq!(cert.signing_key(), Some(&master_id));
        let checked = cert
            .clone()
            .verify(None, Timestamp(1_797_000_000))
            .expect("signed by the master key");
        assert_eq!(
            checked.certified_public_key().expect("key"),
            signing.public_key()
        );
        assert_eq!(
            encode_ed25519_cert(cert.as_bytes()).expect("enc"),
            cert_file
        );

        let ntor_file = fixture(SECRET_ONION_KEY_NTOR);
        let ntor = decode_ntor_secret_key(&ntor_file).expect("ntor");
        assert_eq!(&encode_ntor_secret_key(&ntor)[..], &ntor_file[..]);
    }

    #[test]
    fn tagged_header_rules() {
        let f = encode_tagged("c25519v1", "onion", &[1, 2, 3]).expect("fits");
        assert_eq!(&f[..21], b"== c25519v1: onion ==");
        assert!(f[21..32].iter().all(|&b| b == 0));
        assert_eq!(
            decode_tagged(&f, "c25519v1", 3),
            Ok(("onion", &[1u8, 2, 3][..]))
        );
        // Too long for its type, wrong type, junk after the NUL padding, short files.
        assert!(decode_tagged(&f, "c25519v1", 2).is_err());
        assert!(decode_tagged(&f, "ed25519v1-cert", 3).is_err());
        let mut junk = f.clone();
        junk[30] = b'x';
        assert!(decode_tagged(&junk, "c25519v1", 3).is_err());
        assert!(decode_tagged(&f[..31], "c25519v1", 3).is_err());
        let mut no_end = f.clone();
        no_end[19] = b'x';
        assert!(decode_tagged(&no_end, "c25519v1", 3).is_err());
        // A header that would not fit in 31 bytes is refused.
        assert!(encode_tagged("ed25519v1-secret", "type0123456", &[]).is_err());
        // Wrong lengths for the fixed-size files.
        let short = encode_tagged(ED25519_SECRET, TAG_MASTER, &[0; 63]).expect("fits");
        assert!(decode_ed25519_secret_key(&short, TAG_MASTER).is_err());
        let short = encode_tagged(C25519, NTOR_TAG, &[0; 63]).expect("fits");
        assert!(decode_ntor_secret_key(&short).is_err());
        let not_a_point = (0u8..=255)
            .map(|b| [b; 32])
            .find(|k| Ed25519Identity(*k).to_public_key().is_err())
            .expect("some byte pattern is not a curve point");
        let off_curve = encode_tagged(ED25519_PUBLIC, TAG_MASTER, &not_a_point).expect("fits");
        assert!(decode_ed25519_public_key(&off_curve).is_err());
        assert!(decode_rsa_secret_key(&vec![b'-'; MAX_PEM_LEN + 1]).is_err());
        assert!(decode_rsa_secret_key(
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"
        )
        .is_err());
    }
}
