//! The smallest embedding of [`onion_client::Client`]: `fetch [--authorities FILE] URL` prints
//! the body of an `http://` URL fetched through Tor (the public network, or the one whose C tor
//! `DirAuthority` lines FILE holds). The client is sans-IO; this program owns the sockets: a
//! thread per relay connection connects, runs TLS and reads, and the main thread runs the client.

use std::collections::HashMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use onion_client::dir::{authorities, c_tor_fallbacks, DirConfig, DirMode};
use onion_client::{Client, ClientConfig, ConnId, Event, Instant, Isolation, State, Timestamp};
use rustls::client::danger::{HandshakeSignatureValid as Valid, ServerCertVerified};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer as Der, ServerName, UnixTime};
use rustls::{ClientConfig as TlsConfig, ClientConnection, Error as TlsError, SignatureScheme};
use sha2::{Digest, Sha256};

type Res<T> = Result<T, Box<dyn Error>>;
type Link = (Arc<Mutex<ClientConnection>>, TcpStream);

/// What a relay connection's thread tells the main loop (a `Link`: its TLS session and socket).
enum Input {
    Up(ConnId, Link, [u8; 32]), // TLS is up; the SHA-256 of the relay's certificate
    Bytes(ConnId, Vec<u8>),     // plaintext from the relay
    Closed(ConnId),             // the connect failed, or the connection ended
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (auths, url) = match &args[..] {
        [url] => (authorities::PUBLIC_AUTHORITIES.to_string(), url),
        [flag, file, url] if flag == "--authorities" => (std::fs::read_to_string(file)?, url),
        _ => return Err("usage: fetch [--authorities FILE] http://HOST[:PORT]/PATH".into()),
    };
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "80"));
    let request = format!("GET /{path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n");

    let start = std::time::Instant::now(); // the client's monotonic clock counts from here
    let now = || Instant::from_duration(start.elapsed());
    let wall = || Timestamp::from(SystemTime::now());
    let until = |t: Instant| t.saturating_duration_since(now());
    let (config, rng) = (client_config(&auths)?, &mut rand_core::OsRng);
    let mut client = Client::new(config, State::default(), now(), wall(), rng)?;
    // It waits for the directory and a circuit, within a deadline (so a dead network ends us).
    let stream = client.connect(host, port.parse()?, Isolation::NONE, now())?;
    let (tx, rx) = mpsc::sync_channel(64); // when full, readers wait and TCP holds relays back
    let tls = tls_config();
    let mut links: HashMap<ConnId, Option<Link>> = HashMap::new(); // None: connecting
    let (mut sent, mut response, mut out, mut buf) = (0, Vec::new(), Vec::new(), [0; 16384]);
    // The run loop: drain both outputs, then wait for one input, at most until the client's
    // next timeout, and give it to the client.
    loop {
        // 1. What the client sends, per connection, encrypted and written (a failed write
        // fails the reads too, and the connection's thread reports it closed).
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
                    let link = links.remove(&conn).flatten();
                    link.map(|(_, sock)| sock.shutdown(Shutdown::Both)); // its thread ends
                }
                Event::Bootstrap { percent, what } => eprintln!("bootstrap {percent}%: {what}"),
                Event::StreamOpened { .. } | Event::StreamWritable { .. } => {
                    sent += client.write(stream, &request.as_bytes()[sent..], now())?;
                }
                Event::StreamReadable { .. } | Event::StreamClosed { .. } => {
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
        match rx.recv_timeout(client.poll_timeout().map_or(Duration::MAX, until)) {
            Ok(Input::Up(conn, link, cert_sha256)) if links.contains_key(&conn) => {
                links.insert(conn, Some(link));
                // The relay's CERTS cell must certify this digest (tor-spec §4.2).
                client.handle_connected(conn, now(), cert_sha256);
            }
            Ok(Input::Up(_, (_, sock), _)) => drop(sock.shutdown(Shutdown::Both)), // given up
            Ok(Input::Bytes(conn, plain)) => client.handle_input(conn, now(), &plain),
            Ok(Input::Closed(conn)) => {
                links.remove(&conn);
                client.handle_closed(conn, now()); // (ignored if the client forgot it)
            }
            Err(_) => client.handle_timeout(now(), wall()),
        }
    }
}

/// A relay connection's thread: TCP and TLS, then every read decrypted and forwarded.
fn relay(conn: ConnId, addr: SocketAddr, tls: Arc<TlsConfig>, tx: mpsc::SyncSender<Input>) {
    let _ = (|| -> Res<()> {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        let mut session = ClientConnection::new(tls, ServerName::IpAddress(addr.ip().into()))?;
        session.complete_io(&mut sock)?; // the handshake (the client's connect timeout bounds it)
        session.set_buffer_limit(None);
        let cert = session.peer_certificates().and_then(|c| c.first());
        let digest = Sha256::digest(cert.ok_or("no certificate")?).into();
        let session = Arc::new(Mutex::new(session));
        let link = (session.clone(), sock.try_clone()?);
        tx.send(Input::Up(conn, link, digest))?;
        let (mut buf, mut plain) = (vec![0u8; 64 * 1024], Vec::new());
        while let n @ 1.. = sock.read(&mut buf)? {
            let (mut raw, mut tls) = (&buf[..n], session.lock().map_err(|_| "poisoned")?);
            while !raw.is_empty() {
                tls.read_tls(&mut raw)?;
                tls.process_new_packets()?;
                let _ = tls.reader().read_to_end(&mut plain); // until WouldBlock: all read
            }
            drop(tls); // before waiting for room in the channel, or the loop could not write
            tx.send(Input::Bytes(conn, std::mem::take(&mut plain)))?;
        }
        Ok(())
    })();
    let _ = tx.send(Input::Closed(conn));
}

/// Authorities all on loopback make a testing network (C tor's `TestingTorNetwork`): no
/// fallbacks, relays share a /16, full descriptors (exits accept only 127.0.0.0/8).
fn client_config(text: &str) -> Res<ClientConfig> {
    let list = authorities::parse_list(text)?;
    let testing = list.iter().all(|a| a.dir_addr.ip().is_loopback());
    let auths = authorities::v3_authorities(&list);
    let (fallbacks, mode) = match testing {
        true => (vec![], DirMode::Full),
        false => (c_tor_fallbacks(), DirMode::Micro),
    };
    let mut config = ClientConfig::new(DirConfig::new(auths, fallbacks, mode));
    config.path.enforce_distinct_subnets = !testing;
    Ok(config)
}

/// TLS as Tor uses it (tor-spec §2): any certificate (relays' are self-signed), the handshake
/// signature still checked; the relay proves its identity in the channel, certifying the digest.
#[derive(Debug)]
struct AnyCert(WebPkiSupportedAlgorithms);

type Signed = rustls::DigitallySignedStruct;

#[rustfmt::skip]
impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(&self, _: &Der, _: &[Der], _: &ServerName, _: &[u8], _: UnixTime)
        -> Result<ServerCertVerified, TlsError> { Ok(ServerCertVerified::assertion()) }
    fn verify_tls12_signature(&self, m: &[u8], c: &Der, s: &Signed) -> Result<Valid, TlsError> {
        verify_tls12_signature(m, c, s, &self.0)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &Der, s: &Signed) -> Result<Valid, TlsError> {
        verify_tls13_signature(m, c, s, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> { self.0.supported_schemes() }
}

fn tls_config() -> Arc<TlsConfig> {
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let builder = TlsConfig::builder().dangerous(); // with ring, the only provider built in
    let builder = builder.with_custom_certificate_verifier(Arc::new(AnyCert(algorithms)));
    Arc::new(builder.with_no_client_auth())
}
