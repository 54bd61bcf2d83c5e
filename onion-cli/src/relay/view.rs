//! The relay's view of the network: the `ns` and microdescriptor consensuses, fetched from
//! an authority's DirPort (dir-spec §4.2 / §5.1 by plain HTTP, as a relay without a
//! directory guard does) with the authorities' key certificates, and accepted only when a
//! majority of the configured v3 authorities signed them (dir-spec §3.4.1). The descriptor
//! schedule reads from the `ns` one whether the network lists the relay
//! (`onion_dir::relaydesc::ConsensusListing::of`); the directory cache serves both, with
//! diffs from the ones held before, and the microdescriptors and server descriptors they
//! list, fetched from the same authority ([`fetch_descriptors`], dir-spec §5.2: a cache
//! fetches every descriptor the consensus lists) and kept only when their digests match
//! (`onion_relay::DescriptorStore`).
//!
//! Bounds: each fetch is one thread with a 30 s socket deadline per request; an answer
//! larger than [`onion_dir::consdiff::MAX_BYTES`] is refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use onion_crypto::RsaIdentity;
use onion_dir::authcert::{self, AuthCert};
use onion_dir::consensus::Flavor;
use onion_dir::http::{DirRequest, ResponseReader};
use onion_dir::{MdDigest, Timestamp};

/// Socket deadline of one fetch.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One GET to `addr`: the decoded body of a 200 answer.
fn get(addr: SocketAddr, req: &DirRequest) -> Result<String, String> {
    let limit = onion_dir::consdiff::MAX_BYTES;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(&req.to_bytes()).map_err(|e| e.to_string())?;
    let mut r = ResponseReader::new(limit);
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0usize;
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        total += n;
        if total > limit + (64 << 10) {
            return Err(format!("answer larger than {limit} bytes"));
        }
        r.handle_bytes(&buf[..n]).map_err(|e| e.to_string())?;
    }
    r.finish()
        .map(|resp| resp.body)
        .map_err(|e| format!("{}: {e}", req.path))
}

/// What one consensus fetch brought.
#[derive(Debug)]
pub struct Fetched {
    /// The authority asked (the descriptors are fetched from it too).
    pub from: SocketAddr,
    /// The verified `ns` consensus.
    pub ns: String,
    /// The verified microdescriptor consensus, or why there is none.
    pub md: Result<String, String>,
    /// The authorities' key certificates that verified, each one's text (the cache serves
    /// them: a client checks the consensus signatures with them).
    pub certs: Vec<String>,
}

/// Fetches the key certificates and both consensus flavours from the authority at `addr`;
/// each consensus is returned if a majority of `v3` (the v3 identities of the configured
/// authorities) signed it with certificates valid at `now`.
pub fn fetch_consensus(
    addr: SocketAddr,
    v3: &[RsaIdentity],
    now: Timestamp,
) -> Result<Fetched, String> {
    let certs_text = get(addr, &DirRequest::all_authority_certs())?;
    let mut texts = Vec::new();
    let certs: Vec<AuthCert> = authcert::parse_many(&certs_text)
        .map_err(|e| format!("key certificates: {e}"))?
        .into_iter()
        .filter_map(|c| {
            let text = c.text.to_owned();
            let cert = c.verify(now).ok()?;
            texts.push(text);
            Some(cert)
        })
        .collect();
    let ns = fetch_flavor(addr, Flavor::Ns, v3, &certs, now)?;
    let md = fetch_flavor(addr, Flavor::Microdesc, v3, &certs, now);
    Ok(Fetched {
        from: addr,
        ns,
        md,
        certs: texts,
    })
}

/// One consensus flavour from `addr`, accepted as the relay accepts a saved one
/// ([`onion_relay::dir_saved::check_consensus`]: that flavour, signed by a majority of `v3`
/// with `certs`, reasonably live at `now`).
fn fetch_flavor(
    addr: SocketAddr,
    flavor: Flavor,
    v3: &[RsaIdentity],
    certs: &[AuthCert],
    now: Timestamp,
) -> Result<String, String> {
    let text = get(addr, &DirRequest::consensus(flavor, &[], 3))?;
    onion_relay::dir_saved::check_consensus(&text, flavor, v3, certs, now)
        .map_err(|e| format!("the {} consensus: {e}", flavor.name()))?;
    Ok(text)
}

/// A batch of fetched descriptors.
#[derive(Debug)]
pub enum Batch {
    /// A `/tor/micro/d/` answer.
    Micro(String),
    /// A `/tor/server/d/` answer.
    Server(String),
}

/// Fetches the microdescriptors `micro` and the server descriptors `server` from the
/// authority at `addr` (dir-spec §5.2, §5.3: 92 microdescriptors or 96 descriptors a
/// request), handing each answer to `got`; returns the failed requests' errors. The
/// caller checks every document against the consensus.
pub fn fetch_descriptors(
    addr: SocketAddr,
    micro: &[MdDigest],
    server: &[[u8; 20]],
    mut got: impl FnMut(Batch),
) -> Vec<String> {
    let mut errors = Vec::new();
    for req in DirRequest::microdescs(micro) {
        match get(addr, &req) {
            Ok(t) => got(Batch::Micro(t)),
            Err(e) => errors.push(e),
        }
    }
    for req in DirRequest::server_descriptors(server) {
        match get(addr, &req) {
            Ok(t) => got(Batch::Server(t)),
            Err(e) => errors.push(e),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const TORNET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../onion-dir/testdata/tornet/");

    fn read(file: &str) -> String {
        std::fs::read_to_string(format!("{TORNET}{file}")).expect("test document")
    }

    /// A DirPort that answers one request with `body` (HTTP/1.0 200, then closes).
    fn serve_once(body: String) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut req = [0u8; 2048];
                let _ = s.read(&mut req);
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(body.as_bytes());
            }
        });
        addr
    }

    /// A fetched consensus is accepted by the same check as a saved one: the flavour asked
    /// for, signed by a majority of the authorities, reasonably live.
    #[test]
    fn a_fetched_consensus_is_checked_as_a_saved_one() {
        let ns = read("cached-consensus");
        let now = onion_dir::consensus::parse(&ns)
            .expect("ns")
            .peek()
            .valid_after;
        let certs: Vec<AuthCert> = (0..3)
            .map(|i| read(&format!("authority_certificate.auth{i}")))
            .map(|t| {
                authcert::UnverifiedAuthCert::parse(&t)
                    .expect("cert")
                    .verify(now)
                    .expect("valid")
            })
            .collect();
        let v3: Vec<RsaIdentity> = certs.iter().map(|c| c.fingerprint).collect();
        let fetch = |flavor, now| fetch_flavor(serve_once(ns.clone()), flavor, &v3, &certs, now);
        assert_eq!(fetch(Flavor::Ns, now), Ok(ns.clone()));
        let e = fetch(Flavor::Microdesc, now).unwrap_err();
        assert!(e.contains("not a microdesc consensus"), "{e}");
        let e = fetch(Flavor::Ns, Timestamp::from_unix(now.unix() + 30 * 86_400)).unwrap_err();
        assert!(e.contains("too old"), "{e}");
        let e = fetch_flavor(
            serve_once(ns.clone()),
            Flavor::Ns,
            &v3[..1],
            &certs[..0],
            now,
        )
        .unwrap_err();
        assert!(e.contains("signed by 0 of the 1 authorities"), "{e}");
    }
}
