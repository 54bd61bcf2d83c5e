//! `onion handshake ADDR:PORT --rsa-id HEX [--ed-id BASE64] [--timeout SECS]`: open a
//! channel to one relay (TLS, then the link handshake of tor-spec §4) and print, as JSON, the
//! negotiated link version and the identities the relay proved with its CERTS cell.
//!
//! The relay must prove the given identities: a mismatch is an error (exit status 1).

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use onion_circuit::channel::{ChanConfig, ChanEvent, ChanOpen, Channel, PeerIds};
use onion_crypto::{Ed25519Identity, RsaIdentity};

use crate::net::tls::TlsLink;
use crate::net::Clock;

/// `onion handshake` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    /// The relay's ORPort.
    #[arg(value_name = "ADDR:PORT", value_parser = parse_addr)]
    addr: SocketAddr,
    /// The RSA identity the relay must prove (40 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_rsa)]
    rsa_id: RsaIdentity,
    /// The ed25519 identity the relay must prove (base64).
    #[arg(long, value_name = "BASE64", value_parser = parse_ed)]
    ed_id: Option<Ed25519Identity>,
    /// Time limit in seconds (1-600).
    #[arg(long, value_name = "SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("bad address {s:?} (want IP:PORT)"))
}

fn parse_rsa(s: &str) -> Result<RsaIdentity, String> {
    RsaIdentity::from_hex(s).map_err(|e| format!("--rsa-id {s:?}: {e}"))
}

fn parse_ed(s: &str) -> Result<Ed25519Identity, String> {
    Ed25519Identity::from_base64(s).map_err(|e| format!("--ed-id {s:?}: {e}"))
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let (addr, rsa, ed) = (args.addr, args.rsa_id, args.ed_id);
    let timeout = Duration::from_secs(args.timeout);
    let expected = PeerIds {
        rsa: Some(rsa),
        ed25519: ed,
    };
    let (mut tls, open) = open_channel(addr, expected, timeout)?;
    let out = serde_json::json!({
        "addr": addr.to_string(),
        "link_version": open.link_version,
        "rsa_id": open.peer.rsa.map(|i| i.to_string()),
        "ed_id": open.peer.ed25519.map(|i| i.to_base64()),
        "rsa_verified": open.peer.rsa == Some(rsa),
        "ed_verified": open.peer.ed25519.is_some() && (ed.is_none() || open.peer.ed25519 == ed),
        "tls_cert_sha256": hex::encode(tls.cert_sha256()),
        "clock_skew_secs": open.clock_skew_secs,
    });
    tls.close();
    println!("{out}");
    Ok(())
}

/// TLS to `addr`, then the link handshake (tor-spec §4: VERSIONS, CERTS, AUTH_CHALLENGE,
/// NETINFO) as the initiator expecting `expected`, all within `timeout`. One relay and
/// nothing else to do, so this blocks on the socket: the channel's own timers and the overall
/// deadline bound every read.
fn open_channel(
    addr: SocketAddr,
    expected: PeerIds,
    timeout: Duration,
) -> Result<(TlsLink, ChanOpen), String> {
    let clock = Clock::new();
    let deadline = clock.now() + timeout;
    let mut tls = TlsLink::connect(addr, timeout).map_err(|e| e.to_string())?;
    let mut config = ChanConfig::default();
    config.handshake_timeout = timeout;
    config.peer_addr = Some(addr.ip());
    let cert = tls.cert_sha256();
    let mut chan = Channel::initiator(config, expected, Some(cert), clock.now(), SystemTime::now());
    let mut sock = tls.reader().map_err(|e| format!("{addr}: {e}"))?;
    let mut plain = tls.feed(&[]).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !plain.is_empty() {
            // A protocol error also arrives as ChanEvent::Closed.
            let used = chan
                .handle_input(clock.now(), &plain)
                .unwrap_or(plain.len());
            plain.drain(..used.min(plain.len()));
        }
        while let Some(ev) = chan.poll_event() {
            match ev {
                ChanEvent::Open(open) => return Ok((tls, open)),
                ChanEvent::Closed(e) => return Err(format!("{addr}: channel: {e}")),
                _ => {}
            }
        }
        while chan.poll_transmit(&mut out).is_some() {
            let sent = tls.send(&out, timeout);
            out.clear();
            sent.map_err(|e| e.to_string())?;
        }
        let now = clock.now();
        if now >= deadline {
            return Err(format!(
                "{addr}: link handshake timed out after {timeout:?}"
            ));
        }
        let wake = chan.poll_timeout().map_or(deadline, |t| t.min(deadline));
        let wait = clock.until(wake).max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait))
            .map_err(|e| format!("{addr}: {e}"))?;
        match sock.read(&mut buf) {
            Ok(0) => {
                chan.handle_connection_closed();
                if chan.poll_event().is_none() {
                    return Err(format!("{addr}: connection closed during the handshake"));
                }
            }
            Ok(n) => plain.extend(tls.feed(&buf[..n]).map_err(|e| e.to_string())?),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                chan.handle_timeout(clock.now())
            }
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
}
