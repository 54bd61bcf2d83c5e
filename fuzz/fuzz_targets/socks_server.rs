//! Fuzz the SOCKS server codec (`onion_client::socks`): a local application's bytes, cut into
//! arbitrary pieces, through a handshake; the isolation map and special-name check on what
//! it returns; and the reply decoders against their encoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_client::socks::{
    destination, Handshake, IsolationKey, Socks4Reply, Socks5Reply, Step, MAX_MESSAGE,
};

fuzz_target!(|data: &[u8]| {
    // The first byte cuts the rest into pieces of 1 + (byte % 64) bytes; the handshake sees
    // what arrived so far, as a server reading a socket does.
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let piece = 1 + usize::from(cut % 64);
    let mut h = Handshake::new();
    let mut buf = Vec::new();
    'feed: for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match h.handle_input(&buf) {
                Ok(Step::NeedMore) => {
                    assert!(!h.is_done());
                    break;
                }
                Ok(Step::Reply { consumed, reply }) => {
                    assert!(consumed > 0 && consumed <= buf.len().min(MAX_MESSAGE));
                    assert!(!reply.is_empty());
                    buf.drain(..consumed);
                }
                Ok(Step::Request { consumed, request }) => {
                    assert!(consumed <= buf.len() && request.port != 0);
                    assert!(!request.host.is_empty());
                    let _ = destination(&request.host);
                    let _ = IsolationKey::new([0; 32]).isolation(&request.credentials);
                    assert!(h.is_done());
                    break 'feed;
                }
                Err(e) => {
                    let _ = e.reply();
                    assert!(h.is_done());
                    break 'feed;
                }
            }
        }
    }
    if let Ok(Some((r, n))) = Socks5Reply::decode(data) {
        assert_eq!(r.encode(), data[..n]);
    }
    if let Ok(Some(r)) = Socks4Reply::decode(data) {
        if data[1] == 90 || data[1] == 91 {
            assert_eq!(r.encode(), data[..8]);
        }
    }
});
