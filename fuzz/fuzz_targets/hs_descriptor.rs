//! Fuzz the v3 onion-service descriptor parsers (onion-hs): the outer document with
//! verification and decryption attempts, and both decrypted-layer parsers directly (the MACs
//! would otherwise keep the fuzzer out of them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_hs::desc::{FirstLayer, OuterDescriptor, SecondLayer};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match sel % 3 {
        0 => {
            if let Ok(outer) = OuterDescriptor::parse(&text) {
                let _ = outer.claimed_blinded_key();
                let id = onion_hs::keys::ExpandedKeypair::from_seed(&[1; 32]).id_key();
                if let Ok(v) = outer.verify(None, onion_dir::Timestamp::from_unix(1_795_418_409)) {
                    let _ = v.decrypt(&id, None, onion_dir::Timestamp::from_unix(1_795_418_409));
                }
            }
        }
        1 => {
            if let Ok(l) = FirstLayer::parse(&text) {
                let _ = FirstLayer::parse(&l.encode());
            }
        }
        _ => {
            if let Ok(l) = SecondLayer::parse(&text) {
                if let Ok(s) = l.encode() {
                    assert_eq!(SecondLayer::parse(&s).ok(), Some(l));
                }
            }
        }
    }
});
