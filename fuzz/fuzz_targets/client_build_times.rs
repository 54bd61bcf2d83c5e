//! Fuzz the persisted circuit build time state parser (onion-client `timeout`, path-spec
//! §2.4.2, C tor's state-file lines): nothing panics, and whatever parses writes back to text
//! that parses to the same history.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_client::timeout::BuildTimes;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    if let Ok(bt) = BuildTimes::from_state([], text, &mut rng) {
        assert!(bt.total() <= onion_client::timeout::NCIRCUITS_TO_OBSERVE);
        assert!(bt.timeout() > std::time::Duration::ZERO);
        let out = bt.to_state();
        let again = BuildTimes::from_state([], &out, &mut rng).expect("re-parse");
        assert_eq!(again.to_state(), out);
        // The same times in another order: the same timeout up to rounding of the sum of logs.
        let diff = again.timeout().abs_diff(bt.timeout());
        assert!(diff <= std::time::Duration::from_millis(1));
    }
});
