//! Unit tests of the client machine's parts (the machine as a whole is tested over an
//! in-process network in `tests/client.rs`).

use super::chan::Chan;
use super::circ::Circ;
use super::stream::Stream;

#[test]
fn state_sizes_stay_small() {
    let sizes = [
        ("Stream", std::mem::size_of::<Stream>()),
        ("Circ", std::mem::size_of::<Circ>()),
        ("Chan", std::mem::size_of::<Chan>()),
        ("Error", std::mem::size_of::<crate::Error>()),
        (
            "circuit Stream",
            std::mem::size_of::<onion_circuit::stream::Stream>(),
        ),
    ];
    println!("{sizes:?}");
    // An idle application stream's own state (its buffers allocate nothing while empty).
    assert!(sizes[0].1 <= 256, "{sizes:?}");
}

#[test]
fn onion_service_circuits_need_stable_relays_for_long_lived_ports() {
    use crate::dir::{Authority, DirConfig, DirMode};
    use crate::hs::{HostConfig, HsPurpose};
    use crate::{Client, ClientConfig, Instant, Isolation, State, Timestamp};
    use rand_core::SeedableRng;

    let nowhere = Authority {
        name: "nowhere".into(),
        rsa_id: onion_dir::RsaIdentity([1; 20]),
        v3ident: onion_dir::RsaIdentity([2; 20]),
        or_addr: None,
    };
    let cfg = ClientConfig::new(DirConfig::new(vec![nowhere], vec![], DirMode::Micro));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let now = Instant::ZERO;
    let mut c = Client::new(
        cfg,
        State::default(),
        now,
        Timestamp(1_795_418_410),
        &mut rng,
    )
    .expect("client");
    let key = |seed: u8| onion_hs::keys::ExpandedKeypair::from_seed(&[seed; 32]);
    // A hosted service's introduction circuits always; its rendezvous circuits when one of
    // its ports is long-lived (C tor's default LongLivedPorts has 22, not 80).
    assert!(c.hs_needs_stable(HsPurpose::ServiceIntro));
    let web = c
        .host_onion_service(HostConfig::new(key(1), vec![80]), now)
        .expect("hosted");
    assert!(!c.hs_needs_stable(HsPurpose::ServiceRend));
    let ssh = c
        .host_onion_service(HostConfig::new(key(2), vec![80, 22]), now)
        .expect("hosted");
    assert!(c.hs_needs_stable(HsPurpose::ServiceRend));
    c.stop_onion_service(ssh, now).expect("stopped");
    assert!(!c.hs_needs_stable(HsPurpose::ServiceRend));
    // A client's rendezvous and introduction circuits when a stream waiting for an onion
    // service goes to a long-lived port; directory circuits never.
    let addr = c.onion_service_address(web).expect("address").to_string();
    let s80 = c.connect(&addr, 80, Isolation::NONE, now).expect("stream");
    c.hs.asked.insert(s80.0);
    assert!(!c.hs_needs_stable(HsPurpose::ClientRend));
    assert!(!c.hs_needs_stable(HsPurpose::ClientIntro));
    let s22 = c.connect(&addr, 22, Isolation::NONE, now).expect("stream");
    c.hs.asked.insert(s22.0);
    assert!(c.hs_needs_stable(HsPurpose::ClientRend));
    assert!(c.hs_needs_stable(HsPurpose::ClientIntro));
    assert!(!c.hs_needs_stable(HsPurpose::HsDirFetch));
}

#[test]
fn an_end_before_connected_is_handled_by_its_reason() {
    use super::stream::{end_not_open, NotOpenEnd};
    use onion_cell::relaymsg::EndReason as R;
    // Any stream: TORPROTOCOL and DESTROY close the circuit.
    for retriable in [true, false] {
        assert_eq!(
            end_not_open(R::TORPROTOCOL, retriable),
            NotOpenEnd::CloseCircuit
        );
        assert_eq!(
            end_not_open(R::DESTROY, retriable),
            NotOpenEnd::CloseCircuit
        );
    }
    // A stream tried elsewhere (an exit stream, a resolve).
    assert_eq!(
        end_not_open(R::EXITPOLICY, true),
        NotOpenEnd::RetryAvoidingExit
    );
    for r in [R::HIBERNATING, R::RESOURCELIMIT] {
        assert_eq!(end_not_open(r, true), NotOpenEnd::RetryExitRefusesAll);
    }
    for r in [R::RESOLVEFAILED, R::MISC, R::NOROUTE] {
        assert_eq!(end_not_open(r, true), NotOpenEnd::RetryCircuitUnusable);
    }
    for r in [
        R::DONE,
        R::CONNECTREFUSED,
        R::TIMEOUT,
        R::INTERNAL,
        R::CONNRESET,
        R(200),
    ] {
        assert_eq!(end_not_open(r, true), NotOpenEnd::End);
    }
    // An onion service's stream or a directory request: never tried elsewhere.
    for r in [
        R::EXITPOLICY,
        R::HIBERNATING,
        R::MISC,
        R::RESOLVEFAILED,
        R::DONE,
    ] {
        assert_eq!(end_not_open(r, false), NotOpenEnd::End);
    }
}
