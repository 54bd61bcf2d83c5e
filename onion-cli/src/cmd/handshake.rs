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

const USAGE: &str =
    "usage: onion handshake ADDR:PORT --rsa-id HEX [--ed-id BASE64] [--timeout SECS]";

/// Run the subcommand.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut addr = None;
    let mut rsa = None;
    let mut ed = None;
    let mut timeout = Duration::from_secs(20);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value; {USAGE}"))
        };
        match a.as_str() {
            "--rsa-id" => {
                let v = value()?;
                rsa = Some(RsaIdentity::from_hex(v).map_err(|e| format!("--rsa-id {v:?}: {e}"))?)
            }
            "--ed-id" => {
                let v = value()?;
                ed = Some(
                    Ed25519Identity::from_base64(v).map_err(|e| format!("--ed-id {v:?}: {e}"))?,
                )
            }
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout {v:?}: not a number of seconds"))?;
                timeout = Duration::from_secs(secs.clamp(1, 600));
            }
            s if addr.is_none() && !s.starts_with("--") => {
                addr = Some(
                    s.parse::<SocketAddr>()
                        .map_err(|_| format!("bad address {s:?} (want IP:PORT)"))?,
                )
            }
            other => return Err(format!("unexpected argument {other:?}; {USAGE}")),
        }
    }
    let addr = addr.ok_or(USAGE)?;
    let rsa = rsa.ok_or_else(|| format!("--rsa-id is required; {USAGE}"))?;
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
