//! Fuzz the decoders of C tor's key files (onion_crypto::keyfile): the tagged header, the
//! ed25519 secret and public keys, the signing certificate file, the ntor key and the RSA
//! PEM key. The first byte selects the decoder so that one corpus serves all. The ed25519
//! files must re-encode to the same bytes: their decoders accept only the canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_crypto::keyfile::*;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 6 {
        0 => {
            if let Ok((tag, body)) = decode_tagged(rest, "c25519v1", 64) {
                let again = encode_tagged("c25519v1", tag, body).expect("a decoded header fits");
                assert_eq!(again, rest);
            }
        }
        1 => {
            for tag in [TAG_MASTER, TAG_SIGNING] {
                if let Ok(k) = decode_ed25519_secret_key(rest, tag) {
                    let again = encode_ed25519_secret_key(&k, tag).expect("fits");
                    assert_eq!(&again[..], rest);
                }
            }
        }
        2 => {
            if let Ok(k) = decode_ed25519_public_key(rest) {
                assert_eq!(encode_ed25519_public_key(&k), rest);
            }
        }
        3 => {
            if let Ok(c) = decode_ed25519_cert(rest) {
                assert_eq!(encode_ed25519_cert(c.as_bytes()).expect("fits"), rest);
            }
        }
        4 => {
            if let Ok(k) = decode_ntor_secret_key(rest) {
                // The secret is clamped on decoding: the re-encoded file decodes to the
                // same key.
                let again = encode_ntor_secret_key(&k);
                let k2 = decode_ntor_secret_key(&again).expect("re-encoded key decodes");
                assert_eq!(k2.public(), k.public());
            }
        }
        _ => {
            let _ = decode_rsa_secret_key(rest);
        }
    }
});
