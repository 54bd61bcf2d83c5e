//! Fuzz the microdescriptor batch parser; digests must cover text inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::microdesc;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mds) = microdesc::parse_many(s) {
        for m in mds {
            assert!(s.contains(m.text));
            let _ = m.family.ids().count();
            let _ = m.ipv4_policy.allows_port(443);
        }
    }
});
