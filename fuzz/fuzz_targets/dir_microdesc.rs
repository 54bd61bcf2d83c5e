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
            // Proposal 321 `family-ids`: opaque tokens, each a non-empty slice of the input.
            for id in m.family_ids.ids() {
                assert!(!id.is_empty() && m.family_ids.contains(id));
            }
            let _ = m.ipv4_policy.allows_port(443);
        }
    }
});
