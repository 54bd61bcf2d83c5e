//! Fuzz the consensus parser (both flavours) and what a client does next with
//! a parsed document: freshness, signed digest, signature check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::consensus::{self, DigestAlgorithm};
use onion_dir::{RsaIdentity, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = consensus::parse(s) {
        let rep = u.check_signatures(&[RsaIdentity([0; 20])], &[], Timestamp(0));
        assert!(!rep.quorum());
        let c = u.assume_verified();
        let _ = c.freshness(Timestamp(1_700_000_000));
        assert!(c.signed_len <= s.len());
        let _ = c.signed_digest(DigestAlgorithm::Sha1);
    }
});
