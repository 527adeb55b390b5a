//! NIP-01 canonical serialization `[0,pubkey,created_at,kind,tags,content]`, the input of the id.
//!
//! The canonical form is what the network's signers produce (serde_json in rust-nostr,
//! `JSON.stringify` in nostr-tools, the C++ reference relay's writer): `\n \" \\ \r \t \b \f`
//! short-escaped, the other C0 controls (U+0000–U+001F) as `\u00XX` in lowercase hex, and every
//! other character, DEL and U+2028 included, as raw UTF-8.
//!
//! Two other forms are seen in the wild, and [`Form`] names them so verification can try them:
//! controls written raw (NIP-01's escape list read literally) and DEL written `\u007f`. They only
//! differ from the canonical form for text holding such characters ([`needs_other_forms`]).

use sha2::Digest;

/// How control characters are written; everything else is the same in every form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// What signers produce: the seven short escapes, `\u00XX` for the other C0 controls.
    Signers,
    /// The seven short escapes only; the other C0 controls raw (NIP-01 read literally).
    RawControls,
    /// As [`Form::Signers`], and DEL (U+007F) as `\u007f` too.
    EscapedDel,
}

impl Form {
    /// The forms verification tries after [`Form::Signers`], in order.
    pub const FALLBACKS: [Form; 2] = [Form::RawControls, Form::EscapedDel];
}

/// Whether any of `tags` or `content` holds a character the forms write differently: a C0
/// control without a short escape, or DEL. Only then is a fallback form worth hashing.
pub(super) fn needs_other_forms(tags: &[Vec<String>], content: &str) -> bool {
    let special = |s: &str| {
        s.bytes()
            .any(|b| (b < 0x20 && short_escape(b).is_none()) || b == 0x7f)
    };
    special(content) || tags.iter().flatten().any(|v| special(v))
}

/// The canonical serialization as a string (for tests and debugging; hashing streams it).
pub fn canonical_json(
    pubkey: &[u8; 32],
    created_at: u64,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) -> String {
    serialize(Form::Signers, pubkey, created_at, kind, tags, content)
}

/// The serialization in `form` as a string.
pub(super) fn serialize(
    form: Form,
    pubkey: &[u8; 32],
    created_at: u64,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) -> String {
    let mut sink = VecSink(Vec::new());
    write_canonical(&mut sink, form, pubkey, created_at, kind, tags, content);
    // Every form writes valid UTF-8: ASCII escapes between slices of valid strings.
    String::from_utf8(sink.0).unwrap_or_default()
}

struct VecSink(Vec<u8>);
impl Sink for VecSink {
    fn put(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
}

/// Anything bytes can be streamed into: a hasher or a buffer.
pub(crate) trait Sink {
    fn put(&mut self, b: &[u8]);
}

impl Sink for sha2::Sha256 {
    fn put(&mut self, b: &[u8]) {
        self.update(b);
    }
}

pub(crate) fn write_canonical<S: Sink>(
    out: &mut S,
    form: Form,
    pubkey: &[u8; 32],
    created_at: u64,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) {
    let mut hexbuf = [0u8; 64];
    // Encoding into a buffer of exactly twice the input length cannot fail.
    let _ = hex::encode_to_slice(pubkey, &mut hexbuf);
    out.put(b"[0,\"");
    out.put(&hexbuf);
    out.put(b"\",");
    out.put(itoa_u64(created_at).as_bytes());
    out.put(b",");
    out.put(itoa_u64(kind as u64).as_bytes());
    out.put(b",[");
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        out.put(b"[");
        for (j, v) in tag.iter().enumerate() {
            if j > 0 {
                out.put(b",");
            }
            write_string(out, form, v);
        }
        out.put(b"]");
    }
    out.put(b"],");
    write_string(out, form, content);
    out.put(b"]");
}

fn itoa_u64(v: u64) -> String {
    v.to_string()
}

/// The escape of a character that has a short one.
fn short_escape(b: u8) -> Option<&'static [u8]> {
    Some(match b {
        b'\n' => b"\\n",
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        _ => return None,
    })
}

fn write_string<S: Sink>(out: &mut S, form: Form, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put(b"\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut unicode = *b"\\u00xx";
    for (i, &b) in bytes.iter().enumerate() {
        // Every byte below 0x80 is a whole character in UTF-8, so slicing around it is safe.
        let esc: &[u8] = match (short_escape(b), form) {
            (Some(e), _) => e,
            (None, Form::Signers | Form::EscapedDel) if b < 0x20 => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 0xf)];
                &unicode
            }
            (None, Form::EscapedDel) if b == 0x7f => b"\\u007f",
            _ => continue,
        };
        out.put(&bytes[start..i]);
        out.put(esc);
        start = i + 1;
    }
    out.put(&bytes[start..]);
    out.put(b"\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signers_form_is_serde_json_string_output() {
        // serde_json is what rust-nostr signs with; JSON.stringify and the C++ relay agree.
        let every: String = (0u8..=0x7f).map(char::from).collect();
        let content = format!("{every} ls\u{2028} ps\u{2029} 😀 𝄞 é");
        let tags = vec![vec!["t".to_string(), every.clone()]];
        let s = canonical_json(&[0xab; 32], 1_700_000_000, 1, &tags, &content);
        let expected = format!(
            "[0,\"{}\",1700000000,1,[[\"t\",{}]],{}]",
            "ab".repeat(32),
            serde_json::to_string(&every).unwrap(),
            serde_json::to_string(&content).unwrap(),
        );
        assert_eq!(s, expected);
        assert!(s.contains("\\u0000") && s.contains("\\u001f") && s.contains("\\b"));
        assert!(s.contains('\u{7f}') && !s.contains("\\u007f"));
    }

    #[test]
    fn other_forms_differ_only_in_controls_and_del() {
        let s = |form, c: &str| serialize(form, &[0; 32], 0, 1, &[], c);
        assert_eq!(
            s(Form::RawControls, "a\u{0}\u{1f}\n\u{7f}"),
            "[0,\"".to_string() + &"00".repeat(32) + "\",0,1,[],\"a\u{0}\u{1f}\\n\u{7f}\"]"
        );
        assert!(s(Form::EscapedDel, "\u{7f}\u{1}").ends_with("\"\\u007f\\u0001\"]"));
        let plain = "plain text with \"quotes\", \\ and\n\t\r\u{8}\u{c} é 😀";
        for form in Form::FALLBACKS {
            assert_eq!(s(form, plain), s(Form::Signers, plain), "{form:?}");
        }
        assert!(!needs_other_forms(&[vec![plain.into()]], plain));
        for b in (0u8..0x20).chain([0x7f]) {
            let c = char::from(b).to_string();
            let special = !matches!(b, b'\n' | b'\r' | b'\t' | 0x08 | 0x0c);
            assert_eq!(needs_other_forms(&[], &c), special, "{b:#x}");
            assert_eq!(
                needs_other_forms(&[vec!["x".into(), c]], ""),
                special,
                "{b:#x}"
            );
        }
    }

    #[test]
    fn tags_are_nested_arrays() {
        let tags = vec![
            vec!["e".to_string(), "x".to_string()],
            vec!["t".to_string(), "a\"b".to_string(), "".to_string()],
        ];
        let s = canonical_json(&[0; 32], 0, 65535, &tags, "");
        assert!(s.ends_with(",0,65535,[[\"e\",\"x\"],[\"t\",\"a\\\"b\",\"\"]],\"\"]"));
    }
}
