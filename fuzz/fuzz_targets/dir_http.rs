//! Fuzz the directory HTTP response decoder (head, deflate/gzip bodies, bounds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::http::{decode_body, parse_head, Encoding, ResponseReader};

fuzz_target!(|data: &[u8]| {
    let _ = parse_head(data);
    let mut r = ResponseReader::new(1 << 20);
    if r.handle_bytes(data).is_ok() {
        let _ = r.finish();
    }
    for enc in [Encoding::Deflate, Encoding::Gzip] {
        if let Ok(out) = decode_body(enc, data, 1 << 20) {
            assert!(out.len() <= 1 << 20);
        }
    }
});
