//! Fuzz the relay message decoder: the first byte is the relay command, the rest the
//! body; also decode the whole input as a 509-byte relay body and the hs plaintext and
//! extension-list decoders. Decoded messages must re-encode and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_cell::extension::ExtList;
use onion_cell::hs::IntroducePlaintext;
use onion_cell::relay::RelayCell;
use onion_cell::{RelayCmd, RelayMsg};

fuzz_target!(|data: &[u8]| {
    let Some((&cmd, body)) = data.split_first() else {
        return;
    };
    if let Ok(msg) = RelayMsg::decode(RelayCmd(cmd), body) {
        if let Ok(enc) = msg.to_body_vec() {
            let again = RelayMsg::decode(RelayCmd(cmd), &enc).expect("re-decode");
            assert_eq!(again, msg);
        }
    }
    let mut full = [0u8; 509];
    let n = data.len().min(509);
    full[..n].copy_from_slice(&data[..n]);
    let _ = RelayCell::decode(&full);
    let _ = IntroducePlaintext::decode(body);
    let _ = ExtList::decode_all(body);
});
