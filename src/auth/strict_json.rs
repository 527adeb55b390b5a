//! A JSON object reader that refuses duplicate member names. JWT headers and claims are parsed
//! by us and again by jsonwebtoken; with duplicates the two parsers could disagree on which
//! `alg` or `aud` counts, so such tokens are refused outright (RFC 7515 §5.2 allows this).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::Value;

/// A top-level JSON object whose member names were unique in the input.
pub(crate) struct StrictObject(pub BTreeMap<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object with unique member names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if out.insert(key, value).is_some() {
                        return Err(A::Error::custom("duplicate member name"));
                    }
                }
                Ok(StrictObject(out))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Parses `bytes` as one JSON object with unique top-level names.
pub(crate) fn parse_object(bytes: &[u8]) -> Option<BTreeMap<String, Value>> {
    serde_json::from_slice::<StrictObject>(bytes)
        .ok()
        .map(|o| o.0)
}

#[cfg(test)]
mod tests {
    use super::parse_object;

    #[test]
    fn refuses_duplicates_and_non_objects() {
        assert!(parse_object(br#"{"alg":"EdDSA","kid":"a"}"#).is_some());
        assert!(parse_object(br#"{"alg":"EdDSA","alg":"none"}"#).is_none());
        assert!(parse_object(br#"["alg"]"#).is_none());
        assert!(parse_object(b"{} trailing").is_none());
    }
}
