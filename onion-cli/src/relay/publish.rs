//! Building the relay's server descriptor and extra-info document (dir-spec §2.1.1,
//! §2.1.2, encoded and signed by `onion_dir::relaydesc`) and uploading them by HTTP POST
//! to every authority's DirPort (dir-spec §2.1 "Uploading server descriptors"), one thread
//! per authority so that a slow authority delays nobody.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use onion_crypto::relay_keyset::{OnionKeyParams, RelayKeySet};
use onion_dir::http::{descriptor_upload, parse_upload_response, UploadOutcome, MAX_HEAD_BYTES};
use onion_dir::policy::{ExitPolicy, PolicySummary};
use onion_dir::relaydesc::{ExtraInfo, ServerDescriptor, ONION_RELAY_PROTOCOLS};
use onion_dir::routerdesc::Bandwidth;
use onion_dir::{Protocols, Timestamp};
use rand_core::CryptoRngCore;

use crate::net::authority::DirAuthority;
use onion_client::text::escape;

/// What the operator said about the relay (command line), fixed for the run.
#[derive(Debug, Clone)]
pub struct DescriptorTemplate {
    /// Nickname.
    pub nickname: String,
    /// The ORPort address.
    pub address: std::net::Ipv4Addr,
    /// The ORPort.
    pub or_port: u16,
    /// Contact line.
    pub contact: Option<String>,
    /// Exit policy (empty: `reject *:*`).
    pub exit_policy: ExitPolicy,
    /// Bandwidth rate and burst, bytes per second.
    pub rate: u64,
    /// The relay answers BEGIN_DIR (tor-spec §6.2.1): the descriptor says
    /// `tunnelled-dir-server` (dir-spec §2.1.1), so authorities can vote V2Dir. Never set
    /// for a relay that answers BEGIN_DIR with END NOTDIRECTORY.
    pub tunnelled_dir_server: bool,
}

/// The two signed documents of one publication.
#[derive(Debug, Clone)]
pub struct Documents {
    /// The server descriptor.
    pub descriptor: String,
    /// The extra-info document.
    pub extra_info: String,
}

/// Builds and signs the extra-info document and the descriptor naming it.
pub fn build(
    t: &DescriptorTemplate,
    keys: &RelayKeySet,
    params: &OnionKeyParams,
    published: Timestamp,
    uptime: u64,
    observed: u64,
    rng: &mut impl CryptoRngCore,
) -> Result<Documents, String> {
    let extra = ExtraInfo {
        nickname: t.nickname.clone(),
        published,
    }
    .encode(keys, rng)
    .map_err(|e| format!("extra-info: {e}"))?;
    let protocols = Protocols::parse(ONION_RELAY_PROTOCOLS)
        .ok_or("the relay's protocol list does not parse")?;
    let desc = ServerDescriptor {
        nickname: t.nickname.clone(),
        address: t.address,
        or_port: t.or_port,
        dir_port: 0,
        ipv6: None,
        platform: format!(
            "onion {} on {}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS
        ),
        protocols,
        published,
        uptime,
        bandwidth: Bandwidth {
            average: t.rate,
            burst: t.rate,
            observed: observed.min(t.rate),
        },
        extra_info: Some(extra.digests),
        family: Vec::new(),
        hibernating: false,
        hidden_service_dir: true,
        contact: t.contact.clone(),
        exit_policy: t.exit_policy.clone(),
        ipv6_policy: PolicySummary::reject_all(),
        tunnelled_dir_server: t.tunnelled_dir_server,
        caches_extra_info: false,
    }
    .encode(keys, params, rng)
    .map_err(|e| format!("server descriptor: {e}"))?;
    Ok(Documents {
        descriptor: desc.text,
        extra_info: extra.text,
    })
}

/// Uploads `docs` to every authority, each in its own thread, logging each answer on
/// stderr (the authority's text escaped).
pub fn upload_all(authorities: &[DirAuthority], docs: &Documents, reason: &'static str) {
    for a in authorities.iter().filter(|a| !a.bridge) {
        let addr = SocketAddr::V4(a.dir_addr);
        let name = a.name();
        let docs = docs.clone();
        std::thread::spawn(move || {
            let line = match upload_one(addr, &docs, reason) {
                Ok(UploadOutcome::Accepted { message }) => {
                    format!("accepted ({})", escape(&message))
                }
                Ok(UploadOutcome::NotNew) => "accepted (not new)".to_string(),
                Ok(UploadOutcome::Rejected { reason }) => {
                    format!("REJECTED: 400 {}", escape(&reason))
                }
                Ok(UploadOutcome::Unexpected { status, reason }) => {
                    format!("REJECTED: {status} {}", escape(&reason))
                }
                Err(e) => format!("FAILED: {e}"),
            };
            eprintln!("onion relay: descriptor upload to {name} ({addr}): {line}");
        });
    }
}

/// One POST and its answer's head (bounded: 30 s, [`MAX_HEAD_BYTES`]).
fn upload_one(addr: SocketAddr, docs: &Documents, reason: &str) -> Result<UploadOutcome, String> {
    let req = descriptor_upload(addr, &docs.descriptor, Some(&docs.extra_info), reason)
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(30);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(o) = parse_upload_response(&buf).map_err(|e| e.to_string())? {
            return Ok(o);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err("answer head too long".into());
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses an exit policy written as C tor's `ExitPolicy` value: rules separated by commas,
/// each `accept|reject ADDR[/MASK]:PORTS`. IPv6-only rules (`accept6`) are refused (the
/// descriptor's policy is IPv4).
pub fn parse_exit_policy(s: &str) -> Result<ExitPolicy, String> {
    let mut rules = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kw, pat) = part.split_once(char::is_whitespace).ok_or_else(|| {
            format!("exit policy rule {part:?}: expected `accept|reject ADDR:PORTS`")
        })?;
        if kw.ends_with('6') {
            return Err(format!(
                "exit policy rule {part:?}: IPv6 rules are not supported"
            ));
        }
        let r = onion_dir::policy::PolicyRule::parse(kw, pat.trim())
            .ok_or_else(|| format!("exit policy rule {part:?} does not parse"))?;
        rules.push(r);
    }
    Ok(ExitPolicy { rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_policy_parses_ctor_syntax() {
        let p = parse_exit_policy("accept 127.0.0.0/8:*, reject *:*").unwrap();
        assert_eq!(p.rules.len(), 2);
        assert!(p.allows("127.0.0.1".parse().unwrap(), 80));
        assert!(!p.allows("8.8.8.8".parse().unwrap(), 80));
        assert!(parse_exit_policy("allow *:*").is_err());
        assert!(parse_exit_policy("accept6 [::1]:80").is_err());
        assert!(parse_exit_policy("accept").is_err());
        assert!(parse_exit_policy("").unwrap().rules.is_empty());
    }

    /// `tunnelled-dir-server` (dir-spec §2.1.1) appears exactly when the relay answers
    /// BEGIN_DIR, and the descriptor still parses.
    #[test]
    fn tunnelled_dir_server_follows_the_template() {
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let keys = RelayKeySet::generate(now, false, &mut rng).unwrap();
        let params = OnionKeyParams::new(None, None);
        let published = Timestamp::from_unix(1_780_000_000);
        for on in [false, true] {
            let t = DescriptorTemplate {
                nickname: "t".into(),
                address: std::net::Ipv4Addr::new(127, 0, 0, 1),
                or_port: 9001,
                contact: None,
                exit_policy: parse_exit_policy("reject *:*").unwrap(),
                rate: 1 << 20,
                tunnelled_dir_server: on,
            };
            let d = build(&t, &keys, &params, published, 0, 0, &mut rng).unwrap();
            assert_eq!(
                d.descriptor.lines().any(|l| l == "tunnelled-dir-server"),
                on
            );
            assert!(onion_dir::routerdesc::UnverifiedRouterDesc::parse(&d.descriptor).is_ok());
        }
    }

    /// The descriptor's `uptime` (dir-spec §2.1.1) is the uptime the relay gives, verified
    /// with the signatures. Authorities vote Stable on it (C tor's voteflags.c: while they
    /// hold under 4 hours of stability history, a relay is Stable when its uptime plus the
    /// time since `published` reaches the median of the active relays'), so an uptime
    /// reported short, or reset at each publication, would keep the relay from Stable.
    #[test]
    fn descriptor_states_the_uptime_it_is_given() {
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let keys = RelayKeySet::generate(now, false, &mut rng).unwrap();
        let params = OnionKeyParams::new(None, None);
        let published = Timestamp::from_unix(1_780_000_000);
        let t = DescriptorTemplate {
            nickname: "t".into(),
            address: std::net::Ipv4Addr::new(127, 0, 0, 1),
            or_port: 9001,
            contact: None,
            exit_policy: parse_exit_policy("reject *:*").unwrap(),
            rate: 1 << 20,
            tunnelled_dir_server: true,
        };
        for uptime in [0, 59, 86_400 * 30 + 7] {
            let d = build(&t, &keys, &params, published, uptime, 0, &mut rng).unwrap();
            let desc = onion_dir::routerdesc::UnverifiedRouterDesc::parse(&d.descriptor)
                .unwrap()
                .verify(published)
                .unwrap();
            assert_eq!(desc.uptime, Some(uptime));
            assert_eq!(desc.published, published);
        }
    }
}
