//! The onion-service roles over the in-memory network of [`crate::tests`]: an onion-hs
//! service and client publish, fetch, introduce and rendezvous through our relays, and then
//! talk through the joined circuits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use onion_cell::chancell::DestroyReason;
use onion_cell::hs::IntroduceAck as IntroduceAckCell;
use onion_cell::hs::IntroduceAckStatus;
use onion_cell::relaymsg::EndReason;
use onion_cell::{RelayCmd, RelayMsg};
use onion_circuit::circuit::{CircEvent, HandshakeKind};
use onion_dir::Timestamp;
use onion_hs::client::HsClient;
use onion_hs::keys::ExpandedKeypair;
use onion_hs::linkspec::RawLinkSpec as LinkSpec;
use onion_hs::msg::{DosParams, EstablishIntro};
use onion_hs::relay::IntroDosParams;
use onion_hs::service::{HsService, HsServiceConfig, UPLOAD_PATH};
use onion_hs::time::TimePeriodConfig;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::tests::{wall0, Net};

/// Relays: 0 a middle, 1 an HSDir, 2 an introduction point, 3 a rendezvous point.
const MID: usize = 0;
const HSDIR: usize = 1;
const INTRO: usize = 2;
const REND: usize = 3;

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, n))
}

fn network(seed: u64, f: impl Fn(&mut crate::RelayConfig) + Copy) -> Net {
    let mut net = Net::new(seed);
    net.add_relay(f);
    net.add_relay(|c| {
        c.dir_cache = true;
        c.hs_dir = true;
        f(c);
    });
    net.add_relay(f);
    net.add_relay(f);
    net
}

fn unix_now(net: &Net) -> u64 {
    (wall0() + (net.now - onion_circuit::Instant::ZERO))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The relay's address and ed25519 identity as link specifiers (the test's service does not
/// extend by them), and its ntor key.
fn link_specs(net: &Net, r: usize) -> (Vec<LinkSpec>, [u8; 32]) {
    let t = net.target(r);
    let SocketAddr::V4(a) = t.addrs[0] else {
        panic!("v4 address")
    };
    let specs = vec![
        LinkSpec::ipv4(a),
        LinkSpec::ed25519_id(t.ed_id.expect("ed").0),
    ];
    (specs, t.ntor_key.0)
}

/// Send the onion-service message `cmd` with `body` to the last hop of circuit `i`.
fn send(net: &mut Net, i: usize, cmd: RelayCmd, body: &[u8]) {
    send_msg(net, i, &RelayMsg::decode(cmd, body).expect("message"));
}

/// Send an onion-service message to the last hop of circuit `i`.
fn send_msg(net: &mut Net, i: usize, m: &RelayMsg<'_>) {
    let hop = net.hops(i) - 1;
    net.circs[i].circ.send_msg(hop, None, m).expect("send");
    net.run();
}

/// Bodies of the `cmd` messages circuit `i` received.
fn received(net: &Net, i: usize, cmd: RelayCmd) -> Vec<Vec<u8>> {
    net.circs[i]
        .events
        .iter()
        .filter_map(|e| match e {
            CircEvent::Msg { msg, .. } if msg.cmd() == cmd => {
                // The bytes the relay sent: the body's encoding.
                let mut body = Vec::new();
                msg.encode_body(&mut body).ok().map(|()| body)
            }
            _ => None,
        })
        .collect()
}

fn destroyed(net: &Net, i: usize) -> Option<Option<DestroyReason>> {
    net.circs[i].closed
}

/// Circuit `i` was closed by relay `r` for an onion-service violation or limit: the number
/// of such closes at `r` went from `before` to `before + 1` and the client saw DESTROY (from
/// its first hop, which propagates it with its own reason when `r` is further).
fn closed_by(net: &Net, i: usize, r: usize, before: u64) -> u64 {
    assert!(net.circs[i].closed.is_some(), "circuit {i} is closed");
    let now = net.relays[r].stats().hs_circuits_closed;
    assert_eq!(now, before + 1, "relay {r} closed it");
    now
}

/// One HTTP exchange over BEGIN_DIR on circuit `i`: (status, body).
fn http(net: &mut Net, i: usize, request: &[u8]) -> (u16, Vec<u8>) {
    let now = net.now;
    let s = net.circs[i].circ.begin_dir(now).expect("begin_dir");
    net.run();
    net.send(i, s, request);
    net.run();
    assert_eq!(net.circs[i].ended.get(&s.get()), Some(&EndReason::DONE));
    let bytes = net.circs[i].data.get(&s.get()).cloned().unwrap_or_default();
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head");
    let head = core::str::from_utf8(&bytes[..end]).expect("utf8");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, bytes[end + 4..].to_vec())
}

fn post(text: &str) -> Vec<u8> {
    let mut v = format!(
        "POST {UPLOAD_PATH} HTTP/1.0\r\nHost: 10.0.0.2\r\nContent-Length: {}\r\n\r\n",
        text.len()
    )
    .into_bytes();
    v.extend_from_slice(text.as_bytes());
    v
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.0\r\n\r\n").into_bytes()
}

#[test]
fn a_client_reaches_a_service_through_our_hsdir_intro_and_rendezvous_points() {
    let mut rng = ChaCha20Rng::seed_from_u64(40);
    let mut net = network(40, |_| {});
    let (svc_chan, _) = net.connect_client(MID, ip(1)).expect("connect");
    let (cli_chan, _) = net.connect_client(MID, ip(2)).expect("connect");

    // The service establishes its introduction point on INTRO (two hops: anonymous).
    let mut service = HsService::new(
        ExpandedKeypair::generate(&mut rng),
        HsServiceConfig::default(),
    );
    let (intro_specs, intro_key) = link_specs(&net, INTRO);
    let ipx = service.add_intro_point(intro_specs, intro_key, &mut rng);
    let svc_intro = net.build(svc_chan, &[MID, INTRO], HandshakeKind::Ntor);
    assert_eq!(net.hops(svc_intro), 2);
    let kh = *net.circs[svc_intro].circ.hop_kh(1).expect("kh");
    let body = service.establish_intro(ipx, &kh).expect("establish");
    send_msg(&mut net, svc_intro, &RelayMsg::EstablishIntro(body));
    assert_eq!(
        received(&net, svc_intro, RelayCmd::INTRO_ESTABLISHED).len(),
        1
    );
    service.handle_intro_established(ipx).expect("established");
    assert_eq!(net.relays[INTRO].stats().intro_established, 1);

    // It publishes its descriptor to our HSDir.
    let now = unix_now(&net);
    let period = TimePeriodConfig::testing_network(20)
        .expect("config")
        .period_at(Timestamp::from_unix(now));
    let text = service
        .build_descriptor(Timestamp::from_unix(now), period, &mut rng)
        .expect("descriptor");
    let svc_dir = net.build(svc_chan, &[MID, HSDIR], HandshakeKind::Ntor);
    assert_eq!(http(&mut net, svc_dir, &post(&text)).0, 200);
    assert_eq!(net.relays[HSDIR].n_hs_descriptors(), 1);
    // The same revision again: not newer, refused as C tor refuses it.
    let again = net.build(svc_chan, &[MID, HSDIR], HandshakeKind::Ntor);
    assert_eq!(http(&mut net, again, &post(&text)).0, 400);
    assert_eq!(net.relays[HSDIR].stats().hs_descriptors_stored, 1);
    assert_eq!(net.relays[HSDIR].stats().hs_descriptors_refused, 1);

    // The client fetches it.
    let client = HsClient::new(service.address()).expect("client");
    let cli_dir = net.build(cli_chan, &[MID, HSDIR], HandshakeKind::Ntor);
    let (status, fetched) = http(&mut net, cli_dir, &get(&client.fetch_path(period)));
    assert_eq!(status, 200);
    assert_eq!(fetched, text.as_bytes());
    let fetched = String::from_utf8(fetched).expect("text");
    let described = client
        .handle_descriptor(Timestamp::from_unix(now), &fetched, period, None)
        .expect("descriptor verifies");
    assert_eq!(net.relays[HSDIR].stats().hs_descriptors_served, 1);

    // Rendezvous point.
    let cli_rend = net.build(cli_chan, &[MID, REND], HandshakeKind::Ntor);
    let (pending, est) = described.establish_rendezvous(&mut rng);
    send_msg(&mut net, cli_rend, &RelayMsg::EstablishRendezvous(est));
    assert_eq!(
        received(&net, cli_rend, RelayCmd::RENDEZVOUS_ESTABLISHED).len(),
        1
    );
    let ready = pending.handle_rendezvous_established();

    // Introduction.
    let (rend_specs, rend_key) = link_specs(&net, REND);
    let (introduction, intro1) = ready
        .introduce(&mut rng, 0, &rend_key, rend_specs.clone())
        .expect("introduce");
    let cli_intro = net.build(cli_chan, &[MID, INTRO], HandshakeKind::Ntor);
    let intro1 = RelayMsg::Introduce1(intro1);
    send_msg(&mut net, cli_intro, &intro1);
    let mut intro1_body = Vec::new();
    intro1.encode_body(&mut intro1_body).expect("encode");
    let acks = received(&net, cli_intro, RelayCmd::INTRODUCE_ACK);
    assert_eq!(acks.len(), 1);
    introduction
        .handle_introduce_ack(&IntroduceAckCell::decode(&acks[0]).expect("ack"))
        .expect("ack success");
    let intro2 = received(&net, svc_intro, RelayCmd::INTRODUCE2);
    assert_eq!(
        intro2,
        vec![intro1_body],
        "INTRODUCE2 is INTRODUCE1 unchanged"
    );
    assert_eq!(net.relays[INTRO].stats().introduce2_relayed, 1);
    let req = service
        .handle_introduce2(
            ipx,
            &onion_cell::hs::Introduce::decode(&intro2[0]).expect("INTRODUCE2"),
            &mut rng,
        )
        .expect("introduce2");
    assert_eq!(req.link_specifiers, rend_specs);

    // The service joins the rendezvous point.
    let svc_rend = net.build(svc_chan, &[MID, REND], HandshakeKind::Ntor);
    send_msg(
        &mut net,
        svc_rend,
        &RelayMsg::Rendezvous1(req.rendezvous1.clone()),
    );
    let r2 = received(&net, cli_rend, RelayCmd::RENDEZVOUS2);
    assert_eq!(r2.len(), 1);
    let keys = introduction
        .handle_rendezvous2(&onion_cell::hs::Rendezvous2::decode(&r2[0]).expect("r2"))
        .expect("hs-ntor");
    assert_eq!(net.relays[REND].stats().rend_joined, 1);
    net.circs[cli_rend]
        .circ
        .add_virtual_hop(Box::new(keys.client_layer().expect("layer")))
        .expect("virtual hop");
    net.circs[svc_rend]
        .circ
        .add_virtual_hop(Box::new(req.keys.service_layer().expect("layer")))
        .expect("virtual hop");
    net.circs[svc_rend].circ.set_accept_inbound_streams(true);

    // End to end: BEGIN, CONNECTED, data both ways, through the joined circuits.
    let s = net.begin(cli_rend, "", 80);
    let incoming = net.circs[svc_rend].events.iter().find_map(|e| match e {
        CircEvent::IncomingStream { stream, port, .. } => Some((*stream, *port)),
        _ => None,
    });
    let (ss, port) = incoming.expect("the service sees the stream");
    assert_eq!(port, 80);
    net.circs[svc_rend].circ.accept_stream(ss).expect("accept");
    net.run();
    assert!(net.circs[cli_rend]
        .events
        .iter()
        .any(|e| matches!(e, CircEvent::StreamConnected { stream, .. } if *stream == s)));
    let request = b"GET / HTTP/1.0\r\n\r\n".to_vec();
    net.send(cli_rend, s, &request);
    assert_eq!(net.circs[svc_rend].data.get(&ss.get()), Some(&request));
    let page: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    net.send(svc_rend, ss, &page);
    assert_eq!(net.circs[cli_rend].data.get(&s.get()), Some(&page));
    let spliced = net.relays[REND].stats().rend_cells_spliced;
    assert!(spliced > 40, "{spliced} cells passed the rendezvous point");

    // The client leaves: the rendezvous point tears the service's half down too.
    let before = net.relays[REND].n_circuits();
    net.circs[cli_rend].circ.destroy();
    net.run();
    assert_eq!(net.relays[REND].n_circuits(), before - 2);
    assert!(destroyed(&net, svc_rend).is_some());
}

/// A service's introduction circuit on INTRO, with its auth key pair.
fn intro_circuit(
    net: &mut Net,
    rng: &mut ChaCha20Rng,
    chan: usize,
    auth: &ExpandedKeypair,
    dos: Option<DosParams>,
) -> usize {
    let i = net.build(chan, &[MID, INTRO], HandshakeKind::Ntor);
    let kh = *net.circs[i].circ.hop_kh(1).expect("kh");
    let ext = dos.map(|d| vec![d.to_extension()]).unwrap_or_default();
    let (_, body) = EstablishIntro::build(auth, ext, &kh).expect("build");
    send_msg(net, i, &RelayMsg::EstablishIntro(body));
    let _ = rng;
    i
}

/// A minimal INTRODUCE1 for `auth_key` (the introduction point reads only the clear part).
fn introduce1(auth_key: &[u8; 32]) -> Vec<u8> {
    let mut b = vec![0u8; 20];
    b.push(2);
    b.extend_from_slice(&32u16.to_be_bytes());
    b.extend_from_slice(auth_key);
    b.push(0);
    b.extend_from_slice(&[7u8; 32 + 40 + 32]);
    b
}

fn ack_status(net: &Net, i: usize) -> Option<IntroduceAckStatus> {
    received(net, i, RelayCmd::INTRODUCE_ACK)
        .first()
        .and_then(|b| IntroduceAckCell::decode(b).ok())
        .map(|a| a.status)
}

#[test]
fn introduction_point_checks_and_ack_statuses() {
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let mut net = network(41, |_| {});
    let (svc, _) = net.connect_client(MID, ip(1)).expect("connect");
    let (cli, _) = net.connect_client(MID, ip(2)).expect("connect");
    let auth = ExpandedKeypair::generate(&mut rng);
    let mut closed = 0;

    // A MAC over another circuit's KH: refused, circuit closed (TORPROTOCOL).
    let bad = net.build(svc, &[MID, INTRO], HandshakeKind::Ntor);
    let other_kh = *net.circs[bad].circ.hop_kh(0).expect("kh");
    let (_, body) = EstablishIntro::build(&auth, vec![], &other_kh).expect("build");
    send_msg(&mut net, bad, &RelayMsg::EstablishIntro(body));
    assert!(received(&net, bad, RelayCmd::INTRO_ESTABLISHED).is_empty());
    closed = closed_by(&net, bad, INTRO, closed);

    let first = intro_circuit(&mut net, &mut rng, svc, &auth, None);
    assert_eq!(received(&net, first, RelayCmd::INTRO_ESTABLISHED).len(), 1);
    // A second ESTABLISH_INTRO on the same circuit: closed.
    let kh = *net.circs[first].circ.hop_kh(1).expect("kh");
    let other = ExpandedKeypair::generate(&mut rng);
    let (_, body) = EstablishIntro::build(&other, vec![], &kh).expect("build");
    send_msg(&mut net, first, &RelayMsg::EstablishIntro(body));
    closed = closed_by(&net, first, INTRO, closed);

    // The key again on a new circuit, then once more: the newest circuit gets INTRODUCE2.
    let a = intro_circuit(&mut net, &mut rng, svc, &auth, None);
    let b = intro_circuit(&mut net, &mut rng, svc, &auth, None);
    assert_eq!(received(&net, b, RelayCmd::INTRO_ESTABLISHED).len(), 1);
    let c1 = net.build(cli, &[MID, INTRO], HandshakeKind::Ntor);
    send(
        &mut net,
        c1,
        RelayCmd::INTRODUCE1,
        &introduce1(auth.public_bytes()),
    );
    assert_eq!(ack_status(&net, c1), Some(IntroduceAckStatus::SUCCESS));
    assert_eq!(received(&net, b, RelayCmd::INTRODUCE2).len(), 1);
    assert!(received(&net, a, RelayCmd::INTRODUCE2).is_empty());
    // A second INTRODUCE1 on the same circuit closes it.
    send(
        &mut net,
        c1,
        RelayCmd::INTRODUCE1,
        &introduce1(auth.public_bytes()),
    );
    closed = closed_by(&net, c1, INTRO, closed);
    assert_eq!(received(&net, b, RelayCmd::INTRODUCE2).len(), 1);

    // Unknown auth key: status 1; malformed: status 2.
    let c2 = net.build(cli, &[MID, INTRO], HandshakeKind::Ntor);
    send(&mut net, c2, RelayCmd::INTRODUCE1, &introduce1(&[9; 32]));
    assert_eq!(
        ack_status(&net, c2),
        Some(IntroduceAckStatus::UNKNOWN_SERVICE)
    );
    let c3 = net.build(cli, &[MID, INTRO], HandshakeKind::Ntor);
    let mut bad_type = introduce1(auth.public_bytes());
    bad_type[20] = 1;
    send(&mut net, c3, RelayCmd::INTRODUCE1, &bad_type);
    assert_eq!(ack_status(&net, c3), Some(IntroduceAckStatus::BAD_FORMAT));
    assert_eq!(net.relays[INTRO].stats().introduce1_nacked, 2);

    // From a client connected straight to the introduction point: closed, nothing relayed.
    let (direct, _) = net.connect_client(INTRO, ip(3)).expect("connect");
    let d = net.build(direct, &[INTRO], HandshakeKind::Ntor);
    send(
        &mut net,
        d,
        RelayCmd::INTRODUCE1,
        &introduce1(auth.public_bytes()),
    );
    assert_eq!(destroyed(&net, d), Some(Some(DestroyReason::PROTOCOL)));
    closed = closed_by(&net, d, INTRO, closed);
    assert_eq!(received(&net, b, RelayCmd::INTRODUCE2).len(), 1);

    // On a circuit that continues past the introduction point: closed.
    let through = net.build(cli, &[MID, INTRO, REND], HandshakeKind::Ntor);
    assert_eq!(net.hops(through), 3);
    let body = introduce1(auth.public_bytes());
    let m = RelayMsg::decode(RelayCmd::INTRODUCE1, &body).expect("msg");
    net.circs[through].circ.send_msg(1, None, &m).expect("send");
    net.run();
    closed_by(&net, through, INTRO, closed);

    // The service's circuit closes: the key is forgotten.
    net.circs[b].circ.destroy();
    net.run();
    let c4 = net.build(cli, &[MID, INTRO], HandshakeKind::Ntor);
    send(
        &mut net,
        c4,
        RelayCmd::INTRODUCE1,
        &introduce1(auth.public_bytes()),
    );
    assert_eq!(
        ack_status(&net, c4),
        Some(IntroduceAckStatus::UNKNOWN_SERVICE)
    );
}

/// INTRODUCE1 from `n` fresh client circuits; the statuses.
fn introduce_n(
    net: &mut Net,
    cli: usize,
    key: &[u8; 32],
    n: usize,
) -> Vec<Option<IntroduceAckStatus>> {
    (0..n)
        .map(|_| {
            let c = net.build(cli, &[MID, INTRO], HandshakeKind::Ntor);
            send(net, c, RelayCmd::INTRODUCE1, &introduce1(key));
            ack_status(net, c)
        })
        .collect()
}

#[test]
fn the_roles_answers_carry_the_bytes_c_tor_sends() {
    let mut rng = ChaCha20Rng::seed_from_u64(44);
    let mut net = network(44, |_| {});
    let (svc, _) = net.connect_client(MID, ip(1)).expect("connect");
    let (cli, _) = net.connect_client(MID, ip(2)).expect("connect");
    // INTRO_ESTABLISHED: N_EXTENSIONS 0 (rend-spec-v3 §3.1.3).
    let auth = ExpandedKeypair::generate(&mut rng);
    let s = intro_circuit(&mut net, &mut rng, svc, &auth, None);
    assert_eq!(
        received(&net, s, RelayCmd::INTRO_ESTABLISHED),
        vec![vec![0]]
    );
    // INTRODUCE_ACK: STATUS (2 bytes) and N_EXTENSIONS 0 (§3.2.2); INTRODUCE2 is the
    // INTRODUCE1 body unchanged.
    let c = net.build(cli, &[MID, INTRO], HandshakeKind::Ntor);
    let intro1 = introduce1(auth.public_bytes());
    send(&mut net, c, RelayCmd::INTRODUCE1, &intro1);
    assert_eq!(
        received(&net, c, RelayCmd::INTRODUCE_ACK),
        vec![vec![0, 0, 0]]
    );
    assert_eq!(received(&net, s, RelayCmd::INTRODUCE2), vec![intro1]);
    let c = net.build(cli, &[MID, INTRO], HandshakeKind::Ntor);
    send(&mut net, c, RelayCmd::INTRODUCE1, &introduce1(&[9; 32]));
    assert_eq!(
        received(&net, c, RelayCmd::INTRODUCE_ACK),
        vec![vec![0, 1, 0]]
    );
    // RENDEZVOUS_ESTABLISHED: empty (§4.1); RENDEZVOUS2: RENDEZVOUS1 after its cookie (§4.2).
    let r = net.build(cli, &[MID, REND], HandshakeKind::Ntor);
    send(&mut net, r, RelayCmd::ESTABLISH_RENDEZVOUS, &[5; 20]);
    assert_eq!(
        received(&net, r, RelayCmd::RENDEZVOUS_ESTABLISHED),
        vec![Vec::<u8>::new()]
    );
    let info: Vec<u8> = (0..64).collect();
    let mut r1 = vec![5; 20];
    r1.extend_from_slice(&info);
    let j = net.build(svc, &[MID, REND], HandshakeKind::Ntor);
    send(&mut net, j, RelayCmd::RENDEZVOUS1, &r1);
    assert_eq!(received(&net, r, RelayCmd::RENDEZVOUS2), vec![info]);
}

#[test]
fn the_dos_extension_and_the_consensus_limit_introduce2() {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let mut net = network(42, |_| {});
    let (svc, _) = net.connect_client(MID, ip(1)).expect("connect");
    let (cli, _) = net.connect_client(MID, ip(2)).expect("connect");
    let ok = Some(IntroduceAckStatus::SUCCESS);
    let limited = Some(IntroduceAckStatus::UNKNOWN_SERVICE);

    // Extension: rate 1, burst 3: two at once (C tor's bucket keeps one token), then one
    // per second.
    let auth = ExpandedKeypair::generate(&mut rng);
    let dos = DosParams {
        rate_per_sec: Some(1),
        burst_per_sec: Some(3),
    };
    let s = intro_circuit(&mut net, &mut rng, svc, &auth, Some(dos));
    assert_eq!(received(&net, s, RelayCmd::INTRO_ESTABLISHED).len(), 1);
    let key = *auth.public_bytes();
    assert_eq!(introduce_n(&mut net, cli, &key, 3), vec![ok, ok, limited]);
    // An empty bucket needs two tokens to let one through (C tor's hs_dos_can_send_intro2).
    net.advance(Duration::from_secs(1));
    assert_eq!(introduce_n(&mut net, cli, &key, 1), vec![limited]);
    net.advance(Duration::from_secs(2));
    assert_eq!(introduce_n(&mut net, cli, &key, 2), vec![ok, limited]);
    assert_eq!(net.relays[INTRO].stats().introduce1_rate_limited, 3);
    assert_eq!(received(&net, s, RelayCmd::INTRODUCE2).len(), 3);

    // A burst below the rate turns the defence off for that circuit, even when the
    // consensus enables it.
    net.relays[INTRO].set_intro_dos_params(IntroDosParams {
        enabled: true,
        rate_per_sec: 1,
        burst_per_sec: 2,
    });
    let auth2 = ExpandedKeypair::generate(&mut rng);
    let off = DosParams {
        rate_per_sec: Some(10),
        burst_per_sec: Some(5),
    };
    intro_circuit(&mut net, &mut rng, svc, &auth2, Some(off));
    assert_eq!(
        introduce_n(&mut net, cli, auth2.public_bytes(), 4),
        vec![ok; 4]
    );
    // Without the extension the consensus values apply (burst 2: one at once).
    let auth3 = ExpandedKeypair::generate(&mut rng);
    intro_circuit(&mut net, &mut rng, svc, &auth3, None);
    assert_eq!(
        introduce_n(&mut net, cli, auth3.public_bytes(), 2),
        vec![ok, limited]
    );
    // The first circuit kept its own values (rate 1 burst 3) through the consensus change.
    net.advance(Duration::from_secs(5));
    assert_eq!(introduce_n(&mut net, cli, &key, 3), vec![ok, ok, limited]);
}

#[test]
fn rendezvous_point_checks_and_limits() {
    let mut net = network(43, |c| c.limits.max_rend_cookies = 2);
    let (cli, _) = net.connect_client(MID, ip(2)).expect("connect");
    let (svc, _) = net.connect_client(MID, ip(1)).expect("connect");
    let rend = |net: &mut Net, cookie: u8| {
        let i = net.build(cli, &[MID, REND], HandshakeKind::Ntor);
        send(net, i, RelayCmd::ESTABLISH_RENDEZVOUS, &[cookie; 20]);
        i
    };
    let mut closed = 0;
    let a = rend(&mut net, 1);
    assert_eq!(received(&net, a, RelayCmd::RENDEZVOUS_ESTABLISHED).len(), 1);
    // The same cookie again: closed.
    let dup = rend(&mut net, 1);
    closed = closed_by(&net, dup, REND, closed);
    // A wrong length (19 bytes, sent raw: onion-cell will not encode it): closed by the
    // circuit's own decoder.
    let i = net.build(cli, &[MID, REND], HandshakeKind::Ntor);
    let mut raw = Box::new([0u8; 509]);
    raw[0] = RelayCmd::ESTABLISH_RENDEZVOUS.0;
    raw[9..11].copy_from_slice(&19u16.to_be_bytes());
    raw[11..30].fill(3);
    net.circs[i].circ.send_raw(1, raw, false).expect("raw");
    net.run();
    assert!(destroyed(&net, i).is_some());
    assert!(received(&net, i, RelayCmd::RENDEZVOUS_ESTABLISHED).is_empty());
    // A second cookie, then the limit: RESOURCELIMIT.
    let b = rend(&mut net, 2);
    assert_eq!(received(&net, b, RelayCmd::RENDEZVOUS_ESTABLISHED).len(), 1);
    let full = rend(&mut net, 4);
    closed = closed_by(&net, full, REND, closed);
    // A closed circuit frees its cookie.
    net.circs[b].circ.destroy();
    net.run();
    let c = rend(&mut net, 5);
    assert_eq!(received(&net, c, RelayCmd::RENDEZVOUS_ESTABLISHED).len(), 1);

    // RENDEZVOUS1 with an unknown cookie: the service's circuit is closed.
    let s1 = net.build(svc, &[MID, REND], HandshakeKind::Ntor);
    let mut r1 = vec![9u8; 20];
    r1.extend_from_slice(&[0xaa; 64]);
    send(&mut net, s1, RelayCmd::RENDEZVOUS1, &r1);
    closed = closed_by(&net, s1, REND, closed);
    // With the cookie: RENDEZVOUS2 carries what followed the cookie; the cookie is used up.
    let s2 = net.build(svc, &[MID, REND], HandshakeKind::Ntor);
    let mut r1 = vec![1u8; 20];
    r1.extend_from_slice(&[0xbb; 64]);
    send(&mut net, s2, RelayCmd::RENDEZVOUS1, &r1);
    assert_eq!(
        received(&net, a, RelayCmd::RENDEZVOUS2),
        vec![vec![0xbb; 64]]
    );
    let s3 = net.build(svc, &[MID, REND], HandshakeKind::Ntor);
    send(&mut net, s3, RelayCmd::RENDEZVOUS1, &r1);
    closed = closed_by(&net, s3, REND, closed);
    // The joined circuits take no further onion-service role.
    send(&mut net, a, RelayCmd::ESTABLISH_RENDEZVOUS, &[7; 20]);
    closed_by(&net, a, REND, closed);
    net.run();
    assert!(destroyed(&net, s2).is_some(), "its partner went with it");
}

#[test]
fn hsdir_refuses_bad_uploads_single_hop_requests_and_expires_descriptors() {
    let mut rng = ChaCha20Rng::seed_from_u64(44);
    let mut net = network(44, |_| {});
    let (svc, _) = net.connect_client(MID, ip(1)).expect("connect");
    let cfg = HsServiceConfig {
        desc_lifetime_minutes: 60,
        ..HsServiceConfig::default()
    };
    let mut service = HsService::new(ExpandedKeypair::generate(&mut rng), cfg);
    let (specs, key) = link_specs(&net, INTRO);
    let ipx = service.add_intro_point(specs, key, &mut rng);
    service.handle_intro_established(ipx).expect("established");
    let now = unix_now(&net);
    let period = TimePeriodConfig::testing_network(20)
        .expect("config")
        .period_at(Timestamp::from_unix(now));
    let text = service
        .build_descriptor(Timestamp::from_unix(now), period, &mut rng)
        .expect("descriptor");
    let path = HsClient::new(service.address())
        .expect("client")
        .fetch_path(period);

    // Straight from a client: 503, as C tor answers single-hop HSDir requests.
    let (direct, _) = net.connect_client(HSDIR, ip(3)).expect("connect");
    let d = net.build(direct, &[HSDIR], HandshakeKind::CreateFast);
    assert_eq!(http(&mut net, d, &post(&text)).0, 503);
    let d = net.build(direct, &[HSDIR], HandshakeKind::CreateFast);
    assert_eq!(http(&mut net, d, &get(&path)).0, 503);
    // A tampered descriptor (revision counter changed after signing): 400.
    let t2: String = text
        .lines()
        .map(|l| match l.strip_prefix("revision-counter ") {
            Some(n) => format!("revision-counter {}\n", n.parse::<u64>().expect("n") + 1),
            None => format!("{l}\n"),
        })
        .collect();
    assert_ne!(t2, text);
    let i = net.build(svc, &[MID, HSDIR], HandshakeKind::Ntor);
    assert_eq!(http(&mut net, i, &post(&t2)).0, 400);
    // Unknown key and malformed key: 404.
    let i = net.build(svc, &[MID, HSDIR], HandshakeKind::Ntor);
    assert_eq!(http(&mut net, i, &get(&path)).0, 404);
    let i = net.build(svc, &[MID, HSDIR], HandshakeKind::Ntor);
    assert_eq!(http(&mut net, i, &get("/tor/hs/3/notbase64!")).0, 404);
    // Stored, served, then gone after its 60-minute lifetime.
    let i = net.build(svc, &[MID, HSDIR], HandshakeKind::Ntor);
    assert_eq!(http(&mut net, i, &post(&text)).0, 200);
    // A newer revision replaces it.
    let newer = service
        .build_descriptor(Timestamp::from_unix(now), period, &mut rng)
        .expect("descriptor");
    assert_ne!(newer, text);
    let i = net.build(svc, &[MID, HSDIR], HandshakeKind::Ntor);
    assert_eq!(http(&mut net, i, &post(&newer)).0, 200);
    assert_eq!(net.relays[HSDIR].n_hs_descriptors(), 1);
    let i = net.build(svc, &[MID, HSDIR], HandshakeKind::Ntor);
    assert_eq!(http(&mut net, i, &get(&path)), (200, newer.into_bytes()));
    for _ in 0..61 {
        net.advance(Duration::from_secs(60));
    }
    assert_eq!(net.relays[HSDIR].n_hs_descriptors(), 0);
    let (svc2, _) = net.connect_client(MID, ip(4)).expect("connect");
    let i = net.build(svc2, &[MID, HSDIR], HandshakeKind::Ntor);
    assert_eq!(http(&mut net, i, &get(&path)).0, 404);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn cmd(i: u8) -> RelayCmd {
        [
            RelayCmd::ESTABLISH_INTRO,
            RelayCmd::INTRODUCE1,
            RelayCmd::ESTABLISH_RENDEZVOUS,
            RelayCmd::RENDEZVOUS1,
            RelayCmd::INTRODUCE2,
        ][usize::from(i % 5)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

        /// Arbitrary onion-service messages (raw bodies, any order, on fresh or reused
        /// circuits) and arbitrary HSDir requests never panic a relay; once every client
        /// circuit is gone, the relays hold no circuit and no registration.
        #[test]
        fn onion_service_inputs_never_panic_and_leave_nothing(
            ops in proptest::collection::vec(
                (0u8..3, any::<u8>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)),
                1..12,
            ),
        ) {
            let mut net = network(45, |_| {});
            let (c, _) = net.connect_client(MID, ip(5)).expect("connect");
            let mut circs: Vec<usize> = Vec::new();
            for (to, which, reuse, body) in ops {
                let r = [INTRO, REND, HSDIR][usize::from(to)];
                let i = match circs.last() {
                    Some(&i) if reuse && net.circs[i].closed.is_none() => i,
                    _ => {
                        let i = net.build(c, &[MID, r], HandshakeKind::Ntor);
                        circs.push(i);
                        i
                    }
                };
                if net.circs[i].closed.is_some() || net.hops(i) != 2 {
                    continue;
                }
                if r == HSDIR {
                    let now = net.now;
                    if let Ok(s) = net.circs[i].circ.begin_dir(now) {
                        net.run();
                        let mut req = if which % 2 == 0 {
                            format!("POST {UPLOAD_PATH} HTTP/1.0\r\nContent-Length: {}\r\n\r\n", body.len())
                        } else {
                            "GET /tor/hs/3/".to_string()
                        }
                        .into_bytes();
                        req.extend_from_slice(&body);
                        req.extend_from_slice(b" HTTP/1.0\r\n\r\n");
                        let _ = net.circs[i].circ.send(s, &req);
                        net.run();
                    }
                } else {
                    let mut raw = Box::new([0u8; 509]);
                    raw[0] = cmd(which).0;
                    let n = body.len().min(498);
                    raw[9..11].copy_from_slice(&(n as u16).to_be_bytes());
                    raw[11..11 + n].copy_from_slice(&body[..n]);
                    let _ = net.circs[i].circ.send_raw(1, raw, false);
                    net.run();
                }
                net.advance(Duration::from_millis(300));
            }
            for i in circs {
                net.circs[i].circ.destroy();
            }
            net.run();
            for r in [INTRO, REND, HSDIR] {
                prop_assert_eq!(net.relays[r].n_circuits(), 0);
            }
            prop_assert!(net.relays[INTRO].hs.intro.is_empty());
            prop_assert_eq!(net.relays[REND].hs.rend.pending(), 0);
            prop_assert_eq!(net.relays[HSDIR].n_hs_descriptors(), 0);
        }
    }
}
