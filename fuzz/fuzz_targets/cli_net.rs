#![no_main]
//! The `onion` binary's own parsers of untrusted input: SOCKS5 greetings, username/password and requests from
//! local applications (`onion socks`), HTTP responses from exits, directory caches and
//! onion services, and URLs (`onion get`). The modules are included from `onion-cli`'s
//! sources (a binary crate has no library to depend on); they use only `std`.

#[allow(dead_code)]
#[path = "../../onion-cli/src/net/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "../../onion-cli/src/net/socks.rs"]
mod socks;
#[allow(dead_code)]
#[path = "../../onion-cli/src/net/text.rs"]
mod text;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((n, _))) = socks::parse_greeting_method(data) {
        assert!(n <= data.len());
    }
    if let Ok(Some((n, _))) = socks::parse_user_pass(data) {
        assert!(n <= data.len());
    }
    if let Ok(Some((n, t))) = socks::parse_request(data) {
        assert!(n <= data.len());
        assert!(!t.host.is_empty());
    }
    for ended in [false, true] {
        if let Ok(r) = http::parse_response(data, ended) {
            assert!(r.body.len() <= data.len());
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(u) = http::Url::parse(s) {
            assert!(u.path.starts_with('/'));
        }
    }
});
