//! The destination "web server" of the in-memory network: a tiny HTTP/1.0 responder.
//!
//! It reads one request (up to the blank line), and answers `GET /<n>` with a `200 OK` whose
//! body is `n` deterministic pseudo-random bytes (any other request gets a 404). The body is
//! generated on demand, in chunks, so a multi-megabyte response costs no memory up front.

use std::rc::Rc;

/// Largest request head accepted; a longer one is answered with `431`.
pub const MAX_REQUEST: usize = 8192;

/// Largest body the server will produce (64 MiB), so a request cannot ask for unbounded work.
pub const MAX_BODY: u64 = 64 << 20;

/// One connection to the web server.
#[derive(Debug, Clone)]
pub struct WebConn {
    request: Vec<u8>,
    head: Vec<u8>,
    head_sent: usize,
    body_len: u64,
    body_sent: u64,
    answered: bool,
    /// The body's first [`PATTERN_LEN`] + [`SPAN_MAX`] bytes ([`pattern`]), shared by the
    /// connections of one server.
    pattern: Rc<[u8]>,
}

impl WebConn {
    /// A new connection; `seed` selects the body's bytes.
    pub fn new(seed: u64) -> Self {
        Self::with_pattern(pattern(seed))
    }

    /// A new connection serving bodies made of `pattern` (from [`pattern`]), which a server
    /// computes once for all its connections. (Anything shorter than [`pattern`]'s length is
    /// repeated to that length, so that every read stays in bounds.)
    pub fn with_pattern(pattern: Rc<[u8]>) -> Self {
        let pattern = if pattern.len() >= PATTERN_LEN + SPAN_MAX {
            pattern
        } else if pattern.is_empty() {
            vec![0; PATTERN_LEN + SPAN_MAX].into()
        } else {
            pattern
                .iter()
                .copied()
                .cycle()
                .take(PATTERN_LEN + SPAN_MAX)
                .collect()
        };
        WebConn {
            request: Vec::new(),
            head: Vec::new(),
            head_sent: 0,
            body_len: 0,
            body_sent: 0,
            answered: false,
            pattern,
        }
    }

    /// Feed bytes from the client. Returns the request line once the request is complete.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Option<String> {
        if self.answered {
            return None;
        }
        let room = MAX_REQUEST.saturating_sub(self.request.len());
        self.request
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        let end = find(&self.request, b"\r\n\r\n");
        if end.is_none() && self.request.len() < MAX_REQUEST {
            return None;
        }
        self.answered = true;
        let line_end = find(&self.request, b"\r\n").unwrap_or(self.request.len());
        let line = String::from_utf8_lossy(&self.request[..line_end]).into_owned();
        if end.is_none() {
            self.head = b"HTTP/1.0 431 Request Header Fields Too Large\r\n\r\n".to_vec();
            return Some(line);
        }
        let mut parts = line.split(' ');
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let size = path
            .strip_prefix('/')
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n <= MAX_BODY);
        match (method, size) {
            ("GET", Some(n)) => {
                self.body_len = n;
                self.head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
                )
                .into_bytes();
            }
            _ => self.head = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        }
        Some(line)
    }

    /// Up to `max` further bytes of the response, or an empty vector once it is all sent.
    pub fn poll_output(&mut self, max: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(max.min(64 * 1024));
        self.poll_output_into(max, &mut out);
        out
    }

    /// Append up to `max` further bytes of the response to `out` (whose earlier contents are
    /// kept); returns how many (0 once it is all sent). Lets the caller reuse one buffer
    /// instead of allocating a fresh one per call, as [`WebConn::poll_output`] does.
    pub fn poll_output_into(&mut self, max: usize, out: &mut Vec<u8>) -> usize {
        let before = out.len();
        if self.head_sent < self.head.len() {
            let n = (self.head.len() - self.head_sent).min(max);
            out.extend_from_slice(&self.head[self.head_sent..self.head_sent + n]);
            self.head_sent += n;
        }
        let want = (max - (out.len() - before)) as u64;
        let n = want.min(self.body_len - self.body_sent);
        let (start, end) = (self.body_sent, self.body_sent + n);
        let mut i = start;
        while i < end {
            // The body repeats a PATTERN_LEN-byte block: copy the part of it in [i, end).
            let from = (i % PATTERN_LEN as u64) as usize;
            let take = (PATTERN_LEN - from).min((end - i) as usize);
            out.extend_from_slice(&self.pattern[from..from + take]);
            i += take as u64;
        }
        self.body_sent = end;
        out.len() - before
    }

    /// Hand out up to `max` further bytes of the response without copying them: returns
    /// their offset in the response and their number (0 once it is all sent). The caller
    /// reads them later with [`WebConn::output_piece`] (the exit does when they arrive over
    /// its simulated TCP connection, so the bytes are copied once, into cells).
    pub fn take_output(&mut self, max: usize) -> (u64, usize) {
        let start = self.head_sent as u64 + self.body_sent;
        let head = (self.head.len() - self.head_sent).min(max);
        self.head_sent += head;
        let body = ((max - head) as u64).min(self.body_len - self.body_sent);
        self.body_sent += body;
        (start, head + body as usize)
    }

    /// `len` response bytes from offset `start` (as handed out by
    /// [`WebConn::take_output`]), `len` at most [`SPAN_MAX`]: a slice of the body's
    /// pattern, or, for a piece that includes head bytes, a copy in `scratch`. (Offsets past
    /// the response read as the body's continuation: the caller asks only for what it was
    /// handed.)
    pub fn output_piece<'a>(
        &'a self,
        start: u64,
        len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        let len = len.min(SPAN_MAX);
        let head_len = self.head.len() as u64;
        if start >= head_len {
            let from = ((start - head_len) % PATTERN_LEN as u64) as usize;
            return &self.pattern[from..from + len];
        }
        scratch.clear();
        let h = &self.head[start as usize..];
        scratch.extend_from_slice(&h[..h.len().min(len)]);
        let rest = len - scratch.len();
        scratch.extend_from_slice(&self.pattern[..rest]);
        scratch
    }

    /// Whether the whole response has been handed out.
    pub fn is_done(&self) -> bool {
        self.answered && self.head_sent == self.head.len() && self.body_sent == self.body_len
    }
}

/// Byte `i` of the body for `seed`: a cheap mixing function (splitmix64) over one
/// [`PATTERN_LEN`] period, deterministic so that the client's digest can be checked against
/// [`expected_body`].
pub fn body_byte(seed: u64, i: u64) -> u8 {
    let i = i % PATTERN_LEN as u64;
    body_word(seed, i / 8).to_le_bytes()[(i % 8) as usize]
}

/// The body is a pseudo-random block of this many bytes, repeated (served by copying, so the
/// web server costs little next to the network it is the far end of). 64 KiB is not a
/// multiple of a cell's 498 bytes, so a cell-aligned corruption still shows.
pub const PATTERN_LEN: usize = 65536;

/// The most [`WebConn::output_piece`] reads at once.
pub const SPAN_MAX: usize = 256 * 1024;

/// The body's first [`PATTERN_LEN`] + [`SPAN_MAX`] bytes for `seed` (one period computed word
/// by word, then repeated): any [`SPAN_MAX`] consecutive body bytes are one slice of it.
pub fn pattern(seed: u64) -> Rc<[u8]> {
    let mut v = Vec::with_capacity(PATTERN_LEN + SPAN_MAX);
    for w in 0..(PATTERN_LEN / 8) as u64 {
        v.extend_from_slice(&body_word(seed, w).to_le_bytes());
    }
    while v.len() < PATTERN_LEN + SPAN_MAX {
        let n = (PATTERN_LEN + SPAN_MAX - v.len()).min(PATTERN_LEN);
        v.extend_from_within(..n);
    }
    v.into()
}

/// Bytes `8w .. 8w + 8` of the body, little-endian.
fn body_word(seed: u64, w: u64) -> u64 {
    let mut z = seed.wrapping_add(w.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The whole body for `seed` and length `n` (for checking what the client received).
/// `n` is clamped to [`MAX_BODY`].
pub fn expected_body(seed: u64, n: u64) -> Vec<u8> {
    let p = pattern(seed);
    p[..PATTERN_LEN]
        .iter()
        .copied()
        .cycle()
        .take(n.min(MAX_BODY) as usize)
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_requested_size() {
        let mut c = WebConn::new(7);
        assert_eq!(c.handle_input(b"GET /1000 HTTP/1.0\r\nHost: x"), None);
        assert_eq!(
            c.handle_input(b"\r\n\r\n").as_deref(),
            Some("GET /1000 HTTP/1.0")
        );
        let mut all = Vec::new();
        loop {
            let chunk = c.poll_output(333);
            if chunk.is_empty() {
                break;
            }
            all.extend(chunk);
        }
        assert!(c.is_done());
        let head_end = find(&all, b"\r\n\r\n").expect("head") + 4;
        assert!(all.starts_with(b"HTTP/1.0 200 OK\r\n"));
        assert_eq!(all[head_end..], expected_body(7, 1000)[..]);
    }

    /// Appending into a reused buffer gives the same bytes as fresh vectors, and never more
    /// than asked per call.
    #[test]
    fn poll_output_into_matches_poll_output() {
        let mut a = WebConn::new(3);
        let mut b = WebConn::new(3);
        let req = b"GET /70000 HTTP/1.0\r\n\r\n";
        a.handle_input(req);
        b.handle_input(req);
        let mut fresh = Vec::new();
        let mut reused = Vec::new();
        let mut buf = vec![0xAA; 5];
        loop {
            let chunk = a.poll_output(4097);
            buf.truncate(5);
            let n = b.poll_output_into(4097, &mut buf);
            assert_eq!(n, chunk.len());
            assert!(n <= 4097);
            assert_eq!(buf[..5], [0xAA; 5], "earlier contents are kept");
            assert_eq!(buf[5..], chunk[..]);
            if n == 0 {
                break;
            }
            fresh.extend_from_slice(&chunk);
            reused.extend_from_slice(&buf[5..]);
        }
        assert!(b.is_done());
        assert_eq!(fresh, reused);
        let head_end = find(&reused, b"\r\n\r\n").expect("head") + 4;
        assert_eq!(reused[head_end..], expected_body(3, 70000)[..]);
    }

    /// Spans handed out without copying and read back piece by piece give the same response
    /// as [`WebConn::poll_output`], head included, across pattern periods.
    #[test]
    fn take_output_and_output_piece_match_poll_output() {
        let n = 3 * PATTERN_LEN as u64 + 1234;
        let req = format!("GET /{n} HTTP/1.0\r\n\r\n");
        let mut a = WebConn::new(5);
        let mut b = WebConn::with_pattern(pattern(5));
        a.handle_input(req.as_bytes());
        b.handle_input(req.as_bytes());
        let (mut fresh, mut spans) = (Vec::new(), Vec::new());
        let mut scratch = Vec::new();
        for max in [7usize, 100, SPAN_MAX, 70_001].into_iter().cycle() {
            let chunk = a.poll_output(max);
            let (start, len) = b.take_output(max);
            assert_eq!(len, chunk.len());
            assert_eq!(start, fresh.len() as u64);
            if len == 0 {
                break;
            }
            spans.extend_from_slice(b.output_piece(start, len, &mut scratch));
            fresh.extend_from_slice(&chunk);
        }
        assert!(a.is_done() && b.is_done());
        assert_eq!(spans, fresh);
        let head_end = find(&spans, b"\r\n\r\n").expect("head") + 4;
        assert_eq!(spans[head_end..], expected_body(5, n)[..]);
        // A short pattern is repeated, never read out of bounds.
        let c = WebConn::with_pattern(vec![1, 2, 3].into());
        assert_eq!(c.output_piece(0, 5, &mut scratch), [1, 2, 3, 1, 2]);
    }

    /// The word-wise pattern is the body as [`body_byte`] defines it.
    #[test]
    fn pattern_is_the_body_period() {
        let p = pattern(11);
        assert_eq!(p.len(), PATTERN_LEN + SPAN_MAX);
        for i in [
            0u64,
            1,
            7,
            8,
            9,
            4097,
            PATTERN_LEN as u64 - 1,
            PATTERN_LEN as u64 + 3,
        ] {
            assert_eq!(p[i as usize], body_byte(11, i));
        }
        assert_eq!(
            expected_body(11, (PATTERN_LEN + SPAN_MAX) as u64 + 5)[..PATTERN_LEN + SPAN_MAX],
            p[..]
        );
    }

    #[test]
    fn bad_requests() {
        let mut c = WebConn::new(1);
        c.handle_input(b"POST /x HTTP/1.0\r\n\r\n");
        assert!(c.poll_output(100).starts_with(b"HTTP/1.0 404"));
        let mut c = WebConn::new(1);
        assert!(c.handle_input(&[b'a'; MAX_REQUEST + 10]).is_some());
        assert!(c.poll_output(100).starts_with(b"HTTP/1.0 431"));
    }
}
