//! Fuzz the extra-info parser (dir-spec §2.1.2) and its signature checks. The checks run
//! against a fixed RSA key and master key that the input cannot match, so they exercise
//! the failure paths; the parse must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::extrainfo;
use onion_dir::sig::RsaKey;
use onion_dir::{Ed25519Identity, Timestamp};

/// A 1024-bit RSA public key (PKCS#1 DER) from C tor's relay0 fixture.
const KEY_B64: &str = "MIGJAoGBAOO77zB3muGgUCEvH1y3GL2AQaXI4iwq8h4Y6KjQjM1byCQ3xsFKaD+UBlmIrWOsduLlmsEYR/l7+VZMa+JA0/S11MuEC2gFwZ6KTDiWv5fgL2L05WM5x28ci4pvLG8ZuZXgNpHeFF6pezWa4PNBLycVOm28n+QQBpdYIunjr3LPAgMBAAE";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = extrainfo::parse_many(s) else {
        return;
    };
    let der = onion_crypto::rsa::pem_decode(
        &format!("-----BEGIN RSA PUBLIC KEY-----\n{KEY_B64}\n-----END RSA PUBLIC KEY-----"),
        "RSA PUBLIC KEY",
    )
    .expect("fixture key decodes");
    let key = RsaKey::from_der(&der).expect("fixture key");
    let master = Ed25519Identity::from_base64("5R9QJ62ChYztYuMyYyJgDZdAP8T+MgrmwuiV1CFlaM0")
        .expect("fixture master key");
    for d in docs {
        let _ = d.peek().sha256;
        let _ = d
            .clone()
            .verify(&key, Some(&master), Timestamp(1_796_000_000));
        let _ = d.verify(&key, None, Timestamp(1_796_000_000));
    }
});
