//! Fuzz the netdoc tokenizer and the exit-policy parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::netdoc::{Limits, Tokenizer};
use onion_dir::policy::{PolicyRule, PolicySummary};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Tokenizer::new(s, Limits::SMALL) {
        for it in t {
            let Ok(it) = it else { break };
            assert!(it.start < it.end && it.end <= s.len());
            if let Some(o) = it.object {
                let _ = o.decode();
            }
            if let Some(p) = PolicySummary::parse(it.args) {
                assert_eq!(PolicySummary::parse(&p.to_string()), Some(p));
            }
            if let Some(r) = PolicyRule::parse(it.keyword, it.args) {
                let text = r.to_string();
                let (k, a) = text.split_once(' ').unwrap_or(("", ""));
                assert_eq!(PolicyRule::parse(k, a), Some(r));
            }
        }
    }
});
