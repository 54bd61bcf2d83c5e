//! The smallest embedding of [`onion_client::Client`]: fetch an `http://` URL through Tor and
//! print the body, blocking, over `std::net` and rustls.
//!
//! ```text
//! cargo run -p onion-client --example fetch -- [--authorities FILE] http://HOST[:PORT]/PATH
//! ```
//!
//! `FILE` holds C tor's `DirAuthority` lines (as for `onion get --authorities`); without it
//! the public network's authorities and fallback directories are used. The client is sans-IO:
//! it asks for connections ([`Event::Connect`]) and hands out bytes to send; this program owns
//! the sockets: one thread per relay connection connects, then forwards what the socket reads
//! into one bounded channel. The main thread owns the client and the TLS sessions.

use std::collections::HashMap;
use std::error::Error;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use onion_client::dir::{c_tor_fallbacks, Authority, DirConfig, DirMode};
use onion_client::{Client, ClientConfig, ConnId, Event, Instant, Isolation, State, Timestamp};
use rustls::client::danger::{HandshakeSignatureValid as Valid, ServerCertVerified};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer as Der, ServerName, UnixTime};
use rustls::{ClientConnection as Tls, DigitallySignedStruct as Signed, SignatureScheme};
use sha2::{Digest, Sha256};

/// The public network's authorities, as the `onion` command ships them.
const PUBLIC: &str = include_str!("../../onion-cli/src/net/public-authorities.txt");
type Res<T> = Result<T, Box<dyn Error>>;

/// What the connection threads tell the main loop.
enum Input {
    Up(ConnId, TcpStream),  // TCP is up; a handle on the socket for writing
    Bytes(ConnId, Vec<u8>), // TLS records read from the socket
    Closed(ConnId),         // the connect failed, or the relay closed
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (auths, url) = match &args[..] {
        [url] => (PUBLIC.to_string(), url),
        [flag, file, url] if flag == "--authorities" => (std::fs::read_to_string(file)?, url),
        _ => return Err("usage: fetch [--authorities FILE] http://HOST[:PORT]/PATH".into()),
    };
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "80"));
    let request = format!(
        "GET /{} HTTP/1.0\r\nHost: {hostport}\r\n\r\n",
        path.trim_start_matches('/')
    );

    let start = std::time::Instant::now(); // the client's monotonic clock counts from here
    let now = || Instant::from_duration(start.elapsed());
    let wall = || Timestamp::from(SystemTime::now());
    let config = client_config(&auths)?;
    let mut client = Client::new(
        config,
        State::default(),
        now(),
        wall(),
        &mut rand_core::OsRng,
    )?;
    let stream = client.connect(host, port.parse()?, Isolation::NONE, now())?; // opens after bootstrap
    let (tls, deadline) = (tls_config(), now() + Duration::from_secs(300));
    let (tx, rx) = mpsc::sync_channel(64); // when full, readers wait and TCP holds relays back
    let mut links: HashMap<ConnId, Option<(Tls, TcpStream)>> = HashMap::new(); // None: connecting
    let (mut sent, mut response, mut out) = (0, Vec::new(), Vec::new());

    // The run loop: drain both outputs, then wait for one input, at most until the client's
    // next timeout, and give it to the client.
    loop {
        // 1. What the client has to send, per connection, through that connection's TLS.
        while let Some(conn) = client.poll_transmit(now(), &mut out) {
            if let Some(Some((tls, sock))) = links.get_mut(&conn) {
                tls.writer().write_all(&out)?; // without a buffer limit, rustls takes it all
                                               // A failed write fails the socket's reader too, which reports it closed.
                while tls.wants_write() && tls.write_tls(sock).is_ok() {}
            }
            out.clear();
        }
        // 2. Events: connections to open and close, and our stream's progress.
        while let Some(event) = client.poll_event() {
            match event {
                Event::Connect { conn, addr, .. } => {
                    links.insert(conn, None);
                    let tx = tx.clone();
                    std::thread::spawn(move || connect(conn, addr, tx));
                }
                Event::Disconnect { conn } => {
                    if let Some(Some((_, sock))) = links.remove(&conn) {
                        let _ = sock.shutdown(Shutdown::Both); // its reader thread ends
                    }
                }
                Event::Bootstrap { percent, what } => eprintln!("bootstrap {percent}%: {what}"),
                Event::StreamOpened { .. } | Event::StreamWritable { .. } => {
                    sent += client.write(stream, &request.as_bytes()[sent..], now())?;
                }
                Event::StreamReadable { .. } | Event::StreamClosed { .. } => {
                    let mut buf = [0u8; 16 * 1024];
                    // `None`: nothing more yet; `Some(0)`: the end; an error: why it ended.
                    while let Some(n) = client.read(stream, &mut buf, now())? {
                        if n == 0 {
                            let header = response.windows(4).position(|w| w == b"\r\n\r\n");
                            let body = &response[header.ok_or("no HTTP header")? + 4..];
                            return Ok(std::io::stdout().write_all(body)?);
                        }
                        response.extend_from_slice(&buf[..n]);
                    }
                }
                _ => {} // Persist: a real embedder stores it and passes it back in `State`
            }
        }
        // 3. One input, or the timeout.
        let wake = client.poll_timeout().unwrap_or(deadline).min(deadline);
        let (conn, raw) = match rx.recv_timeout(wake.saturating_duration_since(now())) {
            Ok(Input::Up(conn, sock)) if links.contains_key(&conn) => {
                let name = ServerName::IpAddress(sock.peer_addr()?.ip().into());
                let mut session = Tls::new(tls.clone(), name)?;
                session.set_buffer_limit(None);
                links.insert(conn, Some((session, sock)));
                (conn, Vec::new()) // the TLS handshake starts
            }
            Ok(Input::Up(_, sock)) => {
                let _ = sock.shutdown(Shutdown::Both); // the client gave it up meanwhile
                continue;
            }
            Ok(Input::Bytes(conn, raw)) => (conn, raw),
            Ok(Input::Closed(conn)) => {
                if links.remove(&conn).is_some() {
                    client.handle_closed(conn, now());
                }
                continue;
            }
            Err(_) if now() >= deadline => return Err("timed out".into()),
            Err(_) => {
                client.handle_timeout(now(), wall());
                continue;
            }
        };
        let Some(Some((tls, sock))) = links.get_mut(&conn) else {
            continue;
        };
        let handshaking = tls.is_handshaking();
        match decrypt(tls, sock, &raw) {
            Ok(plain) => {
                if handshaking && !tls.is_handshaking() {
                    // TLS is up; the relay's CERTS cell must certify this certificate's
                    // digest (tor-spec §4.2).
                    let cert = tls
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .ok_or("no cert")?;
                    client.handle_connected(conn, now(), Sha256::digest(cert).into());
                }
                client.handle_input(conn, now(), &plain);
            }
            Err(_) => {
                links.remove(&conn);
                client.handle_closed(conn, now());
            }
        }
    }
}

/// TLS records in, plaintext out, and what TLS has to send (handshake, alerts) written.
fn decrypt(tls: &mut Tls, sock: &mut TcpStream, mut raw: &[u8]) -> Res<Vec<u8>> {
    let mut plain = Vec::new();
    loop {
        if !raw.is_empty() {
            tls.read_tls(&mut raw)?; // (reading nothing would tell rustls the stream ended)
        }
        tls.process_new_packets()?;
        if let Err(e) = tls.reader().read_to_end(&mut plain) {
            if e.kind() != ErrorKind::WouldBlock {
                return Err(e.into()); // WouldBlock: every decrypted byte was read
            }
        }
        while tls.wants_write() {
            tls.write_tls(sock)?;
        }
        if raw.is_empty() {
            return Ok(plain);
        }
    }
}

/// On its own thread: TCP to a relay, then every read forwarded to the main loop.
fn connect(conn: ConnId, addr: SocketAddr, tx: mpsc::SyncSender<Input>) {
    let socks = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .and_then(|sock| Ok((sock.try_clone()?, sock)));
    if let Ok((mut reader, sock)) = socks {
        let (mut buf, mut open) = (vec![0u8; 64 * 1024], tx.send(Input::Up(conn, sock)).is_ok());
        while let (true, Ok(n @ 1..)) = (open, reader.read(&mut buf)) {
            open = tx.send(Input::Bytes(conn, buf[..n].to_vec())).is_ok();
        }
    }
    let _ = tx.send(Input::Closed(conn));
}

/// The configuration for C tor's `DirAuthority` lines (`NAME orport=PORT v3ident=HEX ...
/// IP:DIRPORT FINGERPRINT`). Authorities all on private addresses make a testing network,
/// as C tor's `TestingTorNetwork`: no fallbacks, relays may share a /16, and full
/// descriptors (microdescriptors cannot say that its exits accept only 127.0.0.0/8).
fn client_config(text: &str) -> Res<ClientConfig> {
    let mut auths = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let w: Vec<&str> = line
            .split_whitespace()
            .filter(|w| *w != "DirAuthority")
            .collect();
        let Some(at) = w.iter().position(|w| !w.contains('=') && w.contains(':')) else {
            continue;
        };
        let flag = |k: &str| w.iter().find_map(|f| f.strip_prefix(k)).unwrap_or_default();
        let id = |hex: &str| -> Res<_> { Ok(onion_dir::RsaIdentity(hex::FromHex::from_hex(hex)?)) };
        let ip: IpAddr = w[at].rsplit_once(':').ok_or("bad address")?.0.parse()?;
        auths.push(Authority {
            name: w[0].to_string(),
            rsa_id: id(&w[at + 1..].concat())?,
            v3ident: id(flag("v3ident="))?,
            or_addr: Some(SocketAddr::new(ip, flag("orport=").parse()?)),
        });
    }
    let private = |ip| matches!(ip, IpAddr::V4(ip) if ip.is_private() || ip.is_loopback());
    let testing = auths
        .iter()
        .all(|a| a.or_addr.is_some_and(|a| private(a.ip())));
    let (fallbacks, mode) = match testing {
        true => (Vec::new(), DirMode::Full),
        false => (c_tor_fallbacks(), DirMode::Micro),
    };
    let mut config = ClientConfig::new(DirConfig::new(auths, fallbacks, mode));
    config.path.enforce_distinct_subnets = !testing;
    Ok(config)
}

/// TLS as Tor uses it (tor-spec §2): a relay's certificate is self-signed, vouched for by no
/// authority, so any is accepted, but the handshake signature is still checked with its key;
/// the relay proves who it is inside the channel, by certifying the certificate's digest.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

type TlsResult<T> = Result<T, rustls::Error>;

#[rustfmt::skip]
impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(&self, _: &Der, _: &[Der], _: &ServerName, _: &[u8], _: UnixTime)
        -> TlsResult<ServerCertVerified> { Ok(ServerCertVerified::assertion()) }
    fn verify_tls12_signature(&self, m: &[u8], c: &Der, s: &Signed) -> TlsResult<Valid> {
        verify_tls12_signature(m, c, s, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &Der, s: &Signed) -> TlsResult<Valid> {
        verify_tls13_signature(m, c, s, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Arc::new(config)
}
