//! Bounds on what one record may hold, so no caller (one admin's huge peer URL, filter or tag
//! name) can grow the log by more than a fixed amount per record. Longer values are cut and
//! carry the SHA-256 of the whole, so an auditor holding the original can still match it.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Most bytes a text field (peer, reason, admin, error, ...) takes in a line, JSON-escaped,
/// quotes not counted.
pub const MAX_FIELD_BYTES: usize = 512;

/// Most bytes the `filter` field takes in a line (a filter may list a few authors in full).
pub const MAX_FILTER_BYTES: usize = 2048;

/// Most bytes one record's line takes (the longest every field at its bound can produce, with
/// room to spare); the log grows by at most this much per record.
pub const MAX_RECORD_BYTES: usize = 8 * 1024;

/// Bytes a char takes once JSON-escaped the way serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// `value` if its escaped form fits in `max` bytes; otherwise its longest prefix that fits
/// together with `…[truncated: N bytes, sha256 HEX]`, N and HEX of the whole value. (Also the
/// bound of what a caller is shown, e.g. a status message.)
pub fn bound_text(value: String, max: usize) -> String {
    let total: usize = value.chars().map(escaped_len).sum();
    if total <= max {
        return value;
    }
    let marker = format!(
        "…[truncated: {} bytes, sha256 {}]",
        value.len(),
        hex::encode(Sha256::digest(value.as_bytes()))
    );
    let room = max.saturating_sub(marker.len());
    let mut used = 0;
    let mut cut = 0;
    for (i, c) in value.char_indices() {
        used += escaped_len(c);
        if used > room {
            break;
        }
        cut = i + c.len_utf8();
    }
    let mut out = String::with_capacity(cut + marker.len());
    out.push_str(&value[..cut]);
    out.push_str(&marker);
    out
}

/// The filter as is if its JSON fits in [`MAX_FILTER_BYTES`]; otherwise its JSON text, cut by
/// [`bound_text`], as a string.
pub(crate) fn bound_filter(filter: Value) -> Value {
    let text = filter.to_string();
    if text.len() <= MAX_FILTER_BYTES {
        return filter;
    }
    Value::String(bound_text(text, MAX_FILTER_BYTES))
}

#[cfg(test)]
mod unit {
    use super::*;

    fn encoded_len(s: &str) -> usize {
        serde_json::to_string(s).expect("encode").len() - 2
    }

    #[test]
    fn short_values_are_kept_and_long_ones_cut_with_their_hash() {
        assert_eq!(bound_text("abc".into(), 512), "abc");
        let long = "x".repeat(3 * 1024 * 1024);
        let cut = bound_text(long.clone(), MAX_FIELD_BYTES);
        assert!(encoded_len(&cut) <= MAX_FIELD_BYTES, "{}", cut.len());
        assert!(cut.starts_with("xxxx"));
        let hash = hex::encode(Sha256::digest(long.as_bytes()));
        assert!(
            cut.ends_with(&format!("[truncated: {} bytes, sha256 {hash}]", long.len())),
            "{cut}"
        );
    }

    #[test]
    fn the_bound_holds_after_json_escaping_and_on_char_boundaries() {
        for unit in ["\u{1}", "\"", "é", "😀", "a\u{1f}b"] {
            let v = unit.repeat(10_000);
            let cut = bound_text(v, MAX_FIELD_BYTES);
            assert!(
                encoded_len(&cut) <= MAX_FIELD_BYTES,
                "{unit:?}: {}",
                cut.len()
            );
        }
        // Exactly at the bound: kept.
        let v = "y".repeat(MAX_FIELD_BYTES);
        assert_eq!(bound_text(v.clone(), MAX_FIELD_BYTES), v);
    }

    #[test]
    fn big_filters_become_a_bounded_string() {
        let small = serde_json::json!({"kinds": [1]});
        assert_eq!(bound_filter(small.clone()), small);
        let tag = "t".repeat(3 * 1024 * 1024);
        let big = serde_json::json!({ format!("#{tag}"): ["x"] });
        let out = bound_filter(big);
        let text = out.as_str().expect("a string");
        assert!(encoded_len(text) <= MAX_FILTER_BYTES);
        assert!(text.contains("truncated"), "{text}");
    }
}
