//! An HSDir's directory service: descriptors stored by `POST /tor/hs/3/publish` and served by
//! `GET /tor/hs/3/<blinded key>` (rend-spec-v3 §2.2.6, dir-spec HTTP), plugged into a relay's
//! BEGIN_DIR handler ([`crate::circuit::dir::DirEdge`]).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use onion_hs::service::UPLOAD_PATH;

use crate::circuit::dir::DirService;
use crate::circuit::net::RelayCx;

/// Largest number of descriptors one HSDir keeps (the simulator's bound on its memory).
pub const MAX_STORED: usize = 1024;

/// The descriptors an HSDir holds, by base64 blinded key.
#[derive(Debug, Default, Clone)]
pub struct HsDir {
    store: BTreeMap<String, String>,
}

impl HsDir {
    /// The number of descriptors held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no descriptor is held.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The answer to a complete request, with a story line; `None` while the request is
    /// incomplete (no blank line yet, or fewer body bytes than its `Content-Length`).
    /// Malformed requests get a 400, unknown paths and keys a 404.
    pub fn answer(&mut self, buf: &[u8]) -> Option<(Vec<u8>, String)> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let bad = |why: &str| {
            Some((
                b"HTTP/1.0 400 Bad request\r\n\r\n".to_vec(),
                format!("HSDir: bad request ({why}): 400"),
            ))
        };
        let Ok(head) = core::str::from_utf8(&buf[..end]) else {
            return bad("head not UTF-8");
        };
        let body = &buf[end + 4..];
        let mut lines = head.split("\r\n");
        let mut parts = lines.next().unwrap_or_default().split(' ');
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return bad("no request line");
        };
        let not_found = |what: &str| {
            Some((
                b"HTTP/1.0 404 Not found\r\n\r\n".to_vec(),
                format!("HSDir has no {what}: 404"),
            ))
        };
        match method {
            "POST" if path == UPLOAD_PATH => {
                let Some(len) = lines
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                else {
                    return bad("POST without Content-Length");
                };
                if body.len() < len {
                    return None;
                }
                let text = core::str::from_utf8(&body[..len]).ok();
                let key = text
                    .and_then(|t| onion_hs::desc::OuterDescriptor::parse(t).ok())
                    .and_then(|d| d.claimed_blinded_key().ok());
                match (text, key) {
                    (Some(t), Some(k)) => {
                        let b64 = STANDARD.encode(k.as_bytes());
                        if self.store.len() >= MAX_STORED && !self.store.contains_key(&b64) {
                            return Some((
                                b"HTTP/1.0 503 Directory full\r\n\r\n".to_vec(),
                                "HSDir full: 503".to_owned(),
                            ));
                        }
                        let line = format!(
                            "HSDir stores descriptor for blinded key {}…",
                            b64.get(..8).unwrap_or(&b64)
                        );
                        self.store.insert(b64, t.to_owned());
                        Some((b"HTTP/1.0 200 OK\r\n\r\n".to_vec(), line))
                    }
                    _ => Some((
                        b"HTTP/1.0 400 Bad descriptor\r\n\r\n".to_vec(),
                        "HSDir refuses a descriptor it cannot parse: 400".to_owned(),
                    )),
                }
            }
            "GET" => {
                let Some(key) = path.strip_prefix("/tor/hs/3/") else {
                    return not_found("such document");
                };
                match self.store.get(key) {
                    Some(t) => {
                        let line = format!(
                            "HSDir serves descriptor for blinded key {}…",
                            key.get(..8).unwrap_or(key)
                        );
                        let mut v =
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", t.len())
                                .into_bytes();
                        v.extend_from_slice(t.as_bytes());
                        Some((v, line))
                    }
                    None => not_found("such descriptor"),
                }
            }
            _ => not_found("such document"),
        }
    }
}

impl DirService for HsDir {
    fn respond(&mut self, cx: &mut RelayCx<'_>, request: &[u8]) -> Option<Vec<u8>> {
        let (resp, line) = self.answer(request)?;
        cx.say(line);
        Some(resp)
    }
}
