//! A minimal directory cache: the documents the embedder hands over
//! ([`DirDocuments`]) served over BEGIN_DIR streams as HTTP/1.0 answers (tor-spec §6.2.1,
//! dir-spec §4 and appendix B "General-use HTTP URLs").
//!
//! Served, each also with the `.z` suffix (deflate, dir-spec §6.1) or compressed when the
//! request's `Accept-Encoding` offers `deflate`:
//!
//! * `/tor/status-vote/current/consensus` and `.../consensus-microdesc`, with or without the
//!   `/<fp>+<fp>...` authority suffix (dir-spec §5.1; the suffix is not checked: the cache
//!   serves the one consensus it holds, which the client verifies); a request carrying
//!   `X-Or-Diff-From-Consensus: HASH, ...` (dir-spec §4.5.2) naming the signed-part digest
//!   of a previous consensus the cache was given gets the diff from it instead
//!   ([`onion_dir::consdiff_gen`]), and anything else the full consensus;
//! * `/tor/status-vote/current/consensus[-microdesc]/diff/<HASH>/<FPRLIST>` (dir-spec
//!   §4.5.2): that diff, or 404;
//! * `/tor/micro/d/<D1>-<D2>...` (dir-spec §5.2, at most 92 digests), the ones held;
//! * `/tor/server/fp/<F1>+<F2>...`, `/tor/server/d/<D1>+<D2>...`, `/tor/server/all`
//!   (dir-spec appendix B), the ones held, and `/tor/server/authority` (the relay's own
//!   descriptor, [`DirDocuments::own_descriptor`]);
//! * authority key certificates (dir-spec §3.1), which a client needs to check the
//!   consensus signatures: `/tor/keys/all`, `/tor/keys/fp/<F1>+<F2>...` (by authority
//!   identity), `/tor/keys/sk/<S1>+...` (by signing-key digest) and
//!   `/tor/keys/fp-sk/<F1>-<S1>+...` (dir-spec appendix B), the ones held.
//!
//! Every answered request is reported to the embedder as [`DirAnswered`]
//! ([`crate::Event::DirAnswered`]).
//!
//! Anything else is 400 (malformed) or 404 (not held, or nothing of what was asked);
//! an answer larger than [`crate::Limits::max_dir_response`] is 503. Answers share the
//! documents' buffers: a stream holds the header and reference-counted pieces, not a copy.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;

use onion_crypto::RsaIdentity;
use onion_dir::MdDigest;
use sha2::{Digest as _, Sha256};

/// Most microdescriptor digests one request may name (dir-spec §4.3).
pub const MAX_MICRODESCS_PER_REQUEST: usize = 92;
/// Most server descriptors one request may name (C tor's `DIR_MAX_...` batch of 96).
pub const MAX_DESCRIPTORS_PER_REQUEST: usize = 96;
/// Most previous consensuses of one flavour diffs are made from. Beyond it the newest (the
/// last given) are kept: clients holding older ones get the full consensus.
pub const MAX_DIFF_BASES: usize = 8;
/// Most digests of an `X-Or-Diff-From-Consensus` header looked at (the rest are ignored).
const MAX_DIFF_FROM: usize = 16;
/// Most authority key certificates one `/tor/keys/` request may name (as many as server
/// descriptors; there are 9 authorities today).
pub const MAX_CERTS_PER_REQUEST: usize = MAX_DESCRIPTORS_PER_REQUEST;
/// Longest request path a [`DirAnswered`] report carries; a longer one is cut there.
pub const MAX_REPORTED_PATH: usize = 512;

/// A server descriptor the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDescriptor {
    /// The relay's RSA identity.
    pub identity: RsaIdentity,
    /// SHA-1 of the descriptor's signed part (its "descriptor digest", dir-spec §2.1.1).
    pub digest: [u8; 20],
    /// The descriptor's text.
    pub text: Vec<u8>,
}

/// What the embedder gives the cache to serve ([`crate::Relay::set_directory_documents`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirDocuments {
    /// The `ns` consensus, as signed.
    pub consensus: Option<Vec<u8>>,
    /// The microdescriptor consensus, as signed.
    pub consensus_microdesc: Option<Vec<u8>>,
    /// Microdescriptors, each one's text (its digest is SHA-256 of the text, dir-spec §3.3).
    pub microdescs: Vec<Vec<u8>>,
    /// Server descriptors.
    pub server_descriptors: Vec<ServerDescriptor>,
    /// Previous `ns` consensuses, oldest first: diffs from each to `consensus` are served
    /// (dir-spec §4.5; at most [`MAX_DIFF_BASES`], the newest, are used).
    pub previous_consensuses: Vec<Vec<u8>>,
    /// Previous microdescriptor consensuses, oldest first, for diffs to
    /// `consensus_microdesc`.
    pub previous_consensuses_microdesc: Vec<Vec<u8>>,
    /// Authority key certificates (dir-spec §3.1), each one's text, served under
    /// `/tor/keys/`. Each is indexed by the authority identity and signing-key digest its
    /// text names; a text that does not parse as one certificate is not served. The
    /// certificates are not verified here: the client verifies what it fetches.
    pub authority_certs: Vec<Vec<u8>>,
    /// The relay's own server descriptor as published, served as `/tor/server/authority`
    /// (dir-spec appendix B: "the server's own descriptor").
    pub own_descriptor: Option<Vec<u8>>,
}

/// One directory request the cache answered (method, path, status, whether a consensus
/// diff was served, body length), for the embedder's logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirAnswered {
    /// The request's method (`GET`, or `POST` for an onion-service descriptor upload);
    /// empty if the request line was malformed.
    pub method: String,
    /// The path asked for, as written (at most [`MAX_REPORTED_PATH`] bytes).
    pub path: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// Whether the body is a consensus diff (dir-spec §4.5.2).
    pub diff: bool,
    /// Whether the body is deflate-compressed (dir-spec §6.1).
    pub compressed: bool,
    /// Body bytes sent (compressed ones if `compressed`).
    pub len: usize,
}

impl DirAnswered {
    /// The report of `answer` to the request whose head is `head`.
    pub(crate) fn of(head: &[u8], answer: &Answer, diff: bool) -> Self {
        let line = head
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .unwrap_or(&[]);
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or("");
        let (method, path) = match parts.next() {
            Some(p) => (method, p),
            None => ("", ""),
        };
        let mut end = path.len().min(MAX_REPORTED_PATH);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let first = answer.pieces.first().map_or(&[][..], |p| &p[..]);
        let status = first
            .get(9..12)
            .and_then(|s| core::str::from_utf8(s).ok()?.parse().ok())
            .unwrap_or(0);
        let compressed = first
            .windows(b"Content-Encoding: deflate".len())
            .any(|w| w == b"Content-Encoding: deflate");
        DirAnswered {
            method: method.to_owned(),
            path: path[..end].to_owned(),
            status,
            diff,
            compressed,
            len: answer.pieces.iter().skip(1).map(|p| p.len()).sum(),
        }
    }
}

/// An authority key certificate as held.
#[derive(Debug, Clone)]
struct Cert {
    /// The authority's v3 identity.
    identity: [u8; 20],
    /// SHA-1 of its signing key.
    signing: [u8; 20],
    text: Arc<[u8]>,
}

/// A document as held: the text and its deflated form, made once.
#[derive(Debug, Clone)]
struct Doc {
    plain: Arc<[u8]>,
    deflated: Arc<[u8]>,
}

fn deflate(data: &[u8]) -> Arc<[u8]> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default().into()
}

impl Doc {
    fn new(text: Vec<u8>) -> Self {
        let deflated = deflate(&text);
        Doc {
            plain: text.into(),
            deflated,
        }
    }
}

/// The documents as indexed for answering.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirCache {
    consensus: Option<Doc>,
    consensus_md: Option<Doc>,
    /// Diffs to `consensus`, by the SHA3-256 of their base's signed part.
    diffs: HashMap<[u8; 32], Doc>,
    /// Diffs to `consensus_md`.
    diffs_md: HashMap<[u8; 32], Doc>,
    micro: HashMap<[u8; 32], Arc<[u8]>>,
    by_fp: HashMap<[u8; 20], Arc<[u8]>>,
    by_digest: HashMap<[u8; 20], Arc<[u8]>>,
    own: Option<Arc<[u8]>>,
    /// Authority key certificates, in the order given.
    certs: Vec<Cert>,
    /// Bytes held (for the relay's accounting; directory documents are not counted in
    /// `MaxMemInQueues`, as in C tor).
    pub(crate) bytes: usize,
}

/// An answer: the pieces to send one after the other.
#[derive(Debug, Clone, Default)]
pub(crate) struct Answer {
    pub(crate) pieces: Vec<Arc<[u8]>>,
    /// Index of the piece being sent and the offset in it.
    pub(crate) piece: usize,
    pub(crate) offset: usize,
}

impl Answer {
    fn new(status: &str, compressed: bool, body: Vec<Arc<[u8]>>) -> Self {
        let enc = if compressed { "deflate" } else { "identity" };
        let head = format!(
            "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Encoding: {enc}\r\n\r\n"
        );
        let mut pieces: Vec<Arc<[u8]>> = vec![head.into_bytes().into()];
        pieces.extend(body);
        Answer {
            pieces,
            piece: 0,
            offset: 0,
        }
    }

    fn status(status: &str) -> Self {
        Self::new(status, false, Vec::new())
    }

    /// The bytes still to send, as one slice (the rest of the current piece).
    pub(crate) fn next_chunk(&self) -> Option<&[u8]> {
        let p = self.pieces.get(self.piece)?;
        p.get(self.offset..)
    }

    /// `n` bytes of [`Answer::next_chunk`] were sent.
    pub(crate) fn advance(&mut self, n: usize) {
        self.offset += n;
        while let Some(p) = self.pieces.get(self.piece) {
            if self.offset < p.len() {
                break;
            }
            self.offset = 0;
            self.piece += 1;
        }
    }

    /// Everything was sent.
    pub(crate) fn done(&self) -> bool {
        self.piece >= self.pieces.len()
    }
}

/// Where a request's head ends (the blank line), if it has arrived.
pub(crate) fn head_end(req: &[u8]) -> Option<usize> {
    req.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Diffs from each of `bases` (the newest [`MAX_DIFF_BASES`]) to `current`, by the
/// SHA3-256 of the base's signed part. A base that is not UTF-8, is unsigned, or gives no
/// diff has none: its holders get the full consensus.
fn make_diffs(current: Option<&[u8]>, bases: &[Vec<u8>]) -> HashMap<[u8; 32], Doc> {
    let mut out = HashMap::new();
    let Some(Ok(target)) = current.map(core::str::from_utf8) else {
        return out;
    };
    let skip = bases.len().saturating_sub(MAX_DIFF_BASES);
    for base in &bases[skip..] {
        let Ok(base) = core::str::from_utf8(base) else {
            continue;
        };
        let Some(digest) = onion_dir::consdiff::signed_part_digest(base) else {
            continue;
        };
        let mut key = [0u8; 32];
        if hex::decode_to_slice(&digest, &mut key).is_err() {
            continue;
        }
        if let Ok(d) = onion_dir::consdiff_gen::generate(base, target) {
            out.insert(key, Doc::new(d.into_bytes()));
        }
    }
    out
}

impl DirCache {
    pub(crate) fn new(docs: DirDocuments) -> Self {
        let mut c = DirCache::default();
        let mut bytes = 0usize;
        c.diffs = make_diffs(docs.consensus.as_deref(), &docs.previous_consensuses);
        c.diffs_md = make_diffs(
            docs.consensus_microdesc.as_deref(),
            &docs.previous_consensuses_microdesc,
        );
        bytes += c
            .diffs
            .values()
            .chain(c.diffs_md.values())
            .map(|d| d.plain.len() + d.deflated.len())
            .sum::<usize>();
        if let Some(t) = docs.consensus {
            bytes += t.len();
            c.consensus = Some(Doc::new(t));
        }
        if let Some(t) = docs.consensus_microdesc {
            bytes += t.len();
            c.consensus_md = Some(Doc::new(t));
        }
        for m in docs.microdescs {
            bytes += m.len();
            let d: [u8; 32] = Sha256::digest(&m).into();
            c.micro.insert(d, m.into());
        }
        for s in docs.server_descriptors {
            bytes += s.text.len();
            let text: Arc<[u8]> = s.text.into();
            c.by_fp.insert(s.identity.0, text.clone());
            c.by_digest.insert(s.digest, text);
        }
        if let Some(t) = docs.own_descriptor {
            bytes += t.len();
            c.own = Some(t.into());
        }
        for t in docs.authority_certs {
            let Ok(text) = core::str::from_utf8(&t) else {
                continue;
            };
            let Ok(cert) = onion_dir::authcert::UnverifiedAuthCert::parse(text) else {
                continue;
            };
            let (identity, signing) = (
                cert.peek().fingerprint.0,
                cert.peek().signing_key_digest().0,
            );
            bytes += t.len();
            c.certs.push(Cert {
                identity,
                signing,
                text: t.into(),
            });
        }
        c.bytes = bytes;
        c
    }

    /// The answer to a complete request head and its report ([`DirAnswered`]).
    pub(crate) fn answer_reported(
        &self,
        head: &[u8],
        max_response: usize,
    ) -> (Answer, DirAnswered) {
        let mut diff = false;
        let a = self.answer_inner(head, max_response, &mut diff);
        let report = DirAnswered::of(head, &a, diff);
        (a, report)
    }

    /// The answer to a complete request head (`GET <path> HTTP/1.x` and headers).
    #[cfg(test)]
    pub(crate) fn answer(&self, head: &[u8], max_response: usize) -> Answer {
        self.answer_inner(head, max_response, &mut false)
    }

    /// The answer; `diff` is set if its body is a consensus diff.
    fn answer_inner(&self, head: &[u8], max_response: usize, diff: &mut bool) -> Answer {
        let Ok(text) = core::str::from_utf8(head) else {
            return Answer::status("400 Malformed request");
        };
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("");
        let mut parts = first.split(' ');
        let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
        else {
            return Answer::status("400 Malformed request");
        };
        if !version.starts_with("HTTP/1.") {
            return Answer::status("400 Malformed request");
        }
        if method != "GET" {
            return Answer::status("405 Method not allowed");
        }
        let mut offers_deflate = false;
        let mut diff_from: Vec<[u8; 32]> = Vec::new();
        for (k, v) in lines.filter_map(|l| l.split_once(':')) {
            let k = k.trim();
            if k.eq_ignore_ascii_case("accept-encoding") {
                offers_deflate |= v
                    .split(',')
                    .any(|e| e.trim().eq_ignore_ascii_case("deflate"));
            } else if k.eq_ignore_ascii_case("x-or-diff-from-consensus") {
                for h in v.split(',').take(MAX_DIFF_FROM) {
                    let mut d = [0u8; 32];
                    if hex::decode_to_slice(h.trim(), &mut d).is_ok() {
                        diff_from.push(d);
                    }
                }
            }
        }
        let (path, z) = match path.strip_suffix(".z") {
            Some(p) => (p, true),
            None => (path, offers_deflate),
        };
        let body = match self.lookup(path, &diff_from) {
            Ok(b) => b,
            Err(a) => return a,
        };
        if matches!(body, Body::Diff(_)) {
            *diff = true;
        }
        let (pieces, compressed) = match body {
            Body::Doc(d) | Body::Diff(d) if z => (vec![d.deflated.clone()], true),
            Body::Doc(d) | Body::Diff(d) => (vec![d.plain.clone()], false),
            Body::List(list) if z => {
                let total: usize = list.iter().map(|p| p.len()).sum();
                if total > max_response {
                    return Answer::status("503 Directory busy, try again later");
                }
                let mut all = Vec::with_capacity(total);
                for p in &list {
                    all.extend_from_slice(p);
                }
                (vec![deflate(&all)], true)
            }
            Body::List(list) => (list, false),
        };
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        if total > max_response {
            return Answer::status("503 Directory busy, try again later");
        }
        Answer::new("200 OK", compressed, pieces)
    }

    fn lookup(&self, path: &str, diff_from: &[[u8; 32]]) -> Result<Body<'_>, Answer> {
        let not_found = || Answer::status("404 Not found");
        let bad = || Answer::status("400 Malformed request");
        if let Some(rest) = path.strip_prefix("/tor/status-vote/current/consensus") {
            let (doc, diffs, rest) = match rest.strip_prefix("-microdesc") {
                Some(r) => (&self.consensus_md, &self.diffs_md, r),
                None => (&self.consensus, &self.diffs, rest),
            };
            if let Some(d) = rest.strip_prefix("/diff/") {
                let hash = d.split('/').next().unwrap_or("");
                let mut key = [0u8; 32];
                hex::decode_to_slice(hash, &mut key).map_err(|_| bad())?;
                return diffs.get(&key).map(Body::Diff).ok_or_else(not_found);
            }
            if !(rest.is_empty() || rest.starts_with('/')) {
                return Err(not_found());
            }
            if let Some(d) = diff_from.iter().find_map(|k| diffs.get(k)) {
                return Ok(Body::Diff(d));
            }
            return doc.as_ref().map(Body::Doc).ok_or_else(not_found);
        }
        if let Some(list) = path.strip_prefix("/tor/micro/d/") {
            let mut out = Vec::new();
            for (i, d) in list.split('-').enumerate() {
                if i >= MAX_MICRODESCS_PER_REQUEST {
                    return Err(bad());
                }
                let d = MdDigest::from_base64(d).ok_or_else(bad)?;
                if let Some(m) = self.micro.get(&d.0) {
                    out.push(m.clone());
                }
            }
            return if out.is_empty() {
                Err(not_found())
            } else {
                Ok(Body::List(out))
            };
        }
        if let Some(rest) = path.strip_prefix("/tor/keys/") {
            return self.keys(rest);
        }
        if path == "/tor/server/all" {
            let mut all: Vec<_> = self.by_fp.iter().collect();
            if all.is_empty() {
                return Err(not_found());
            }
            all.sort_by_key(|(k, _)| **k);
            return Ok(Body::List(
                all.into_iter().map(|(_, v)| v.clone()).collect(),
            ));
        }
        if path == "/tor/server/authority" {
            return self
                .own
                .as_ref()
                .map(|t| Body::List(vec![t.clone()]))
                .ok_or_else(not_found);
        }
        let (list, map) = if let Some(l) = path.strip_prefix("/tor/server/fp/") {
            (l, &self.by_fp)
        } else if let Some(l) = path.strip_prefix("/tor/server/d/") {
            (l, &self.by_digest)
        } else {
            return Err(not_found());
        };
        let mut out = Vec::new();
        for (i, h) in list.split('+').enumerate() {
            if i >= MAX_DESCRIPTORS_PER_REQUEST {
                return Err(bad());
            }
            let mut k = [0u8; 20];
            hex::decode_to_slice(h, &mut k).map_err(|_| bad())?;
            if let Some(v) = map.get(&k) {
                out.push(v.clone());
            }
        }
        if out.is_empty() {
            Err(not_found())
        } else {
            Ok(Body::List(out))
        }
    }
}

impl DirCache {
    /// Authority key certificates (dir-spec appendix B): `rest` is what follows
    /// `/tor/keys/`. Each certificate is sent once, in the order asked (`all`: as given).
    /// `authority` is 404: a cache is no authority.
    fn keys(&self, rest: &str) -> Result<Body<'_>, Answer> {
        let not_found = || Answer::status("404 Not found");
        let bad = || Answer::status("400 Malformed request");
        let id = |h: &str| {
            let mut k = [0u8; 20];
            hex::decode_to_slice(h, &mut k)
                .map(|()| k)
                .map_err(|_| bad())
        };
        let mut out: Vec<usize> = Vec::new();
        if rest == "all" {
            out.extend(0..self.certs.len());
        } else {
            let (list, kind) = if let Some(l) = rest.strip_prefix("fp/") {
                (l, 0)
            } else if let Some(l) = rest.strip_prefix("sk/") {
                (l, 1)
            } else if let Some(l) = rest.strip_prefix("fp-sk/") {
                (l, 2)
            } else {
                return Err(not_found());
            };
            for (i, item) in list.split('+').enumerate() {
                if i >= MAX_CERTS_PER_REQUEST {
                    return Err(bad());
                }
                let found = match kind {
                    0 => {
                        let f = id(item)?;
                        self.certs.iter().position(|c| c.identity == f)
                    }
                    1 => {
                        let s = id(item)?;
                        self.certs.iter().position(|c| c.signing == s)
                    }
                    _ => {
                        let (f, s) = item.split_once('-').ok_or_else(bad)?;
                        let (f, s) = (id(f)?, id(s)?);
                        self.certs
                            .iter()
                            .position(|c| c.identity == f && c.signing == s)
                    }
                };
                if let Some(k) = found.filter(|k| !out.contains(k)) {
                    out.push(k);
                }
            }
        }
        if out.is_empty() {
            return Err(not_found());
        }
        Ok(Body::List(
            out.into_iter()
                .filter_map(|k| self.certs.get(k))
                .map(|c| c.text.clone())
                .collect(),
        ))
    }
}

enum Body<'a> {
    Doc(&'a Doc),
    /// A consensus diff (served like a document, reported as a diff).
    Diff(&'a Doc),
    List(Vec<Arc<[u8]>>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_docs::CERTS;
    use onion_dir::http::{parse_head, DirRequest, ResponseReader};

    fn cache() -> DirCache {
        DirCache::new(DirDocuments {
            consensus: Some(b"network-status-version 3\nns\n".to_vec()),
            consensus_microdesc: Some(b"network-status-version 3 microdesc\n".to_vec()),
            microdescs: vec![b"onion-key\nA\n".to_vec(), b"onion-key\nB\n".to_vec()],
            server_descriptors: vec![ServerDescriptor {
                identity: RsaIdentity([7; 20]),
                digest: [9; 20],
                text: b"router x\n".to_vec(),
            }],
            ..DirDocuments::default()
        })
    }

    fn signed(body: &str, sig: &str) -> String {
        format!(
            "network-status-version 3 microdesc\n{body}directory-footer\n\
             directory-signature AA BB\n-----BEGIN SIGNATURE-----\n{sig}\n\
             -----END SIGNATURE-----\n"
        )
    }

    #[test]
    fn serves_consensus_diffs_to_clients_that_hold_a_previous_one() {
        let old = signed("r a AAA x\ns Running\nr b BBB x\ns Running\n", "YQ==");
        let older = signed("r a AAA x\ns Fast\n", "Yg==");
        let new = signed("r a AAA x\ns Running Valid\nr c CCC x\ns Exit\n", "Yw==");
        let c = DirCache::new(DirDocuments {
            consensus_microdesc: Some(new.clone().into_bytes()),
            previous_consensuses_microdesc: vec![older.into_bytes(), old.clone().into_bytes()],
            ..DirDocuments::default()
        });
        let from = onion_dir::consdiff::signed_part_digest(&old).unwrap();
        let path = "/tor/status-vote/current/consensus-microdesc";
        // X-Or-Diff-From-Consensus naming `old` (among unknown digests): the diff.
        let req = format!(
            "GET {path} HTTP/1.0\r\nX-Or-Diff-From-Consensus: {}, {from}\r\n\r\n",
            "ab".repeat(32)
        );
        let (st, body) = get(&c, req.as_bytes(), 1 << 20);
        assert_eq!(st, 200);
        let body = String::from_utf8(body).unwrap();
        assert!(onion_dir::consdiff::is_diff(&body), "{body}");
        assert_eq!(onion_dir::consdiff::apply(&old, &body).unwrap(), new);
        // Compressed (.z) too.
        let req = format!("GET {path}.z HTTP/1.0\r\nX-Or-Diff-From-Consensus: {from}\r\n\r\n");
        let (_, body) = get(&c, req.as_bytes(), 1 << 20);
        let body = String::from_utf8(body).unwrap();
        assert_eq!(onion_dir::consdiff::apply(&old, &body).unwrap(), new);
        // Only unknown digests, or none: the full consensus.
        let req = format!(
            "GET {path} HTTP/1.0\r\nX-Or-Diff-From-Consensus: {}\r\n\r\n",
            "cd".repeat(32)
        );
        assert_eq!(get(&c, req.as_bytes(), 1 << 20).1, new.as_bytes());
        // The diff URI of dir-spec §4.5.2: the diff, 404 for an unknown base, 400 for junk.
        let req = format!("GET {path}/diff/{from}/AAAA HTTP/1.0\r\n\r\n");
        let (st, body) = get(&c, req.as_bytes(), 1 << 20);
        assert_eq!(st, 200);
        let body = String::from_utf8(body).unwrap();
        assert_eq!(onion_dir::consdiff::apply(&old, &body).unwrap(), new);
        let req = format!("GET {path}/diff/{}/AAAA HTTP/1.0\r\n\r\n", "ef".repeat(32));
        assert_eq!(get(&c, req.as_bytes(), 1 << 20).0, 404);
        let req = format!("GET {path}/diff/zz/AAAA HTTP/1.0\r\n\r\n");
        assert_eq!(get(&c, req.as_bytes(), 1 << 20).0, 400);
        // The ns flavour has no previous consensus: no diff.
        let req =
            format!("GET /tor/status-vote/current/consensus/diff/{from}/AAAA HTTP/1.0\r\n\r\n");
        assert_eq!(get(&c, req.as_bytes(), 1 << 20).0, 404);
    }

    fn get(c: &DirCache, req: &[u8], max: usize) -> (u16, Vec<u8>) {
        let mut a = c.answer(req, max);
        let mut bytes = Vec::new();
        while let Some(ch) = a.next_chunk() {
            let n = ch.len().min(100);
            bytes.extend_from_slice(&ch[..n]);
            a.advance(n);
        }
        assert!(a.done());
        let (head, _) = parse_head(&bytes).expect("head").expect("complete");
        if head.status != 200 {
            return (head.status, Vec::new());
        }
        let mut r = ResponseReader::new(1 << 20);
        r.handle_bytes(&bytes).expect("bytes");
        let resp = r.finish().expect("response");
        (resp.head.status, resp.body.into_bytes())
    }

    #[test]
    fn serves_consensuses_microdescs_and_descriptors() {
        let c = cache();
        let req = DirRequest::consensus(onion_dir::consensus::Flavor::Microdesc, &[], 3);
        let (st, body) = get(&c, &req.to_bytes(), 1 << 20);
        assert_eq!(
            (st, body.as_slice()),
            (200, &b"network-status-version 3 microdesc\n"[..])
        );
        let (st, body) = get(
            &c,
            b"GET /tor/status-vote/current/consensus.z HTTP/1.0\r\n\r\n",
            1 << 20,
        );
        assert_eq!(
            (st, body.as_slice()),
            (200, &b"network-status-version 3\nns\n"[..])
        );
        let md = MdDigest(Sha256::digest(b"onion-key\nB\n").into());
        let absent = MdDigest([1; 32]);
        for r in DirRequest::microdescs(&[md, absent]) {
            let (st, body) = get(&c, &r.to_bytes(), 1 << 20);
            assert_eq!((st, body.as_slice()), (200, &b"onion-key\nB\n"[..]));
        }
        let path = format!("/tor/server/fp/{}", hex::encode([7u8; 20]));
        let req = format!("GET {path} HTTP/1.0\r\n\r\n");
        assert_eq!(
            get(&c, req.as_bytes(), 1 << 20),
            (200, b"router x\n".to_vec())
        );
        let req = format!(
            "GET /tor/server/d/{} HTTP/1.0\r\n\r\n",
            hex::encode([9u8; 20])
        );
        assert_eq!(get(&c, req.as_bytes(), 1 << 20).0, 200);
    }

    /// Each certificate's authority identity and signing-key digest.
    fn cert_ids() -> Vec<(RsaIdentity, RsaIdentity)> {
        CERTS
            .iter()
            .map(|t| {
                let c = onion_dir::authcert::UnverifiedAuthCert::parse(t).expect("cert");
                (c.peek().fingerprint, c.peek().signing_key_digest())
            })
            .collect()
    }

    fn with_certs() -> DirCache {
        let mut authority_certs: Vec<Vec<u8>> =
            CERTS.iter().map(|t| t.as_bytes().to_vec()).collect();
        authority_certs.push(b"not a certificate\n".to_vec());
        DirCache::new(DirDocuments {
            authority_certs,
            ..DirDocuments::default()
        })
    }

    #[test]
    fn serves_authority_key_certificates() {
        let c = with_certs();
        let ids = cert_ids();
        let fetch = |path: &str| {
            get(
                &c,
                format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes(),
                1 << 20,
            )
        };
        // All of them, in the order given (the text that is no certificate is not served),
        // each as its authority signed it.
        let (st, body) = fetch("/tor/keys/all");
        assert_eq!((st, body.as_slice()), (200, CERTS.concat().as_bytes()));
        let parsed = onion_dir::authcert::parse_many(core::str::from_utf8(&body).unwrap())
            .expect("certificates");
        assert_eq!(parsed.len(), 3);
        for p in &parsed {
            p.verify_signatures().expect("signed");
        }
        // By authority identity, as a client asks (onion_dir's request), and compressed.
        // (The request names them sorted; the answer follows the request's order.)
        let req = &DirRequest::authority_certs(&[ids[2].0, ids[0].0])[0];
        let (st, body) = get(&c, &req.to_bytes(), 1 << 20);
        let mut want = [
            (ids[2].0.to_string(), CERTS[2]),
            (ids[0].0.to_string(), CERTS[0]),
        ];
        want.sort();
        assert_eq!(st, 200);
        assert!(body == [want[0].1, want[1].1].concat().as_bytes(), "fp");
        let path = format!("/tor/keys/fp/{}.z", hex::encode(ids[1].0 .0));
        assert_eq!(fetch(&path), (200, CERTS[1].as_bytes().to_vec()));
        // Asked twice: sent once.
        let path = format!("/tor/keys/fp/{}+{}", ids[1].0, ids[1].0);
        assert_eq!(fetch(&path), (200, CERTS[1].as_bytes().to_vec()));
        // By signing-key digest, and by the pair.
        let path = format!("/tor/keys/sk/{}", ids[2].1);
        assert_eq!(fetch(&path), (200, CERTS[2].as_bytes().to_vec()));
        let path = format!(
            "/tor/keys/fp-sk/{}-{}+{}-{}",
            ids[0].0, ids[0].1, ids[1].0, ids[1].1
        );
        assert_eq!(
            fetch(&path),
            (200, [CERTS[0], CERTS[1]].concat().into_bytes())
        );
        // A pair that does not match, an unknown authority: 404; junk: 400.
        let path = format!("/tor/keys/fp-sk/{}-{}", ids[0].0, ids[1].1);
        assert_eq!(fetch(&path).0, 404);
        assert_eq!(fetch(&format!("/tor/keys/fp/{}", "AB".repeat(20))).0, 404);
        assert_eq!(fetch("/tor/keys/authority").0, 404);
        assert_eq!(fetch("/tor/keys/fp/XYZ").0, 400);
        assert_eq!(fetch(&format!("/tor/keys/fp-sk/{}", ids[0].0)).0, 400);
        let many = vec![ids[0].0.to_string(); MAX_CERTS_PER_REQUEST + 1].join("+");
        assert_eq!(fetch(&format!("/tor/keys/fp/{many}")).0, 400);
        // A cache given no certificates has none.
        let empty = DirCache::default();
        let (st, _) = get(&empty, b"GET /tor/keys/all HTTP/1.0\r\n\r\n", 1 << 20);
        assert_eq!(st, 404);
    }

    #[test]
    fn answers_are_reported_with_status_diff_and_length() {
        let old = signed("r a AAA x\ns Running\n", "YQ==");
        let new = signed("r a AAA x\ns Running Valid\n", "Yw==");
        let c = DirCache::new(DirDocuments {
            consensus_microdesc: Some(new.clone().into_bytes()),
            previous_consensuses_microdesc: vec![old.clone().into_bytes()],
            ..DirDocuments::default()
        });
        let path = "/tor/status-vote/current/consensus-microdesc";
        let (_, r) = c.answer_reported(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes(), 1 << 20);
        let want = DirAnswered {
            method: "GET".into(),
            path: path.into(),
            status: 200,
            diff: false,
            compressed: false,
            len: new.len(),
        };
        assert_eq!(r, want);
        let from = onion_dir::consdiff::signed_part_digest(&old).unwrap();
        let head = format!("GET {path} HTTP/1.0\r\nX-Or-Diff-From-Consensus: {from}\r\n\r\n");
        let (a, r) = c.answer_reported(head.as_bytes(), 1 << 20);
        let sent: usize = a.pieces.iter().skip(1).map(|p| p.len()).sum();
        assert!(r.diff && r.status == 200 && !r.compressed);
        assert_eq!(r.len, sent);
        assert!(sent < new.len() + 200 && sent > 0);
        let head = format!("GET {path}/diff/{from}/AA.z HTTP/1.0\r\n\r\n");
        let (_, r) = c.answer_reported(head.as_bytes(), 1 << 20);
        assert!(r.diff && r.compressed && r.status == 200, "{r:?}");
        let (_, r) = c.answer_reported(b"GET /tor/nothing HTTP/1.0\r\n\r\n", 1 << 20);
        assert_eq!(
            (r.status, r.diff, r.len, r.path.as_str()),
            (404, false, 0, "/tor/nothing")
        );
        let (_, r) = c.answer_reported(b"GET\r\n\r\n", 1 << 20);
        assert_eq!(
            (r.status, r.method.as_str(), r.path.as_str()),
            (400, "", "")
        );
        let long = format!("GET /{} HTTP/1.0\r\n\r\n", "é".repeat(MAX_REPORTED_PATH));
        let (_, r) = c.answer_reported(long.as_bytes(), 1 << 20);
        assert!(r.path.len() <= MAX_REPORTED_PATH && r.path.starts_with("/é"));
    }

    /// The relay reports each BEGIN_DIR request it answers as [`crate::Event::DirAnswered`],
    /// key certificates included.
    #[test]
    fn the_relay_reports_the_directory_requests_it_answers() {
        use crate::tests::Net;
        use onion_circuit::circuit::HandshakeKind;
        use std::net::{IpAddr, Ipv4Addr};
        let mut net = Net::new(21);
        let r = net.add_relay(|c| c.dir_cache = true);
        net.relays[r].set_directory_documents(DirDocuments {
            authority_certs: CERTS.iter().map(|t| t.as_bytes().to_vec()).collect(),
            ..DirDocuments::default()
        });
        let (c, _) = net
            .connect_client(r, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3)))
            .expect("connect");
        let i = net.build(c, &[r], HandshakeKind::CreateFast);
        for path in ["/tor/keys/all", "/tor/micro/d/AAAA"] {
            let now = net.now;
            let s = net.circs[i].circ.begin_dir(now).expect("begin_dir");
            net.run();
            net.send(i, s, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
            net.run();
        }
        let got: Vec<_> = net
            .dir_answered
            .iter()
            .map(|(x, a)| (*x, a.path.as_str(), a.status, a.len))
            .collect();
        assert_eq!(
            got,
            vec![
                (r, "/tor/keys/all", 200, CERTS.concat().len()),
                (r, "/tor/micro/d/AAAA", 400, 0)
            ]
        );
    }

    #[test]
    fn own_descriptor_and_unknown_digests() {
        let fetch = |c: &DirCache, path: &str| {
            get(
                c,
                format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes(),
                1 << 20,
            )
        };
        let mut docs = DirDocuments {
            own_descriptor: Some(b"router me\n".to_vec()),
            ..DirDocuments::default()
        };
        let c = DirCache::new(docs.clone());
        assert_eq!(
            fetch(&c, "/tor/server/authority"),
            (200, b"router me\n".to_vec())
        );
        assert_eq!(
            fetch(&c, "/tor/server/authority.z"),
            (200, b"router me\n".to_vec())
        );
        // No other descriptor held: all of them is nothing (404, as C tor answers).
        assert_eq!(fetch(&c, "/tor/server/all").0, 404);
        docs.own_descriptor = None;
        assert_eq!(fetch(&DirCache::new(docs), "/tor/server/authority").0, 404);
        // Digests the cache does not hold: 404; some held: only those.
        let c = cache();
        let absent = MdDigest([1; 32]).to_base64();
        assert_eq!(fetch(&c, &format!("/tor/micro/d/{absent}")).0, 404);
        assert_eq!(
            fetch(&c, &format!("/tor/server/d/{}", "AB".repeat(20))).0,
            404
        );
        assert_eq!(
            fetch(&c, &format!("/tor/server/fp/{}", "AB".repeat(20))).0,
            404
        );
        let held = MdDigest(Sha256::digest(b"onion-key\nA\n").into()).to_base64();
        assert_eq!(
            fetch(&c, &format!("/tor/micro/d/{absent}-{held}.z")),
            (200, b"onion-key\nA\n".to_vec())
        );
        let both = format!("{}+{}", "AB".repeat(20), hex::encode([9u8; 20]));
        assert_eq!(
            fetch(&c, &format!("/tor/server/d/{both}")),
            (200, b"router x\n".to_vec())
        );
        assert_eq!(fetch(&c, "/tor/server/all"), (200, b"router x\n".to_vec()));
    }

    #[test]
    fn errors_and_bounds() {
        let c = cache();
        assert_eq!(
            get(&c, b"GET /tor/nothing HTTP/1.0\r\n\r\n", 1 << 20).0,
            404
        );
        assert_eq!(get(&c, b"POST /tor/ HTTP/1.0\r\n\r\n", 1 << 20).0, 405);
        assert_eq!(get(&c, b"GET\r\n\r\n", 1 << 20).0, 400);
        assert_eq!(
            get(&c, b"GET /tor/micro/d/!! HTTP/1.0\r\n\r\n", 1 << 20).0,
            400
        );
        let many = vec![MdDigest([1; 32]).to_base64(); 93].join("-");
        let req = format!("GET /tor/micro/d/{many} HTTP/1.0\r\n\r\n");
        assert_eq!(get(&c, req.as_bytes(), 1 << 20).0, 400);
        // Larger than the bound: 503.
        let req = b"GET /tor/status-vote/current/consensus HTTP/1.0\r\n\r\n";
        assert_eq!(get(&c, req, 10).0, 503);
        assert_eq!(DirCache::default().answer(req, 1 << 20).pieces.len(), 1);
    }
}
