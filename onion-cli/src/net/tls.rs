//! TLS to a Tor relay's ORPort, with Tor's certificate rules (tor-spec §2 "Connections").
//!
//! A relay's TLS certificate is self-signed by a throw-away key and names a random hostname:
//! no certificate authority vouches for it, and none is expected to. The relay's identity is
//! proven inside the channel instead, by the CERTS cell, whose link certificate (ed25519 cert
//! type 5, or the RSA link certificate) commits to the SHA-256 digest of exactly this TLS
//! certificate (tor-spec §4.2). The rustls configuration with that rule is
//! [`client_config`] (from `onion_io::tls`, shared with onion-tokio): any certificate, the
//! handshake signature still verified; [`TlsLink::cert_sha256`] is the digest to hand to the
//! channel.
//!
//! Reading and writing are split so that the event loop (`net::event`) can read the socket on
//! its own thread while all protocol state stays in the loop's thread: [`TlsLink::feed`] takes
//! raw bytes from the socket and returns plaintext, [`TlsLink::send`] encrypts and writes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConnection;

pub use onion_io::tls::client_config;

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

/// An established TLS connection to a relay, with its plaintext side exposed as byte slices.
pub struct TlsLink {
    session: TlsSession,
    sock: TcpStream,
    cert_sha256: [u8; 32],
    /// Records on their way to the socket.
    wire: Vec<u8>,
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
        let cert_sha256 = onion_io::tls::cert_sha256(cert.as_ref());
        sock.set_read_timeout(None).map_err(io)?;
        Ok(TlsLink {
            session: TlsSession { addr, conn },
            sock,
            cert_sha256,
            wire: Vec::new(),
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
    pub fn feed(&mut self, raw: &[u8]) -> Result<Vec<u8>, TlsError> {
        let plain = self.session.feed(raw, &mut self.wire)?;
        // Key updates and alerts may need answers.
        self.flush()?;
        Ok(plain)
    }

    /// Encrypt `plain` and write it to the socket (blocking, bounded by `write_timeout`).
    pub fn send(&mut self, plain: &[u8], write_timeout: Duration) -> Result<(), TlsError> {
        self.sock
            .set_write_timeout(Some(write_timeout))
            .map_err(|e| TlsError::Io(self.session.addr, e))?;
        self.session.encrypt(plain, &mut self.wire)?;
        self.flush()
    }

    /// Write out the records waiting in `wire`.
    fn flush(&mut self) -> Result<(), TlsError> {
        let written = self.sock.write_all(&self.wire);
        self.wire.clear();
        match written {
            Ok(()) => Ok(()),
            Err(e) if is_timeout(&e) => Err(TlsError::Timeout(self.session.addr)),
            Err(e) => Err(TlsError::Io(self.session.addr, e)),
        }
    }

    /// Send a TLS close_notify and shut the socket down (best effort).
    pub fn close(&mut self) {
        self.session.close(&mut self.wire);
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
        f.debug_struct("TlsLink")
            .field("addr", &self.session.addr)
            .finish()
    }
}

impl TlsLink {
    /// Split into the session (kept by the loop) and the socket (read and written by threads
    /// of its own), with the certificate digest.
    pub fn into_session(self) -> (TlsSession, TcpStream, [u8; 32]) {
        (self.session, self.sock, self.cert_sha256)
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
