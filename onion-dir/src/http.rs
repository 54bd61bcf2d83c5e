//! Directory HTTP requests and responses, sans-IO (dir-spec §4.3, §5, §6,
//! appendix B "General-use HTTP URLs").
//!
//! [`DirRequest`] builds the bytes of an HTTP/1.0 `GET` for a consensus (with
//! the authority-fingerprint suffix), microdescriptors by digest (batched at most
//! 92 per request, §4.3), authority key certificates and server descriptors.
//! [`ResponseReader`] takes the response bytes as they arrive and, at end of
//! stream (HTTP/1.0 ends the body by closing), returns the status, headers and
//! the decompressed body (`identity`, `deflate` = zlib, `gzip`; concatenated
//! compressed streams are accepted, as §6.1 requires). `x-zstd` and
//! `x-tor-lzma` are never advertised, so a server must not send them; if one
//! does, the reader returns [`HttpError::UnsupportedEncoding`].
//!
//! A relay's descriptor upload (dir-spec §2.1, `POST /tor/` to each authority) is built by
//! [`descriptor_upload`] and the authority's answer read by [`parse_upload_response`].

use flate2::{Decompress, FlushDecompress, Status};

use crate::consensus::Flavor;
use crate::error::HttpError;
use crate::ids::{MdDigest, RsaIdentity};

/// Most microdescriptor digests per request (dir-spec §4.3: squid URL limits).
pub const MAX_MICRODESCS_PER_REQUEST: usize = 92;
/// Most server descriptors or certificates per request (dir-spec §5.2: 128).
pub const MAX_DESCRIPTORS_PER_REQUEST: usize = 128;
/// Largest response head (status line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// Most header lines accepted.
const MAX_HEADERS: usize = 64;

/// A content encoding of dir-spec §6.1 that we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// zlib (RFC 1950) stream, as tor's "deflate".
    Deflate,
    /// gzip (RFC 1952).
    Gzip,
}

/// One directory request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirRequest {
    /// The request path, e.g. `/tor/micro/d/<d1>-<d2>`.
    pub path: String,
    /// `Accept-Encoding` values to advertise. For anonymous (onion-service)
    /// requests dir-spec §6.1 says to advertise only `deflate`.
    pub accept: Vec<Encoding>,
}

impl DirRequest {
    fn new(path: String) -> Self {
        DirRequest {
            path,
            accept: vec![Encoding::Deflate, Encoding::Gzip, Encoding::Identity],
        }
    }

    /// The current consensus of `flavor`. With authorities, the path carries
    /// the `/<F1>+<F2>…` suffix (dir-spec §3.11, §5.1) so that a cache serves
    /// it only if it is signed by a majority of them; each fingerprint is
    /// shortened to its first `prefix_bytes` bytes (1..=20; tor uses 3).
    pub fn consensus(flavor: Flavor, authorities: &[RsaIdentity], prefix_bytes: usize) -> Self {
        let mut path = String::from("/tor/status-vote/current/consensus");
        if flavor == Flavor::Microdesc {
            path.push_str("-microdesc");
        }
        let n = prefix_bytes.clamp(1, 20);
        for (i, a) in authorities.iter().enumerate() {
            path.push(if i == 0 { '/' } else { '+' });
            path.push_str(&hex::encode_upper(a.0.get(..n).unwrap_or(&a.0)));
        }
        DirRequest::new(path)
    }

    /// Microdescriptors by digest, in as many requests as needed (at most 92
    /// digests each, dir-spec §4.3). Digests are sorted and deduplicated.
    pub fn microdescs(digests: &[MdDigest]) -> Vec<Self> {
        let mut d: Vec<MdDigest> = digests.to_vec();
        d.sort_unstable();
        d.dedup();
        d.chunks(MAX_MICRODESCS_PER_REQUEST)
            .map(|chunk| {
                let list: Vec<String> = chunk.iter().map(|m| m.to_base64()).collect();
                DirRequest::new(format!("/tor/micro/d/{}", list.join("-")))
            })
            .collect()
    }

    /// Authority key certificates by authority identity (`/tor/keys/fp/…`).
    pub fn authority_certs(ids: &[RsaIdentity]) -> Vec<Self> {
        Self::batched(
            "/tor/keys/fp/",
            ids.iter().map(|i| i.to_string()).collect(),
            "+",
        )
    }

    /// Authority key certificates by (identity, signing-key digest)
    /// (`/tor/keys/fp-sk/<F>-<S>+…`), as a consensus signature names them.
    pub fn authority_certs_fp_sk(pairs: &[(RsaIdentity, RsaIdentity)]) -> Vec<Self> {
        Self::batched(
            "/tor/keys/fp-sk/",
            pairs.iter().map(|(f, s)| format!("{f}-{s}")).collect(),
            "+",
        )
    }

    /// All authority certificates a server has (`/tor/keys/all`).
    pub fn all_authority_certs() -> Self {
        DirRequest::new("/tor/keys/all".into())
    }

    /// Server descriptors by descriptor digest (`/tor/server/d/<D>+…`, hex).
    pub fn server_descriptors(digests: &[[u8; 20]]) -> Vec<Self> {
        Self::batched(
            "/tor/server/d/",
            digests.iter().map(hex::encode_upper).collect(),
            "+",
        )
    }

    /// Server descriptors by relay identity (`/tor/server/fp/<F>+…`).
    pub fn server_descriptors_by_id(ids: &[RsaIdentity]) -> Vec<Self> {
        Self::batched(
            "/tor/server/fp/",
            ids.iter().map(|i| i.to_string()).collect(),
            "+",
        )
    }

    fn batched(prefix: &str, mut items: Vec<String>, sep: &str) -> Vec<Self> {
        items.sort_unstable();
        items.dedup();
        items
            .chunks(MAX_DESCRIPTORS_PER_REQUEST)
            .map(|c| DirRequest::new(format!("{prefix}{}", c.join(sep))))
            .collect()
    }

    /// The request bytes: `GET <path> HTTP/1.0`, `Accept-Encoding`, blank line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("GET {} HTTP/1.0\r\n", self.path);
        if !self.accept.is_empty() {
            let names: Vec<&str> = self
                .accept
                .iter()
                .map(|e| match e {
                    Encoding::Identity => "identity",
                    Encoding::Deflate => "deflate",
                    Encoding::Gzip => "gzip",
                })
                .collect();
            s.push_str("Accept-Encoding: ");
            s.push_str(&names.join(", "));
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// Status line and headers of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header (name, value) pairs in order; names as received.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's encoding (`Content-Encoding`; absent means identity).
    pub fn encoding(&self) -> Result<Encoding, HttpError> {
        match self.header("Content-Encoding").map(str::trim) {
            None | Some("") | Some("identity") => Ok(Encoding::Identity),
            Some("deflate") => Ok(Encoding::Deflate),
            Some("gzip") => Ok(Encoding::Gzip),
            Some(other) => Err(HttpError::UnsupportedEncoding(
                other.chars().take(32).collect(),
            )),
        }
    }
}

/// Parse the response head from the start of `buf`. `Ok(None)`: need more bytes.
/// On success also returns the head's length (where the body starts).
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let end = match find(buf, b"\r\n\r\n") {
        Some(e) => e,
        None if buf.len() > MAX_HEAD_BYTES => {
            return Err(HttpError::TooLarge {
                limit: MAX_HEAD_BYTES,
            })
        }
        None => return Ok(None),
    };
    if end > MAX_HEAD_BYTES {
        return Err(HttpError::TooLarge {
            limit: MAX_HEAD_BYTES,
        });
    }
    let head = std::str::from_utf8(buf.get(..end).ok_or(HttpError::BadStatusLine)?)
        .map_err(|_| HttpError::BadStatusLine)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::BadStatusLine)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or(HttpError::BadStatusLine)?;
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(HttpError::BadStatusLine);
    }
    let code = parts.next().ok_or(HttpError::BadStatusLine)?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadStatusLine);
    }
    let status: u16 = code.parse().map_err(|_| HttpError::BadStatusLine)?;
    let reason = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    for (i, l) in lines.enumerate() {
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::TooLarge {
                limit: MAX_HEAD_BYTES,
            });
        }
        let (n, v) = l.split_once(':').ok_or(HttpError::BadHeader(i + 2))?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HttpError::BadHeader(i + 2));
        }
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    Ok(Some((
        ResponseHead {
            status,
            reason,
            headers,
        },
        end + 4,
    )))
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status and headers.
    pub head: ResponseHead,
    /// The decompressed body as text.
    pub body: String,
}

/// A response as received, whatever its status: what a general HTTP client (`onion get`)
/// shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// Status and headers (the reason phrase as received: escape it before display).
    pub head: ResponseHead,
    /// The body, decompressed as its `Content-Encoding` says, any bytes.
    pub body: Vec<u8>,
}

/// Accumulates a response's bytes; decodes at end of stream.
#[derive(Debug, Clone)]
pub struct ResponseReader {
    buf: Vec<u8>,
    limit: usize,
}

impl ResponseReader {
    /// A reader accepting at most `limit` bytes of body, both as received and
    /// after decompression (a bound against decompression bombs).
    pub fn new(limit: usize) -> Self {
        ResponseReader {
            buf: Vec::new(),
            limit,
        }
    }

    /// Feed received bytes. Fails early if the limit is exceeded.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<(), HttpError> {
        if self.buf.len().saturating_add(data.len()) > self.limit.saturating_add(MAX_HEAD_BYTES) {
            return Err(HttpError::TooLarge { limit: self.limit });
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The head, once complete (`Ok(None)` until then); lets the caller give
    /// up early on a non-200 status.
    pub fn head(&self) -> Result<Option<ResponseHead>, HttpError> {
        Ok(parse_head(&self.buf)?.map(|(h, _)| h))
    }

    /// End of stream: decode the response. Non-200 statuses are errors, and so is a body
    /// that is not UTF-8 text (every directory document is, dir-spec §1.2).
    pub fn finish(self) -> Result<Response, HttpError> {
        if let Some((head, _)) = parse_head(&self.buf)? {
            if head.status != 200 {
                return Err(HttpError::Status { code: head.status });
            }
        }
        let RawResponse { head, body } = self.finish_any()?;
        let body = String::from_utf8(body).map_err(|_| HttpError::NotUtf8)?;
        Ok(Response { head, body })
    }

    /// End of stream: the response whatever its status, its body decoded. With a
    /// `Content-Length` (RFC 9112 §6.3), a body that ended short is [`HttpError::Truncated`]
    /// and bytes after that length are dropped; without one, the body is everything up to
    /// the end of the stream (HTTP/1.0).
    pub fn finish_any(self) -> Result<RawResponse, HttpError> {
        let (head, off) = parse_head(&self.buf)?.ok_or(HttpError::Incomplete)?;
        let mut raw = self.buf.get(off..).unwrap_or(&[]);
        if let Some(len) = head.header("Content-Length") {
            let expected: usize = len
                .parse()
                .map_err(|_| HttpError::BadHeader(content_length_line(&head)))?;
            match raw.get(..expected) {
                Some(body) => raw = body,
                None => {
                    return Err(HttpError::Truncated {
                        expected,
                        got: raw.len(),
                    })
                }
            }
        }
        if raw.len() > self.limit {
            return Err(HttpError::TooLarge { limit: self.limit });
        }
        let body = decode_body(head.encoding()?, raw, self.limit)?;
        Ok(RawResponse { head, body })
    }
}

/// The line number of the `Content-Length` header in a response head (the status line is 1).
fn content_length_line(head: &ResponseHead) -> usize {
    let i = head
        .headers
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case("Content-Length"));
    i.map_or(0, |i| i + 2)
}

/// Decompress `raw` with `enc`, producing at most `limit` bytes.
/// Concatenated compressed streams are decoded one after another (§6.1).
pub fn decode_body(enc: Encoding, raw: &[u8], limit: usize) -> Result<Vec<u8>, HttpError> {
    match enc {
        Encoding::Identity => {
            if raw.len() > limit {
                return Err(HttpError::TooLarge { limit });
            }
            Ok(raw.to_vec())
        }
        Encoding::Deflate => inflate(raw, limit, |_| Decompress::new(true)),
        Encoding::Gzip => {
            // Each gzip member: strip its header, inflate raw deflate, skip the 8-byte trailer.
            let mut out = Vec::new();
            let mut rest = raw;
            while !rest.is_empty() {
                let hdr = gzip_header_len(rest).ok_or(HttpError::Decompress)?;
                let body = rest.get(hdr..).ok_or(HttpError::Decompress)?;
                let (chunk, used) = inflate_one(
                    body,
                    limit.saturating_sub(out.len()),
                    Decompress::new(false),
                )?;
                out.extend_from_slice(&chunk);
                rest = body.get(used + 8..).ok_or(HttpError::Decompress)?;
            }
            Ok(out)
        }
    }
}

fn inflate(raw: &[u8], limit: usize, mk: impl Fn(()) -> Decompress) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (chunk, used) = inflate_one(rest, limit.saturating_sub(out.len()), mk(()))?;
        out.extend_from_slice(&chunk);
        rest = rest.get(used..).ok_or(HttpError::Decompress)?;
    }
    Ok(out)
}

/// Inflate one stream; returns the output and the input bytes consumed.
fn inflate_one(
    input: &[u8],
    limit: usize,
    mut d: Decompress,
) -> Result<(Vec<u8>, usize), HttpError> {
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit).min(1 << 24));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= limit {
                return Err(HttpError::TooLarge { limit });
            }
            out.reserve((out.len().max(4096)).min(limit - out.len()));
        }
        let consumed = usize::try_from(d.total_in()).map_err(|_| HttpError::Decompress)?;
        let inp = input.get(consumed..).ok_or(HttpError::Decompress)?;
        let before_out = out.len();
        let st = d
            .decompress_vec(inp, &mut out, FlushDecompress::None)
            .map_err(|_| HttpError::Decompress)?;
        if out.len() > limit {
            return Err(HttpError::TooLarge { limit });
        }
        match st {
            Status::StreamEnd => {
                let used = usize::try_from(d.total_in()).map_err(|_| HttpError::Decompress)?;
                return Ok((out, used));
            }
            Status::Ok | Status::BufError => {
                let now_in = usize::try_from(d.total_in()).map_err(|_| HttpError::Decompress)?;
                if now_in == consumed && out.len() == before_out && out.len() < out.capacity() {
                    // No progress with room to write: input truncated.
                    return Err(HttpError::Decompress);
                }
            }
        }
    }
}

/// Length of a gzip member header (RFC 1952 §2.3), or `None` if malformed.
fn gzip_header_len(b: &[u8]) -> Option<usize> {
    if b.len() < 10 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
        return None;
    }
    let flags = b[3];
    let mut pos = 10usize;
    if flags & 4 != 0 {
        let xlen = usize::from(u16::from_le_bytes([*b.get(pos)?, *b.get(pos + 1)?]));
        pos = pos.checked_add(2 + xlen)?;
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            let z = b.get(pos..)?.iter().position(|&c| c == 0)?;
            pos += z + 1;
        }
    }
    if flags & 2 != 0 {
        pos += 2;
    }
    (pos <= b.len()).then_some(pos)
}

/// Where relays upload their server descriptor and extra-info document: `POST /tor/` to
/// each directory authority (dir-spec §2.1 "Uploading server descriptors and extra-info
/// documents").
pub const DESCRIPTOR_UPLOAD_PATH: &str = "/tor/";
/// Largest server descriptor authorities accept (dir-spec §2.1: 20,000 bytes).
pub const MAX_SERVER_DESCRIPTOR_BYTES: usize = 20_000;
/// Largest extra-info document authorities accept (dir-spec §2.1: 50,000 bytes).
pub const MAX_EXTRA_INFO_BYTES: usize = 50_000;

/// The bytes of the HTTP/1.0 request that uploads a relay's signed server descriptor,
/// followed by its extra-info document, to the directory authority at `authority` (its
/// DirPort), as C tor 0.4.9 sends it (dir-spec §2.1): `POST /tor/ HTTP/1.0`, `Host`
/// (without the port when it is 80), `X-Desc-Gen-Reason` (why the descriptor was made;
/// authorities only log it, and characters other than printable ASCII are dropped from it),
/// `Content-Length`, a blank line, then the documents.
///
/// Refuses documents over dir-spec's size limits, which authorities reject anyway.
pub fn descriptor_upload(
    authority: std::net::SocketAddr,
    descriptor: &str,
    extra_info: Option<&str>,
    reason: &str,
) -> Result<Vec<u8>, HttpError> {
    if descriptor.len() > MAX_SERVER_DESCRIPTOR_BYTES {
        return Err(HttpError::BadRequest(
            "server descriptor longer than 20,000 bytes",
        ));
    }
    if extra_info.is_some_and(|e| e.len() > MAX_EXTRA_INFO_BYTES) {
        return Err(HttpError::BadRequest(
            "extra-info document longer than 50,000 bytes",
        ));
    }
    let host = match (authority.ip(), authority.port()) {
        (std::net::IpAddr::V4(a), 80) => a.to_string(),
        (std::net::IpAddr::V6(a), 80) => format!("[{a}]"),
        (_, _) => authority.to_string(),
    };
    let reason: String = reason
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(256)
        .collect();
    let reason = reason.trim();
    let body_len = descriptor.len() + extra_info.map_or(0, str::len);
    let mut out = format!(
        "POST {DESCRIPTOR_UPLOAD_PATH} HTTP/1.0\r\nHost: {host}\r\nX-Desc-Gen-Reason: {}\r\nContent-Length: {body_len}\r\n\r\n",
        if reason.is_empty() { "unspecified" } else { reason }
    )
    .into_bytes();
    out.reserve(body_len);
    out.extend_from_slice(descriptor.as_bytes());
    if let Some(e) = extra_info {
        out.extend_from_slice(e.as_bytes());
    }
    Ok(out)
}

/// What a directory authority answered to a descriptor upload (C tor's
/// `directory_handle_command_post` and `handle_response_upload_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// 200: the descriptor was added. The reason phrase is the authority's message.
    Accepted {
        /// The reason phrase.
        message: String,
    },
    /// 200 with `X-Descriptor-Not-New: Yes`: the authority already had this descriptor
    /// or one that makes it redundant. Not an error: C tor goes on as if it was accepted.
    NotNew,
    /// 400: the authority refused the descriptor; the reason phrase says why (e.g. a
    /// rejected fingerprint, a bad signature, an unsupported version).
    Rejected {
        /// The reason phrase, as received (escape it before display).
        reason: String,
    },
    /// Any other status, e.g. 503 from a directory that is not an authority.
    Unexpected {
        /// The status code.
        status: u16,
        /// The reason phrase, as received.
        reason: String,
    },
}

/// Parses an authority's answer to [`descriptor_upload`] from the start of `buf`;
/// `Ok(None)` until the whole head has arrived (the body, if any, is not needed).
/// Malformed heads and heads over [`MAX_HEAD_BYTES`] are errors.
pub fn parse_upload_response(buf: &[u8]) -> Result<Option<UploadOutcome>, HttpError> {
    let Some((head, _)) = parse_head(buf)? else {
        return Ok(None);
    };
    Ok(Some(match head.status {
        200 if head
            .header("X-Descriptor-Not-New")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")) =>
        {
            UploadOutcome::NotNew
        }
        200 => UploadOutcome::Accepted {
            message: head.reason,
        },
        400 => UploadOutcome::Rejected {
            reason: head.reason,
        },
        status => UploadOutcome::Unexpected {
            status,
            reason: head.reason,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    #[test]
    fn descriptor_upload_request_is_c_tors() {
        let auth: std::net::SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let req = descriptor_upload(
            auth,
            "router x\n",
            Some("extra-info x\n"),
            "I just started\r\nX: y",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "POST /tor/ HTTP/1.0\r\nHost: 127.0.0.1:7001\r\nX-Desc-Gen-Reason: I just startedX: y\r\nContent-Length: 22\r\n\r\nrouter x\nextra-info x\n"
        );
        let v6: std::net::SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        let req = String::from_utf8(descriptor_upload(v6, "d", None, "").unwrap()).unwrap();
        assert!(req.starts_with("POST /tor/ HTTP/1.0\r\nHost: [2001:db8::1]\r\nX-Desc-Gen-Reason: unspecified\r\nContent-Length: 1\r\n\r\nd"));
        let big = "x".repeat(MAX_SERVER_DESCRIPTOR_BYTES + 1);
        assert!(matches!(
            descriptor_upload(auth, &big, None, ""),
            Err(HttpError::BadRequest(_))
        ));
        let big = "x".repeat(MAX_EXTRA_INFO_BYTES + 1);
        assert!(matches!(
            descriptor_upload(auth, "d", Some(&big), ""),
            Err(HttpError::BadRequest(_))
        ));
        // The request parses as HTTP: the head ends where the body starts.
        let req = descriptor_upload(auth, "router x\n", None, "r").unwrap();
        let end = find(&req, b"\r\n\r\n").unwrap();
        assert_eq!(&req[end + 4..], b"router x\n");
    }

    #[test]
    fn upload_responses_as_c_tor_authorities_send_them() {
        // The three answers of a C tor 0.4.9.11 authority (tornet, 2026-12-06) to onion's
        // descriptor: accepted, the same upload again, and one without a TAP onion-key.
        assert_eq!(
            parse_upload_response(
                b"HTTP/1.0 200 [None]\r\nDate: Sun, 06 Dec 2026 09:44:26 GMT\r\n\r\n"
            )
            .unwrap(),
            Some(UploadOutcome::Accepted {
                message: "[None]".into()
            })
        );
        assert_eq!(
            parse_upload_response(b"HTTP/1.0 200 OK\r\nDate: Sun, 06 Dec 2026 09:44:31 GMT\r\nX-Descriptor-Not-New: Yes\r\n\r\n")
                .unwrap(),
            Some(UploadOutcome::NotNew)
        );
        assert_eq!(
            parse_upload_response(b"HTTP/1.0 400 Missing TAP key in descriptor.\r\nDate: Sun, 06 Dec 2026 09:44:27 GMT\r\n\r\n")
                .unwrap(),
            Some(UploadOutcome::Rejected {
                reason: "Missing TAP key in descriptor.".into()
            })
        );
        assert_eq!(
            parse_upload_response(b"HTTP/1.0 503 Not acting as a public relay\r\n\r\n").unwrap(),
            Some(UploadOutcome::Unexpected {
                status: 503,
                reason: "Not acting as a public relay".into()
            })
        );
        assert_eq!(parse_upload_response(b"HTTP/1.0 200 OK\r\n").unwrap(), None);
        assert!(parse_upload_response(b"HTTP/9 200 OK\r\n\r\n").is_err());
        assert!(parse_upload_response(&vec![b'a'; MAX_HEAD_BYTES + 1]).is_err());
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn consensus_request() {
        let a = RsaIdentity::from_hex("2332F32FF2867FDC5BB4865EC0C8B5BBA6C570E6").unwrap();
        let b = RsaIdentity::from_hex("329F4451BAA808E78DF40D2F286080779AD22095").unwrap();
        let r = DirRequest::consensus(Flavor::Microdesc, &[a, b], 3);
        assert_eq!(
            r.path,
            "/tor/status-vote/current/consensus-microdesc/2332F3+329F44"
        );
        assert_eq!(
            r.to_bytes(),
            b"GET /tor/status-vote/current/consensus-microdesc/2332F3+329F44 HTTP/1.0\r\nAccept-Encoding: deflate, gzip, identity\r\n\r\n"
        );
        assert_eq!(
            DirRequest::consensus(Flavor::Ns, &[], 3).path,
            "/tor/status-vote/current/consensus"
        );
    }

    #[test]
    fn microdesc_batches() {
        let ds: Vec<MdDigest> = (0..200u8).map(|i| MdDigest([i; 32])).collect();
        let rs = DirRequest::microdescs(&ds);
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0].path.matches('-').count(), 91);
        assert!(rs[0]
            .path
            .starts_with("/tor/micro/d/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-AQEB"));
        let total: usize = rs
            .iter()
            .map(|r| {
                r.path
                    .strip_prefix("/tor/micro/d/")
                    .unwrap()
                    .split('-')
                    .count()
            })
            .sum();
        assert_eq!(total, 200);
        let c = DirRequest::authority_certs_fp_sk(&[(RsaIdentity([1; 20]), RsaIdentity([2; 20]))]);
        assert_eq!(
            c[0].path,
            format!("/tor/keys/fp-sk/{}-{}", "01".repeat(20), "02".repeat(20))
        );
        assert_eq!(
            DirRequest::server_descriptors(&[[0xab; 20]])[0].path,
            format!("/tor/server/d/{}", "AB".repeat(20))
        );
    }

    #[test]
    fn responses() {
        let body = b"network-status-version 3\n".repeat(100);
        for (enc, data) in [
            ("deflate", zlib(&body)),
            ("gzip", gzip(&body)),
            ("identity", body.clone()),
        ] {
            let mut msg = format!(
                "HTTP/1.0 200 OK\r\nContent-Encoding: {enc}\r\nContent-Type: text/plain\r\n\r\n"
            )
            .into_bytes();
            msg.extend_from_slice(&data);
            let mut r = ResponseReader::new(1 << 20);
            for chunk in msg.chunks(7) {
                r.handle_bytes(chunk).unwrap();
            }
            let resp = r.finish().unwrap();
            assert_eq!(resp.body.as_bytes(), &body[..], "{enc}");
            assert_eq!(resp.head.header("content-type"), Some("text/plain"));
        }
        // Concatenated compressed documents.
        let mut two = zlib(b"a\n");
        two.extend(zlib(b"b\n"));
        assert_eq!(
            decode_body(Encoding::Deflate, &two, 100).unwrap(),
            b"a\nb\n"
        );
        let mut two = gzip(b"a\n");
        two.extend(gzip(b"b\n"));
        assert_eq!(decode_body(Encoding::Gzip, &two, 100).unwrap(), b"a\nb\n");
        // Bomb: 1 MB of zeros compresses to ~1 KB, limit 64 KB.
        let bomb = zlib(&vec![0u8; 1 << 20]);
        assert!(matches!(
            decode_body(Encoding::Deflate, &bomb, 1 << 16),
            Err(HttpError::TooLarge { .. })
        ));
        // Truncated stream.
        let z = zlib(&body);
        assert!(decode_body(Encoding::Deflate, &z[..z.len() / 2], 1 << 20).is_err());
        // Status and encodings.
        let mut r = ResponseReader::new(100);
        r.handle_bytes(b"HTTP/1.0 404 Not found\r\n\r\n").unwrap();
        assert_eq!(r.finish().unwrap_err(), HttpError::Status { code: 404 });
        let mut r = ResponseReader::new(100);
        r.handle_bytes(b"HTTP/1.0 200 OK\r\nContent-Encoding: x-zstd\r\n\r\nxx")
            .unwrap();
        assert!(matches!(r.finish(), Err(HttpError::UnsupportedEncoding(_))));
        let mut r = ResponseReader::new(100);
        r.handle_bytes(b"HTTP/1.0 200 OK\r\n").unwrap();
        assert_eq!(r.head().unwrap(), None);
        assert_eq!(r.finish().unwrap_err(), HttpError::Incomplete);
        assert!(ResponseReader::new(10).handle_bytes(&[0; 20000]).is_err());
    }

    /// A response read whatever its status, as `onion get` shows it: the reason phrase,
    /// any bytes of body, `Content-Length` honoured, the body decompressed.
    #[test]
    fn responses_of_any_status() {
        let read = |bytes: &[u8], limit| {
            let mut r = ResponseReader::new(limit);
            r.handle_bytes(bytes)?;
            r.finish_any()
        };
        let r = read(b"HTTP/1.0 404 Not Found\r\nX-A: b\r\n\r\n\xff\x00gone", 100).unwrap();
        assert_eq!((r.head.status, r.head.reason.as_str()), (404, "Not Found"));
        assert_eq!(
            (r.head.header("x-a"), &r.body[..]),
            (Some("b"), &b"\xff\x00gone"[..])
        );
        // Content-Length: the bytes after it are not the body; fewer is a truncation.
        let r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", 100).unwrap();
        assert_eq!(r.body, b"abc");
        assert_eq!(
            read(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nab", 100),
            Err(HttpError::Truncated {
                expected: 5,
                got: 2
            })
        );
        assert_eq!(
            read(
                b"HTTP/1.0 200 OK\r\nA: b\r\nContent-Length: x\r\n\r\nab",
                100
            ),
            Err(HttpError::BadHeader(3))
        );
        // The directory reader checks the same length.
        let mut r = ResponseReader::new(100);
        r.handle_bytes(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nab")
            .unwrap();
        assert!(matches!(r.finish(), Err(HttpError::Truncated { .. })));
        // Compressed, and over the limit once decompressed.
        let mut m = b"HTTP/1.0 500 Oops\r\nContent-Encoding: deflate\r\n\r\n".to_vec();
        m.extend(zlib(&[7u8; 5000]));
        assert_eq!(read(&m, 10_000).unwrap().body, vec![7u8; 5000]);
        assert!(matches!(read(&m, 1000), Err(HttpError::TooLarge { .. })));
        // A head that never ended.
        assert_eq!(read(b"HTTP/1.0 200", 100), Err(HttpError::Incomplete));
        assert_eq!(read(b"SSH-2.0\r\n\r\n", 100), Err(HttpError::BadStatusLine));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_head(&data);
            let _ = decode_body(Encoding::Deflate, &data, 1 << 16);
            let _ = decode_body(Encoding::Gzip, &data, 1 << 16);
            let mut r = ResponseReader::new(1 << 16);
            let _ = r.handle_bytes(b"HTTP/1.0 200 OK\r\nContent-Encoding: deflate\r\n\r\n");
            let _ = r.handle_bytes(&data);
            let _ = r.clone().finish_any();
            let _ = r.finish();
        }

        #[test]
        fn microdesc_requests_roundtrip(ds in proptest::collection::vec(any::<[u8; 32]>(), 0..300)) {
            let ds: Vec<MdDigest> = ds.into_iter().map(MdDigest).collect();
            let reqs = DirRequest::microdescs(&ds);
            let mut back = Vec::new();
            for r in &reqs {
                let list = r.path.strip_prefix("/tor/micro/d/").unwrap();
                let items: Vec<&str> = list.split('-').collect();
                prop_assert!(items.len() <= MAX_MICRODESCS_PER_REQUEST);
                back.extend(items.into_iter().map(|d| MdDigest::from_base64(d).unwrap()));
            }
            let mut want = ds.clone();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn deflate_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(decode_body(Encoding::Deflate, &zlib(&data), 1 << 16).unwrap(), data.clone());
            prop_assert_eq!(decode_body(Encoding::Gzip, &gzip(&data), 1 << 16).unwrap(), data);
        }
    }
}
