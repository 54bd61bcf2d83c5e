//! TLS to a Tor relay's ORPort, with Tor's certificate rules (tor-spec §2 "Connections").
//!
//! A relay's TLS certificate is self-signed by a throw-away key and names a random hostname:
//! no certificate authority vouches for it, and none is expected to. The relay's identity is
//! proven inside the channel instead, by the CERTS cell, whose link certificate (ed25519 cert
//! type 5, or the RSA link certificate) commits to the SHA-256 digest of exactly this TLS
//! certificate (tor-spec §4.2). So the verifier here:
//!
//! - accepts any certificate chain (no CA, no name, no validity check), but
//! - still verifies the TLS handshake signature with the certificate's key, so that whoever
//!   answered really holds that key, and
//! - hands the certificate's SHA-256 digest to the caller, who passes it to the channel.
//!
//! C tor 0.4.9 negotiates TLS 1.3 with a 2048-bit RSA link key (RSA-PSS signatures), which
//! ring verifies; no separate RSA code is needed.
//!
//! Reading and writing are split so that the event loop (`net::event`) can read the socket on
//! its own thread while all protocol state stays in the loop's thread: [`TlsLink::feed`] takes
//! raw bytes from the socket and returns plaintext, [`TlsLink::send`] encrypts and writes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Why a TLS connection to a relay failed.
#[derive(Debug)]
pub enum TlsError {
    /// TCP connect, read or write failed (the address and the OS error).
    Io(SocketAddr, io::Error),
    /// The TLS layer refused the peer (bad handshake signature, protocol error).
    Tls(SocketAddr, rustls::Error),
    /// The handshake did not finish before the deadline.
    Timeout(SocketAddr),
    /// The handshake finished without a peer certificate (Tor relays always send one).
    NoCertificate(SocketAddr),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Io(a, e) => write!(f, "{a}: {e}"),
            TlsError::Tls(a, e) => write!(f, "{a}: TLS: {e}"),
            TlsError::Timeout(a) => write!(f, "{a}: TLS handshake timed out"),
            TlsError::NoCertificate(a) => write!(f, "{a}: relay sent no TLS certificate"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Accepts Tor's self-signed link certificates; still checks handshake signatures.
#[derive(Debug)]
struct TorLinkVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for TorLinkVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // tor-spec §2: the certificate proves nothing by itself; the CERTS cell binds its
        // digest to the relay's identity keys, and the channel checks that binding.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls client configuration for relay connections (ring provider, TLS 1.2 and 1.3).
pub fn client_config() -> Arc<ClientConfig> {
    let provider = rustls::crypto::ring::default_provider();
    let verifier = TorLinkVerifier {
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        });
    match config {
        Ok(c) => Arc::new(c),
        // The ring provider always supports the default versions; keep a plain fallback
        // rather than a panic if that ever changes.
        Err(_) => Arc::new(
            ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(TorLinkVerifier {
                    algorithms: rustls::crypto::ring::default_provider()
                        .signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        ),
    }
}

/// An established TLS connection to a relay, with its plaintext side exposed as byte slices.
pub struct TlsLink {
    addr: SocketAddr,
    conn: ClientConnection,
    sock: TcpStream,
    cert_sha256: [u8; 32],
}

impl TlsLink {
    /// Connect to `addr` and complete the TLS handshake within `timeout`.
    ///
    /// No SNI is sent (the server name is the IP address): relays ignore it.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<TlsLink, TlsError> {
        let deadline = Instant::now() + timeout;
        let io = |e| TlsError::Io(addr, e);
        let mut sock = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
        sock.set_nodelay(true).map_err(io)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let mut conn =
            ClientConnection::new(client_config(), name).map_err(|e| TlsError::Tls(addr, e))?;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TlsError::Timeout(addr));
            }
            sock.set_read_timeout(Some(left)).map_err(io)?;
            sock.set_write_timeout(Some(left)).map_err(io)?;
            match conn.complete_io(&mut sock) {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(TlsError::Timeout(addr)),
                Err(e) => {
                    return Err(match e.into_inner() {
                        Some(inner) => match inner.downcast::<rustls::Error>() {
                            Ok(tls) => TlsError::Tls(addr, *tls),
                            Err(other) => TlsError::Io(addr, io::Error::other(other)),
                        },
                        None => TlsError::Io(addr, io::ErrorKind::UnexpectedEof.into()),
                    })
                }
            }
        }
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or(TlsError::NoCertificate(addr))?;
        let cert_sha256 = Sha256::digest(cert.as_ref()).into();
        sock.set_read_timeout(None).map_err(io)?;
        Ok(TlsLink {
            addr,
            conn,
            sock,
            cert_sha256,
        })
    }

    /// SHA-256 of the relay's TLS certificate (DER): what the CERTS cell must certify.
    pub fn cert_sha256(&self) -> [u8; 32] {
        self.cert_sha256
    }

    /// A second handle on the socket, for a reader thread (see `net::event`).
    pub fn reader(&self) -> io::Result<TcpStream> {
        self.sock.try_clone()
    }

    /// Feed raw bytes read from the socket; returns the plaintext they carried (maybe none).
    ///
    /// Also returns plaintext the handshake already buffered, so call it once with `&[]`
    /// right after [`TlsLink::connect`].
    pub fn feed(&mut self, mut raw: &[u8]) -> Result<Vec<u8>, TlsError> {
        let mut plain = Vec::new();
        loop {
            if !raw.is_empty() {
                self.conn
                    .read_tls(&mut raw)
                    .map_err(|e| TlsError::Io(self.addr, e))?;
            }
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| TlsError::Tls(self.addr, e))?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                self.conn
                    .reader()
                    .read_exact(&mut plain[start..])
                    .map_err(|e| TlsError::Io(self.addr, e))?;
            }
            // Key updates and alerts may need answers.
            self.flush()?;
            if raw.is_empty() {
                return Ok(plain);
            }
        }
    }

    /// Encrypt `plain` and write it to the socket (blocking, bounded by `write_timeout`).
    pub fn send(&mut self, plain: &[u8], write_timeout: Duration) -> Result<(), TlsError> {
        self.sock
            .set_write_timeout(Some(write_timeout))
            .map_err(|e| TlsError::Io(self.addr, e))?;
        // rustls buffers at most 64 KiB of plaintext: write it out whenever that is full.
        let mut rest = plain;
        while !rest.is_empty() {
            let n = self
                .conn
                .writer()
                .write(rest)
                .map_err(|e| TlsError::Io(self.addr, e))?;
            if n == 0 {
                self.flush()?;
            }
            rest = &rest[n..];
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<(), TlsError> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(TlsError::Timeout(self.addr)),
                Err(e) => return Err(TlsError::Io(self.addr, e)),
            }
        }
        Ok(())
    }

    /// Send a TLS close_notify and shut the socket down (best effort).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// The loop's half of an established link ([`TlsLink::into_session`]): the rustls session
/// only, with no socket. Raw bytes read from the socket (by another thread) go in through
/// [`TlsSession::feed`]; records to write come out into a buffer, which another thread writes
/// (`net::pipe`), so nothing here ever blocks on the network.
pub struct TlsSession {
    addr: SocketAddr,
    conn: ClientConnection,
}

impl std::fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLink").field("addr", &self.addr).finish()
    }
}

impl TlsLink {
    /// Split into the session (kept by the loop) and the socket (read and written by threads
    /// of its own), with the certificate digest.
    pub fn into_session(self) -> (TlsSession, TcpStream, [u8; 32]) {
        let session = TlsSession {
            addr: self.addr,
            conn: self.conn,
        };
        (session, self.sock, self.cert_sha256)
    }
}

impl TlsSession {
    /// Feed raw bytes read from the socket (call it once with `&[]` right after the split:
    /// the handshake may have buffered plaintext); returns the plaintext they carried.
    /// Records the session must answer with (alerts, key updates) are appended to `wire`.
    pub fn feed(&mut self, mut raw: &[u8], wire: &mut Vec<u8>) -> Result<Vec<u8>, TlsError> {
        let mut plain = Vec::new();
        loop {
            if !raw.is_empty() {
                self.conn
                    .read_tls(&mut raw)
                    .map_err(|e| TlsError::Io(self.addr, e))?;
            }
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| TlsError::Tls(self.addr, e))?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                self.conn
                    .reader()
                    .read_exact(&mut plain[start..])
                    .map_err(|e| TlsError::Io(self.addr, e))?;
            }
            self.drain(wire)?;
            if raw.is_empty() {
                return Ok(plain);
            }
        }
    }

    /// Encrypt `plain`, appending its records to `wire`.
    pub fn encrypt(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), TlsError> {
        let mut rest = plain;
        while !rest.is_empty() {
            let n = self
                .conn
                .writer()
                .write(rest)
                .map_err(|e| TlsError::Io(self.addr, e))?;
            // rustls holds a bounded amount of plaintext: move it out as records when full.
            self.drain(wire)?;
            rest = &rest[n..];
        }
        self.drain(wire)
    }

    /// A TLS close_notify, appended to `wire`.
    pub fn close(&mut self, wire: &mut Vec<u8>) {
        self.conn.send_close_notify();
        let _ = self.drain(wire);
    }

    fn drain(&mut self, wire: &mut Vec<u8>) -> Result<(), TlsError> {
        while self.conn.wants_write() {
            self.conn
                .write_tls(wire)
                .map_err(|e| TlsError::Io(self.addr, e))?;
        }
        Ok(())
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn verifier_offers_rsa_pss_for_tor_link_keys() {
        let v = TorLinkVerifier {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        };
        let schemes = v.supported_verify_schemes();
        assert!(schemes.contains(&SignatureScheme::RSA_PSS_SHA256));
        assert!(schemes.contains(&SignatureScheme::RSA_PKCS1_SHA256));
    }

    #[test]
    fn connect_to_a_silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = Instant::now();
        let r = TlsLink::connect(addr, Duration::from_millis(300));
        assert!(
            matches!(r, Err(TlsError::Timeout(a)) if a == addr),
            "{:?}",
            r.err()
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(l);
    }

    #[test]
    fn connect_to_a_non_tls_server_is_a_tls_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        });
        let r = TlsLink::connect(addr, Duration::from_secs(5));
        assert!(
            matches!(r, Err(TlsError::Tls(..)) | Err(TlsError::Io(..))),
            "{:?}",
            r.err()
        );
        h.join().unwrap();
    }

    #[test]
    fn connect_refused_is_an_io_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let r = TlsLink::connect(addr, Duration::from_secs(2));
        assert!(matches!(r, Err(TlsError::Io(..))), "{:?}", r.err());
    }
}
