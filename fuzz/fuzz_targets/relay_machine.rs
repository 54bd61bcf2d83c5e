//! Arbitrary inputs and embedder calls at an `onion_relay::Relay` (an exit and directory
//! cache with every limit small).
//!
//! The input is a list of records: one op byte, one selector byte, a length byte and that
//! many data bytes. Ops: accept a connection (and feed it a VERSIONS cell), bytes on a
//! connection, a connection closing, time passing, a TLS exporter value, a resolver answer,
//! target connected / failed / data / closed, taking target bytes, and transmitting. Every
//! event the relay gives is drained. Nothing may panic, loop or allocate without bound.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use onion_crypto::relay_keyset::{KeyFiles, RelayKeySet};
use onion_relay::{
    ConnId, Event, Instant, Relay, RelayConfig, ResolveError, StreamHandle, TargetError,
    TlsLinkCert,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const VERSIONS: &[u8] = &[0, 0, 7, 0, 6, 0, 3, 0, 4, 0, 5];

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000)
}

/// The key files, made once (RSA key generation is slow); each run loads them.
fn files() -> &'static KeyFiles {
    static F: OnceLock<KeyFiles> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let k = RelayKeySet::generate(wall(), false, &mut rng).expect("keys");
        k.to_files().expect("files")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let Ok((keys, _)) = RelayKeySet::from_files(wall(), files(), None, &mut rng) else {
        return;
    };
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let mut cfg = RelayConfig::new(vec![ip]);
    cfg.link_cert = Some(TlsLinkCert::from_der(vec![1; 32], Default::default()));
    cfg.exit_policy = Some(onion_dir::policy::ExitPolicy::default());
    cfg.exit_reject_private = false;
    cfg.dir_cache = true;
    cfg.limits.max_conns_per_addr = 3;
    cfg.limits.circuits_per_channel = 8;
    cfg.limits.stream_buffer = 4096;
    cfg.limits.max_streams = 16;
    cfg.limits.max_queued_bytes = 1 << 20;
    let Ok(mut relay) = Relay::new(cfg, keys, Instant::ZERO, wall().into(), &mut rng) else {
        return;
    };
    let mut now = Instant::ZERO;
    let mut rest = data;
    let mut out = Vec::new();
    let mut steps = 0;
    // The stream handles the relay named in its events.
    let mut handles: Vec<StreamHandle> = Vec::new();
    while rest.len() >= 3 && steps < 256 {
        steps += 1;
        let (op, sel, len) = (rest[0], rest[1], usize::from(rest[2]));
        let body = rest.get(3..3 + len).unwrap_or(&rest[3..]);
        rest = rest.get(3 + len..).unwrap_or(&[]);
        let conn = ConnId(u64::from(sel % 4));
        let stream = handles
            .get(usize::from(sel) % handles.len().max(1))
            .copied();
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, sel % 3)), 1);
        match (op % 13, stream) {
            (0, _) => {
                if relay.handle_accepted(conn, now, peer).is_ok() {
                    relay.handle_input(conn, now, VERSIONS);
                }
            }
            (1, _) => relay.handle_input(conn, now, body),
            (2, _) => relay.handle_closed(conn, now),
            (3, _) => {
                now = now + Duration::from_millis(u64::from(sel) * 100);
                relay.handle_timeout(now, (wall() + (now - Instant::ZERO)).into());
            }
            (4, _) => {
                let mut v = [0u8; 32];
                v[..body.len().min(32)].copy_from_slice(&body[..body.len().min(32)]);
                relay.provide_tls_exporter(conn, now, v);
            }
            (5, Some(stream)) => {
                let answer = if sel & 0x80 != 0 {
                    Err(ResolveError::NotFound)
                } else {
                    Ok(vec![IpAddr::V4(Ipv4Addr::new(93, 184, 216, sel))])
                };
                relay.handle_resolved(stream, now, answer);
            }
            (6, Some(stream)) => relay.handle_target_connected(stream, now, peer),
            (7, Some(stream)) => relay.handle_target_failed(stream, now, TargetError::Refused),
            (8, Some(stream)) => {
                relay.handle_target_data(stream, now, body);
            }
            (9, Some(stream)) => relay.handle_target_closed(stream, now),
            (10, Some(stream)) => {
                relay.target_transmit(stream, now, &mut out, usize::from(sel) * 64);
            }
            (11, _) => {
                relay.poll_transmit_to(conn, now, &mut out, usize::from(sel) * 16);
            }
            (12, _) => while relay.poll_transmit(now, &mut out).is_some() {},
            _ => {}
        }
        out.clear();
        while let Some(ev) = relay.poll_event() {
            match ev {
                Event::Resolve { request: h, .. }
                | Event::OpenTarget { stream: h, .. }
                | Event::TargetData { stream: h } => {
                    if handles.len() < 64 {
                        handles.push(h);
                    }
                }
                _ => {}
            }
        }
        let _ = relay.poll_timeout();
    }
});
