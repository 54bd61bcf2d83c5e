//! Errors of onion-dir: parse errors name the line and keyword (dir-spec §1.2
//! items), verification errors name the authority or key, HTTP errors name the
//! header or limit.
//!
//! Every error type of the crate has a `kind()` giving the stack's one classification,
//! [`ErrorKind`] (from onion-cell), and converts into the crate's [`enum@Error`] with `From`.
//! Documents, diffs and HTTP responses come from directory authorities and caches, so what is
//! wrong with them is [`ErrorKind::PeerProtocol`]; what the caller gave (a relay to use, a
//! field to encode, a saved guard state) is [`ErrorKind::Misuse`].

use thiserror::Error;

pub use onion_cell::ErrorKind;

use crate::consdiff::DiffError;
use crate::consdiff_gen::GenError;
use crate::netview::NetViewError;
use crate::relaydesc::EncodeError;
use crate::select::guard::state::GuardStateError;
use crate::select::guard::{GuardError, GuardPathError};
use crate::select::path::PathError;
use crate::select::vanguards::VanguardError;

/// What was wrong with one item of a document (or the whole document, at line 0): the
/// detail of a [`ParseError`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseProblem {
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
#[error("line {line}: `{keyword}`: {problem}")]
pub struct ParseError {
    /// 1-based line number (0 for errors about the whole document).
    pub line: u32,
    /// The item's keyword (possibly truncated; empty for whole-document errors).
    pub keyword: String,
    /// What was wrong.
    pub problem: ParseProblem,
}

impl ParseError {
    /// Build an error.
    pub fn new(line: u32, keyword: &str, problem: ParseProblem) -> Self {
        let mut n = keyword.len().min(40);
        while !keyword.is_char_boundary(n) {
            n -= 1;
        }
        ParseError {
            line,
            keyword: keyword.get(..n).unwrap_or("").to_owned(),
            problem,
        }
    }

    /// [`ErrorKind::Unsupported`] for a format version or flavour this crate does not
    /// implement; otherwise [`ErrorKind::PeerProtocol`]: the document's author wrote what
    /// dir-spec does not allow, or more than the limits accept.
    pub fn kind(&self) -> ErrorKind {
        match self.problem {
            ParseProblem::Unsupported(_) => ErrorKind::Unsupported,
            _ => ErrorKind::PeerProtocol,
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

impl VerifyError {
    /// Always [`ErrorKind::PeerProtocol`]: the keys, signatures and certificates checked are
    /// the document's, and a document that does not verify is its sender's fault (dir-spec
    /// §3.1, §3.4.1).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::PeerProtocol
    }
}

impl HttpError {
    /// [`ErrorKind::Network`] for a response that stopped short or a status other than 200
    /// (the directory could not serve: try another), [`ErrorKind::Misuse`] for a request the
    /// caller asked to build wrongly, and [`ErrorKind::PeerProtocol`] for a response that
    /// breaks HTTP or the limits (dir-spec §6).
    pub fn kind(&self) -> ErrorKind {
        match self {
            HttpError::Incomplete | HttpError::Truncated { .. } | HttpError::Status { .. } => {
                ErrorKind::Network
            }
            HttpError::BadRequest(_) => ErrorKind::Misuse,
            HttpError::BadStatusLine
            | HttpError::BadHeader(_)
            | HttpError::TooLarge { .. }
            | HttpError::UnsupportedEncoding(_)
            | HttpError::Decompress
            | HttpError::NotUtf8 => ErrorKind::PeerProtocol,
        }
    }
}

impl DiffError {
    /// [`ErrorKind::PeerProtocol`] for a diff that breaks dir-spec §4.5.1 or does not fit
    /// the consensus it names, [`ErrorKind::Unsupported`] for a diff version other than 1,
    /// and [`ErrorKind::Misuse`] for a base consensus the caller gave that cannot be edited
    /// (too large, unterminated, unsigned).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DiffError::UnsupportedVersion => ErrorKind::Unsupported,
            DiffError::BaseTooLarge { .. }
            | DiffError::BaseUnterminated
            | DiffError::BaseUnsigned => ErrorKind::Misuse,
            _ => ErrorKind::PeerProtocol,
        }
    }
}

impl GenError {
    /// Making a diff between two consensuses the caller holds: a consensus over the limit is
    /// [`ErrorKind::Resource`], one that is not a signed, terminated consensus
    /// [`ErrorKind::Misuse`], a line an ed block cannot carry [`ErrorKind::Unsupported`]
    /// (appendix E), and a diff that does not give back its target
    /// [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            GenError::TooLarge { .. } => ErrorKind::Resource,
            GenError::Unterminated | GenError::BaseUnsigned => ErrorKind::Misuse,
            GenError::DotLine { .. } => ErrorKind::Unsupported,
            GenError::SelfCheck(_) => ErrorKind::Internal,
        }
    }
}

impl EncodeError {
    /// [`ErrorKind::Misuse`]: a field or key the caller gave cannot go into the document;
    /// [`ErrorKind::Internal`] when signing itself failed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EncodeError::Crypto { error, .. } if error.kind() == ErrorKind::Internal => {
                ErrorKind::Internal
            }
            EncodeError::BadField { .. } | EncodeError::Crypto { .. } => ErrorKind::Misuse,
        }
    }
}

impl NetViewError {
    /// Always [`ErrorKind::PeerProtocol`]: the consensus lists more than the limits allow
    /// or the same relay twice.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::PeerProtocol
    }
}

impl PathError {
    /// [`ErrorKind::Network`] when the directory lists no relay usable for a position (the
    /// network as known cannot carry the circuit; a later consensus may); otherwise
    /// [`ErrorKind::Misuse`]: the caller named a relay, guard, exit or length that cannot be
    /// used (path-spec §2.2).
    pub fn kind(&self) -> ErrorKind {
        match self {
            PathError::NoCandidates(_) => ErrorKind::Network,
            PathError::UnknownRelay(_)
            | PathError::NamedExitUnsuitable(_)
            | PathError::GuardConflict(_)
            | PathError::TargetUnsuitable(_)
            | PathError::BadLength(_) => ErrorKind::Misuse,
        }
    }
}

impl GuardError {
    /// [`ErrorKind::Network`] when no guard is usable (guard-spec §4.6: all are unreachable
    /// or filtered out), [`ErrorKind::Misuse`] for a circuit handle the manager never issued
    /// or already took back.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GuardError::NoUsableGuard => ErrorKind::Network,
            GuardError::UnknownCircuit(_) => ErrorKind::Misuse,
        }
    }
}

impl GuardPathError {
    /// The kind of the path or guard failure inside.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GuardPathError::Path(e) => e.kind(),
            GuardPathError::Guard(e) => e.kind(),
        }
    }
}

impl GuardStateError {
    /// Always [`ErrorKind::Misuse`]: the saved state is the caller's to keep, and no peer
    /// wrote it.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Misuse
    }
}

impl VanguardError {
    /// [`ErrorKind::Network`] when no layer-2 vanguard can be used (as for a path with no
    /// candidate), or the kind of the path failure inside.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VanguardError::EmptySet | VanguardError::NoUsableLayer2(_) => ErrorKind::Network,
            VanguardError::Path(e) => e.kind(),
        }
    }
}

/// Any onion-dir error; [`Error::kind`] classifies it.
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
    /// A consensus diff did not apply.
    #[error(transparent)]
    Diff(#[from] DiffError),
    /// No consensus diff could be made.
    #[error(transparent)]
    DiffGen(#[from] GenError),
    /// A document could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A network view could not be built.
    #[error(transparent)]
    NetView(#[from] NetViewError),
    /// No path could be chosen.
    #[error(transparent)]
    Path(#[from] PathError),
    /// No guard could be chosen.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// No guarded exit path could be chosen.
    #[error(transparent)]
    GuardPath(#[from] GuardPathError),
    /// A saved guard state was refused.
    #[error(transparent)]
    GuardState(#[from] GuardStateError),
    /// No vanguard could be chosen.
    #[error(transparent)]
    Vanguard(#[from] VanguardError),
}

impl Error {
    /// Who is to blame (the kind of the error inside): a malformed or unauthentic document
    /// is [`ErrorKind::PeerProtocol`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Parse(e) => e.kind(),
            Error::Verify(e) => e.kind(),
            Error::Http(e) => e.kind(),
            Error::Diff(e) => e.kind(),
            Error::DiffGen(e) => e.kind(),
            Error::Encode(e) => e.kind(),
            Error::NetView(e) => e.kind(),
            Error::Path(e) => e.kind(),
            Error::Guard(e) => e.kind(),
            Error::GuardPath(e) => e.kind(),
            Error::GuardState(e) => e.kind(),
            Error::Vanguard(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_document_is_its_senders_fault_and_a_bad_request_the_callers() {
        let parse = ParseError::new(3, "r", ParseProblem::BadArgument("IP"));
        assert_eq!(parse.kind(), ErrorKind::PeerProtocol);
        let version = ParseError::new(1, "network-status-version", ParseProblem::Unsupported("4"));
        assert_eq!(version.kind(), ErrorKind::Unsupported);
        let cases: [(Error, ErrorKind); 12] = [
            (parse.into(), ErrorKind::PeerProtocol),
            (
                VerifyError::BadSignature("authority").into(),
                ErrorKind::PeerProtocol,
            ),
            (
                VerifyError::NoQuorum { good: 1, needed: 5 }.into(),
                ErrorKind::PeerProtocol,
            ),
            (HttpError::Status { code: 404 }.into(), ErrorKind::Network),
            (HttpError::Decompress.into(), ErrorKind::PeerProtocol),
            (HttpError::BadRequest("empty").into(), ErrorKind::Misuse),
            (DiffError::NotADiff.into(), ErrorKind::PeerProtocol),
            (DiffError::UnsupportedVersion.into(), ErrorKind::Unsupported),
            (DiffError::BaseUnsigned.into(), ErrorKind::Misuse),
            (PathError::NoCandidates("exit").into(), ErrorKind::Network),
            (PathError::BadLength(9).into(), ErrorKind::Misuse),
            (
                GuardStateError::TooMany { line: 2 }.into(),
                ErrorKind::Misuse,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
        let guarded = GuardPathError::Guard(GuardError::NoUsableGuard);
        assert_eq!(guarded.kind(), ErrorKind::Network);
        let vanguard = VanguardError::Path(PathError::UnknownRelay(7));
        assert_eq!(vanguard.kind(), ErrorKind::Misuse);
        assert_eq!(GenError::DotLine { line: 4 }.kind(), ErrorKind::Unsupported);
        let encode = EncodeError::Crypto {
            what: "signature",
            error: onion_crypto::KeyError::RsaOperation("sign").into(),
        };
        assert_eq!(encode.kind(), ErrorKind::Internal);
    }
}
