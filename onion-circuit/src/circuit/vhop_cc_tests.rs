//! Congestion control on an onion-service virtual hop (proposal 324 §4.1, rend-spec-v3
//! §4.2): Tor Vegas toward the virtual hop, SENDMEs every `sendme_inc` cells from it, no
//! stream windows, while the relay hop before it keeps fixed windows.

use onion_cell::chancell::{ChanMsg, Created2};
use onion_cell::relaymsg::{RelayCmd, RelayMsg};
use onion_crypto::tor1::{HsClientHop, HsRelayCrypto, Tor1RelayCrypto};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::flow::SENDME_DIGEST_LEN;
use crate::relay::RelayKeys;

/// Both ends of a two-hop circuit whose second hop is virtual: the client circuit, the
/// first relay's crypto and the far end's (the service or client) crypto.
struct Vhop {
    c: Circuit,
    r0: Tor1RelayCrypto,
    far: HsRelayCrypto,
    rng: ChaCha20Rng,
}

fn vhop(cc: Option<CcConfig>) -> Vhop {
    use onion_crypto::keys::NtorSecretKey;
    use onion_crypto::{Ed25519Identity, RsaIdentity};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let ntor = NtorSecretKey::generate(&mut rng);
    let keys = RelayKeys {
        rsa_id: RsaIdentity([5; 20]),
        ed_id: Ed25519Identity([5; 32]),
        ntor_keys: vec![ntor.clone()],
    };
    let target = HopTarget {
        rsa_id: keys.rsa_id,
        ed_id: None,
        ntor_key: *ntor.public(),
        addrs: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9001)],
        ntor_v3: false,
    };
    let config = CircConfig {
        accept_inbound_streams: true,
        ..CircConfig::default()
    };
    let (mut c, create) = Circuit::create(
        config,
        &target,
        HandshakeKind::Ntor,
        Instant::ZERO,
        &mut rng,
    )
    .unwrap();
    let ChanMsg::Create2(c2) = create else {
        panic!("not CREATE2")
    };
    let (reply, gen) =
        onion_crypto::ntor::server(&mut rng, &keys.rsa_id, &keys.ntor_keys, &c2.hdata).unwrap();
    c.try_cell(
        Instant::ZERO,
        ChanMsg::Created2(Created2 {
            hdata: reply.to_vec().into(),
        }),
    )
    .unwrap();
    let r0 = Tor1RelayCrypto::from_key_material(&gen.expand(tor1::TOR1_KEY_LEN).unwrap()).unwrap();
    let mut km = vec![0u8; tor1::HS_KEY_LEN];
    rng.fill_bytes(&mut km);
    let layer = Box::new(HsClientHop::from_key_material(&km).unwrap());
    let far = HsRelayCrypto::from_key_material(&km).unwrap();
    match cc {
        Some(cfg) => c.add_virtual_hop_cc(layer, cfg).unwrap(),
        None => c.add_virtual_hop(layer).unwrap(),
    }
    while c.poll_event().is_some() {}
    Vhop { c, r0, far, rng }
}

impl Vhop {
    /// A relay message from the far end of the virtual hop to the circuit.
    fn deliver_from_far(&mut self, stream: u16, msg: RelayMsg<'_>) -> Result<(), CircError> {
        let mut body = encode_body(StreamId::new(stream), &msg, "test").unwrap();
        self.far.originate_inbound(&mut body);
        self.r0.encrypt_inbound(&mut body);
        self.c
            .try_cell(self.c.last_now, ChanMsg::Relay(RelayPayload::Owned(body)))
    }

    /// The circuit's queued cells as the far end reads them, with the far end's received
    /// digest after each (what an authenticated SENDME echoes).
    fn drain_to_far(&mut self) -> Vec<(RelayCmd, u16, [u8; SENDME_DIGEST_LEN])> {
        let mut out = vec![];
        while let Some(m) = self.c.poll_cell(&mut self.rng) {
            let (ChanMsg::Relay(p) | ChanMsg::RelayEarly(p)) = m else {
                panic!("not a relay cell")
            };
            let mut body = p.into_box();
            assert!(!self.r0.decrypt_outbound(&mut body), "for the virtual hop");
            assert!(self.far.decrypt_outbound(&mut body), "recognized there");
            let cell = RelayCell::decode(&body).unwrap();
            let mut d = [0u8; SENDME_DIGEST_LEN];
            d.copy_from_slice(&self.far.last_received_digest()[..SENDME_DIGEST_LEN]);
            out.push((cell.msg.cmd(), StreamId::to_field(cell.stream_id), d));
        }
        out
    }

    /// Open a stream from the far end (as the client does to a service) and accept it.
    fn inbound_stream(&mut self) -> StreamId {
        self.deliver_from_far(
            7,
            RelayMsg::Unknown {
                cmd: RelayCmd::BEGIN,
                body: b":80\0".to_vec().into(),
            },
        )
        .unwrap();
        let id = StreamId::new(7).unwrap();
        while self.c.poll_event().is_some() {}
        self.c.accept_stream(id).unwrap();
        let cells = self.drain_to_far();
        assert_eq!(cells.len(), 1);
        assert_eq!(cells[0].0, RelayCmd::CONNECTED);
        id
    }
}

fn cfg(sendme_inc: u8) -> CcConfig {
    CcConfig {
        sendme_inc,
        ..CcConfig::default()
    }
}

#[test]
fn a_virtual_hop_without_cc_keeps_fixed_windows() {
    let mut v = vhop(None);
    assert!(v.c.congestion_control(1).is_none());
    let id = v.inbound_stream();
    assert_eq!(v.c.send(id, &vec![7u8; 1 << 20]).unwrap() / 498 + 1, 500);
    let data = v
        .drain_to_far()
        .iter()
        .filter(|c| c.0 == RelayCmd::DATA)
        .count();
    assert_eq!(data, 500, "the stream window (tor-spec §7.4)");
}

#[test]
fn a_congestion_controlled_virtual_hop_sends_up_to_cwnd_and_takes_sendmes() {
    let mut v = vhop(Some(cfg(31)));
    assert!(
        v.c.congestion_control(0).is_none(),
        "the relay hop keeps windows"
    );
    let cc = v.c.congestion_control(1).expect("virtual hop runs CC");
    assert_eq!(
        (cc.config().sendme_inc, cc.cwnd(), cc.inflight()),
        (31, 124, 0)
    );
    let id = v.inbound_stream();
    v.c.send(id, &vec![7u8; 1 << 20]).unwrap();
    let cells = v.drain_to_far();
    assert!(cells.iter().all(|c| c.0 == RelayCmd::DATA && c.1 == 7));
    // No stream window of 500 cells: cwnd (124) limits what is in flight.
    assert_eq!(cells.len(), 124);
    assert_eq!(v.c.congestion_control(1).unwrap().inflight(), 124);
    // The SENDME for the first 31 cells echoes the digest of the 31st cell (tor-spec §7.3.1).
    let tag = cells[30].2;
    v.c.handle_timeout(Instant::ZERO + Duration::from_millis(80));
    v.deliver_from_far(
        0,
        RelayMsg::Sendme(onion_cell::relaymsg::Sendme { tag: Some(tag) }),
    )
    .unwrap();
    let cc = v.c.congestion_control(1).unwrap();
    assert_eq!(cc.inflight(), 124 - 31);
    assert!(cc.cwnd() > 124, "slow start grows the window");
    // A SENDME with the wrong digest closes the circuit.
    let r = v.deliver_from_far(
        0,
        RelayMsg::Sendme(onion_cell::relaymsg::Sendme { tag: Some([0; 20]) }),
    );
    assert!(r.is_err());
    assert!(v.c.is_closed());
}

#[test]
fn a_congestion_controlled_virtual_hop_asks_for_a_sendme_every_sendme_inc_cells() {
    for inc in [31u8, 33] {
        let mut v = vhop(Some(cfg(inc)));
        let id = v.inbound_stream();
        let mut sendmes = 0;
        for i in 1..=3 * u32::from(inc) {
            v.deliver_from_far(
                7,
                RelayMsg::Data(onion_cell::relaymsg::Data::new(b"x").unwrap()),
            )
            .unwrap();
            while v.c.poll_event().is_some() {}
            for (cmd, stream, _) in v.drain_to_far() {
                assert_eq!(cmd, RelayCmd::SENDME);
                assert_eq!(stream, 0, "no stream SENDME under congestion control");
                assert_eq!(i % u32::from(inc), 0, "a circuit SENDME after {i} cells");
                sendmes += 1;
            }
        }
        assert_eq!(sendmes, 3);
        let _ = id;
    }
}

#[test]
fn sendme_inc_zero_is_refused() {
    let mut v = vhop(None);
    let mut km = vec![0u8; tor1::HS_KEY_LEN];
    v.rng.fill_bytes(&mut km);
    let layer = Box::new(HsClientHop::from_key_material(&km).unwrap());
    assert!(matches!(
        v.c.add_virtual_hop_cc(layer, cfg(0)),
        Err(CircError::CongestionControl { .. })
    ));
    assert_eq!(v.c.n_hops(), 2);
}
