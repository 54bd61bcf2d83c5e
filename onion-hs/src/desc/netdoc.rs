//! A small tokenizer for dir-spec §1.2's document meta-format, as used by v3 onion-service
//! descriptors and their decrypted layers: keyword lines, each optionally followed by one
//! `-----BEGIN TAG-----` … `-----END TAG-----` base64 object.

use super::DescError;

/// One keyword line and its object.
#[derive(Debug, Clone)]
pub(crate) struct Item<'a> {
    /// The keyword.
    pub kw: &'a str,
    /// Everything after the keyword and one space (may be empty).
    pub args: &'a str,
    /// The object, if any: (tag, decoded bytes).
    pub obj: Option<(&'a str, Vec<u8>)>,
    /// 1-based line number of the keyword line.
    pub line: usize,
    /// Byte offset of the keyword line in the document.
    pub start: usize,
}

impl<'a> Item<'a> {
    /// The arguments split on spaces.
    pub fn arg_list(&self) -> impl Iterator<Item = &'a str> {
        self.args.split(' ').filter(|s| !s.is_empty())
    }

    /// The object, which must exist and carry `tag`.
    pub fn object(&self, tag: &'static str) -> Result<&[u8], DescError> {
        match &self.obj {
            Some((t, d)) if *t == tag => Ok(d),
            Some(_) => Err(DescError::syntax(
                self.line,
                self.kw_static(),
                "unexpected object tag",
            )),
            None => Err(DescError::syntax(
                self.line,
                self.kw_static(),
                "missing object",
            )),
        }
    }

    /// The keyword as a `'static` label for errors when it is one we know.
    pub fn kw_static(&self) -> &'static str {
        super::known_keyword(self.kw)
    }
}

fn is_keyword(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Split `text` into items. Every line must end in `\n` except possibly the last.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Item<'_>>, DescError> {
    let mut items = Vec::new();
    let mut lines = LineIter {
        text,
        pos: 0,
        line: 0,
    };
    while let Some((start, line_no, line)) = lines.next_line() {
        if line.starts_with("-----") {
            return Err(DescError::syntax(line_no, "", "object without a keyword"));
        }
        let (kw, args) = match line.split_once(' ') {
            Some((k, a)) => (k, a),
            None => (line, ""),
        };
        if !is_keyword(kw) {
            return Err(DescError::syntax(line_no, "", "bad keyword"));
        }
        let mut item = Item {
            kw,
            args,
            obj: None,
            line: line_no,
            start,
        };
        if lines.peek_starts_with("-----BEGIN ") {
            let (_, bl, begin) = lines
                .next_line()
                .ok_or(DescError::syntax(line_no, "", "object"))?;
            let tag = begin
                .strip_prefix("-----BEGIN ")
                .and_then(|t| t.strip_suffix("-----"))
                .ok_or(DescError::syntax(bl, item.kw_static(), "bad BEGIN line"))?;
            let mut b64 = String::new();
            loop {
                let (_, l, body) = lines.next_line().ok_or(DescError::syntax(
                    bl,
                    item.kw_static(),
                    "unterminated object",
                ))?;
                if let Some(end) = body.strip_prefix("-----END ") {
                    if end.strip_suffix("-----") != Some(tag) {
                        return Err(DescError::syntax(l, item.kw_static(), "END tag mismatch"));
                    }
                    break;
                }
                b64.push_str(body.trim_end());
            }
            let data = crate::util::b64_decode(&b64).ok_or(DescError::syntax(
                bl,
                item.kw_static(),
                "object is not base64",
            ))?;
            item.obj = Some((tag, data));
        }
        items.push(item);
    }
    Ok(items)
}

struct LineIter<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> LineIter<'a> {
    fn next_line(&mut self) -> Option<(usize, usize, &'a str)> {
        let rest = self.text.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let start = self.pos;
        self.line += 1;
        let (l, adv) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += adv;
        Some((start, self.line, l))
    }

    fn peek_starts_with(&self, p: &str) -> bool {
        self.text.get(self.pos..).is_some_and(|r| r.starts_with(p))
    }
}

/// Wrap `data` as a base64 object with 64-character lines (no trailing newline).
pub(crate) fn write_object(out: &mut String, tag: &str, data: &[u8]) {
    let b64 = crate::util::b64_pad(data);
    out.push_str("-----BEGIN ");
    out.push_str(tag);
    out.push_str("-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (l, r) = rest.split_at(rest.len().min(64));
        out.push_str(l);
        out.push('\n');
        rest = r;
    }
    out.push_str("-----END ");
    out.push_str(tag);
    out.push_str("-----");
}
