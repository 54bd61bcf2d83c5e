//! The little HTTP/1.0 that `onion get` and the directory fetches need (RFC 1945, RFC 9110).
//!
//! Requests are HTTP/1.0 with `Connection: close`, so a response ends when the stream ends;
//! no keep-alive, no chunked encoding (which HTTP/1.0 servers, including C tor's directory
//! server, never send). A response is accepted only once complete: head, then a body of
//! exactly `Content-Length` bytes when that header is present.

use std::fmt;

use super::text;

/// Upper bound on a response head; anything longer is refused rather than buffered.
pub const MAX_HEAD: usize = 64 * 1024;

/// An `http://` URL, as `onion get` accepts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Host name or address literal (IPv6 without brackets), lower-cased.
    pub host: String,
    /// Port (80 by default).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parse `http://host[:port][/path]`. Only `http` is supported: over Tor, TLS to the
    /// destination would be the application's business, and onion services need none.
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("malformed URL {s:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        if authority.contains('@') {
            return Err(format!("malformed URL {s:?}: user info is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("malformed URL {s:?}: unclosed `[`"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(format!("malformed URL {s:?}: bad port {p:?}")),
            },
        };
        if host.is_empty()
            || host.len() > 255
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
        {
            return Err(format!("malformed URL {s:?}: bad host {host:?}"));
        }
        Ok(Url {
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    /// True for `*.onion` hosts, which go through the onion-service client.
    pub fn is_onion(&self) -> bool {
        self.host.ends_with(".onion")
    }

    /// The `Host:` header value.
    pub fn host_header(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

/// A GET request for `path` on `host`.
pub fn get_request(host: &str, path: &str) -> Vec<u8> {
    get_request_with(host, path, &[])
}

/// A GET request for `path` on `host` with `extra` header fields (names and values of our
/// own, such as dir-spec §4.5.2's `X-Or-Diff-From-Consensus`; a field holding CR or LF is
/// left out rather than let it end the header early).
pub fn get_request_with(host: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: onion\r\n"
    );
    for (name, value) in extra {
        if !(name.contains(['\r', '\n']) || value.contains(['\r', '\n'])) {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The status line's reason phrase, as received: print it through [`text::escape`].
    pub reason: String,
    /// Header fields, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (still content-encoded, if a `Content-Encoding` says so).
    pub body: Vec<u8>,
}

impl Response {
    /// `status reason` (the reason phrase escaped, [`text::escape`]), for messages.
    pub fn status_text(&self) -> String {
        format!("{} {}", self.status, text::escape(&self.reason))
    }

    /// The first header named `name` (lower-case).
    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why bytes are not (yet) a complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// More bytes are needed (the stream has not ended yet).
    Incomplete,
    /// The stream ended before `Content-Length` bytes of body arrived.
    Truncated {
        /// `Content-Length`.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// The head is not HTTP (names the part that is wrong).
    Malformed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Incomplete => write!(f, "HTTP response incomplete"),
            HttpError::Truncated { expected, got } => {
                write!(f, "HTTP body truncated: {got} of {expected} bytes")
            }
            HttpError::Malformed(m) => write!(f, "malformed HTTP response: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Parse a response from everything received so far; `ended` says the stream has closed.
pub fn parse_response(data: &[u8], ended: bool) -> Result<Response, HttpError> {
    let head_end = match data.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => i,
        None if data.len() > MAX_HEAD => {
            return Err(HttpError::Malformed(format!(
                "head longer than {MAX_HEAD} bytes"
            )))
        }
        None if ended => return Err(HttpError::Malformed("no end of head".into())),
        None => return Err(HttpError::Incomplete),
    };
    let head = std::str::from_utf8(&data[..head_end])
        .map_err(|_| HttpError::Malformed("head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!(
            "status line \"{}\"",
            text::escape(status_line)
        )));
    }
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..1000).contains(c))
        .ok_or_else(|| {
            HttpError::Malformed(format!("status code in \"{}\"", text::escape(status_line)))
        })?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':').ok_or_else(|| {
            HttpError::Malformed(format!("header line \"{}\"", text::escape(line)))
        })?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let body = &data[head_end + 4..];
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| {
            v.parse::<usize>().map_err(|_| {
                HttpError::Malformed(format!("content-length \"{}\"", text::escape(v)))
            })
        })
        .transpose()?;
    let body = match length {
        Some(n) if body.len() >= n => &body[..n],
        Some(n) if ended => {
            return Err(HttpError::Truncated {
                expected: n,
                got: body.len(),
            })
        }
        Some(_) => return Err(HttpError::Incomplete),
        None if ended => body,
        None => return Err(HttpError::Incomplete),
    };
    Ok(Response {
        status,
        reason,
        headers,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080/a/b?c=d#frag").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/a/b?c=d")
        );
        let u = Url::parse("http://Example.ONION").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("example.onion", 80, "/")
        );
        assert!(u.is_onion());
        let u = Url::parse("http://[::1]:81/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        assert_eq!(u.host_header(), "[::1]:81");
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://:80/",
            "http://x:0/",
            "http://x:99999/",
            "http://x:y/",
            "http://a b/",
            "http://u@x/",
            "http://[::1/",
            "not a url",
        ] {
            let e = Url::parse(bad).unwrap_err();
            assert!(e.starts_with("malformed URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn responses() {
        let r = parse_response(
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabcdef",
            false,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        assert_eq!(r.header("x"), Some("y"));
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\nab", false),
            Err(HttpError::Incomplete)
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\nab", true)
                .unwrap()
                .body,
            b"ab"
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nab", true),
            Err(HttpError::Truncated {
                expected: 5,
                got: 2
            })
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 200", false),
            Err(HttpError::Incomplete)
        );
        assert!(matches!(
            parse_response(b"HTTP/1.0 200", true),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(b"SSH-2.0\r\n\r\n", true),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(&vec![b'a'; MAX_HEAD + 1], false),
            Err(HttpError::Malformed(_))
        ));
        assert_eq!(
            get_request("h", "/p"),
            b"GET /p HTTP/1.0\r\nHost: h\r\nConnection: close\r\nUser-Agent: onion\r\n\r\n"
        );
        assert_eq!(
            get_request_with("h", "/p", &[("X-A", "1, 2"), ("X-B", "x\r\nEvil: 1")]),
            b"GET /p HTTP/1.0\r\nHost: h\r\nConnection: close\r\nUser-Agent: onion\r\nX-A: 1, 2\r\n\r\n"
        );
    }

    /// A reason phrase or header line with terminal escapes reaches messages without any
    /// control character.
    #[test]
    fn peer_text_in_messages_is_escaped() {
        let r = parse_response(
            b"HTTP/1.0 403 Forbidden\x1b]0;pwned\x07\x1b[2K\rHTTP 200 OK\r\n\r\n",
            true,
        )
        .unwrap();
        let msg = format!("HTTP {}", r.status_text());
        assert!(!msg.chars().any(char::is_control), "{msg:?}");
        assert_eq!(
            msg,
            "HTTP 403 Forbidden\\u{1b}]0;pwned\\u{7}\\u{1b}[2K\\rHTTP 200 OK"
        );
        for bad in [
            &b"HTTP/1.0 2\x1b[0m\r\n\r\n"[..],
            b"\x1b[31mHTTP/1.0 200 OK\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nX\x1b[1m\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: \x1b[1m\r\n\r\n",
        ] {
            let e = parse_response(bad, true).unwrap_err().to_string();
            assert!(
                !e.chars().any(char::is_control) && e.contains("\\u{1b}"),
                "{e:?}"
            );
        }
        let long = format!("HTTP/1.0 200 OK\r\n{}\r\n\r\n", "x".repeat(10_000));
        let e = parse_response(long.as_bytes(), true)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                               s in "\\PC{0,60}", ended in proptest::prelude::any::<bool>()) {
            let _ = parse_response(&data, ended);
            let _ = Url::parse(&s);
            let _ = Url::parse(&format!("http://{s}"));
        }
    }
}
