//! NIP-01 canonical serialization `[0,pubkey,created_at,kind,tags,content]`, the input of the id.
//!
//! Only `\n \" \\ \r \t \b \f` are escaped; every other character, control characters and
//! U+2028 included, is written as raw UTF-8. This differs from ordinary JSON output on purpose.

use sha2::Digest;

/// The canonical serialization as a string (for tests and debugging; hashing streams it).
pub fn canonical_json(
    pubkey: &[u8; 32],
    created_at: u64,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) -> String {
    let mut sink = VecSink(Vec::new());
    write_canonical(&mut sink, pubkey, created_at, kind, tags, content);
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
            write_string(out, v);
        }
        out.put(b"]");
    }
    out.put(b"],");
    write_string(out, content);
    out.put(b"]");
}

fn itoa_u64(v: u64) -> String {
    v.to_string()
}

fn write_string<S: Sink>(out: &mut S, s: &str) {
    out.put(b"\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\n' => b"\\n",
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
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
    fn escapes_only_the_nip01_set() {
        let content = "q\"b\\n\nt\tr\rb\u{8}f\u{c} nul\u{0} us\u{1f} ls\u{2028} 😀 𝄞 é";
        let s = canonical_json(&[0xab; 32], 1_700_000_000, 1, &[], content);
        let expected_content =
            "\"q\\\"b\\\\n\\nt\\tr\\rb\\bf\\f nul\u{0} us\u{1f} ls\u{2028} 😀 𝄞 é\"";
        let expected = format!(
            "[0,\"{}\",1700000000,1,[],{}]",
            "ab".repeat(32),
            expected_content
        );
        assert_eq!(s, expected);
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
