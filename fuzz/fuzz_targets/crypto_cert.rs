//! Fuzz the certificate parsers of onion-crypto: ed25519 certificates (cert-spec), the
//! RSA->ed25519 cross-certificate, X.509 RSA certificates (CERTS cell), PKCS#1 RSA keys and
//! the PEM framing. The first byte selects the parser so that one corpus serves all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_crypto::cert::{UncheckedEd25519Cert, Timestamp};
use onion_crypto::rsa::{pem_decode, RsaPublicKey};
use onion_crypto::rsa_crosscert::RsaCrosscert;
use onion_crypto::x509::RsaX509Cert;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 5 {
        0 => {
            if let Ok(c) = UncheckedEd25519Cert::decode(rest) {
                // Re-check the signature paths too: they must fail cleanly, not panic.
                let _ = c.check_signature(None);
                let _ = c.verify(None, Timestamp(u64::MAX));
            }
        }
        1 => {
            if let Ok(c) = RsaCrosscert::decode(rest) {
                let _ = c.signed_digest();
            }
        }
        2 => {
            if let Ok(c) = RsaX509Cert::decode(rest) {
                let _ = c.verify_signature(c.subject_key());
                let _ = c.check_valid_at(Timestamp(0));
            }
        }
        3 => {
            let _ = RsaPublicKey::from_pkcs1_der(rest);
        }
        _ => {
            let s = String::from_utf8_lossy(rest);
            let _ = pem_decode(&s, "ED25519 CERT");
            let _ = RsaPublicKey::from_pkcs1_pem(&s);
        }
    }
});
