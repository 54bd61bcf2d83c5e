//! `onion handshake ADDR:PORT --rsa-id HEX [--ed-id BASE64] [--timeout SECS]`: open a
//! channel to one relay (TLS, then the link handshake of tor-spec §4) and print, as JSON, the
//! negotiated link version and the identities the relay proved with its CERTS cell.
//!
//! The relay must prove the given identities: a mismatch is an error (exit status 1).

use std::net::SocketAddr;
use std::time::Duration;

use onion_circuit::channel::PeerIds;
use onion_crypto::{Ed25519Identity, RsaIdentity};

use crate::net::link;

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
    let (mut link, _inbox, open) = link::open(addr, expected, timeout)?;
    let out = serde_json::json!({
        "addr": addr.to_string(),
        "link_version": open.link_version,
        "rsa_id": open.peer.rsa.map(|i| i.to_string()),
        "ed_id": open.peer.ed25519.map(|i| i.to_base64()),
        "rsa_verified": open.peer.rsa == Some(rsa),
        "ed_verified": open.peer.ed25519.is_some() && (ed.is_none() || open.peer.ed25519 == ed),
        "tls_cert_sha256": hex::encode(link.tls.cert_sha256()),
        "clock_skew_secs": open.clock_skew_secs,
    });
    link.tls.close();
    println!("{out}");
    Ok(())
}
