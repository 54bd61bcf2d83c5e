//! Channel handshake and circuit-map tests: an initiator and a responder talking in memory.

use std::time::{Duration, SystemTime};

use onion_cell::chancell::{
    ChanMsg, Create2, Created2, DestroyReason, HandshakeType, RelayPayload,
};
use onion_cell::CircId;
use onion_circuit::channel::*;
use onion_circuit::Instant;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

mod channel_common;
use channel_common::{initiator, keys, wall, Input, TLS_DIGEST};

fn responder(rng: &mut ChaCha20Rng) -> Channel {
    Channel::responder(
        ChanConfig::default(),
        &good_certs(),
        Instant::ZERO,
        wall(),
        rng,
    )
}

/// Moves bytes both ways until neither side has anything to send. Returns the events.
fn pump(a: &mut Channel, b: &mut Channel, now: Instant) -> (Vec<ChanEvent>, Vec<ChanEvent>) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    loop {
        let mut moved = false;
        let mut buf = Vec::new();
        if a.poll_transmit(&mut buf).is_some() {
            moved = true;
            feed(b, now, &buf);
        }
        buf.clear();
        if b.poll_transmit(&mut buf).is_some() {
            moved = true;
            feed(a, now, &buf);
        }
        while let Some(e) = a.poll_event() {
            ea.push(e);
        }
        while let Some(e) = b.poll_event() {
            eb.push(e);
        }
        if !moved {
            return (ea, eb);
        }
    }
}

fn feed(c: &mut Channel, now: Instant, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        match c.input(now, &data[off..]) {
            Ok(n) => off += n,
            Err(_) => return,
        }
    }
}

fn open_pair(rng: &mut ChaCha20Rng) -> (Channel, Channel, ChanOpen, ChanOpen) {
    let mut r = responder(rng);
    let mut i = initiator(ChanConfig::default());
    let (ei, er) = pump(&mut i, &mut r, Instant::ZERO);
    let oi = match ei.as_slice() {
        [ChanEvent::Open(o)] => o.clone(),
        other => panic!("initiator events {other:?}"),
    };
    let or = match er.as_slice() {
        [ChanEvent::Open(o)] => o.clone(),
        other => panic!("responder events {other:?}"),
    };
    (i, r, oi, or)
}

#[test]
fn handshake_completes_with_link_version_5() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (i, r, oi, or) = open_pair(&mut rng);
    assert!(i.is_open() && r.is_open());
    assert_eq!(oi.link_version, 5);
    assert_eq!(or.link_version, 5);
    assert_eq!(oi.peer, keys().ids());
    assert_eq!(or.peer, PeerIds::default());
    assert_eq!(oi.clock_skew_secs, Some(0));
    assert_eq!(or.clock_skew_secs, None);
}

#[test]
fn circuits_flow_both_ways_and_destroy_is_reported() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (mut i, mut r, _, _) = open_pair(&mut rng);
    let id = i.new_circ_id(&mut rng).expect("id");
    assert!(id.high_bit_set());
    let create = ChanMsg::Create2(Create2 {
        handshake_type: HandshakeType::NTOR,
        hdata: vec![7u8; 84].into(),
    });
    i.send(id, &create).expect("send create");
    let (_, er) = pump(&mut i, &mut r, Instant::ZERO);
    assert!(
        matches!(&er[..], [ChanEvent::CircuitCell { circ_id, msg: ChanMsg::Create2(_) }] if *circ_id == id)
    );
    r.send(
        id,
        &ChanMsg::Created2(Created2 {
            hdata: vec![1u8; 64].into(),
        }),
    )
    .expect("created2");
    let (ei, _) = pump(&mut i, &mut r, Instant::ZERO);
    assert!(matches!(
        &ei[..],
        [ChanEvent::CircuitCell {
            msg: ChanMsg::Created2(_),
            ..
        }]
    ));
    assert_eq!(
        i.circuit_state(id),
        Some((CircOrigin::Local, CircState::Open))
    );
    let body = Box::new([3u8; 509]);
    i.send(id, &ChanMsg::Relay(RelayPayload::Owned(body)))
        .expect("relay");
    let (_, er) = pump(&mut i, &mut r, Instant::ZERO);
    assert!(
        matches!(&er[..], [ChanEvent::CircuitCell { msg: ChanMsg::Relay(p), .. }] if p.as_bytes()[0] == 3)
    );
    r.send(id, &ChanMsg::Destroy(DestroyReason::FINISHED))
        .expect("destroy");
    assert_eq!(r.n_circuits(), 0);
    let (ei, _) = pump(&mut i, &mut r, Instant::ZERO);
    assert!(matches!(
        &ei[..],
        [ChanEvent::CircuitCell {
            msg: ChanMsg::Destroy(DestroyReason::FINISHED),
            ..
        }]
    ));
    assert_eq!(i.n_circuits(), 0);
    assert_eq!(i.circuit_state(id), None);
    // Cells for the destroyed circuit are now dropped.
    assert!(matches!(
        i.send(id, &ChanMsg::Destroy(DestroyReason::NONE)),
        Err(SendError::UnknownCircuit(_))
    ));
}

fn keys2() -> &'static RelayLinkKeys {
    use std::sync::OnceLock;
    static KEYS: OnceLock<RelayLinkKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(1234);
        RelayLinkKeys::generate(wall(), &mut rng).expect("keys")
    })
}

/// Runs a handshake against a responder sending `certs`; returns the initiator's error.
fn handshake_error(
    certs: &ResponderCerts,
    expected: PeerIds,
    digest: Option<[u8; 32]>,
    when: SystemTime,
) -> ChanError {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut r = Channel::responder(
        ChanConfig::default(),
        certs,
        Instant::ZERO,
        wall(),
        &mut rng,
    );
    let mut i = Channel::initiator(ChanConfig::default(), expected, digest, Instant::ZERO, when);
    let (ei, _) = pump(&mut i, &mut r, Instant::ZERO);
    assert!(i.is_closed());
    match ei.as_slice() {
        [ChanEvent::Closed(e)] => e.clone(),
        other => panic!("initiator events {other:?}"),
    }
}

fn good_certs() -> ResponderCerts {
    keys().responder_certs(&TLS_DIGEST, wall()).expect("certs")
}

#[test]
fn wrong_expected_identity_is_refused() {
    let other = keys2().ids();
    for expected in [
        other,
        PeerIds::rsa_only(other.rsa.unwrap()),
        PeerIds::ed25519_only(other.ed25519.unwrap()),
        PeerIds {
            rsa: keys().ids().rsa,
            ed25519: other.ed25519,
        },
    ] {
        let e = handshake_error(&good_certs(), expected, Some(TLS_DIGEST), wall());
        match e {
            ChanError::IdentityMismatch {
                got_rsa, got_ed, ..
            } => {
                assert_eq!(Some(got_rsa), keys().ids().rsa);
                assert_eq!(Some(got_ed), keys().ids().ed25519);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn partial_expectations_accept_the_right_relay() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for expected in [
        PeerIds::rsa_only(keys().ids().rsa.unwrap()),
        PeerIds::ed25519_only(keys().ids().ed25519.unwrap()),
    ] {
        let mut r = responder(&mut rng);
        let mut i = Channel::initiator(
            ChanConfig::default(),
            expected,
            Some(TLS_DIGEST),
            Instant::ZERO,
            wall(),
        );
        let (ei, _) = pump(&mut i, &mut r, Instant::ZERO);
        assert!(matches!(&ei[..], [ChanEvent::Open(o)] if o.peer == keys().ids()));
    }
}

#[test]
fn tls_certificate_mismatch_is_refused() {
    let e = handshake_error(&good_certs(), keys().ids(), Some([0x11; 32]), wall());
    assert_eq!(e, ChanError::Certs(CertsError::TlsCertMismatch));
}

#[test]
fn tampered_certificates_are_refused() {
    for cert_type in [2u8, 4, 5, 7] {
        // Flip a bit in the last byte (inside every certificate's signature).
        let mut certs = good_certs();
        let mut body = certs.get(cert_type).unwrap().to_vec();
        let last = body.len() - 1;
        body[last] ^= 0x01;
        certs.set(cert_type, body);
        let e = handshake_error(&certs, keys().ids(), Some(TLS_DIGEST), wall());
        match e {
            ChanError::Certs(CertsError::Cert {
                cert_type: t,
                error: onion_crypto::CertError::BadSignature { .. },
            }) => {
                assert_eq!(t, cert_type)
            }
            other => panic!("type {cert_type}: {other:?}"),
        }
        // Flip a bit in the signed part: the key or certified data changes.
        let mut certs = good_certs();
        let mut body = certs.get(cert_type).unwrap().to_vec();
        let mid = if cert_type == 2 { body.len() / 2 } else { 10 };
        body[mid] ^= 0x01;
        certs.set(cert_type, body);
        let e = handshake_error(&certs, keys().ids(), Some(TLS_DIGEST), wall());
        assert!(matches!(e, ChanError::Certs(_)), "type {cert_type}: {e:?}");
        // Truncated.
        let mut certs = good_certs();
        let body = certs.get(cert_type).unwrap().to_vec();
        certs.set(cert_type, body[..body.len() - 3].to_vec());
        let e = handshake_error(&certs, keys().ids(), Some(TLS_DIGEST), wall());
        assert!(
            matches!(e, ChanError::Certs(CertsError::Cert { cert_type: t, .. }) if t == cert_type),
            "type {cert_type}: {e:?}"
        );
    }
}

#[test]
fn certificates_of_another_relay_are_refused() {
    let theirs = keys2().responder_certs(&TLS_DIGEST, wall()).unwrap();
    // Cross-certificate of another relay: names another ed25519 identity.
    let mut certs = good_certs();
    certs.set(7, theirs.get(7).unwrap().to_vec());
    let e = handshake_error(&certs, PeerIds::default(), Some(TLS_DIGEST), wall());
    assert_eq!(e, ChanError::Certs(CertsError::CrossCertKeyMismatch));
    // RSA identity of another relay: the cross-certificate's signature does not verify.
    let mut certs = good_certs();
    certs.set(2, theirs.get(2).unwrap().to_vec());
    let e = handshake_error(&certs, PeerIds::default(), Some(TLS_DIGEST), wall());
    assert!(
        matches!(e, ChanError::Certs(CertsError::Cert { cert_type: 7, .. })),
        "{e:?}"
    );
    // Link certificate signed by another relay's signing key.
    let mut certs = good_certs();
    certs.set(5, theirs.get(5).unwrap().to_vec());
    let e = handshake_error(&certs, PeerIds::default(), Some(TLS_DIGEST), wall());
    assert!(
        matches!(e, ChanError::Certs(CertsError::Cert { cert_type: 5, .. })),
        "{e:?}"
    );
}

#[test]
fn expired_certificates_are_refused() {
    use onion_crypto::CertError;
    fn expired(e: &CertError) -> bool {
        matches!(e, CertError::Expired { .. })
    }
    fn not_yet_valid(e: &CertError) -> bool {
        matches!(e, CertError::NotYetValid { .. })
    }
    let day = |d: u64| Duration::from_secs(d * 24 * 3600);
    let much_later = wall() + day(40);
    /// What the case is, the certificates, the time, the failing CertType and a check of
    /// its error.
    type Case = (
        &'static str,
        ResponderCerts,
        SystemTime,
        u8,
        fn(&CertError) -> bool,
    );
    let cases: [Case; 3] = [
        // The link certificate lives 2 days: 3 days later it has expired.
        ("link", good_certs(), wall() + day(3), 5, expired),
        // A fresh link certificate, but the Id->Signing certificate (30 days) has expired.
        (
            "Id->Signing",
            keys().responder_certs(&TLS_DIGEST, much_later).unwrap(),
            much_later,
            4,
            expired,
        ),
        // Certificates from the far future (the RSA certificate starts later than 30 days
        // on).
        ("RSA", good_certs(), wall() - day(60), 2, not_yet_valid),
    ];
    for (what, certs, now, want_type, want) in cases {
        let e = handshake_error(&certs, keys().ids(), Some(TLS_DIGEST), now);
        assert!(
            matches!(&e, ChanError::Certs(CertsError::Cert { cert_type, error })
                if *cert_type == want_type && want(error)),
            "{what}: {e:?}"
        );
    }
}

#[test]
fn no_tls_digest_skips_only_the_link_check() {
    let mut certs = good_certs();
    let other = keys().responder_certs(&[0x77; 32], wall()).unwrap();
    certs.set(5, other.get(5).unwrap().to_vec());
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut r = Channel::responder(
        ChanConfig::default(),
        &certs,
        Instant::ZERO,
        wall(),
        &mut rng,
    );
    let mut i = Channel::initiator(
        ChanConfig::default(),
        keys().ids(),
        None,
        Instant::ZERO,
        wall(),
    );
    let (ei, _) = pump(&mut i, &mut r, Instant::ZERO);
    assert!(matches!(&ei[..], [ChanEvent::Open(_)]), "{ei:?}");
}

// ---------------------------------------------------------------------------------------
// Raw-cell helpers: a fake peer speaking bytes.

use onion_cell::chancell::{ChanCell, Netinfo, NetinfoAddr, PaddingNegotiate, Versions};
use onion_cell::codec::{encode_cell, CellFormat};

fn raw(version: u16, id: u32, msg: ChanMsg<'_>) -> Vec<u8> {
    let format = if version == 0 {
        CellFormat::UNNEGOTIATED
    } else {
        CellFormat::for_version(version).unwrap()
    };
    let mut out = Vec::new();
    encode_cell(
        format,
        &ChanCell {
            circ_id: CircId::new(id),
            msg,
        },
        &mut out,
    )
    .unwrap();
    out
}

fn versions(v: &[u16]) -> Vec<u8> {
    raw(
        0,
        0,
        ChanMsg::Versions(Versions {
            versions: v.to_vec(),
        }),
    )
}

fn netinfo(version: u16, ts: u32) -> Vec<u8> {
    raw(
        version,
        0,
        ChanMsg::Netinfo(Netinfo {
            timestamp: ts,
            other_addr: NetinfoAddr::Ip([10, 0, 0, 1].into()),
            my_addrs: vec![],
        }),
    )
}

fn events(c: &mut Channel) -> Vec<ChanEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn drain(c: &mut Channel) -> Vec<u8> {
    let mut out = Vec::new();
    c.poll_transmit(&mut out);
    out
}

/// A responder opened by a fake client that sent VERSIONS `v` and NETINFO.
fn open_responder(v: &[u16], link: u16) -> Channel {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let mut r = responder(&mut rng);
    let mut input = versions(v);
    input.extend(netinfo(link, 0));
    assert_eq!(r.input(Instant::ZERO, &input), Ok(input.len()));
    let ev = events(&mut r);
    assert!(
        matches!(&ev[..], [ChanEvent::Open(o)] if o.link_version == link && o.our_addr_seen_by_peer == Some([10, 0, 0, 1].into())),
        "{ev:?}"
    );
    drain(&mut r);
    r
}

fn create2() -> ChanMsg<'static> {
    ChanMsg::Create2(Create2 {
        handshake_type: HandshakeType::NTOR,
        hdata: vec![9u8; 84].into(),
    })
}

fn relay(b: u8) -> ChanMsg<'static> {
    ChanMsg::Relay(RelayPayload::Owned(Box::new([b; 509])))
}

fn closed_with(c: &mut Channel) -> ChanError {
    assert!(c.is_closed());
    match events(c).pop() {
        Some(ChanEvent::Closed(e)) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn first_cell_must_be_versions() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    // A fixed-length PADDING cell is refused as soon as its command byte arrives.
    let mut r = responder(&mut rng);
    let e = r.input(Instant::ZERO, &[0, 0, 0]).unwrap_err();
    assert_eq!(
        e,
        ChanError::UnexpectedCell {
            cmd: "PADDING",
            state: "awaiting VERSIONS"
        }
    );
    assert_eq!(closed_with(&mut r), e);
    assert_eq!(r.input(Instant::ZERO, &[1, 2, 3]), Err(e));
    assert_eq!(drain(&mut r), Vec::<u8>::new());
    // HTTP instead of Tor.
    let mut i = initiator(ChanConfig::default());
    let e = i
        .input(Instant::ZERO, b"HTTP/1.0 400 Bad Request\r\n")
        .unwrap_err();
    assert!(matches!(e, ChanError::UnexpectedCell { .. }), "{e:?}");
    // VPADDING and AUTHORIZE may come first.
    let mut r = responder(&mut rng);
    let mut input = raw(0, 0, ChanMsg::Vpadding { len: 3 });
    input.extend(raw(0, 0, ChanMsg::Authorize(vec![1, 2].into())));
    input.extend(versions(&[4, 5]));
    assert_eq!(r.input(Instant::ZERO, &input), Ok(input.len()));
    assert_eq!(r.link_version(), Some(5));
}

#[test]
fn bad_versions_cells() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let mut r = responder(&mut rng);
    let e = r
        .input(Instant::ZERO, &[0, 0, 7, 0, 3, 0, 4, 0])
        .unwrap_err();
    assert!(
        matches!(
            e,
            ChanError::MalformedCell {
                cmd: "VERSIONS",
                ..
            }
        ),
        "{e:?}"
    );
    let mut r = responder(&mut rng);
    let e = r.input(Instant::ZERO, &versions(&[1, 2, 6])).unwrap_err();
    assert_eq!(
        e,
        ChanError::NoCommonVersion {
            offered: vec![1, 2, 6]
        }
    );
    // The initiator side too.
    let mut i = Channel::initiator(
        ChanConfig::default(),
        PeerIds::default(),
        None,
        Instant::ZERO,
        wall(),
    );
    let e = i.input(Instant::ZERO, &versions(&[2])).unwrap_err();
    assert_eq!(e, ChanError::NoCommonVersion { offered: vec![2] });
}

#[test]
fn link_protocol_3_uses_two_byte_ids() {
    let r0 = {
        let mut rng = ChaCha20Rng::seed_from_u64(14);
        let mut r = responder(&mut rng);
        r.input(Instant::ZERO, &versions(&[3])).unwrap();
        drain(&mut r)
    };
    // VERSIONS reply, then CERTS with a 2-byte circuit id (command at offset 2).
    assert_eq!(&r0[..11], &[0, 0, 7, 0, 6, 0, 3, 0, 4, 0, 5]);
    assert_eq!(&r0[11..14], &[0, 0, 129]);
    let mut r = open_responder(&[3], 3);
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    for _ in 0..50 {
        let id = r.new_circ_id(&mut rng).unwrap();
        assert!(id.get() < 0x8000 && id.get() != 0, "{id}");
    }
    // An inbound CREATE2 with a 2-byte id is accepted whatever its top bit.
    let cell = raw(3, 0x0123, create2());
    assert_eq!(cell.len(), 512);
    r.input(Instant::ZERO, &cell).unwrap();
    assert!(
        matches!(&events(&mut r)[..], [ChanEvent::CircuitCell { circ_id, .. }] if circ_id.get() == 0x0123)
    );
}

#[test]
fn inbound_create_rules() {
    let mut r = open_responder(&[3, 4, 5], 5);
    // Initiator's ids have the top bit set: accepted.
    r.input(Instant::ZERO, &raw(5, 0x8000_0001, create2()))
        .unwrap();
    assert!(matches!(
        &events(&mut r)[..],
        [ChanEvent::CircuitCell {
            msg: ChanMsg::Create2(_),
            ..
        }]
    ));
    assert_eq!(
        r.circuit_state(CircId::new(0x8000_0001)),
        Some((CircOrigin::Remote, CircState::Pending))
    );
    // A second CREATE on the same id is dropped.
    r.input(Instant::ZERO, &raw(5, 0x8000_0001, create2()))
        .unwrap();
    assert!(events(&mut r).is_empty());
    assert_eq!(r.dropped_cells(), 1);
    // Wrong half of the id space: refused with DESTROY (PROTOCOL), channel stays open.
    r.input(Instant::ZERO, &raw(5, 0x0000_0005, create2()))
        .unwrap();
    assert!(events(&mut r).is_empty());
    assert_eq!(
        drain(&mut r),
        raw(5, 5, ChanMsg::Destroy(DestroyReason::PROTOCOL))
    );
    // A malformed CREATE2 (HLEN beyond the cell) is refused the same way.
    let mut bad = raw(5, 0x8000_0009, create2());
    bad[7..9].copy_from_slice(&600u16.to_be_bytes());
    r.input(Instant::ZERO, &bad).unwrap();
    assert_eq!(
        drain(&mut r),
        raw(5, 0x8000_0009, ChanMsg::Destroy(DestroyReason::PROTOCOL))
    );
    assert!(r.is_open());
    // RELAY before we answered CREATED: the circuit is killed.
    r.input(Instant::ZERO, &raw(5, 0x8000_0001, relay(1)))
        .unwrap();
    assert!(matches!(
        &events(&mut r)[..],
        [ChanEvent::CircuitKilled {
            reason: CircViolation::WrongState { .. },
            ..
        }]
    ));
    assert_eq!(
        drain(&mut r),
        raw(5, 0x8000_0001, ChanMsg::Destroy(DestroyReason::PROTOCOL))
    );
    assert_eq!(r.n_circuits(), 0);
    // Circuit id 0 is reserved: a circuit cell on it closes the channel.
    let e = r.input(Instant::ZERO, &raw(5, 0, create2())).unwrap_err();
    assert_eq!(e, ChanError::CircuitCellOnIdZero { cmd: "CREATE2" });
}

#[test]
fn client_refuses_create_and_drops_unknown_circuits() {
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let (mut i, _r, _, _) = open_pair(&mut rng);
    drain(&mut i);
    i.input(Instant::ZERO, &raw(5, 0x11, create2())).unwrap();
    assert!(events(&mut i).is_empty());
    assert_eq!(
        drain(&mut i),
        raw(5, 0x11, ChanMsg::Destroy(DestroyReason::PROTOCOL))
    );
    // RELAY, DESTROY, CREATED2 for circuits we do not have: dropped silently (§5.5.1).
    for msg in [
        relay(2),
        ChanMsg::Destroy(DestroyReason::NONE),
        ChanMsg::Created2(Created2 {
            hdata: vec![0; 64].into(),
        }),
    ] {
        i.input(Instant::ZERO, &raw(5, 0x22, msg)).unwrap();
    }
    assert!(events(&mut i).is_empty());
    assert_eq!(i.dropped_cells(), 3);
    assert!(i.is_open());
    // A relay that opened the channel accepts CREATE in the responder's half.
    let mut cfg = ChanConfig::default();
    cfg.accept_inbound_circuits = Some(true);
    let mut r = responder(&mut rng);
    let mut i = initiator(cfg);
    pump(&mut i, &mut r, Instant::ZERO);
    i.input(Instant::ZERO, &raw(5, 0x8000_0011, create2()))
        .unwrap();
    assert_eq!(
        drain(&mut i),
        raw(5, 0x8000_0011, ChanMsg::Destroy(DestroyReason::PROTOCOL))
    );
    i.input(Instant::ZERO, &raw(5, 0x11, create2())).unwrap();
    assert!(matches!(
        &events(&mut i)[..],
        [ChanEvent::CircuitCell { .. }]
    ));
}

#[test]
fn created_and_relay_state_checks() {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let (mut i, _r, _, _) = open_pair(&mut rng);
    drain(&mut i);
    let id = i.new_circ_id(&mut rng).unwrap();
    // RELAY before CREATED2 on our own circuit: killed.
    i.send(id, &create2()).unwrap();
    drain(&mut i);
    i.input(Instant::ZERO, &raw(5, id.get(), relay(3))).unwrap();
    assert!(
        matches!(&events(&mut i)[..], [ChanEvent::CircuitKilled { circ_id, .. }] if *circ_id == id)
    );
    assert_eq!(
        drain(&mut i),
        raw(5, id.get(), ChanMsg::Destroy(DestroyReason::PROTOCOL))
    );
    // CREATED2 twice: the second kills the circuit.
    let id = i.new_circ_id(&mut rng).unwrap();
    i.send(id, &create2()).unwrap();
    let created = raw(
        5,
        id.get(),
        ChanMsg::Created2(Created2 {
            hdata: vec![1; 64].into(),
        }),
    );
    i.input(Instant::ZERO, &created).unwrap();
    assert!(matches!(
        &events(&mut i)[..],
        [ChanEvent::CircuitCell { .. }]
    ));
    i.input(Instant::ZERO, &created).unwrap();
    assert!(matches!(
        &events(&mut i)[..],
        [ChanEvent::CircuitKilled { .. }]
    ));
    assert_eq!(i.n_circuits(), 0);
}

#[test]
fn padding_and_unknown_commands_are_ignored() {
    let mut r = open_responder(&[5], 5);
    let mut input = raw(5, 0, ChanMsg::Padding);
    input.extend(raw(5, 0, ChanMsg::Vpadding { len: 100 }));
    input.extend(raw(
        5,
        0,
        ChanMsg::PaddingNegotiate(PaddingNegotiate {
            version: 0,
            command: 2,
            ito_low_ms: 1500,
            ito_high_ms: 9500,
        }),
    ));
    input.extend(raw(
        5,
        7,
        ChanMsg::Unknown {
            cmd: onion_cell::ChanCmd(200),
            body: vec![1, 2, 3].into(),
        },
    ));
    input.extend(raw(
        5,
        7,
        ChanMsg::Unknown {
            cmd: onion_cell::ChanCmd(50),
            body: vec![0; 509].into(),
        },
    ));
    // Late handshake cells are ignored too, as C tor does.
    input.extend(raw(5, 0, ChanMsg::Versions(Versions { versions: vec![5] })));
    input.extend(netinfo(5, 1));
    assert_eq!(r.input(Instant::ZERO, &input), Ok(input.len()));
    assert!(events(&mut r).is_empty());
    assert_eq!(r.padding_cells(), 2);
    assert_eq!(r.dropped_cells(), 5);
    assert!(r.is_open());
}

#[test]
fn handshake_rules_for_the_initiator() {
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    // Bytes of a real responder, split into cells.
    let mut r = responder(&mut rng);
    r.input(Instant::ZERO, &versions(&[3, 4, 5])).unwrap();
    let resp = drain(&mut r);
    let v = &resp[..11];
    let certs_len = 7 + usize::from(u16::from_be_bytes([resp[16], resp[17]]));
    let certs_cell = &resp[11..11 + certs_len];
    let rest = &resp[11 + certs_len..];
    let (challenge, ni) = rest.split_at(rest.len() - 514);
    let new = || initiator(ChanConfig::default());
    let unexpected = |cmd, state| ChanError::UnexpectedCell { cmd, state };
    let relay_cell = raw(5, 1, relay(0));
    let cases = [
        (
            "NETINFO before CERTS",
            [v, ni].concat(),
            unexpected("NETINFO", "awaiting CERTS"),
        ),
        (
            "AUTH_CHALLENGE before CERTS",
            [v, challenge].concat(),
            unexpected("AUTH_CHALLENGE", "awaiting CERTS"),
        ),
        (
            "two CERTS",
            [v, certs_cell, certs_cell].concat(),
            unexpected("CERTS", "awaiting NETINFO"),
        ),
        (
            "two AUTH_CHALLENGE",
            [v, certs_cell, challenge, challenge].concat(),
            ChanError::DuplicateCell {
                cmd: "AUTH_CHALLENGE",
            },
        ),
        (
            "a circuit cell during the handshake",
            [v, &relay_cell].concat(),
            unexpected("RELAY", "awaiting CERTS"),
        ),
    ];
    for (what, input, want) in cases {
        let e = new().input(Instant::ZERO, &input).unwrap_err();
        assert_eq!(e, want, "{what}");
    }
    // No AUTH_CHALLENGE at all is fine.
    let mut i = new();
    i.input(Instant::ZERO, &[v, certs_cell, ni].concat())
        .unwrap();
    assert!(i.is_open());
}

#[test]
fn handshake_timeout_and_close() {
    let mut i = Channel::initiator(
        ChanConfig::default(),
        PeerIds::default(),
        None,
        Instant::ZERO,
        wall(),
    );
    let deadline = Instant::ZERO + Duration::from_secs(30);
    assert_eq!(i.poll_timeout(), Some(deadline));
    i.handle_timeout(Instant::ZERO + Duration::from_secs(29));
    assert!(events(&mut i).is_empty());
    i.handle_timeout(deadline);
    assert_eq!(closed_with(&mut i), ChanError::HandshakeTimeout);
    assert_eq!(i.poll_timeout(), None);
    // Input after the deadline also times out.
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let mut r = responder(&mut rng);
    assert_eq!(
        r.input(deadline, &versions(&[5])),
        Err(ChanError::HandshakeTimeout)
    );
    // Once open, no timeout; closing is reported once.
    let (mut i, mut r, _, _) = open_pair(&mut rng);
    assert_eq!(i.poll_timeout(), None);
    i.close();
    i.close();
    assert_eq!(
        events(&mut i),
        vec![ChanEvent::Closed(ChanError::ClosedLocally)]
    );
    assert_eq!(i.send(CircId::new(1), &relay(0)), Err(SendError::Closed));
    r.handle_connection_closed();
    assert_eq!(closed_with(&mut r), ChanError::ConnectionClosed);
}

#[test]
fn send_errors() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let mut i = Channel::initiator(
        ChanConfig::default(),
        PeerIds::default(),
        None,
        Instant::ZERO,
        wall(),
    );
    assert_eq!(i.new_circ_id(&mut rng), Err(SendError::NotOpen));
    assert_eq!(i.send(CircId::new(1), &create2()), Err(SendError::NotOpen));
    let (mut i, mut r, _, _) = open_pair(&mut rng);
    let id = i.new_circ_id(&mut rng).unwrap();
    assert_eq!(
        i.send(CircId::ZERO, &netinfo_msg()),
        Err(SendError::NotACircuitMessage { cmd: "NETINFO" })
    );
    assert!(matches!(
        i.send(id, &relay(0)),
        Err(SendError::WrongCircuitState { .. })
    ));
    assert!(matches!(
        i.send(
            id,
            &ChanMsg::Created2(Created2 {
                hdata: vec![].into()
            })
        ),
        Err(SendError::WrongCircuitState { .. })
    ));
    assert_eq!(
        i.send(CircId::new(77), &relay(0)),
        Err(SendError::UnknownCircuit(CircId::new(77)))
    );
    assert!(matches!(
        i.send(
            id,
            &ChanMsg::Create2(Create2 {
                handshake_type: HandshakeType::NTOR,
                hdata: vec![0; 600].into()
            })
        ),
        Err(SendError::Encode(_))
    ));
    assert_eq!(i.outbound_len(), 0);
    assert!(i.release_circ_id(id));
    assert_eq!(i.n_circuits(), 0);
    // Link padding may be sent on circuit 0.
    i.send(CircId::ZERO, &ChanMsg::Padding).unwrap();
    pump(&mut i, &mut r, Instant::ZERO);
    assert_eq!(r.padding_cells(), 1);
    // send_relay: only on open circuits.
    assert_eq!(
        i.send_relay(CircId::new(5), false, &[0; 509]),
        Err(SendError::UnknownCircuit(CircId::new(5)))
    );
}

fn netinfo_msg() -> ChanMsg<'static> {
    ChanMsg::Netinfo(Netinfo {
        timestamp: 0,
        other_addr: NetinfoAddr::Ip([1, 2, 3, 4].into()),
        my_addrs: vec![],
    })
}

#[test]
fn input_stops_when_the_event_queue_is_full() {
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let mut cfg = ChanConfig::default();
    cfg.max_pending_events = 2;
    let mut r = responder(&mut rng);
    let mut i = initiator(cfg);
    pump(&mut i, &mut r, Instant::ZERO);
    let id = i.new_circ_id(&mut rng).unwrap();
    i.send(id, &create2()).unwrap();
    pump(&mut i, &mut r, Instant::ZERO);
    r.send(
        id,
        &ChanMsg::Created2(Created2 {
            hdata: vec![1; 64].into(),
        }),
    )
    .unwrap();
    pump(&mut i, &mut r, Instant::ZERO);
    let mut input = Vec::new();
    for k in 0..10u8 {
        r.send(id, &relay(k)).unwrap();
    }
    r.poll_transmit(&mut input);
    // Offer everything, plus half a cell: at most 2 events are queued per drain.
    input.extend_from_slice(&raw(5, id.get(), relay(10))[..300]);
    let mut off = 0;
    let mut got = Vec::new();
    let mut rounds = 0;
    while off < input.len() {
        let n = i.input(Instant::ZERO, &input[off..]).unwrap();
        off += n;
        let ev = events(&mut i);
        assert!(ev.len() <= 2);
        got.extend(ev);
        rounds += 1;
        assert!(rounds < 100);
    }
    assert_eq!(got.len(), 10);
    for (k, e) in got.iter().enumerate() {
        assert!(
            matches!(e, ChanEvent::CircuitCell { msg: ChanMsg::Relay(p), .. } if p.as_bytes()[0] == k as u8)
        );
    }
    // The partial cell completes with the next input.
    i.input(Instant::ZERO, &raw(5, id.get(), relay(10))[300..])
        .unwrap();
    assert!(
        matches!(&events(&mut i)[..], [ChanEvent::CircuitCell { msg: ChanMsg::Relay(p), .. }] if p.as_bytes()[0] == 10)
    );
}

#[test]
fn clock_skew_is_reported() {
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let certs = good_certs();
    // The responder's clock is 1000 s ahead of ours.
    let mut r = Channel::responder(
        ChanConfig::default(),
        &certs,
        Instant::ZERO,
        wall() + Duration::from_secs(1000),
        &mut rng,
    );
    let mut i = initiator(ChanConfig::default());
    let (ei, _) = pump(&mut i, &mut r, Instant::from_nanos(5_000_000_000));
    assert!(
        matches!(&ei[..], [ChanEvent::Open(o)] if o.clock_skew_secs == Some(1000)),
        "{ei:?}"
    );
}

#[test]
fn keepalive_padding_when_idle() {
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let mut cfg = ChanConfig::default();
    cfg.keepalive = Some(Duration::from_secs(300));
    let mut r = responder(&mut rng);
    let mut i = initiator(cfg);
    pump(&mut i, &mut r, Instant::ZERO);
    let t = |s: u64| Instant::ZERO + Duration::from_secs(s);
    assert_eq!(i.poll_timeout(), Some(t(300)));
    // The NETINFO went out during the first period: no padding yet.
    i.handle_timeout(t(300));
    assert!(drain(&mut i).is_empty());
    assert_eq!(i.poll_timeout(), Some(t(600)));
    // Idle for a whole period: one PADDING cell.
    i.handle_timeout(t(600));
    let pad = drain(&mut i);
    assert_eq!(pad, raw(5, 0, ChanMsg::Padding));
    r.input(t(600), &pad).unwrap();
    assert_eq!(r.padding_cells(), 1);
    // Traffic during the period suppresses it.
    i.send(CircId::ZERO, &ChanMsg::Vpadding { len: 4 }).unwrap();
    drain(&mut i);
    i.handle_timeout(t(900));
    assert!(drain(&mut i).is_empty());
    // No keepalive by default.
    let (i2, _, _, _) = open_pair(&mut rng);
    assert_eq!(i2.poll_timeout(), None);
}

#[test]
fn authenticating_initiator_sends_a_valid_authenticate() {
    use sha2::{Digest, Sha256};
    let mut rng = ChaCha20Rng::seed_from_u64(24);
    let me = keys2();
    let creds = me.initiator_credentials(wall(), &mut rng).unwrap();
    let exporter = [0xe7; 32];
    let auth = InitiatorAuth {
        credentials: creds.clone(),
        tls_exporter: exporter,
    };
    let mut r = responder(&mut rng);
    let mut i = Channel::initiator_authenticated(
        ChanConfig::default(),
        keys().ids(),
        TLS_DIGEST,
        auth,
        Instant::ZERO,
        wall(),
        &mut rng,
    );
    let versions_out = drain(&mut i);
    r.input(Instant::ZERO, &versions_out).unwrap();
    let resp = drain(&mut r);
    // The responder's bytes up to and including AUTH_CHALLENGE (everything but NETINFO).
    let slog_bytes = &resp[..resp.len() - 514];
    i.input(Instant::ZERO, &resp).unwrap();
    let ev = events(&mut i);
    assert!(
        matches!(&ev[..], [ChanEvent::Open(o)] if o.we_authenticated && o.peer == keys().ids()),
        "{ev:?}"
    );
    let sent = drain(&mut i);
    // CERTS (var cell, 4-byte circ id), AUTHENTICATE, NETINFO.
    assert_eq!(sent[4], 129);
    let certs_len = 7 + usize::from(u16::from_be_bytes([sent[5], sent[6]]));
    let certs_bytes = &sent[..certs_len];
    let auth_cell = &sent[certs_len..];
    assert_eq!(auth_cell[4], 131);
    let alen = usize::from(u16::from_be_bytes([auth_cell[5], auth_cell[6]]));
    let body = &auth_cell[7..7 + alen];
    assert_eq!(&body[..4], &[0, 3, 1, 96]); // AuthType 3, AuthLen 352
    let a = &body[4..];
    assert_eq!(&a[..8], b"AUTH0003");
    let sha = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
    assert_eq!(&a[8..40], &sha(&me.rsa_identity().public().to_pkcs1_der()));
    assert_eq!(
        &a[40..72],
        &sha(&keys().rsa_identity().public().to_pkcs1_der())
    );
    assert_eq!(&a[72..104], me.ids().ed25519.unwrap().as_bytes());
    assert_eq!(&a[104..136], keys().ids().ed25519.unwrap().as_bytes());
    assert_eq!(&a[136..168], &sha(slog_bytes));
    assert_eq!(
        &a[168..200],
        &sha(&[&versions_out[..], certs_bytes].concat())
    );
    assert_eq!(&a[200..232], &TLS_DIGEST);
    assert_eq!(&a[232..264], &exporter);
    // SIG: by the authentication key that the type-6 certificate certifies, over TYPE..RAND.
    let certs =
        match onion_cell::chancell::ChanMsg::decode(onion_cell::ChanCmd(129), &certs_bytes[7..])
            .unwrap()
        {
            ChanMsg::Certs(c) => c,
            other => panic!("{other:?}"),
        };
    let types: Vec<u8> = certs.certs.iter().map(|c| c.cert_type).collect();
    assert_eq!(types, vec![2, 4, 6, 7]);
    let id_signing = onion_crypto::cert::UncheckedEd25519Cert::decode(certs.find(4).unwrap())
        .unwrap()
        .verify(None, wall().into())
        .unwrap();
    let auth_cert = onion_crypto::cert::UncheckedEd25519Cert::decode(certs.find(6).unwrap())
        .unwrap()
        .verify(
            Some(&id_signing.certified_public_key().unwrap()),
            wall().into(),
        )
        .unwrap();
    let auth_key = auth_cert.certified_public_key().unwrap();
    let sig = onion_crypto::keys::Ed25519Signature::from_bytes(a[288..352].try_into().unwrap());
    auth_key
        .verify_strict(&a[..288], &sig)
        .expect("AUTHENTICATE signature");
    // Then NETINFO with our time (we are a relay now).
    let ni = &auth_cell[7 + alen..];
    assert_eq!(ni.len(), 514);
    assert_eq!(ni[4], 8);
    assert_ne!(&ni[5..9], &[0, 0, 0, 0]);
    // The responder accepts it (and, not verifying AUTHENTICATE, calls the peer unauthenticated).
    r.input(Instant::ZERO, &sent).unwrap();
    assert!(
        matches!(&events(&mut r)[..], [ChanEvent::Open(o)] if o.peer == PeerIds::default() && o.clock_skew_secs == Some(0))
    );
    // A responder that offers no method 3 gets an unauthenticated initiator.
    let _ = creds;
}

/// An authenticating initiator (relay `keys2`) and a verifying responder (relay `keys`);
/// `exporter_i`/`exporter_r` are the TLS exporter values each side computes, `tamper`
/// edits the initiator's bytes after the handshake's first round trip.
fn auth_pair(
    exporter_i: [u8; 32],
    exporter_r: [u8; 32],
    tamper: impl Fn(&mut Vec<u8>),
) -> (Channel, Channel, Vec<ChanEvent>, Vec<ChanEvent>) {
    let mut rng = ChaCha20Rng::seed_from_u64(25);
    let creds = keys2().initiator_credentials(wall(), &mut rng).unwrap();
    let context = creds.tls_exporter_context();
    let auth = InitiatorAuth {
        credentials: creds,
        tls_exporter: exporter_i,
    };
    let mut cfg = ChanConfig::default();
    cfg.verify_initiator_auth = true;
    let mut r = Channel::responder(cfg, &good_certs(), Instant::ZERO, wall(), &mut rng);
    let mut i = Channel::initiator_authenticated(
        ChanConfig::default(),
        keys().ids(),
        TLS_DIGEST,
        auth,
        Instant::ZERO,
        wall(),
        &mut rng,
    );
    r.input(Instant::ZERO, &drain(&mut i)).unwrap();
    i.input(Instant::ZERO, &drain(&mut r)).unwrap();
    let mut second = drain(&mut i);
    tamper(&mut second);
    let mut off = 0;
    let mut er = Vec::new();
    while off < second.len() {
        match r.input(Instant::ZERO, &second[off..]) {
            Ok(n) => off += n,
            Err(_) => break,
        }
        er.extend(events(&mut r));
        if let Some(c) = r.tls_exporter_needed() {
            assert_eq!(c, context);
            r.provide_tls_exporter(exporter_r);
        }
        if r.is_closed() {
            break;
        }
    }
    er.extend(events(&mut r));
    let ei = events(&mut i);
    (i, r, ei, er)
}

#[test]
fn verifying_responder_accepts_an_authenticated_relay() {
    let (i, r, ei, er) = auth_pair([4; 32], [4; 32], |_| {});
    assert!(matches!(&ei[..], [ChanEvent::Open(o)] if o.we_authenticated));
    assert!(
        matches!(&er[..], [ChanEvent::Open(o)] if o.peer == keys2().ids() && o.clock_skew_secs == Some(0)),
        "{er:?}"
    );
    assert_eq!(r.peer_ids(), keys2().ids());
    assert!(i.is_open() && r.is_open());
    assert_eq!(r.tls_exporter_needed(), None);
}

#[test]
fn verifying_responder_rejects_bad_authentication() {
    // Another TLS session (the exporter values differ): a relayed handshake.
    let (_, r, _, er) = auth_pair([4; 32], [5; 32], |_| {});
    assert!(r.is_closed());
    assert!(
        matches!(er.last(), Some(ChanEvent::Closed(ChanError::AuthenticateRejected { reason })) if reason.contains("TLSSECRETS")),
        "{er:?}"
    );
    // A corrupted signature (the last byte of AUTHENTICATE's body).
    let (_, _, _, er) = auth_pair([4; 32], [4; 32], |b| {
        let certs_len = 7 + usize::from(u16::from_be_bytes([b[5], b[6]]));
        let end = certs_len + 7 + 4 + 352;
        b[end - 1] ^= 1;
    });
    assert!(
        matches!(
            er.last(),
            Some(ChanEvent::Closed(ChanError::AuthenticateRejected {
                reason: "bad signature"
            }))
        ),
        "{er:?}"
    );
    // A corrupted CLOG field.
    let (_, _, _, er) = auth_pair([4; 32], [4; 32], |b| {
        let certs_len = 7 + usize::from(u16::from_be_bytes([b[5], b[6]]));
        b[certs_len + 7 + 4 + 170] ^= 1;
    });
    assert!(
        matches!(
            er.last(),
            Some(ChanEvent::Closed(ChanError::AuthenticateRejected { .. }))
        ),
        "{er:?}"
    );
    // A corrupted certificate in the initiator's CERTS cell.
    let (_, _, _, er) = auth_pair([4; 32], [4; 32], |b| {
        b[40] ^= 1;
    });
    assert!(
        matches!(er.last(), Some(ChanEvent::Closed(ChanError::Certs(_)))),
        "{er:?}"
    );
}

#[test]
fn verifying_responder_still_accepts_clients() {
    let mut rng = ChaCha20Rng::seed_from_u64(26);
    let mut cfg = ChanConfig::default();
    cfg.verify_initiator_auth = true;
    let mut r = Channel::responder(cfg, &good_certs(), Instant::ZERO, wall(), &mut rng);
    let mut i = initiator(ChanConfig::default());
    let (_, er) = pump(&mut i, &mut r, Instant::ZERO);
    assert!(matches!(&er[..], [ChanEvent::Open(o)] if o.peer == PeerIds::default()));
    assert_eq!(r.tls_exporter_needed(), None);
}

/// The one contract of the stack's inputs: a peer's violation closes the channel and is
/// reported once, as the last event ([`ChanEvent::Closed`]), not also by `handle_input`,
/// which reports the whole input consumed; a closed channel swallows later input silently,
/// so that an embedder's feeding loop ends.
#[test]
fn a_violation_is_reported_once_as_the_closed_event() {
    let mut rng = ChaCha20Rng::seed_from_u64(40);
    let mut r = responder(&mut rng);
    let data = [0u8, 0, 0, 1, 2, 3];
    assert_eq!(r.handle_input(Instant::ZERO, &data), data.len());
    assert!(r.is_closed());
    let ev = events(&mut r);
    assert!(
        matches!(&ev[..], [ChanEvent::Closed(e)] if e.kind() == onion_circuit::ErrorKind::PeerProtocol),
        "{ev:?}"
    );
    assert_eq!(r.handle_input(Instant::ZERO, &[1, 2, 3]), 3);
    r.handle_timeout(Instant::ZERO + std::time::Duration::from_secs(3600));
    r.provide_tls_exporter([1; 32]);
    assert!(events(&mut r).is_empty());
    assert!(matches!(
        r.close_error(),
        Some(ChanError::UnexpectedCell { .. })
    ));
}
