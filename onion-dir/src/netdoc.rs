//! The directory-document meta-format (dir-spec §1.2): a zero-copy tokenizer.
//!
//! A document is a sequence of *items*; each item is a keyword line
//! (`Keyword [WS Argument]* NL`) optionally followed by one PEM-like object
//! (`-----BEGIN TAG-----` … `-----END TAG-----`). The tokenizer borrows every
//! keyword, argument and object body from the document text, so parsing a
//! consensus allocates only for the parsed records themselves.
//!
//! Bounds: the document size and the number of items are limited by the caller
//! ([`Limits`]) so that no input can make a parser loop or allocate without bound.

use crate::error::{ParseError, ParseProblem};

/// Limits applied to one document (dir-spec gives none; these are ours, chosen
/// at ten times the size of today's public network documents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted document, in bytes.
    pub max_bytes: usize,
    /// Largest accepted number of items (keyword lines).
    pub max_items: usize,
}

impl Limits {
    /// Limits for a consensus or a batch of microdescriptors: 64 MiB, 4 Mi items
    /// (enough for a 70,000-relay network with room to spare).
    pub const LARGE: Limits = Limits {
        max_bytes: 64 << 20,
        max_items: 4 << 20,
    };
    /// Limits for one small document (a key certificate, one server descriptor):
    /// 256 KiB and 4,096 items.
    pub const SMALL: Limits = Limits {
        max_bytes: 256 << 10,
        max_items: 4096,
    };
}

/// A PEM-like object following a keyword line (dir-spec §1.2 `Object`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Object<'a> {
    /// The tag between `-----BEGIN ` and `-----`, e.g. `RSA PUBLIC KEY`.
    pub tag: &'a str,
    /// The base64 lines between the BEGIN and END lines (newlines included).
    pub body: &'a str,
}

impl Object<'_> {
    /// Decode the base64 body (line feeds ignored, as dir-spec §1.2 requires).
    pub fn decode(&self) -> Option<Vec<u8>> {
        crate::encode::base64_decode_lines(self.body)
    }
}

/// One item of a document: a keyword line and its optional object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    /// 1-based line number of the keyword line (for error messages).
    pub line: u32,
    /// Byte offset of the keyword line in the document.
    pub start: usize,
    /// Byte offset just past this item (past the object's END line, if any).
    pub end: usize,
    /// The keyword (an `opt ` prefix, obsolete since 0.1.x, is removed).
    pub keyword: &'a str,
    /// Everything after the keyword and its separating whitespace, without the newline.
    pub args: &'a str,
    /// The object, if the next line starts with `-----BEGIN `.
    pub object: Option<Object<'a>>,
}

impl<'a> Item<'a> {
    /// The whitespace-separated arguments.
    pub fn args(&self) -> std::str::SplitAsciiWhitespace<'a> {
        self.args.split_ascii_whitespace()
    }

    /// An error about this item.
    pub fn err(&self, problem: ParseProblem) -> ParseError {
        ParseError::new(self.line, self.keyword, problem)
    }

    /// The `n`-th argument, or an error naming `what` if it is missing.
    pub fn arg(&self, n: usize, what: &'static str) -> Result<&'a str, ParseError> {
        self.args()
            .nth(n)
            .ok_or_else(|| self.err(ParseProblem::MissingArgument(what)))
    }

    /// The object, which must be present and carry `tag`.
    pub fn object_tagged(&self, tag: &'static str) -> Result<Object<'a>, ParseError> {
        match self.object {
            None => Err(self.err(ParseProblem::MissingObject(tag))),
            Some(o) if o.tag != tag => Err(self.err(ParseProblem::WrongObjectTag(tag))),
            Some(o) => Ok(o),
        }
    }

    /// The decoded object, which must carry `tag`.
    pub fn object_bytes(&self, tag: &'static str) -> Result<Vec<u8>, ParseError> {
        self.object_tagged(tag)?
            .decode()
            .ok_or_else(|| self.err(ParseProblem::BadObject))
    }

    /// Fail if the item carries an object (for items that must not have one).
    pub fn no_object(&self) -> Result<(), ParseError> {
        match self.object {
            Some(_) => Err(self.err(ParseProblem::UnexpectedObject)),
            None => Ok(()),
        }
    }
}

/// Iterator over the items of a document. Blank lines are skipped (the grammar
/// allows `NL` between items); annotation lines starting with `@` are yielded
/// as items whose keyword starts with `@`, for the callers that accept them.
#[derive(Debug, Clone)]
pub struct Tokenizer<'a> {
    doc: &'a str,
    pos: usize,
    line: u32,
    items: usize,
    max_items: usize,
    failed: bool,
}

impl<'a> Tokenizer<'a> {
    /// Start tokenizing `doc`, failing at once if it exceeds `limits.max_bytes`.
    pub fn new(doc: &'a str, limits: Limits) -> Result<Self, ParseError> {
        if doc.len() > limits.max_bytes {
            return Err(ParseError::new(
                0,
                "",
                ParseProblem::TooLarge {
                    limit: limits.max_bytes,
                },
            ));
        }
        Ok(Tokenizer {
            doc,
            pos: 0,
            line: 0,
            items: 0,
            max_items: limits.max_items,
            failed: false,
        })
    }

    /// The document being tokenized.
    pub fn doc(&self) -> &'a str {
        self.doc
    }

    /// Number of the last line read (1-based; 0 before the first).
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Byte offset of the next unread line.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Return the next line (without its newline) and advance, or `None` at the end.
    #[inline]
    fn next_line(&mut self) -> Option<(usize, &'a str)> {
        let rest = self.doc.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let start = self.pos;
        self.line = self.line.saturating_add(1);
        match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(n) => {
                self.pos = start + n + 1;
                Some((start, rest.get(..n)?))
            }
            None => {
                self.pos = self.doc.len();
                Some((start, rest))
            }
        }
    }

    fn parse_item(&mut self) -> Option<Result<Item<'a>, ParseError>> {
        let (start, line) = loop {
            let (start, line) = self.next_line()?;
            if !line.is_empty() {
                break (start, line);
            }
        };
        let lineno = self.line;
        self.items += 1;
        if self.items > self.max_items {
            return Some(Err(ParseError::new(
                lineno,
                "",
                ParseProblem::TooManyItems {
                    limit: self.max_items,
                },
            )));
        }
        let (mut keyword, mut args) = split_keyword(line);
        if keyword == "opt" {
            (keyword, args) = split_keyword(args);
        }
        if !valid_keyword(keyword) {
            return Some(Err(ParseError::new(
                lineno,
                truncate(keyword),
                ParseProblem::MalformedLine,
            )));
        }
        if !printable(args.as_bytes()) {
            return Some(Err(ParseError::new(
                lineno,
                keyword,
                ParseProblem::MalformedLine,
            )));
        }
        let mut object = None;
        if self
            .doc
            .as_bytes()
            .get(self.pos..)
            .is_some_and(|r| r.starts_with(b"-----BEGIN "))
        {
            match self.parse_object() {
                Ok(o) => object = Some(o),
                Err(problem) => return Some(Err(ParseError::new(lineno, keyword, problem))),
            }
        }
        Some(Ok(Item {
            line: lineno,
            start,
            end: self.pos,
            keyword,
            args,
            object,
        }))
    }

    fn parse_object(&mut self) -> Result<Object<'a>, ParseProblem> {
        let (_, begin) = self.next_line().ok_or(ParseProblem::BadObject)?;
        let tag = begin
            .strip_prefix("-----BEGIN ")
            .and_then(|t| t.strip_suffix("-----"))
            .ok_or(ParseProblem::BadObject)?;
        if tag.is_empty()
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-')
        {
            return Err(ParseProblem::BadObject);
        }
        let body_start = self.pos;
        loop {
            let (lstart, l) = self.next_line().ok_or(ParseProblem::UnterminatedObject)?;
            if let Some(end) = l.strip_prefix("-----END ") {
                if end.strip_suffix("-----") != Some(tag) {
                    return Err(ParseProblem::BadObject);
                }
                let body = self
                    .doc
                    .get(body_start..lstart)
                    .ok_or(ParseProblem::BadObject)?;
                return Ok(Object { tag, body });
            }
            if l.starts_with("-----") {
                return Err(ParseProblem::BadObject);
            }
        }
    }
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = Result<Item<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.parse_item();
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }
}

/// Are all bytes printable ASCII or tab? (dir-spec §1.2 `ArgumentChar` and WS.)
/// Written without early exit so that it vectorizes.
#[inline]
fn printable(b: &[u8]) -> bool {
    b.iter().fold(true, |ok, &c| {
        ok & ((c.wrapping_sub(b' ') < 95) | (c == b'\t'))
    })
}

/// Split a line at the first space or tab into (keyword, rest-without-leading-WS).
#[inline]
fn split_keyword(line: &str) -> (&str, &str) {
    match line
        .as_bytes()
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
    {
        Some(n) => {
            let (k, rest) = line.split_at(n);
            (k, rest.trim_start_matches([' ', '\t']))
        }
        None => (line, ""),
    }
}

/// dir-spec §1.2 `Keyword`, plus `@` annotations (dir-spec §3.3 caches).
#[inline]
fn valid_keyword(k: &str) -> bool {
    let b = k.as_bytes();
    match b.first() {
        None => false,
        Some(&c) if c.is_ascii_alphanumeric() || c == b'@' => b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        Some(_) => false,
    }
}

/// Keep error messages short whatever the input.
fn truncate(s: &str) -> &str {
    let mut n = s.len().min(40);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// How many times an item may appear in a section (dir-spec §1.2 multiplicity tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multiplicity {
    /// "Exactly once" (and "At start/At end, exactly once": position is checked by the caller).
    Once,
    /// "At most once".
    AtMostOnce,
    /// "Once or more".
    AtLeastOnce,
    /// "Any number".
    Any,
}

/// Whether an item carries an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjRule {
    /// Must have an object with this tag.
    Required(&'static str),
    /// Must not have an object.
    Forbidden,
    /// Either.
    Optional,
}

/// One rule of a section: keyword, multiplicity, object rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The keyword this rule is about.
    pub keyword: &'static str,
    /// How many times it may occur.
    pub multiplicity: Multiplicity,
    /// Object requirement.
    pub object: ObjRule,
}

/// Shorthand constructor for [`Rule`] tables.
pub const fn rule(keyword: &'static str, multiplicity: Multiplicity, object: ObjRule) -> Rule {
    Rule {
        keyword,
        multiplicity,
        object,
    }
}

/// Is `kw` named by one of `rules`? Sections keep only such items, so that a
/// flood of unknown items costs no memory (they are still tokenized and skipped).
pub fn is_known(rules: &[Rule], kw: &str) -> bool {
    rules.iter().any(|r| r.keyword == kw)
}

/// Split `text` into relay documents that begin with `first` and end with `router-signature`
/// (server descriptors and extra-info documents, dir-spec §2.1.1–§2.1.2), as C tor's
/// `cached-descriptors` / `cached-extrainfo` files hold them: `@` annotation lines between
/// documents are skipped, items no rule of `rules` names are dropped (a flood of unknown items
/// costs no memory), each document's items go to `one`, and more than `max` documents is an
/// error.
pub fn split_signed_documents<'a, T>(
    text: &'a str,
    first: &'static str,
    rules: &[Rule],
    max: usize,
    mut one: impl FnMut(&'a str, Vec<Item<'a>>) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    let mut out = Vec::new();
    let mut cur: Vec<Item<'a>> = Vec::new();
    for it in Tokenizer::new(text, Limits::LARGE)? {
        let it = it?;
        if it.keyword.starts_with('@') {
            if let Some(f) = cur.first() {
                return Err(f.err(ParseProblem::MissingItem("router-signature")));
            }
            continue;
        }
        if cur.is_empty() && it.keyword != first {
            return Err(it.err(ParseProblem::MissingItem(first)));
        }
        let last = it.keyword == "router-signature";
        if is_known(rules, it.keyword) {
            cur.push(it);
        }
        if last {
            if out.len() >= max {
                return Err(it.err(ParseProblem::TooManyItems { limit: max }));
            }
            out.push(one(text, std::mem::take(&mut cur))?);
        }
    }
    if let Some(f) = cur.first() {
        return Err(f.err(ParseProblem::MissingItem("router-signature")));
    }
    Ok(out)
}

/// Which at-most-once items of one document entry have appeared, one bit an item: the
/// multiplicity check (dir-spec §1.2) of entries parsed item by item rather than through a
/// [`Section`] rule table, i.e. consensus router entries (§3.4.1) and microdescriptors
/// (§3.3).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SeenItems(u16);

impl SeenItems {
    /// Records the item `bit` stands for; [`ParseProblem::DuplicateItem`] at `it` if it was
    /// already seen.
    pub(crate) fn once(&mut self, bit: u16, it: &Item<'_>) -> Result<(), ParseError> {
        if self.0 & bit != 0 {
            return Err(it.err(ParseProblem::DuplicateItem));
        }
        self.0 |= bit;
        Ok(())
    }

    /// Whether the item `bit` stands for has appeared.
    pub(crate) fn has(&self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// The items of one section, checked against a rule table. Unknown keywords are
/// kept (and ignored by the callers), as dir-spec §1.2 requires for extensibility.
#[derive(Debug)]
pub struct Section<'a, 'r> {
    rules: &'r [Rule],
    /// For each rule, the index in `items` of its first occurrence.
    first: Vec<Option<usize>>,
    /// All items of the section, in order.
    pub items: Vec<Item<'a>>,
}

impl<'a, 'r> Section<'a, 'r> {
    /// Check `items` against `rules`; `ctx_line`/`ctx_kw` locate missing-item errors.
    pub fn check(
        items: Vec<Item<'a>>,
        rules: &'r [Rule],
        ctx_line: u32,
        ctx_kw: &str,
    ) -> Result<Self, ParseError> {
        let mut first = vec![None; rules.len()];
        let mut count = vec![0u32; rules.len()];
        for (i, it) in items.iter().enumerate() {
            if let Some(r) = rules.iter().position(|r| r.keyword == it.keyword) {
                let rule = &rules[r];
                count[r] += 1;
                if count[r] == 1 {
                    first[r] = Some(i);
                } else if matches!(
                    rule.multiplicity,
                    Multiplicity::Once | Multiplicity::AtMostOnce
                ) {
                    return Err(it.err(ParseProblem::DuplicateItem));
                }
                match rule.object {
                    ObjRule::Required(tag) => {
                        it.object_tagged(tag)?;
                    }
                    ObjRule::Forbidden => it.no_object()?,
                    ObjRule::Optional => {}
                }
            }
        }
        for (r, rule) in rules.iter().enumerate() {
            if count[r] == 0
                && matches!(
                    rule.multiplicity,
                    Multiplicity::Once | Multiplicity::AtLeastOnce
                )
            {
                return Err(ParseError::new(
                    ctx_line,
                    ctx_kw,
                    ParseProblem::MissingItem(rule.keyword),
                ));
            }
        }
        Ok(Section {
            rules,
            first,
            items,
        })
    }

    /// The single (first) occurrence of `kw`, if any. `kw` must be in the rule table.
    pub fn get(&self, kw: &str) -> Option<&Item<'a>> {
        let r = self.rules.iter().position(|r| r.keyword == kw)?;
        self.items.get(self.first[r]?)
    }

    /// The occurrence of a required `kw` (checked present by [`Section::check`]).
    pub fn required(&self, kw: &'static str) -> Result<&Item<'a>, ParseError> {
        self.get(kw)
            .ok_or_else(|| ParseError::new(0, kw, ParseProblem::MissingItem(kw)))
    }

    /// Every occurrence of `kw`, in order.
    pub fn all<'s>(&'s self, kw: &'s str) -> impl Iterator<Item = &'s Item<'a>> + 's {
        self.items.iter().filter(move |i| i.keyword == kw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_objects() {
        let doc =
            "a 1 2\n\nopt b\tx  y\nk\n-----BEGIN FOO BAR-----\nAAAA\n-----END FOO BAR-----\nz\n";
        let items: Vec<_> = Tokenizer::new(doc, Limits::SMALL)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].keyword, "a");
        assert_eq!(items[0].args().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(items[1].keyword, "b");
        assert_eq!(items[1].line, 3);
        assert_eq!(items[1].args().collect::<Vec<_>>(), ["x", "y"]);
        let o = items[2].object.unwrap();
        assert_eq!(o.tag, "FOO BAR");
        assert_eq!(o.body, "AAAA\n");
        assert_eq!(o.decode().unwrap(), vec![0, 0, 0]);
        assert_eq!(items[3].keyword, "z");
        assert_eq!(items[3].line, 8);
        assert_eq!(
            &doc[items[2].start..items[2].end],
            "k\n-----BEGIN FOO BAR-----\nAAAA\n-----END FOO BAR-----\n"
        );
    }

    #[test]
    fn errors_name_line() {
        let doc = "a\n-b\n";
        let e = Tokenizer::new(doc, Limits::SMALL)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(matches!(e.problem, ParseProblem::MalformedLine));
        let doc = "a\n-----BEGIN X-----\nAA\n-----END Y-----\n";
        let e = Tokenizer::new(doc, Limits::SMALL)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert_eq!((e.line, e.keyword.as_str()), (1, "a"));
        let doc = "a\n-----BEGIN X-----\nAA\n";
        let e = Tokenizer::new(doc, Limits::SMALL)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(matches!(e.problem, ParseProblem::UnterminatedObject));
    }

    #[test]
    fn limits() {
        let lim = Limits {
            max_bytes: 10,
            max_items: 2,
        };
        assert!(Tokenizer::new("01234567890", lim).is_err());
        let e = Tokenizer::new("a\nb\nc\n", lim)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(matches!(e.problem, ParseProblem::TooManyItems { .. }));
    }

    #[test]
    fn section_rules() {
        use Multiplicity::*;
        const RULES: &[Rule] = &[
            rule("a", Once, ObjRule::Forbidden),
            rule("b", AtMostOnce, ObjRule::Forbidden),
            rule("c", Any, ObjRule::Forbidden),
        ];
        let items = |d: &'static str| -> Vec<Item<'static>> {
            Tokenizer::new(d, Limits::SMALL)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let s = Section::check(items("a\nc\nc\nunknown\n"), RULES, 0, "").unwrap();
        assert_eq!(s.all("c").count(), 2);
        assert!(s.get("b").is_none());
        let e = Section::check(items("a\nb\nb\n"), RULES, 0, "").unwrap_err();
        assert_eq!((e.line, e.keyword.as_str()), (3, "b"));
        let e = Section::check(items("c\n"), RULES, 7, "x").unwrap_err();
        assert!(matches!(e.problem, ParseProblem::MissingItem("a")));
    }
}
