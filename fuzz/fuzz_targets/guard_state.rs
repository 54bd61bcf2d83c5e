//! Fuzz the persisted guard state parser (onion-dir `guard::state`, guard-spec A.5): whatever
//! parses writes back to text that parses to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::select::guard::{GuardMgr, GuardParams};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mgr) = GuardMgr::from_state_str(GuardParams::default(), text) {
        let out = mgr.to_state_string();
        let again = GuardMgr::from_state_str(GuardParams::default(), &out).expect("re-parse");
        assert_eq!(again.sampled(), mgr.sampled());
        assert_eq!(again.confirmed(), mgr.confirmed());
        assert_eq!(again.to_state_string(), out);
    }
});
