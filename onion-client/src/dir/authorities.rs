//! Directory authority lists in C tor's `DirAuthority` torrc format (tor manual, "DirAuthority").
//!
//! ```text
//! DirAuthority [nickname] [flags] ipv4address:dirport fingerprint
//! ```
//!
//! with flags such as `orport=PORT`, `v3ident=HEX`, `ipv6=[ADDR]:ORPORT`, `no-v2`, `bridge`,
//! `weight=N`. The fingerprint (the authority's relay RSA identity) may be written as 40 hex
//! digits or as ten space-separated groups of four, as in C tor's built-in list. The
//! `DirAuthority` keyword is optional, `#` starts a comment and blank lines are ignored, so a
//! private network's `torrc` lines and the public network's list (shipped as
//! `public-authorities.txt`, [`PUBLIC_AUTHORITIES`]) are read by the same code.
//!
//! [`DirAuthority::authority`] turns a v3 authority's line into the [`Authority`] a
//! [`super::DirConfig`] bootstraps from (dir-spec §3: the consensus is signed by the v3
//! identities, fetched from the ORPort over BEGIN_DIR).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use onion_dir::RsaIdentity;

use super::Authority;

/// The public Tor network's directory authorities, in the same format (from C tor 0.4.9).
pub const PUBLIC_AUTHORITIES: &str = include_str!("public-authorities.txt");

/// One directory authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirAuthority {
    /// Its nickname, if the line gives one.
    pub nickname: Option<String>,
    /// Its IPv4 address and DirPort.
    pub dir_addr: SocketAddrV4,
    /// Its ORPort (`orport=`), needed to reach it over a channel (BEGIN_DIR).
    pub or_port: Option<u16>,
    /// SHA-1 of its relay RSA identity key (the line's fingerprint).
    pub fingerprint: [u8; 20],
    /// SHA-1 of its v3 authority identity key (`v3ident=`): which key certificates and
    /// consensus signatures belong to it. Absent for bridge authorities.
    pub v3ident: Option<[u8; 20]>,
    /// `bridge`: a bridge authority, which signs no consensus.
    pub bridge: bool,
}

impl DirAuthority {
    /// The address of its ORPort, if the line gives one.
    pub fn or_addr(&self) -> Option<SocketAddr> {
        self.or_port
            .map(|p| SocketAddr::V4(SocketAddrV4::new(*self.dir_addr.ip(), p)))
    }

    /// A name for messages: the nickname, else the fingerprint.
    pub fn name(&self) -> String {
        match &self.nickname {
            Some(n) => n.clone(),
            None => hex::encode_upper(self.fingerprint),
        }
    }

    /// The authority to bootstrap from, or `None` for one without a v3 identity (a bridge
    /// authority signs no consensus).
    pub fn authority(&self) -> Option<Authority> {
        Some(Authority {
            name: self.name(),
            rsa_id: RsaIdentity(self.fingerprint),
            v3ident: RsaIdentity(self.v3ident?),
            or_addr: self.or_addr(),
        })
    }
}

/// The v3 authorities of a list, to bootstrap from ([`DirAuthority::authority`]).
pub fn v3_authorities(list: &[DirAuthority]) -> Vec<Authority> {
    list.iter().filter_map(DirAuthority::authority).collect()
}

/// A line of an authority list that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for AuthorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "authority list line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for AuthorityError {}

/// Parse a whole list; an empty list (no v3 authority) is an error, since nothing could be
/// verified with it.
pub fn parse_list(text: &str) -> Result<Vec<DirAuthority>, AuthorityError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let auth = parse_line(line).map_err(|reason| AuthorityError {
            line: i + 1,
            reason,
        })?;
        out.push(auth);
    }
    if !out.iter().any(|a| a.v3ident.is_some()) {
        return Err(AuthorityError {
            line: text.lines().count(),
            reason: "no v3 directory authority (no `v3ident=`) in the list".into(),
        });
    }
    Ok(out)
}

/// Parse one line (without comment), with or without the leading `DirAuthority` keyword.
pub fn parse_line(line: &str) -> Result<DirAuthority, String> {
    let mut tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens
        .first()
        .is_some_and(|t| t.eq_ignore_ascii_case("DirAuthority"))
    {
        tokens.remove(0);
    }
    let addr_pos = tokens
        .iter()
        .position(|t| !t.contains('=') && t.contains(':'))
        .ok_or_else(|| "no `address:dirport` field".to_string())?;
    let (head, tail) = tokens.split_at(addr_pos);
    let (addr_tok, fp_toks) = tail
        .split_first()
        .ok_or_else(|| "no `address:dirport` field".to_string())?;
    let dir_addr = parse_v4_addr(addr_tok)?;

    let fp_hex: String = fp_toks.concat();
    if fp_hex.len() != 40 {
        return Err(format!(
            "fingerprint must be 40 hex digits, got {:?}",
            fp_toks.join(" ")
        ));
    }
    let fingerprint = parse_hex20(&fp_hex, "fingerprint")?;

    let mut auth = DirAuthority {
        nickname: None,
        dir_addr,
        or_port: None,
        fingerprint,
        v3ident: None,
        bridge: false,
    };
    for (i, tok) in head.iter().enumerate() {
        match tok.split_once('=') {
            Some(("orport", v)) => {
                auth.or_port = Some(parse_port(v).map_err(|e| format!("orport: {e}"))?)
            }
            Some(("v3ident", v)) => auth.v3ident = Some(parse_hex20(v, "v3ident")?),
            // Known flags whose value we do not use: IPv6 ORPort, download weight.
            Some(("ipv6", _)) | Some(("weight", _)) => {}
            Some((k, _)) => return Err(format!("unknown flag `{k}=`")),
            None => match *tok {
                "bridge" => auth.bridge = true,
                "no-v2" | "v1" | "v2" | "v3" | "hs" | "no-hs" => {}
                nick if i == 0 && is_nickname(nick) => auth.nickname = Some(nick.to_string()),
                other => return Err(format!("unknown flag `{other}`")),
            },
        }
    }
    Ok(auth)
}

/// dir-spec §2.1.1: a nickname is 1-19 ASCII letters and digits.
fn is_nickname(s: &str) -> bool {
    (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn parse_v4_addr(s: &str) -> Result<SocketAddrV4, String> {
    let (ip, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("bad address {s:?}"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| format!("bad IPv4 address {ip:?}"))?;
    let port = parse_port(port).map_err(|e| format!("dirport: {e}"))?;
    Ok(SocketAddrV4::new(ip, port))
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("bad port {s:?}")),
    }
}

fn parse_hex20(s: &str, what: &str) -> Result<[u8; 20], String> {
    let mut out = [0u8; 20];
    hex::decode_to_slice(s, &mut out).map_err(|_| format!("{what}: not 40 hex digits: {s:?}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/dirauthority-lines.txt"
    ));

    #[test]
    fn reads_a_private_network_torrc_list() {
        let list = parse_list(PRIVATE).unwrap();
        assert_eq!(list.len(), 3);
        let a = &list[0];
        assert_eq!(a.nickname.as_deref(), Some("auth0"));
        assert_eq!(a.dir_addr, "127.0.0.1:33819".parse().unwrap());
        assert_eq!(a.or_addr(), Some("127.0.0.1:35907".parse().unwrap()));
        assert_eq!(
            hex::encode_upper(a.v3ident.unwrap()),
            "329F4451BAA808E78DF40D2F286080779AD22095"
        );
        assert_eq!(
            hex::encode_upper(a.fingerprint),
            "A07048407BC479AA3FDD636ABF78594D2378FAF6"
        );
        assert!(!a.bridge);
    }

    /// The v3 authorities become the directory machine's authorities; a bridge authority
    /// (no v3 identity) does not.
    #[test]
    fn v3_lines_become_authorities() {
        let mut list = parse_list(PRIVATE).unwrap();
        list[2].v3ident = None;
        let auths = v3_authorities(&list);
        assert_eq!(auths.len(), 2);
        assert_eq!(auths[0].name, "auth0");
        assert_eq!(auths[0].rsa_id, RsaIdentity(list[0].fingerprint));
        assert_eq!(auths[0].v3ident, RsaIdentity(list[0].v3ident.unwrap()));
        assert_eq!(auths[0].or_addr, list[0].or_addr());
        assert!(list[2].authority().is_none());
    }

    #[test]
    fn reads_the_public_list() {
        let list = parse_list(PUBLIC_AUTHORITIES).unwrap();
        let v3: Vec<_> = list.iter().filter(|a| a.v3ident.is_some()).collect();
        assert!(v3.len() >= 9, "{} v3 authorities", v3.len());
        let moria = list
            .iter()
            .find(|a| a.nickname.as_deref() == Some("moria1"))
            .unwrap();
        assert_eq!(
            hex::encode_upper(moria.v3ident.unwrap()),
            "F533C81CEF0BC0267857C99B2F471ADF249FA232"
        );
        assert!(list.iter().all(|a| a.or_port.is_some()));
    }

    #[test]
    fn spaced_fingerprint_and_no_keyword_and_comments() {
        let text =
            "# comment\n\n  tor26 orport=443 v3ident=2F3DF9CA0E5D36F2685A2DA67184EB8DCB8CBA8C \
            ipv6=[2a02:16a8:662:2203::1]:443 217.196.147.77:80 \
            FAA4 BCA4 A6AC 0FB4 CA2F 8AD5 A11D 9E12 2BA8 94F6 # trailing\n";
        let list = parse_list(text).unwrap();
        assert_eq!(
            hex::encode_upper(list[0].fingerprint),
            "FAA4BCA4A6AC0FB4CA2F8AD5A11D9E122BA894F6"
        );
        assert_eq!(list[0].dir_addr.port(), 80);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let bad = [
            ("DirAuthority a orport=1 v3ident=00 127.0.0.1:1 A07048407BC479AA3FDD636ABF78594D2378FAF6", "v3ident"),
            ("DirAuthority a orport=99999 127.0.0.1:1 A07048407BC479AA3FDD636ABF78594D2378FAF6", "orport"),
            ("DirAuthority a 127.0.0.1 A07048407BC479AA3FDD636ABF78594D2378FAF6", "address"),
            ("DirAuthority a 300.0.0.1:80 A07048407BC479AA3FDD636ABF78594D2378FAF6", "IPv4"),
            ("DirAuthority a 127.0.0.1:80 A0704840", "fingerprint"),
            ("DirAuthority a bogus=1 127.0.0.1:80 A07048407BC479AA3FDD636ABF78594D2378FAF6", "bogus"),
            ("DirAuthority a b 127.0.0.1:80 A07048407BC479AA3FDD636ABF78594D2378FAF6", "`b`"),
        ];
        for (line, what) in bad {
            let text = format!("# x\n{line}\n");
            let e = parse_list(&text).unwrap_err();
            assert_eq!(e.line, 2, "{line}");
            assert!(e.to_string().contains(what), "{e} lacks {what}");
        }
        let e = parse_list("# nothing\n").unwrap_err();
        assert!(e.to_string().contains("no v3"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_text_never_panics(s in "(DirAuthority|orport=|v3ident=|[0-9A-F]{1,40}|[ :.=#\\[\\]\n]|[a-z0-9]{1,8}){0,24}") {
            let _ = parse_list(&s);
        }
    }
}
