//! Fuzz the reader of an authority's answer to a descriptor upload
//! (onion_dir::http::parse_upload_response): never panics, and a complete head always
//! gives an outcome whatever bytes follow it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::http::parse_upload_response;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(outcome)) = parse_upload_response(data) {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"trailing body");
        assert_eq!(parse_upload_response(&longer), Ok(Some(outcome)));
    }
});
