//! NIP-01 filters: parsing (strict: unknown keys are errors, not silently dropped) and matching.

use super::{Event, EventId, PubKey, decode_hex32};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Most values accepted in one list of a filter (ids, authors, kinds or one tag).
pub(super) const MAX_FILTER_VALUES: usize = 10_000;

/// A NIP-01 filter. Conditions are ANDed; values inside one condition are ORed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact event ids.
    pub ids: Option<BTreeSet<EventId>>,
    /// Exact author pubkeys.
    pub authors: Option<BTreeSet<PubKey>>,
    /// Kinds.
    pub kinds: Option<BTreeSet<u16>>,
    /// `#x` single-letter tag conditions: tag name → accepted values.
    pub tags: BTreeMap<char, BTreeSet<String>>,
    /// Inclusive lower bound on `created_at`.
    pub since: Option<u64>,
    /// Inclusive upper bound on `created_at`.
    pub until: Option<u64>,
    /// Most events to return (queries only; ignored by matching and sync).
    pub limit: Option<u64>,
}

/// Why a filter was refused; the text names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter: {0}")]
pub struct FilterError(pub String);

fn err(s: impl Into<String>) -> FilterError {
    FilterError(s.into())
}

impl Filter {
    /// Parses a filter from JSON text.
    pub fn from_json(s: &str) -> Result<Self, FilterError> {
        let v: Value = serde_json::from_str(s).map_err(|e| err(format!("not JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// Parses a filter from a JSON value (an object).
    pub fn from_value(v: &Value) -> Result<Self, FilterError> {
        let obj = v
            .as_object()
            .ok_or_else(|| err("a filter must be a JSON object"))?;
        let mut f = Filter::default();
        for (key, val) in obj {
            match key.as_str() {
                "ids" => f.ids = Some(hex_list(key, val)?),
                "authors" => f.authors = Some(hex_list(key, val)?),
                "kinds" => {
                    let arr = list(key, val)?;
                    let mut kinds = BTreeSet::new();
                    for k in arr {
                        let n = k
                            .as_u64()
                            .filter(|n| *n <= u16::MAX as u64)
                            .ok_or_else(|| err(format!("kinds: {k} is not a kind (0..=65535)")))?;
                        kinds.insert(n as u16);
                    }
                    f.kinds = Some(kinds);
                }
                "since" => f.since = Some(uint(key, val)?),
                "until" => f.until = Some(uint(key, val)?),
                "limit" => f.limit = Some(uint(key, val)?),
                "search" => return Err(err("search: not supported")),
                k if k.len() == 2 && k.starts_with('#') => {
                    let name = k.chars().nth(1).unwrap_or('#');
                    if !name.is_ascii_alphabetic() {
                        return Err(err(format!("{k}: tag filters take one letter a-z or A-Z")));
                    }
                    let mut vals = BTreeSet::new();
                    for x in list(key, val)? {
                        let s = x
                            .as_str()
                            .ok_or_else(|| err(format!("{k}: values must be strings")))?;
                        vals.insert(s.to_string());
                    }
                    f.tags.insert(name, vals);
                }
                other => return Err(err(format!("unknown field {other:?}"))),
            }
        }
        Ok(f)
    }

    /// The JSON form, as sent in `REQ` and `NEG-OPEN`.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if let Some(ids) = &self.ids {
            m.insert("ids".into(), ids.iter().map(hex::encode).collect());
        }
        if let Some(a) = &self.authors {
            m.insert("authors".into(), a.iter().map(hex::encode).collect());
        }
        if let Some(k) = &self.kinds {
            m.insert("kinds".into(), k.iter().copied().collect());
        }
        for (name, vals) in &self.tags {
            m.insert(format!("#{name}"), vals.iter().cloned().collect());
        }
        if let Some(s) = self.since {
            m.insert("since".into(), s.into());
        }
        if let Some(u) = self.until {
            m.insert("until".into(), u.into());
        }
        if let Some(l) = self.limit {
            m.insert("limit".into(), l.into());
        }
        Value::Object(m)
    }

    /// Does `ev` satisfy every condition (ignoring `limit`)?
    pub fn matches(&self, ev: &Event) -> bool {
        if self.since.is_some_and(|s| ev.created_at < s)
            || self.until.is_some_and(|u| ev.created_at > u)
        {
            return false;
        }
        if self.ids.as_ref().is_some_and(|ids| !ids.contains(&ev.id)) {
            return false;
        }
        if self
            .authors
            .as_ref()
            .is_some_and(|a| !a.contains(&ev.pubkey))
        {
            return false;
        }
        if self.kinds.as_ref().is_some_and(|k| !k.contains(&ev.kind)) {
            return false;
        }
        self.tags.iter().all(|(name, vals)| {
            let mut buf = [0u8; 4];
            let name: &str = name.encode_utf8(&mut buf);
            ev.tag_values(name).any(|v| vals.contains(v))
        })
    }

    /// True when only `since`/`until` (and `limit`) constrain the filter: the whole store's
    /// time-ordered index answers it without looking at events.
    pub fn is_time_range_only(&self) -> bool {
        self.ids.is_none() && self.authors.is_none() && self.kinds.is_none() && self.tags.is_empty()
    }

    /// True when some list in the filter is empty, so nothing can match.
    pub fn matches_nothing(&self) -> bool {
        self.ids.as_ref().is_some_and(BTreeSet::is_empty)
            || self.authors.as_ref().is_some_and(BTreeSet::is_empty)
            || self.kinds.as_ref().is_some_and(BTreeSet::is_empty)
            || self.tags.values().any(BTreeSet::is_empty)
            || matches!((self.since, self.until), (Some(s), Some(u)) if s > u)
    }
}

fn list<'a>(key: &str, v: &'a Value) -> Result<&'a Vec<Value>, FilterError> {
    let arr = v
        .as_array()
        .ok_or_else(|| err(format!("{key}: must be an array")))?;
    if arr.len() > MAX_FILTER_VALUES {
        return Err(err(format!("{key}: more than {MAX_FILTER_VALUES} values")));
    }
    Ok(arr)
}

fn hex_list(key: &str, v: &Value) -> Result<BTreeSet<[u8; 32]>, FilterError> {
    list(key, v)?
        .iter()
        .map(|x| {
            let s = x
                .as_str()
                .ok_or_else(|| err(format!("{key}: values must be strings")))?;
            decode_hex32(s).map_err(|e| err(format!("{key}: {e}")))
        })
        .collect()
}

fn uint(key: &str, v: &Value) -> Result<u64, FilterError> {
    v.as_u64()
        .ok_or_else(|| err(format!("{key}: must be a non-negative integer")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Keys, sign_event};

    fn ev(kind: u16, at: u64, tags: Vec<Vec<String>>) -> Event {
        sign_event(&Keys::from_seed(b"filter", 1), at, kind, tags, "hi")
    }

    #[test]
    fn matching_table() {
        let e = ev(
            1,
            100,
            vec![
                vec!["t".into(), "nostr".into()],
                vec!["p".into(), "x".into()],
            ],
        );
        let pk = hex::encode(e.pubkey);
        let other = "11".repeat(32);
        let table = [
            ("{}", true),
            (r#"{"kinds":[1,7]}"#, true),
            (r#"{"kinds":[7]}"#, false),
            (&format!(r#"{{"authors":["{pk}"]}}"#), true),
            (&format!(r#"{{"authors":["{other}"]}}"#), false),
            (&format!(r#"{{"ids":["{}"]}}"#, e.id_hex()), true),
            (r##"{"#t":["nostr","rust"]}"##, true),
            (r##"{"#t":["rust"]}"##, false),
            (r##"{"#t":["nostr"],"#p":["x"]}"##, true),
            (r##"{"#t":["nostr"],"#p":["y"]}"##, false),
            (r#"{"since":100,"until":100}"#, true),
            (r#"{"since":101}"#, false),
            (r#"{"until":99}"#, false),
            (r#"{"kinds":[1],"limit":0}"#, true),
        ];
        for (json, want) in table {
            let f = Filter::from_json(json).unwrap();
            assert_eq!(f.matches(&e), want, "{json}");
            // Round trip through the wire form keeps the meaning.
            let back = Filter::from_value(&f.to_value()).unwrap();
            assert_eq!(back, f, "{json}");
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let table = [
            ("[]", "object"),
            (r#"{"kinds":[70000]}"#, "kinds"),
            (r#"{"kinds":"1"}"#, "kinds"),
            (r#"{"authors":["abc"]}"#, "authors"),
            (r#"{"ids":[1]}"#, "ids"),
            (r#"{"since":-1}"#, "since"),
            (r#"{"until":1.5}"#, "until"),
            (r##"{"#tt":["x"]}"##, "unknown field"),
            (r##"{"#1":["x"]}"##, "#1"),
            (r##"{"#e":[1]}"##, "#e"),
            (r#"{"search":"x"}"#, "search"),
            (r#"{"bogus":1}"#, "bogus"),
            ("{", "not JSON"),
        ];
        for (json, needle) in table {
            let e = Filter::from_json(json).unwrap_err();
            assert!(e.to_string().contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn empty_lists_match_nothing() {
        assert!(
            Filter::from_json(r#"{"kinds":[]}"#)
                .unwrap()
                .matches_nothing()
        );
        assert!(
            Filter::from_json(r#"{"since":5,"until":4}"#)
                .unwrap()
                .matches_nothing()
        );
        assert!(
            !Filter::from_json(r#"{"kinds":[1]}"#)
                .unwrap()
                .matches_nothing()
        );
    }
}
