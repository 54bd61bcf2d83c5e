//! Fuzz the server-descriptor parser and its signature / cross-certificate checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::{routerdesc, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ds) = routerdesc::parse_many(s) {
        for d in ds {
            let _ = d.peek().exit_policy.allows(
                "1.2.3.4"
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
                80,
            );
            let _ = d.verify(Timestamp(1_700_000_000));
        }
    }
});
