//! `Client::stream_circuit`: the circuit a stream runs on, as an embedder reports it (its
//! hops with their directory nicknames, its purpose, congestion control on the exit).

mod support;

use onion_client::{Client, Isolation, Purpose, State};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use support::{opened, quiet_config, Net, WALL};

/// A client on `net`'s directory whose own refreshes go nowhere (no authority ORPort).
fn client_on(net: &mut Net, congestion_control: bool) -> Client {
    let mut cfg = quiet_config();
    cfg.congestion_control = congestion_control;
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let mut c = Client::new(cfg, State::default(), net.now, WALL, &mut rng).unwrap();
    c.adopt_directory(net.directory(), net.now).unwrap();
    net.run(&mut c);
    c
}

#[test]
fn a_streams_circuit_names_its_relays_and_the_exits_congestion_control() {
    for cc in [false, true] {
        let mut net = Net::new(6, 21);
        net.congestion_control = true;
        let mut c = client_on(&mut net, cc);
        let a = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
        let b = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
        net.run(&mut c);
        assert!(opened(&net, a) && opened(&net, b));
        let view = c.stream_circuit(a).expect("an open stream has a circuit");
        assert!(view.built);
        assert_eq!(view.purpose, Purpose::General);
        assert_eq!(view.hops.len(), 3, "{view:?}");
        // Each hop is a distinct relay of the network, named as its directory names it.
        for hop in &view.hops {
            let relay = net
                .relays
                .iter()
                .find(|r| r.keys.rsa_id == hop.rsa_id)
                .expect("a hop that is a relay of the network");
            assert_eq!(hop.nickname.as_deref(), Some(relay.name.as_str()));
        }
        assert_ne!(view.hops[0].rsa_id, view.hops[1].rsa_id);
        assert_ne!(view.hops[1].rsa_id, view.hops[2].rsa_id);
        let names: Vec<&str> = view
            .hops
            .iter()
            .map(|h| h.nickname.as_deref().unwrap())
            .collect();
        assert_eq!(view.path_string(), names.join(" -> "));
        // The second stream shares the circuit; a stream of another isolation token gets
        // another circuit, with another number.
        assert_eq!(c.stream_circuit(b), Some(view.clone()));
        let other = c.connect("echo", 80, Isolation(9), net.now).unwrap();
        net.run(&mut c);
        assert!(opened(&net, other));
        let other_view = c.stream_circuit(other).unwrap();
        assert_ne!(other_view.circuit, view.circuit);
        // Congestion control on the exit only when configured (the exits offer it), with
        // the consensus default sendme_inc and a window in slow start.
        match (cc, view.congestion_control) {
            (false, None) => {}
            (true, Some(v)) => {
                assert_eq!(v.sendme_inc, 31);
                assert!(v.cwnd > 0 && v.slow_start, "{v:?}");
            }
            other => panic!("congestion control configured {cc}, view {other:?}"),
        }
        // A stream closed by the application is forgotten: no view.
        c.close(a, net.now);
        assert_eq!(c.stream_circuit(a), None);
        assert!(c.stream_circuit(b).is_some());
    }
}
