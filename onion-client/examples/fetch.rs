//! The smallest embedding of [`onion_client::Client`]: fetch an `http://` URL through Tor and
//! print the body, blocking, over `std::net` and rustls.
//!
//! ```text
//! cargo run -p onion-client --example fetch -- [--authorities FILE] http://HOST[:PORT]/PATH
//! ```
//!
//! `FILE` holds C tor's `DirAuthority` lines (as for `onion get`); by default the public
//! network's authorities and fallback directories are used. The client is sans-IO: it asks for
//! connections and hands out bytes to send; this program owns the sockets. A thread per relay
//! connection connects, runs TLS and reads; the main thread owns the client.

use std::collections::HashMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use onion_client::dir::{c_tor_fallbacks, Authority, DirConfig, DirMode};
use onion_client::{Client, ClientConfig, ConnId, Event, Instant, Isolation, State, Timestamp};
use rustls::client::danger::{HandshakeSignatureValid as Valid, ServerCertVerified};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer as Der, ServerName, UnixTime};
use rustls::{ClientConfig as TlsConfig, ClientConnection, SignatureScheme};
use sha2::{Digest, Sha256};

/// The public network's authorities, as the `onion` command ships them.
const PUBLIC: &str = include_str!("../../onion-cli/src/net/public-authorities.txt");
type Res<T> = Result<T, Box<dyn Error>>;
/// A relay connection: its TLS session (shared with its thread) and its socket.
type Link = (Arc<Mutex<ClientConnection>>, TcpStream);

/// What the connections' threads tell the main loop.
enum Input {
    Up(ConnId, Link, [u8; 32]), // TLS is up; the SHA-256 of the relay's certificate
    Bytes(ConnId, Vec<u8>),     // plaintext from the relay
    Closed(ConnId),             // the connect failed, or the connection ended
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
    let path = path.trim_start_matches('/');
    let request = format!("GET /{path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n");

    let start = std::time::Instant::now(); // the client's monotonic clock counts from here
    let now = || Instant::from_duration(start.elapsed());
    let wall = || Timestamp::from(SystemTime::now());
    let (config, rng) = (client_config(&auths)?, &mut rand_core::OsRng);
    let mut client = Client::new(config, State::default(), now(), wall(), rng)?;
    // The stream waits for the directory, then for a circuit, then opens.
    let stream = client.connect(host, port.parse()?, Isolation::NONE, now())?;
    let (tls, deadline) = (tls_config(), now() + Duration::from_secs(300));
    let (tx, rx) = sync_channel(64); // when full, readers wait and TCP holds relays back
    let mut links: HashMap<ConnId, Option<Link>> = HashMap::new(); // None: connecting
    let (mut sent, mut response, mut out) = (0, Vec::new(), Vec::new());

    // The run loop: drain both outputs, then wait for one input, at most until the client's
    // next timeout, and give it to the client.
    loop {
        // 1. What the client has to send, per connection, encrypted and written. (A failed
        // write fails the socket's reads too, and its thread reports it closed.)
        while let Some(conn) = client.poll_transmit(now(), &mut out) {
            if let Some(Some((session, sock))) = links.get_mut(&conn) {
                let mut tls = session.lock().map_err(|_| "poisoned")?;
                tls.writer().write_all(&out)?; // without a buffer limit, rustls takes it all
                while tls.wants_write() && tls.write_tls(sock).is_ok() {}
            }
            out.clear();
        }
        // 2. Events: connections to open and close, and our stream's progress.
        while let Some(event) = client.poll_event() {
            match event {
                Event::Connect { conn, addr, .. } => {
                    links.insert(conn, None);
                    let (tls, tx) = (tls.clone(), tx.clone());
                    std::thread::spawn(move || relay(conn, addr, tls, tx));
                }
                Event::Disconnect { conn } => {
                    if let Some(Some((_, sock))) = links.remove(&conn) {
                        let _ = sock.shutdown(Shutdown::Both); // its thread ends
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
        match rx.recv_timeout(wake.saturating_duration_since(now())) {
            Ok(Input::Up(conn, link, cert_sha256)) => match links.get_mut(&conn) {
                Some(slot) => {
                    *slot = Some(link);
                    // The relay's CERTS cell must certify this digest (tor-spec §4.2).
                    client.handle_connected(conn, now(), cert_sha256);
                }
                None => drop(link.1.shutdown(Shutdown::Both)), // the client gave it up
            },
            Ok(Input::Bytes(conn, plain)) => client.handle_input(conn, now(), &plain),
            Ok(Input::Closed(conn)) => {
                links.remove(&conn);
                client.handle_closed(conn, now()); // (ignored if the client forgot it)
            }
            Err(_) if now() >= deadline => return Err("timed out".into()),
            Err(_) => client.handle_timeout(now(), wall()),
        }
    }
}

/// A relay connection's thread: TCP and TLS, then every read decrypted and forwarded.
fn relay(conn: ConnId, addr: SocketAddr, tls: Arc<TlsConfig>, tx: SyncSender<Input>) {
    let _ = (|| -> Res<()> {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        let mut session = ClientConnection::new(tls, ServerName::IpAddress(addr.ip().into()))?;
        while session.is_handshaking() {
            session.complete_io(&mut sock)?; // the client's connect timeout bounds this
        }
        session.set_buffer_limit(None);
        let cert = session.peer_certificates().and_then(|c| c.first());
        let digest = Sha256::digest(cert.ok_or("no certificate")?).into();
        let session = Arc::new(Mutex::new(session));
        let link = (session.clone(), sock.try_clone()?);
        tx.send(Input::Up(conn, link, digest))?;
        let (mut buf, mut plain) = (vec![0u8; 64 * 1024], Vec::new());
        loop {
            let mut raw = match sock.read(&mut buf)? {
                0 => return Ok(()),
                n => &buf[..n],
            };
            let mut tls = session.lock().map_err(|_| "poisoned")?;
            while !raw.is_empty() {
                tls.read_tls(&mut raw)?;
                tls.process_new_packets()?;
                let _ = tls.reader().read_to_end(&mut plain); // until WouldBlock: all read
            }
            drop(tls); // before waiting for room in the channel, or the loop could not write
            tx.send(Input::Bytes(conn, std::mem::take(&mut plain)))?;
        }
    })();
    let _ = tx.send(Input::Closed(conn));
}

/// The configuration for C tor's `DirAuthority` lines (`NAME orport=PORT v3ident=HEX ...
/// IP:DIRPORT FINGERPRINT`). Authorities all on loopback make a testing network, as C tor's
/// `TestingTorNetwork`: no fallbacks, relays may share a /16, and full descriptors
/// (microdescriptors cannot say that its exits accept only 127.0.0.0/8).
fn client_config(text: &str) -> Res<ClientConfig> {
    let mut auths = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let w: Vec<&str> = line
            .trim_start_matches("DirAuthority")
            .split_whitespace()
            .collect();
        let Some(at) = w.iter().position(|w| !w.contains('=') && w.contains(':')) else {
            continue;
        };
        let flag = |k: &str| w.iter().find_map(|f| f.strip_prefix(k)).unwrap_or_default();
        let id = |hex: &str| hex::FromHex::from_hex(hex).map(onion_dir::RsaIdentity);
        let ip: IpAddr = w[at].rsplit_once(':').ok_or("bad address")?.0.parse()?;
        auths.push(Authority {
            name: w[0].to_string(),
            rsa_id: id(&w[at + 1..].concat())?,
            v3ident: id(flag("v3ident="))?,
            or_addr: Some(SocketAddr::new(ip, flag("orport=").parse()?)),
        });
    }
    let testing = auths
        .iter()
        .all(|a| a.or_addr.is_some_and(|a| a.ip().is_loopback()));
    let fallbacks = if testing { vec![] } else { c_tor_fallbacks() };
    let mode = if testing {
        DirMode::Full
    } else {
        DirMode::Micro
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
type Signed = rustls::DigitallySignedStruct;

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

fn tls_config() -> Arc<TlsConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = TlsConfig::builder_with_provider(provider.clone());
    let builder = builder
        .with_safe_default_protocol_versions()
        .expect("ring has TLS 1.2, 1.3");
    let verifier = Arc::new(AnyCert(provider));
    Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}
