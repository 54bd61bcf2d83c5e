//! Where directory documents come from: the configured authorities and the fallback
//! directory caches (dir-spec §5 "Client operation": a client without a consensus asks an
//! authority or a fallback directory; once it has one, its directory guards).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use onion_dir::RsaIdentity;

/// A directory authority as the embedder configured it (C tor's `DirAuthority` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// A name for messages (the nickname, or the fingerprint).
    pub name: String,
    /// Its relay RSA identity, which its channel must prove (tor-spec §4.2).
    pub rsa_id: RsaIdentity,
    /// Its v3 authority identity (`v3ident=`): whose key certificates and consensus
    /// signatures count (dir-spec §3.1, §3.4.1).
    pub v3ident: RsaIdentity,
    /// Its ORPort address, to open a channel and BEGIN_DIR streams to; an authority without
    /// one still counts for signatures but is never asked.
    pub or_addr: Option<SocketAddr>,
}

/// A fallback directory cache: a stable relay that a client without a consensus may ask
/// instead of an authority (dir-spec §5, C tor's `FallbackDir`), which spares the
/// authorities the load of every bootstrapping client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// Its relay RSA identity, which its channel must prove.
    pub rsa_id: RsaIdentity,
    /// Its IPv4 ORPort.
    pub or_addr: SocketAddrV4,
    /// Its IPv6 ORPort, if listed.
    pub ipv6: Option<SocketAddrV6>,
}

/// The fallback directory caches built into C tor 0.4.9.11 (taken from its
/// `fallback_dirs.inc` as compiled into the installed binary), one a line:
/// `ADDRESS orport=PORT id=FINGERPRINT [ipv6=[ADDRESS]:PORT]`.
pub const C_TOR_FALLBACKS: &str = include_str!("fallback-dirs.txt");

/// The most entries a fallback list may have: C tor ships 200; a list is data from the
/// embedder, and this bound keeps a mistaken file from costing unbounded memory.
pub const MAX_FALLBACKS: usize = 4096;

/// A line of a fallback list that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fallback list line {line}: {reason}")]
pub struct FallbackError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Read a fallback list in the format of [`C_TOR_FALLBACKS`] (`#` starts a comment, blank
/// lines are ignored).
pub fn parse_fallbacks(text: &str) -> Result<Vec<Fallback>, FallbackError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason| FallbackError {
            line: i + 1,
            reason,
        };
        if out.len() >= MAX_FALLBACKS {
            return Err(err("too many fallbacks"));
        }
        let mut words = line.split_ascii_whitespace();
        let ip: Ipv4Addr = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or(err("expected an IPv4 address"))?;
        let (mut port, mut id, mut ipv6) = (None, None, None);
        for w in words {
            if let Some(p) = w.strip_prefix("orport=") {
                port = Some(p.parse::<u16>().map_err(|_| err("bad orport"))?);
            } else if let Some(h) = w.strip_prefix("id=") {
                let mut b = [0u8; 20];
                hex::decode_to_slice(h, &mut b).map_err(|_| err("bad id"))?;
                id = Some(RsaIdentity(b));
            } else if let Some(a) = w.strip_prefix("ipv6=") {
                ipv6 = Some(a.parse::<SocketAddrV6>().map_err(|_| err("bad ipv6"))?);
            } else {
                return Err(err("unknown item"));
            }
        }
        let port = port.filter(|p| *p != 0).ok_or(err("missing orport"))?;
        out.push(Fallback {
            rsa_id: id.ok_or(err("missing id"))?,
            or_addr: SocketAddrV4::new(ip, port),
            ipv6,
        });
    }
    Ok(out)
}

/// C tor 0.4.9's fallback directories, parsed.
pub fn c_tor_fallbacks() -> Vec<Fallback> {
    parse_fallbacks(C_TOR_FALLBACKS).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped list is C tor 0.4.9's: 200 entries, each with an identity and an ORPort,
    /// some with IPv6.
    #[test]
    fn shipped_list_reads_whole() {
        let all = parse_fallbacks(C_TOR_FALLBACKS).unwrap();
        assert_eq!(all.len(), 200);
        assert_eq!(c_tor_fallbacks(), all);
        assert!(all.iter().any(|f| f.ipv6.is_some()));
        let mut ids: Vec<_> = all.iter().map(|f| f.rsa_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200, "identities are distinct");
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let ok = "# c\n\n1.2.3.4 orport=443 id=0123456789ABCDEF0123456789ABCDEF01234567\n";
        assert_eq!(parse_fallbacks(ok).unwrap().len(), 1);
        for (text, reason) in [
            (
                "x orport=1 id=0123456789ABCDEF0123456789ABCDEF01234567",
                "expected an IPv4 address",
            ),
            (
                "1.2.3.4 id=0123456789ABCDEF0123456789ABCDEF01234567",
                "missing orport",
            ),
            (
                "1.2.3.4 orport=0 id=0123456789ABCDEF0123456789ABCDEF01234567",
                "missing orport",
            ),
            ("1.2.3.4 orport=1 id=0123", "bad id"),
            ("1.2.3.4 orport=1", "missing id"),
            ("1.2.3.4 orport=1 weight=3", "unknown item"),
        ] {
            let e = parse_fallbacks(&format!("\n{text}\n")).unwrap_err();
            assert_eq!(e, FallbackError { line: 2, reason }, "{text}");
        }
    }
}
