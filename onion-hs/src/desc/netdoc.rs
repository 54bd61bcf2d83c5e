//! v3 onion-service descriptors and their decrypted layers as dir-spec §1.2 items, read by
//! onion-dir's tokenizer (the one every directory document of this project goes through) and
//! given the shape the descriptor parsers use: objects decoded, line numbers and offsets kept.

use onion_dir::netdoc::{Limits, Tokenizer};

use super::{DescError, MAX_DESCRIPTOR_LEN};

/// Bounds for one descriptor or decrypted layer. A layer's plaintext is shorter than the
/// descriptor that carried it, so the descriptor's size limit bounds all three; a line holds
/// at least a keyword and a newline, so there are at most half as many items as bytes.
const LIMITS: Limits = Limits {
    max_bytes: MAX_DESCRIPTOR_LEN,
    max_items: MAX_DESCRIPTOR_LEN / 2,
};

/// One keyword line and its object.
#[derive(Debug, Clone)]
pub(crate) struct Item<'a> {
    /// The keyword.
    pub kw: &'a str,
    /// Everything after the keyword and its separating whitespace (may be empty).
    pub args: &'a str,
    /// The keyword line as written (an `opt ` prefix and the separators kept), for lines
    /// kept verbatim.
    pub text: &'a str,
    /// The object, if any: (tag, decoded bytes).
    pub obj: Option<(&'a str, Vec<u8>)>,
    /// 1-based line number of the keyword line.
    pub line: usize,
    /// Byte offset of the keyword line in the document.
    pub start: usize,
}

impl<'a> Item<'a> {
    /// The whitespace-separated arguments.
    pub fn arg_list(&self) -> impl Iterator<Item = &'a str> {
        self.args.split_ascii_whitespace()
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

/// Split `text` into items, decoding every object's base64. Blank lines are allowed between
/// items, as dir-spec §1.2 and C tor's tokenizer allow; `@` annotation lines are not (they
/// belong to cached router documents, never to a descriptor).
pub(crate) fn tokenize(text: &str) -> Result<Vec<Item<'_>>, DescError> {
    let mut items = Vec::new();
    for item in Tokenizer::new(text, LIMITS)? {
        let item = item?;
        if item.keyword.starts_with('@') {
            return Err(DescError::syntax(
                item.line as usize,
                "",
                "annotation line in a descriptor",
            ));
        }
        let obj = match item.object {
            Some(o) => {
                let data = o.decode().ok_or(DescError::syntax(
                    item.line as usize,
                    super::known_keyword(item.keyword),
                    "object is not base64",
                ))?;
                Some((o.tag, data))
            }
            None => None,
        };
        let text = text
            .get(item.start..)
            .and_then(|rest| rest.split('\n').next())
            .unwrap_or("");
        items.push(Item {
            kw: item.keyword,
            args: item.args,
            text,
            obj,
            line: item.line as usize,
            start: item.start,
        });
    }
    Ok(items)
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
