//! Errors of onion-dir: parse errors name the line and keyword (dir-spec §1.2
//! items), verification errors name the authority or key, HTTP errors name the
//! header or limit.

use thiserror::Error;

/// What was wrong with one item (or the whole document, at line 0).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The document exceeds the configured byte limit.
    #[error("document larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The document has more items (or more records) than the configured limit.
    #[error("more than {limit} items")]
    TooManyItems {
        /// The limit.
        limit: usize,
    },
    /// A line that is not a keyword line of dir-spec §1.2.
    #[error("malformed keyword line")]
    MalformedLine,
    /// An object whose BEGIN/END lines are malformed or do not match.
    #[error("malformed object")]
    BadObject,
    /// An object without its END line.
    #[error("object has no END line")]
    UnterminatedObject,
    /// A required item is absent.
    #[error("missing required item `{0}`")]
    MissingItem(&'static str),
    /// An item appears more often than its multiplicity allows.
    #[error("item appears more than once")]
    DuplicateItem,
    /// An item appears where the document structure does not allow it.
    #[error("item out of place")]
    UnexpectedItem,
    /// A required argument is absent.
    #[error("missing argument: {0}")]
    MissingArgument(&'static str),
    /// An argument does not parse.
    #[error("invalid argument: {0}")]
    BadArgument(&'static str),
    /// An object is required but absent.
    #[error("missing object `{0}`")]
    MissingObject(&'static str),
    /// An object carries the wrong tag.
    #[error("object should be `{0}`")]
    WrongObjectTag(&'static str),
    /// An object is present where none is allowed.
    #[error("unexpected object")]
    UnexpectedObject,
    /// The document is empty or ends before a required part.
    #[error("document truncated")]
    Truncated,
    /// The document uses a format version or flavour we do not implement.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

/// A document could not be parsed: where (line, keyword) and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: `{keyword}`: {kind}")]
pub struct ParseError {
    /// 1-based line number (0 for errors about the whole document).
    pub line: u32,
    /// The item's keyword (possibly truncated; empty for whole-document errors).
    pub keyword: String,
    /// What was wrong.
    pub kind: ErrorKind,
}

impl ParseError {
    /// Build an error.
    pub fn new(line: u32, keyword: &str, kind: ErrorKind) -> Self {
        let mut n = keyword.len().min(40);
        while !keyword.is_char_boundary(n) {
            n -= 1;
        }
        ParseError {
            line,
            keyword: keyword.get(..n).unwrap_or("").to_owned(),
            kind,
        }
    }
}

/// A signature, certificate or digest check failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A key (RSA DER or ed25519) could not be decoded.
    #[error("bad key: {0}")]
    BadKey(&'static str),
    /// A signature does not verify.
    #[error("bad signature: {0}")]
    BadSignature(&'static str),
    /// An authority key certificate's cross-certification is wrong.
    #[error("authority certificate cross-certification does not verify")]
    BadCrossCert,
    /// A certificate is outside its validity period at the given time.
    #[error("certificate expired or not yet valid: {0}")]
    Expired(&'static str),
    /// Fewer than a majority of the configured authorities signed.
    #[error("only {good} of {needed} needed authority signatures verify")]
    NoQuorum {
        /// Distinct configured authorities with a verified signature.
        good: usize,
        /// How many are needed (more than half of those configured).
        needed: usize,
    },
    /// Something inside the document contradicts something else (e.g. keys).
    #[error("inconsistent document: {0}")]
    Inconsistent(&'static str),
}

/// A directory HTTP response could not be decoded (dir-spec §6).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HttpError {
    /// More bytes are needed (headers incomplete).
    #[error("incomplete response: need more bytes")]
    Incomplete,
    /// The status line is malformed.
    #[error("malformed status line")]
    BadStatusLine,
    /// A header line is malformed.
    #[error("malformed header line {0}")]
    BadHeader(usize),
    /// The server answered with a non-200 status.
    #[error("HTTP status {code}")]
    Status {
        /// The status code.
        code: u16,
    },
    /// The headers or the (decompressed) body exceed the limit.
    #[error("response larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A content encoding we do not accept.
    #[error("unsupported content encoding `{0}`")]
    UnsupportedEncoding(String),
    /// The compressed body is corrupt.
    #[error("corrupt compressed body")]
    Decompress,
    /// The body is not UTF-8 text.
    #[error("body is not UTF-8")]
    NotUtf8,
    /// The stream ended before the body had its `Content-Length` (RFC 9112 §6.3).
    #[error("body truncated: {got} of {expected} bytes")]
    Truncated {
        /// `Content-Length`.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// A request argument is invalid (too many items, empty list).
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
}

/// Any onion-dir error, with a small stable `kind()`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// Parsing failed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Verification failed.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// HTTP decoding failed.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Coarse classification of [`enum@Error`], stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Malformed document.
    Malformed,
    /// Authentication failure.
    Unauthenticated,
    /// Transport/HTTP problem.
    Transport,
}

impl Error {
    /// The coarse kind.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Parse(_) => Kind::Malformed,
            Error::Verify(_) => Kind::Unauthenticated,
            Error::Http(_) => Kind::Transport,
        }
    }
}
