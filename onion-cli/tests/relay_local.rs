//! `onion relay` on its own (no Tor network: its descriptor uploads go nowhere): the TLS
//! link certificate is replaced on schedule (C tor replaces its TLS context every two hours;
//! here every few seconds with `--link-cert-lifetime`). Connections opened afterwards get
//! the new certificate, which the relay's CERTS cell certifies (`onion handshake` verifies
//! the chain); a connection opened before keeps its certificate and its channel handshake
//! still succeeds after the rotation.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, PeerIds};
use onion_crypto::RsaIdentity;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use support::Daemon;

/// A TLS connection to `addr`, handshake done; returns it and the certificate's SHA-256.
fn tls_connect(addr: SocketAddr) -> (rustls::StreamOwned<ClientConnection, TcpStream>, [u8; 32]) {
    // Tor's certificate rules (tor-spec §2), as the `onion` command connects.
    let cfg = onion_io::tls::client_config();
    let name = ServerName::try_from("www.example.com").unwrap().to_owned();
    let mut conn = ClientConnection::new(cfg, name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    let cert = conn.peer_certificates().unwrap()[0].clone();
    let sha = onion_io::tls::cert_sha256(cert.as_ref());
    (rustls::StreamOwned::new(conn, sock), sha)
}

/// The tor-spec §4 link handshake as initiator over `tls`, expecting identity `rsa` and the
/// TLS certificate `cert`: Ok once the channel is open.
fn link_handshake(
    tls: &mut rustls::StreamOwned<ClientConnection, TcpStream>,
    rsa: RsaIdentity,
    cert: [u8; 32],
) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    let now = |t0: std::time::Instant| onion_circuit::Instant::from_duration(t0.elapsed());
    let expected = PeerIds {
        rsa: Some(rsa),
        ed25519: None,
    };
    let mut chan = Channel::initiator(
        ChanConfig::default(),
        expected,
        Some(cert),
        now(t0),
        SystemTime::now(),
    );
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let mut plain: Vec<u8> = Vec::new();
    loop {
        if !plain.is_empty() {
            let used = chan.handle_input(now(t0), &plain);
            plain.drain(..used.min(plain.len()));
        }
        while let Some(ev) = chan.poll_event() {
            match ev {
                ChanEvent::Open(_) => return Ok(()),
                ChanEvent::Closed(e) => return Err(format!("channel: {e}")),
                _ => {}
            }
        }
        while chan.poll_transmit(&mut out).is_some() {
            tls.write_all(&out).map_err(|e| e.to_string())?;
            out.clear();
        }
        tls.flush().map_err(|e| e.to_string())?;
        if t0.elapsed() > Duration::from_secs(20) {
            return Err("handshake timed out".into());
        }
        let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        plain.extend_from_slice(&buf[..n]);
    }
}

/// `onion handshake` to the relay: the JSON it prints.
fn onion_handshake(addr: SocketAddr, fp: &str) -> serde_json::Value {
    let (st, out, err) = support::run_bounded(
        support::onion()
            .arg("handshake")
            .arg(addr.to_string())
            .args(["--rsa-id", fp]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(st.success(), "onion handshake failed: {err}");
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn link_certificate_rotates_and_old_connections_keep_working() {
    let dir = std::env::temp_dir().join(format!("onion-relay-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // An authority nobody listens at: the uploads fail, the relay runs on.
    let auth = dir.join("authorities.txt");
    std::fs::write(
        &auth,
        format!(
            "DirAuthority nobody orport=1 no-v2 v3ident={} 127.0.0.1:1 {}\n",
            "A".repeat(40),
            "B".repeat(40)
        ),
    )
    .unwrap();
    let port = support::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let data = dir.join("data");
    let mut relay = Daemon::start(&[
        "relay",
        "--or-port",
        &addr.to_string(),
        "--data-dir",
        data.to_str().unwrap(),
        "--authorities",
        auth.to_str().unwrap(),
        "--link-cert-lifetime",
        "4",
    ]);
    let line = relay.wait_for("fingerprint", Duration::from_secs(60));
    let fp = line
        .split("fingerprint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    relay.wait_for("ORPort listening", Duration::from_secs(30));
    let rsa = RsaIdentity::from_hex(&fp).unwrap();

    // Before the first rotation: a connection kept open, and one full handshake.
    let first = onion_handshake(addr, &fp);
    assert_eq!(first["rsa_verified"], true, "{first}");
    let (mut old, old_cert) = tls_connect(addr);
    assert_eq!(
        hex::encode(old_cert),
        first["tls_cert_sha256"].as_str().unwrap()
    );

    relay.wait_for("TLS link certificate rotated", Duration::from_secs(30));
    let rotated = relay.stderr();
    let new_sha = rotated
        .lines()
        .find_map(|l| l.split("rotated: sha256 ").nth(1))
        .unwrap()
        .to_string();
    assert_ne!(new_sha, hex::encode(old_cert));

    // New connections present the new certificate, certified in CERTS (the handshake
    // checks the Signing->Link certificate against it).
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let h = onion_handshake(addr, &fp);
        if h["tls_cert_sha256"] != first["tls_cert_sha256"] {
            break h;
        }
        assert!(Instant::now() < deadline, "still the old certificate: {h}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(second["rsa_verified"], true, "{second}");
    assert_eq!(second["ed_verified"], true, "{second}");
    eprintln!(
        "link certificate {} replaced by {}",
        first["tls_cert_sha256"], second["tls_cert_sha256"]
    );

    // The connection opened before the rotation: its TLS session keeps the old
    // certificate, and the channel handshake over it succeeds (CERTS certifies it).
    link_handshake(&mut old, rsa, old_cert).expect("handshake on the old connection");
    eprintln!("channel on the connection from before the rotation: open");
    // The descriptor was built only after the self-test's circuit to ourselves.
    relay.wait_for("publishing descriptor", Duration::from_secs(10));
    let err = relay.stderr();
    let pos = |needle: &str| err.lines().position(|l| l.contains(needle)).unwrap();
    assert!(
        pos("self-test: ORPort") < pos("publishing descriptor"),
        "{err}"
    );
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}
