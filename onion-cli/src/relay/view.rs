//! The relay's view of the network: the `ns` consensus, fetched from an authority's DirPort
//! (dir-spec §4.2 / §5.1 by plain HTTP, as a relay without a directory guard does) with the
//! authorities' key certificates, and accepted only when a majority of the configured v3
//! authorities signed it (dir-spec §3.4.1). The descriptor schedule reads from it whether
//! the network lists the relay (`onion_dir::relaydesc::ConsensusListing::of`), and the
//! directory cache serves it, with diffs from the ones held before.
//!
//! Bounds: each fetch is one thread with a 30 s socket deadline; an answer larger than
//! [`onion_dir::consdiff::MAX_BYTES`] is refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use onion_crypto::RsaIdentity;
use onion_dir::authcert::{self, AuthCert};
use onion_dir::consensus::{self, Flavor};
use onion_dir::http::{DirRequest, ResponseReader};
use onion_dir::Timestamp;

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

/// Fetches the `ns` consensus and the key certificates from the authority at `addr` and
/// returns the consensus text if a majority of `v3` (the v3 identities of the configured
/// authorities) signed it with certificates valid at `now`.
pub fn fetch_consensus(
    addr: SocketAddr,
    v3: &[RsaIdentity],
    now: Timestamp,
) -> Result<String, String> {
    let certs_text = get(addr, &DirRequest::all_authority_certs())?;
    let certs: Vec<AuthCert> = authcert::parse_many(&certs_text)
        .map_err(|e| format!("key certificates: {e}"))?
        .into_iter()
        .filter_map(|c| c.verify(now).ok())
        .collect();
    let text = get(addr, &DirRequest::consensus(Flavor::Ns, &[], 3))?;
    let report = consensus::parse(&text)
        .map_err(|e| format!("consensus: {e}"))?
        .check_signatures(v3, &certs, now);
    if !report.quorum() {
        return Err(format!(
            "consensus signed by {} of the {} authorities ({} needed)",
            report.verified.len(),
            v3.len(),
            v3.len() / 2 + 1
        ));
    }
    Ok(text)
}
