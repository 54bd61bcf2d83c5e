//! Known-answer tests against real C tor 0.4.9.11:
//!
//! * a relay's side of the handshake (VERSIONS, CERTS with certificate types 1, 2, 4, 5, 7,
//!   AUTH_CHALLENGE, NETINFO), captured over TLS with the SHA-256 of its TLS certificate
//!   (`testdata/channel/ctor-0.4.9.11-responder.{bin,json}`), checked by our initiator;
//! * a client's side (VERSIONS, NETINFO, CREATE_FAST), captured by our responder
//!   (`testdata/channel/ctor-0.4.9.11-client.bin`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_circuit::channel::*;
use onion_circuit::Instant;
use onion_crypto::{Ed25519Identity, RsaIdentity};

const BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/channel/ctor-0.4.9.11-responder.bin"
));
const META: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/channel/ctor-0.4.9.11-responder.json"
));

struct Meta {
    digest: [u8; 32],
    at: SystemTime,
    ids: PeerIds,
}

fn meta() -> Meta {
    let v: serde_json::Value = serde_json::from_str(META).expect("json");
    let digest = hex::decode(v["tls_cert_sha256"].as_str().expect("digest")).expect("hex");
    let at = UNIX_EPOCH + Duration::from_secs(v["captured_at_unix"].as_u64().expect("time"));
    let rsa = RsaIdentity::from_hex(v["rsa_identity"].as_str().expect("rsa")).expect("rsa");
    let ed = Ed25519Identity::from_base64(v["ed25519_identity"].as_str().expect("ed")).expect("ed");
    Meta {
        digest: digest.try_into().expect("32 bytes"),
        at,
        ids: PeerIds::new(rsa, ed),
    }
}

fn run(expected: PeerIds, digest: [u8; 32], at: SystemTime, chunk: usize) -> Vec<ChanEvent> {
    let mut c = Channel::initiator(
        ChanConfig::default(),
        expected,
        Some(digest),
        Instant::ZERO,
        at,
    );
    let mut sent = Vec::new();
    assert!(c.poll_transmit(&mut sent).is_some());
    // Our VERSIONS: circuit id 0 (2 bytes), command 7, length 6, versions 3, 4, 5.
    assert_eq!(sent, [0, 0, 7, 0, 6, 0, 3, 0, 4, 0, 5]);
    for part in BYTES.chunks(chunk) {
        let mut off = 0;
        while off < part.len() {
            off += c.handle_input(Instant::from_nanos(1_000_000), &part[off..]);
        }
        if c.is_closed() {
            break;
        }
    }
    let mut ev = Vec::new();
    while let Some(e) = c.poll_event() {
        ev.push(e);
    }
    if c.is_open() {
        // Our NETINFO answer: a fixed-length cell on circuit 0 with timestamp 0.
        let mut out = Vec::new();
        assert_eq!(c.poll_transmit(&mut out), Some(514));
        assert_eq!(&out[..9], &[0, 0, 0, 0, 8, 0, 0, 0, 0]);
    }
    ev
}

#[test]
fn real_relay_handshake_validates() {
    let m = meta();
    for chunk in [1, 7, 509, 514, 4096] {
        let ev = run(m.ids, m.digest, m.at, chunk);
        match ev.as_slice() {
            [ChanEvent::Open(o)] => {
                assert_eq!(o.link_version, 5);
                assert_eq!(o.peer, m.ids);
                assert!(o.clock_skew_secs.is_some_and(|s| s.abs() < 5), "{o:?}");
                assert_eq!(o.peer_addrs, vec![std::net::IpAddr::from([127, 0, 0, 1])]);
            }
            other => panic!("chunk {chunk}: {other:?}"),
        }
    }
}

#[test]
fn real_relay_wrong_tls_digest_or_identity_refused() {
    let m = meta();
    let mut d = m.digest;
    d[0] ^= 1;
    let ev = run(m.ids, d, m.at, 4096);
    assert!(
        matches!(
            &ev[..],
            [ChanEvent::Closed(ChanError::Certs(
                CertsError::TlsCertMismatch
            ))]
        ),
        "{ev:?}"
    );
    let mut ids = m.ids;
    ids.rsa = Some(RsaIdentity([0x42; 20]));
    let ev = run(ids, m.digest, m.at, 4096);
    assert!(
        matches!(
            &ev[..],
            [ChanEvent::Closed(ChanError::IdentityMismatch { .. })]
        ),
        "{ev:?}"
    );
}

#[test]
fn real_relay_certificates_expire() {
    let m = meta();
    // C tor's link certificates live 2 days (rounded to the hour).
    let ev = run(
        m.ids,
        m.digest,
        m.at + Duration::from_secs(4 * 24 * 3600),
        4096,
    );
    assert!(
        matches!(
            &ev[..],
            [ChanEvent::Closed(ChanError::Certs(CertsError::Cert {
                error: onion_crypto::CertError::Expired { .. },
                ..
            }))]
        ),
        "{ev:?}"
    );
}

/// The bytes a C tor 0.4.9.11 client sent to our responder (driven over TLS by rustls,
/// with the client configured to use it as a bridge): VERSIONS, NETINFO (timestamp 0,
/// OTHERADDR 127.0.0.1, no own address), then CREATE_FAST for its first circuit. The C tor
/// client logged "Authenticated it with RSA and Ed25519" for our CERTS cell and "OR
/// connection is now open, using protocol version 5".
const CLIENT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/channel/ctor-0.4.9.11-client.bin"
));

#[test]
fn real_client_handshake_is_accepted() {
    use rand_chacha::rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let wall = UNIX_EPOCH + Duration::from_secs(1_795_435_000);
    let keys = RelayLinkKeys::generate(wall, &mut rng).expect("keys");
    let certs = keys.responder_certs(&[1; 32], wall).expect("certs");
    for chunk in [1, 11, 525, 2000] {
        let mut r =
            Channel::responder(ChanConfig::default(), &certs, Instant::ZERO, wall, &mut rng);
        for part in CLIENT.chunks(chunk) {
            assert_eq!(r.handle_input(Instant::ZERO, part), part.len());
            assert_eq!(r.close_error(), None);
        }
        let ev: Vec<_> = std::iter::from_fn(|| r.poll_event()).collect();
        match ev.as_slice() {
            [ChanEvent::Open(o), ChanEvent::CircuitCell {
                circ_id,
                msg: onion_cell::ChanMsg::CreateFast(_),
            }] => {
                assert_eq!(o.link_version, 5);
                assert_eq!(o.peer, PeerIds::default());
                assert_eq!(o.clock_skew_secs, None);
                assert_eq!(
                    o.our_addr_seen_by_peer,
                    Some(std::net::IpAddr::from([127, 0, 0, 1]))
                );
                // The client's id is in the initiator's half (top bit set, §5.1.1).
                assert!(circ_id.high_bit_set());
            }
            other => panic!("chunk {chunk}: {other:?}"),
        }
    }
}
