//! Interop tests of `onion relay` as an exit, in a private C tor network whose authorities
//! vote the Exit flag for any relay (`tornet start --any-exit`; in its own test binary so
//! that the other interop tests keep their network, where only C tor's exits are exits).
//!
//! Three of our relays join, each with an exit policy allowing the test's HTTP port and
//! 127.0.0.0/8 except one address and port (C tor's `ExitPolicyRejectPrivate 0`, as testing
//! networks need). A C tor client pinned to them (`MiddleNodes` / `ExitNodes`,
//! `StrictNodes 1`; its guard is C tor's) fetches through our middle and exit with
//! congestion control, resolves through our exit, and is refused by our exit's policy
//! (END EXITPOLICY); then one of our exits is killed mid-transfer, the client recovers on
//! a new circuit, and our relay that carried the broken circuit frees what it held.

mod relay_support;
mod support;

use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use relay_support::{
    assert_published_after_self_test, circuits_ending_at, circuits_through, close_circuit,
    control_port_lines, fresh_dir, last_stats, sha256_hex, start_relay_with, stat, wait_accepted,
    wait_listed, wait_stats, Events, TorClient,
};
use support::{network_any_exit, Daemon};

/// Test body of `len` bytes (not compressible, so nothing on the path shrinks it).
fn body(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// Host of the test's own HTTP server: in the exits' 127.0.0.0/8 but no relay's address (a
/// literal equal to a relay's address makes C tor send the stream to that relay as an
/// "exit enclave", connection_edge.c, whatever ExitNodes says; and a host name is refused by
/// C tor's client before any exit is asked, as no exit policy accepts an unknown address
/// when it accepts only 127.0.0.0/8).
const HOST: &str = "127.0.0.2";

/// An HTTP/1.0 server on [`HOST`]: `GET /N` answers [`body`]`(N)`. Returns its port.
fn serve_bodies() -> u16 {
    let l = TcpListener::bind((HOST, 0)).expect("bind 127.0.0.2");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let mut r = std::io::BufReader::new(&s);
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let n: usize = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.trim_start_matches('/').parse().ok())
                    .unwrap_or(0);
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).map(|k| k == 0).unwrap_or(true) || h == "\r\n" {
                        break;
                    }
                }
                let mut w = &s;
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {n}\r\n\r\n");
                let _ = w.write_all(head.as_bytes());
                let _ = w.write_all(&body(n));
            });
        }
    });
    port
}

/// `tor-resolve NAME 127.0.0.1:PORT` (SOCKS RESOLVE through the client): its output.
fn tor_resolve(socks_port: u16, name: &str) -> (bool, String, String) {
    let (st, out, err) = support::run_bounded(
        Command::new("tor-resolve")
            .arg("-5")
            .arg(name)
            .arg(format!("127.0.0.1:{socks_port}")),
        Duration::from_secs(60),
    )
    .expect("tor-resolve");
    (st.success(), out.trim().to_string(), err)
}

fn client_log(c: &TorClient) -> String {
    std::fs::read_to_string(c.dir.join("notice.log")).unwrap_or_default()
}

/// Steps in order, on one network: (1) three relays of ours with exit policies join and
/// are listed Running, Valid and Exit; (2) a C tor client pinned to them as middle and exit
/// fetches 5 MiB, sha256 equal, our exit opening the TCP connection, the client running
/// congestion control on the circuit to our exit; (3) RESOLVE through our exit; (4) a port
/// our policy refuses gives the client END EXITPOLICY from our exit; (5) one of our exits
/// killed mid-transfer: the client fetches again on a new circuit, and our middle frees the
/// circuit (counters back to their baseline).
#[test]
fn onion_exits_carry_c_tor_clients() {
    let Some(net) = network_any_exit() else {
        return;
    };
    let n_auth = net.dirauthority_lines.len();
    let auth_consensus = net
        .relays
        .iter()
        .find(|r| r.role == "authority")
        .map(|r| r.datadir.join("cached-consensus"))
        .expect("an authority");

    // A port with a listener that the exit policy refuses: a refusal there is the policy's,
    // not a failed connection.
    let refused_listener = TcpListener::bind((HOST, 0)).unwrap();
    let refused_port = refused_listener.local_addr().unwrap().port();
    let http_port = serve_bodies();
    // C tor's client judges an exit for a stream to an IP literal by the port alone: in
    // connection_ap_can_use_exit (connection_edge.c) the address is kept only when
    // tor_addr_parse returns 0, but it returns the address family, so the policy is
    // matched as for an unknown address (compare_unknown_tor_addr_to_addr_policy), and
    // "accept 127.0.0.0/8:*, reject *:*" is "probably rejected" for every port: no stream
    // would ever be attached to a circuit ending at such an exit (C tor's own exits in
    // tornet are used only as exit enclaves, for their own address 127.0.0.1). So the
    // policy also accepts the two ports for any address; our exit still matches the real
    // address, and refuses HOST:refused_port.
    let policy = format!(
        "reject {HOST}:{refused_port}, accept 127.0.0.0/8:*, accept *:{http_port}, \
         accept *:{refused_port}, reject *:*"
    );

    // (1) Three relays, all exits.
    let mut relays: Vec<(Daemon, String)> = Vec::new();
    for name in ["onionExitA", "onionExitB", "onionExitC"] {
        let dir = fresh_dir(net, name);
        let port = support::free_port();
        relays.push(start_relay_with(
            net,
            name,
            &dir,
            port,
            &["--exit-policy", &policy],
        ));
    }
    for (d, _) in &relays {
        for l in wait_accepted(d, n_auth, Duration::from_secs(60)) {
            eprintln!("{l}");
        }
        // (3) of the relay's start: the reachability self-test came first.
        assert_published_after_self_test(d);
    }
    let fps: Vec<&str> = relays.iter().map(|(_, fp)| fp.as_str()).collect();
    let mut paths = vec![auth_consensus];
    paths.extend(
        net.relays
            .iter()
            .filter(|r| r.role != "authority")
            .map(|r| r.datadir.join("cached-consensus")),
    );
    let flags = wait_listed(&paths, &fps, Duration::from_secs(180));
    for (f, name) in flags.iter().zip(["A", "B", "C"]) {
        eprintln!("consensus flags of onionExit{name}: {f:?}");
        for want in ["Running", "Valid", "Exit", "Guard", "Fast", "V2Dir"] {
            assert!(
                f.iter().any(|x| x == want),
                "onionExit{name}: no {want}: {f:?}"
            );
        }
    }
    let (fp_a, fp_b, fp_c) = (fps[0].to_string(), fps[1].to_string(), fps[2].to_string());
    // Each relay's own view: it fetched a verified consensus that lists it.
    for (d, _) in &relays {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !d.stderr().contains("consensus listing: Listed") {
            assert!(
                Instant::now() < deadline,
                "the relay never saw itself listed:\n{}",
                support::last_lines(&d.stderr(), 20)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // (2) B middle, C exit. The guard is C tor's: a C tor client takes as guard only a
    // relay listed Stable and V2Dir (entrynodes.c, `node_is_possible_guard`); ours are V2Dir
    // but not Stable (authorities with under 4 hours of stability history vote Stable only
    // for relays whose uptime reaches the median of the active relays', and ours joined
    // after the C tor relays), so `EntryNodes` of ours leaves it no guard at all. Conflux
    // stays on (C tor's default): the client launches conflux sets, whose legs need an exit
    // offering `Conflux`; ours do not, so those legs fail path selection and the streams
    // go on ordinary circuits.
    let payload = body(5 << 20);
    let control = support::free_port();
    let client = TorClient::start(
        net,
        "tor-client-all-onion",
        &format!(
            "MiddleNodes {fp_b}\nExitNodes {fp_c}\nStrictNodes 1\n\
             Log info file {}/info.log\n{}",
            net.dir.join("tor-client-all-onion").display(),
            control_port_lines(control)
        ),
    );
    client.wait_bootstrapped(Duration::from_secs(150));
    // CIRC_BW events carry the circuit's congestion window (SS=, CWND=) when the circuit
    // runs congestion control, which a C tor client does only when the last hop accepted
    // it in the ntor-v3 handshake (proposal 324).
    let events = Events::subscribe(control, "CIRC_BW");
    let url = format!("http://{HOST}:{http_port}/{}", payload.len());
    let ((st, got, err), failed) = support::curl_socks_retrying(client.socks_port, &url, 90, 4);
    assert!(
        st.success() && got.len() == payload.len(),
        "fetch through B-C failed ({failed} retries): {err}\nclient log:\n{}\nexit C:\n{}",
        support::last_lines(&client_log(&client), 25),
        support::last_lines(&relays[2].0.stderr(), 25)
    );
    assert_eq!(sha256_hex(&got), sha256_hex(&payload));
    eprintln!(
        "fetched 5 MiB through (C tor guard) -> onionExitB -> onionExitC: sha256 {} ({failed} retries)",
        sha256_hex(&got)
    );
    let c_stats = wait_stats(
        &relays[2].0,
        "exit C opened a connection",
        Duration::from_secs(5),
        |m| m.get("exit_connections").copied().unwrap_or(0) > 0,
    );
    eprintln!("exit C: {c_stats:?}");
    assert!(stat(&relays[1].0, "circuits_created") > 0);
    // Congestion control on the circuit that carried the body: the client's circuits ending
    // at exit C report a congestion window (CIRC_BW is emitted about once a second).
    std::thread::sleep(Duration::from_secs(2));
    let to_c = circuits_ending_at(control, &fp_c);
    let bw: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| {
            l.starts_with("650 CIRC_BW ")
                && to_c.iter().any(|id| l.contains(&format!(" ID={id} ")))
                && !l.contains(" DELIVERED_READ=0 ")
        })
        .collect();
    eprintln!(
        "circuits to exit C: {to_c:?}; their CIRC_BW events with data: {}; last: {:?}",
        bw.len(),
        bw.last()
    );
    assert!(!bw.is_empty(), "no CIRC_BW event with data for {to_c:?}");
    assert!(
        bw.iter().all(|l| l.contains(" CWND=")),
        "a circuit to our exit without congestion control: {bw:?}"
    );

    // (3) RESOLVE (tor-spec §6.4) through our exit C: its system resolver answers.
    let resolves_before = stat(&relays[2].0, "resolves");
    let (ok, out, err) = tor_resolve(client.socks_port, "localhost");
    assert!(
        ok,
        "tor-resolve localhost failed: {out} {err}\n{}",
        client_log(&client)
    );
    assert_eq!(out, "127.0.0.1", "tor-resolve answered {out:?} ({err})");
    wait_stats(
        &relays[2].0,
        "exit C resolved",
        Duration::from_secs(5),
        |m| m.get("resolves").copied().unwrap_or(0) > resolves_before,
    );
    eprintln!("RESOLVE localhost through onionExitC: {out}");

    // (4) A port the policy refuses for HOST. The client, judging by the port alone (see
    // the policy above), sends BEGIN; our exit answers END EXITPOLICY with the address
    // (tor-spec §6.3), and the client's connection_ap_process_end_not_open notes the
    // reason. (It then takes our exit as stricter than its descriptor and stops using it,
    // so this comes last for this client.)
    let conns_before = stat(&relays[2].0, "exit_connections");
    let refused_url = format!("http://{HOST}:{refused_port}/");
    let (st, out, err) = support::curl_socks(client.socks_port, &refused_url, 20);
    let info = std::fs::read_to_string(client.dir.join("info.log")).unwrap_or_default();
    let refusal = info
        .lines()
        .rfind(|l| l.contains(&format!("Address '{HOST}' refused due to")))
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "refused port {refused_port}: curl {st}: {} bytes, {}; client: {refusal}",
        out.len(),
        err.trim(),
    );
    assert!(!st.success(), "the refused port answered");
    assert!(
        refusal.contains("'exit policy failed'"),
        "no END EXITPOLICY from our exit: {err}\n{}",
        support::last_lines(&client_log(&client), 15)
    );
    assert_eq!(
        stat(&relays[2].0, "exit_connections"),
        conns_before,
        "exit C connected to a refused port"
    );
    drop(client);

    // (5) Kill an exit mid-transfer. A is the only middle; B and C the possible exits.
    wait_stats(
        &relays[0].0,
        "middle A idle after the first client",
        Duration::from_secs(30),
        |m| m.get("queued_bytes") == Some(&0) && m.get("streams") == Some(&0),
    );
    let base_a = last_stats(&relays[0].0).unwrap();
    eprintln!("middle A baseline: {base_a:?}");
    let big = body(48 << 20);
    let control_kill = support::free_port();
    let client = TorClient::start(
        net,
        "tor-client-kill",
        &format!(
            "MiddleNodes {fp_a}\nExitNodes {fp_b},{fp_c}\nStrictNodes 1\n{}",
            control_port_lines(control_kill)
        ),
    );
    client.wait_bootstrapped(Duration::from_secs(150));
    let big_url = format!("http://{HOST}:{http_port}/{}", big.len());
    let (tx, rx) = mpsc::channel();
    let socks = client.socks_port;
    let u2 = big_url.clone();
    std::thread::spawn(move || {
        // Slow reader: the transfer lasts (48 MiB at 2 MiB/s), and cells queue on the path.
        let r = support::run_bounded_bytes(
            Command::new("curl")
                .args(["-sS", "--max-time", "120", "--limit-rate", "2M"])
                .args(["--socks5-hostname", &format!("127.0.0.1:{socks}")])
                .arg(&u2),
            Duration::from_secs(130),
        );
        let _ = tx.send(r);
    });
    // Which exit carries it: the one with an open exit stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        if let Some(i) = (1..3).find(|&i| stat(&relays[i].0, "streams") > 0) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no exit stream on B or C:\n{}",
            support::last_lines(&client_log(&client), 15)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(3));
    let during = last_stats(&relays[0].0).unwrap();
    eprintln!(
        "transfer through exit {}; middle A during it: {during:?}",
        ["A", "B", "C"][victim]
    );
    let t_kill = Instant::now();
    let (victim_daemon, _) = relays.remove(victim);
    drop(victim_daemon); // SIGKILL
    let (guard, _) = &relays[0];
    // Our middle frees the broken circuit: the channel to the killed relay, or the C tor
    // middle's DESTROY, closes it; its queued cells go with it.
    let after = wait_stats(
        guard,
        "middle A frees the circuit",
        Duration::from_secs(30),
        |m| {
            m.get("queued_bytes") == Some(&0)
                && m.get("circuits").copied().unwrap_or(0) < during["circuits"]
        },
    );
    eprintln!(
        "middle A {:.1}s after the kill: {after:?}",
        t_kill.elapsed().as_secs_f64()
    );
    let first = rx
        .recv_timeout(Duration::from_secs(140))
        .expect("curl thread");
    let (st, partial, err) = first.expect("curl");
    assert!(
        !st.success() && partial.len() < big.len(),
        "the transfer survived the kill ({} bytes): {err}",
        partial.len()
    );
    eprintln!(
        "first transfer broke after {} bytes: {}",
        partial.len(),
        err.trim()
    );
    // The client recovers: a new circuit through the other exit.
    let ((st, got, err), failed) =
        support::curl_socks_retrying(client.socks_port, &big_url, 120, 4);
    assert!(
        st.success() && got.len() == big.len(),
        "no recovery ({failed} retries): {err}\n{}",
        support::last_lines(&client_log(&client), 20)
    );
    assert_eq!(sha256_hex(&got), sha256_hex(&big));
    eprintln!("recovered: 48 MiB fetched again on a new circuit ({failed} retries)");
    // Our middle frees each circuit the client closes (its DESTROY reaches A through C tor's
    // guard): A ends with at most what it held before, less the client's circuits, plus
    // the circuits A created since (the client builds new ones, and other parties of the
    // network, tornet's client and onion service and relays testing themselves, build
    // through A too). The circuits are closed one at a time: a C tor relay whose channel
    // still has a cell queued only queues a further DESTROY in the channel's circuitmux
    // (circuitmux_append_destroy_cell primes the channel only when nothing is waiting), and
    // sends it when the channel next carries cells, so killing the client would leave all
    // but the first of a burst of DESTROYs with the guard for as long as the channel to A
    // stays quiet.
    let held: Vec<String> = circuits_through(control_kill, &fp_a);
    assert!(!held.is_empty(), "the client had no circuit through A");
    let at_close = last_stats(guard).unwrap();
    for id in &held {
        close_circuit(control_kill, id);
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "client closed its {} circuits through middle A; A before: {at_close:?}",
        held.len()
    );
    let end = wait_stats(
        guard,
        "middle A frees the client's circuits",
        Duration::from_secs(60),
        |m| {
            let now = m.get("circuits").copied().unwrap_or(u64::MAX);
            let created_since = m["circuits_created"].saturating_sub(at_close["circuits_created"]);
            now.saturating_add(held.len() as u64) <= at_close["circuits"] + created_since
                && m.get("streams") == Some(&0)
                && m.get("queued_bytes") == Some(&0)
        },
    );
    drop(client);
    eprintln!("middle A at the end: {end:?}");
    drop(refused_listener);
}
