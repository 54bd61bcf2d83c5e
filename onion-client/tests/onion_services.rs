//! Onion services through the Client over the in-process relay network (tests/support):
//! a `.onion` stream fetches a real descriptor (built by onion-hs's service machine,
//! its introduction points the network's relays) from an HSDir over a 4-hop circuit and
//! BEGIN_DIR, decrypts it (with client authorization when the service requires it) and
//! goes on to the rendezvous; the test relays play no rendezvous point, so the stream ends
//! with the typed rendezvous failure. A hosted service builds its introduction circuits.

mod support;

use std::sync::Arc;
use std::time::Duration;

use onion_client::dir::Directory;
use onion_client::hs::{HostConfig, HsError, HsNet};
use onion_client::{Client, ClientConfig, Error, ErrorKind, Isolation, State, StreamHandle};
use onion_hs::desc::ClientAuthConfig;
use onion_hs::keys::ExpandedKeypair;
use onion_hs::linkspec::RawLinkSpec;
use onion_hs::service::{HsService, HsServiceConfig};
use onion_hs::x25519_dalek::{PublicKey as XPublic, StaticSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use support::{closed, quiet_config, Net, WALL};

fn config() -> ClientConfig {
    quiet_config()
}

/// A service whose descriptor (for the period a client of `dir` fetches) names relays 1
/// and 2 as introduction points, served by every relay at `/tor/hs/3/`; its address.
fn publish(net: &mut Net, dir: &Arc<Directory>, clients: Vec<XPublic>) -> String {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let testing = onion_client::guards::is_testing_network(&config().dir.authorities);
    let hsnet = HsNet::from_directory(dir.clone(), testing).unwrap();
    let sel = hsnet
        .shared_random
        .client_fetch(&hsnet.periods, hsnet.valid_after);
    let cfg = HsServiceConfig {
        client_auth: (!clients.is_empty()).then_some(ClientAuthConfig { clients }),
        ..HsServiceConfig::default()
    };
    let mut hs = HsService::new(ExpandedKeypair::generate(&mut rng), cfg);
    for r in &net.relays[1..3] {
        let std::net::SocketAddr::V4(v4) = r.addr else {
            unreachable!()
        };
        let specs = vec![
            RawLinkSpec::ipv4(v4),
            RawLinkSpec::rsa_id(r.keys.rsa_id),
            RawLinkSpec::ed25519_id(r.keys.ed_id.0),
        ];
        let i = hs.add_intro_point(specs, r.ntor.0, &mut rng);
        hs.handle_intro_established(i).unwrap();
    }
    let text = hs.build_descriptor(WALL, sel.period, &mut rng).unwrap();
    for r in &mut net.relays {
        r.docs.push(("/tor/hs/3/".into(), text.clone()));
    }
    hs.address().to_string()
}

fn client_on(net: &mut Net, dir: Arc<Directory>) -> Client {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(config(), State::default(), net.now, WALL, &mut rng).unwrap();
    c.adopt_directory(dir, net.now).unwrap();
    net.run(&mut c);
    c
}

/// Run until stream `s` closed; its error.
fn close_error(net: &mut Net, c: &mut Client, s: StreamHandle) -> Error {
    assert!(net.run_until(c, Duration::from_secs(300), |n| closed(n, s).is_some()));
    closed(net, s).unwrap().expect("an error")
}

#[test]
fn onion_stream_fetches_the_descriptor_then_meets_no_rendezvous_point() {
    let mut net = Net::new(8, 11);
    let dir = net.hsdir_directory();
    let addr = publish(&mut net, &dir, vec![]);
    let mut c = client_on(&mut net, dir);
    let s = c.connect(&addr, 80, Isolation::NONE, net.now).unwrap();
    let e = close_error(&mut net, &mut c, s);
    // Not "descriptor not found" nor "invalid": it was fetched and decrypted; the
    // rendezvous point (a test relay) never answers ESTABLISH_RENDEZVOUS.
    let Error::OnionService(hs) = &e else {
        panic!("{e:?}")
    };
    assert!(matches!(hs, HsError::RendezvousFailed(_)), "{hs:?}");
    assert_eq!(hs.socks5_reply(), 0xF3);
    assert_eq!(e.kind(), ErrorKind::Network);
}

#[test]
fn onion_stream_with_client_authorization() {
    let mut net = Net::new(8, 12);
    let dir = net.hsdir_directory();
    let key = StaticSecret::from([5u8; 32]);
    let addr = publish(&mut net, &dir, vec![XPublic::from(&key)]);
    let mut c = client_on(&mut net, dir);
    let s = c.connect(&addr, 80, Isolation::NONE, net.now).unwrap();
    let e = close_error(&mut net, &mut c, s);
    assert_eq!(e, Error::OnionService(HsError::ClientAuthMissing));

    c.set_onion_client_auth(&addr, Some(key)).unwrap();
    let s = c.connect(&addr, 80, Isolation(1), net.now).unwrap();
    let e = close_error(&mut net, &mut c, s);
    assert!(
        matches!(e, Error::OnionService(HsError::RendezvousFailed(_))),
        "{e:?}"
    );
}

#[test]
fn unknown_onion_service_is_descriptor_not_found() {
    let mut net = Net::new(8, 13);
    let dir = net.hsdir_directory();
    let mut c = client_on(&mut net, dir);
    let addr = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
    let s = c.connect(addr, 80, Isolation::NONE, net.now).unwrap();
    let e = close_error(&mut net, &mut c, s);
    let Error::OnionService(hs) = &e else {
        panic!("{e:?}")
    };
    assert!(
        matches!(hs, HsError::DescriptorNotFound { tried: 6, .. }),
        "{hs:?}"
    );
    assert_eq!(hs.socks5_reply(), 0xF0);
}

#[test]
fn hosted_service_builds_its_introduction_circuits() {
    let mut net = Net::new(8, 14);
    let dir = net.hsdir_directory();
    // No pre-built internal circuits to cannibalize (tests/cannibalize.rs): built here.
    let mut cfg = config();
    cfg.preemptive_circuits = false;
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(cfg, State::default(), net.now, WALL, &mut rng).unwrap();
    c.adopt_directory(dir, net.now).unwrap();
    net.run(&mut c);
    let before = net.multi_hop_circuits();
    let id = ExpandedKeypair::from_seed(&[3; 32]);
    let address = id.id_key().address();
    let svc = c
        .host_onion_service(HostConfig::new(id, vec![80]), net.now)
        .unwrap();
    net.run(&mut c);
    assert_eq!(c.onion_service_address(svc), Some(address));
    // Three introduction points, each a 4-hop circuit; nothing published before they are
    // established (the test relays do not answer ESTABLISH_INTRO).
    assert_eq!(net.multi_hop_circuits(), before + 3);
    assert_eq!(c.onion_service_stats(svc).unwrap().uploads_ok, 0);
}

#[test]
fn onion_stream_before_bootstrap_waits_for_the_directory() {
    let mut net = Net::new(8, 15);
    let dir = net.hsdir_directory();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(config(), State::default(), net.now, WALL, &mut rng).unwrap();
    let addr = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
    let s = c.connect(addr, 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert_eq!(closed(&net, s), None, "it waits");
    c.adopt_directory(dir, net.now).unwrap();
    let e = close_error(&mut net, &mut c, s);
    assert!(
        matches!(e, Error::OnionService(HsError::DescriptorNotFound { .. })),
        "{e:?}"
    );
}

#[test]
fn an_onion_stream_that_runs_out_of_time_ends_with_the_typed_timeout() {
    let mut net = Net::new(8, 16);
    let dir = net.hsdir_directory();
    let addr = publish(&mut net, &dir, vec![]);
    let mut cfg = config();
    cfg.stream_timeout = Duration::from_secs(10);
    cfg.build_timeout = Duration::from_secs(10);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(cfg, State::default(), net.now, WALL, &mut rng).unwrap();
    c.adopt_directory(dir, net.now).unwrap();
    net.run(&mut c);
    let start = net.now;
    let s = c.connect(&addr, 80, Isolation::NONE, net.now).unwrap();
    // The rendezvous point never answers; the attempt's deadline is the stream's.
    let e = close_error(&mut net, &mut c, s);
    assert_eq!(e, Error::OnionService(HsError::IntroTimedOut));
    assert_eq!(net.now - start, Duration::from_secs(20));
}

/// A hosted service's circuits are launched at once even while unrelated builds fill
/// `Limits::max_building`: they have bounds of their own (the publisher's launch rate, and
/// `HostConfig::max_rend_builds` for the rendezvous circuits a visitor waits on).
#[test]
fn hosted_service_circuits_do_not_wait_behind_other_builds() {
    let mut net = Net::new(8, 17);
    let dir = net.hsdir_directory();
    let mut cfg = config();
    cfg.limits.max_building = 2;
    cfg.preemptive_circuits = false;
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(cfg, State::default(), net.now, WALL, &mut rng).unwrap();
    c.adopt_directory(dir, net.now).unwrap();
    net.run(&mut c);
    let before = net.multi_hop_circuits();
    // Two exit streams whose circuits fill the build limit (nothing has run yet).
    for i in 1..=2 {
        c.connect("example.com", 80, Isolation(i), net.now).unwrap();
    }
    let id = ExpandedKeypair::from_seed(&[4; 32]);
    c.host_onion_service(HostConfig::new(id, vec![80]), net.now)
        .unwrap();
    net.run(&mut c);
    // Both exit circuits and the three introduction circuits, without waiting.
    assert_eq!(net.multi_hop_circuits(), before + 2 + 3);
}
