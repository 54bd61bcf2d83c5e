//! What the relay's integration tests share: a relay on a fixed wall clock, and a client
//! channel to it driven through the relay's public API only.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_circuit::channel::{ChanConfig, ChanEvent, Channel};
use onion_circuit::Instant;
use onion_crypto::relay_keyset::RelayKeySet;
use onion_relay::{ConnId, Relay, RelayConfig, TlsLinkCert};
use rand_chacha::ChaCha20Rng;

/// The wall clock of every test relay.
pub fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000)
}

/// The relay's address.
pub const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

/// A relay at [`RELAY_IP`] with fresh keys and a TLS link certificate, its configuration
/// adjusted by `adjust` first.
pub fn relay(rng: &mut ChaCha20Rng, adjust: impl FnOnce(&mut RelayConfig)) -> Relay {
    let keys = RelayKeySet::generate(wall(), false, rng).expect("keys");
    let mut cfg = RelayConfig::new(vec![RELAY_IP]);
    cfg.link_cert = Some(TlsLinkCert::from_der(vec![7; 32], Default::default()));
    adjust(&mut cfg);
    Relay::new(cfg, keys, Instant::ZERO, wall().into(), rng).expect("relay")
}

/// A client's channel to `relay` (its connection `ConnId(1)`), open.
pub fn open_channel(relay: &mut Relay) -> Channel {
    let now = Instant::ZERO;
    relay
        .handle_accepted(
            ConnId(1),
            now,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 9),
        )
        .expect("accept");
    let mut chan = Channel::initiator(
        ChanConfig::default(),
        relay.identities(),
        Some(relay.link_cert().sha256()),
        now,
        wall(),
    );
    pump(relay, &mut chan, |_| {});
    assert!(chan.is_open());
    chan
}

/// Move bytes both ways between `relay` and the client's `chan` until nothing moves; the
/// channel's events go to `on_event` (the relay's are dropped).
pub fn pump(relay: &mut Relay, chan: &mut Channel, mut on_event: impl FnMut(ChanEvent)) {
    let now = Instant::ZERO;
    let mut out = Vec::new();
    loop {
        let mut moved = false;
        while chan.poll_transmit(&mut out).is_some() {
            relay.handle_input(ConnId(1), now, &out);
            out.clear();
            moved = true;
        }
        while relay.poll_event().is_some() {}
        while relay.poll_transmit(now, &mut out).is_some() {
            let mut off = 0;
            while off < out.len() {
                off += chan.handle_input(now, &out[off..]);
                assert_eq!(chan.close_error(), None, "client input");
                while let Some(ev) = chan.poll_event() {
                    on_event(ev);
                }
            }
            out.clear();
            moved = true;
        }
        if !moved {
            return;
        }
    }
}
