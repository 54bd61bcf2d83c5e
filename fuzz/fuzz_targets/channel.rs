//! Fuzz the channel state machine (onion-circuit `channel`): arbitrary bytes fed, in
//! arbitrary chunks, to a fresh initiator, a fresh responder, an initiator part-way
//! through a real handshake, and both ends of an open channel. Checks that nothing
//! panics, that a closed channel reports exactly one `Closed` event and stays closed, and
//! that the outbound buffer stays bounded.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use onion_circuit::channel::{
    ChanConfig, ChanEvent, Channel, InitiatorAuth, RelayLinkKeys, ResponderCerts,
};
use onion_circuit::Instant;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const TLS: [u8; 32] = [7; 32];

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000)
}

fn keys() -> &'static (RelayLinkKeys, ResponderCerts) {
    static K: OnceLock<(RelayLinkKeys, ResponderCerts)> = OnceLock::new();
    K.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let k = RelayLinkKeys::generate(wall(), &mut rng).expect("keys");
        let c = k.responder_certs(&TLS, wall()).expect("certs");
        (k, c)
    })
}

fn initiator() -> Channel {
    let mut cfg = ChanConfig::default();
    cfg.max_outbound_bytes = 64 * 1024;
    Channel::initiator(cfg, keys().0.ids(), Some(TLS), Instant::ZERO, wall())
}

fn responder() -> Channel {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut cfg = ChanConfig::default();
    cfg.max_outbound_bytes = 64 * 1024;
    Channel::responder(cfg, &keys().1, Instant::ZERO, wall(), &mut rng)
}

/// An initiator that has sent VERSIONS, the bytes a real responder answers with, and both
/// ends of an open channel: made once, cloned for every input.
fn states() -> &'static (Channel, Vec<u8>, Channel, Channel) {
    static S: OnceLock<(Channel, Vec<u8>, Channel, Channel)> = OnceLock::new();
    S.get_or_init(|| {
        let mut i = initiator();
        let mut r = responder();
        r.handle_input(Instant::ZERO, &out(&mut i));
        let fresh_initiator = i.clone();
        let real = out(&mut r);
        i.handle_input(Instant::ZERO, &real);
        r.handle_input(Instant::ZERO, &out(&mut i));
        while i.poll_event().is_some() {}
        while r.poll_event().is_some() {}
        assert!(i.is_open() && r.is_open());
        (fresh_initiator, real, i, r)
    })
}

/// A responder that checks authenticating initiators, and the bytes an authenticating
/// initiator (another relay) sends it after the first round trip (CERTS, AUTHENTICATE,
/// NETINFO), with the responder state just before them.
fn auth_states() -> &'static (Channel, Vec<u8>) {
    static S: OnceLock<(Channel, Vec<u8>)> = OnceLock::new();
    S.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let other = RelayLinkKeys::generate(wall(), &mut rng).expect("keys");
        let creds = other
            .initiator_credentials(wall(), &mut rng)
            .expect("creds");
        let auth = InitiatorAuth {
            credentials: creds,
            tls_exporter: [5; 32],
        };
        let mut i = Channel::initiator_authenticated(
            ChanConfig::default(),
            keys().0.ids(),
            TLS,
            auth,
            Instant::ZERO,
            wall(),
            &mut rng,
        );
        let mut cfg = ChanConfig::default();
        cfg.max_outbound_bytes = 64 * 1024;
        cfg.verify_initiator_auth = true;
        let mut r = Channel::responder(cfg, &keys().1, Instant::ZERO, wall(), &mut rng);
        r.handle_input(Instant::ZERO, &out(&mut i));
        i.handle_input(Instant::ZERO, &out(&mut r));
        (r, out(&mut i))
    })
}

fn out(c: &mut Channel) -> Vec<u8> {
    let mut v = Vec::new();
    c.poll_transmit(&mut v);
    v
}

fn feed(c: &mut Channel, data: &[u8], chunk: usize) {
    let mut closed = 0;
    let mut now = 0u64;
    for part in data.chunks(chunk.max(1)) {
        let mut off = 0;
        let mut stalls = 0;
        while off < part.len() {
            now += 1_000_000;
            // A closed channel consumes all input: the loop ends.
            let n = c.handle_input(Instant::from_nanos(now), &part[off..]);
            off += n;
            stalls = if n == 0 { stalls + 1 } else { 0 };
            assert!(stalls < 3, "no progress after draining");
            while let Some(e) = c.poll_event() {
                if matches!(e, ChanEvent::Closed(_)) {
                    closed += 1;
                }
            }
            if c.tls_exporter_needed().is_some() {
                c.provide_tls_exporter([5; 32]);
            }
            assert!(c.outbound_len() <= 64 * 1024 + 600);
            out(c);
        }
        if c.is_closed() {
            break;
        }
    }
    while let Some(e) = c.poll_event() {
        if matches!(e, ChanEvent::Closed(_)) {
            closed += 1;
        }
    }
    assert!(closed <= 1);
    assert_eq!(closed == 1, c.is_closed());
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(sel >> 3) * 37;
    match sel & 7 {
        0 => {
            let mut i = initiator();
            out(&mut i);
            feed(&mut i, rest, chunk);
        }
        1 => feed(&mut responder(), rest, chunk),
        2 => {
            // A real responder's handshake, cut at a point chosen by the input, then the
            // rest of the input.
            let (fresh, real, _, _) = states();
            let mut i = fresh.clone();
            let cut = rest
                .first()
                .map_or(0, |&b| usize::from(b) * real.len() / 255);
            let mut input = real[..cut.min(real.len())].to_vec();
            input.extend_from_slice(rest.get(1..).unwrap_or(&[]));
            feed(&mut i, &input, chunk);
        }
        4 => {
            // An authenticating initiator's CERTS/AUTHENTICATE/NETINFO, cut and followed by
            // the input, to a verifying responder.
            let (r, real) = auth_states();
            let cut = rest
                .first()
                .map_or(0, |&b| usize::from(b) * real.len() / 255);
            let mut input = real[..cut.min(real.len())].to_vec();
            input.extend_from_slice(rest.get(1..).unwrap_or(&[]));
            feed(&mut r.clone(), &input, chunk);
        }
        5 => {
            // Arbitrary input to a fresh verifying responder.
            let mut rng = ChaCha20Rng::seed_from_u64(4);
            let mut cfg = ChanConfig::default();
            cfg.max_outbound_bytes = 64 * 1024;
            cfg.verify_initiator_auth = true;
            let mut r = Channel::responder(cfg, &keys().1, Instant::ZERO, wall(), &mut rng);
            feed(&mut r, rest, chunk);
        }
        _ => {
            let (_, _, i, r) = states();
            feed(&mut i.clone(), rest, chunk);
            feed(&mut r.clone(), rest, chunk);
        }
    }
});
