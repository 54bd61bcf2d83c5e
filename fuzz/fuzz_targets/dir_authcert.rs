//! Fuzz the authority key certificate parser and verification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::{authcert, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cs) = authcert::parse_many(s) {
        for c in cs {
            let _ = c.verify(Timestamp(1_700_000_000));
        }
    }
});
