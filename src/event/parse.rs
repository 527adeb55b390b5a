//! Strict JSON shape of an event: exact field types, lowercase hex of the right lengths,
//! no unknown or duplicate fields.

use super::Event;
use super::hexbytes::{decode_hex32, decode_hex64};
use serde::Deserialize;
use serde::ser::{Error as _, Serialize, SerializeStruct, Serializer};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvent {
    id: String,
    pubkey: String,
    created_at: u64,
    kind: u16,
    tags: Vec<Vec<String>>,
    content: String,
    sig: String,
}

impl TryFrom<RawEvent> for Event {
    type Error = String;

    fn try_from(r: RawEvent) -> Result<Self, String> {
        Ok(Event {
            id: decode_hex32(&r.id).map_err(|e| format!("id: {e}"))?,
            pubkey: decode_hex32(&r.pubkey).map_err(|e| format!("pubkey: {e}"))?,
            created_at: r.created_at,
            kind: r.kind,
            tags: r.tags,
            content: r.content,
            sig: decode_hex64(&r.sig).map_err(|e| format!("sig: {e}"))?,
        })
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Hex into stack buffers: every stored and every sent event goes through here.
        let (mut id, mut pubkey, mut sig) = ([0u8; 64], [0u8; 64], [0u8; 128]);
        let mut st = s.serialize_struct("Event", 7)?;
        st.serialize_field("id", hex_str(&self.id, &mut id).map_err(S::Error::custom)?)?;
        st.serialize_field(
            "pubkey",
            hex_str(&self.pubkey, &mut pubkey).map_err(S::Error::custom)?,
        )?;
        st.serialize_field("created_at", &self.created_at)?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("tags", &self.tags)?;
        st.serialize_field("content", &self.content)?;
        st.serialize_field(
            "sig",
            hex_str(&self.sig, &mut sig).map_err(S::Error::custom)?,
        )?;
        st.end()
    }
}

/// Lower-case hex of `bytes` written into `buf` (exactly twice as long).
fn hex_str<'a>(bytes: &[u8], buf: &'a mut [u8]) -> Result<&'a str, String> {
    hex::encode_to_slice(bytes, buf).map_err(|e| e.to_string())?;
    std::str::from_utf8(buf).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use crate::event::{Event, EventError, Keys, sign_event};

    fn sample(content: &str) -> Event {
        let keys = Keys::from_seed(b"parse-tests", 0);
        sign_event(
            &keys,
            1_700_000_000,
            1,
            vec![vec!["t".into(), "x".into()]],
            content,
        )
    }

    #[test]
    fn roundtrip_tricky_content_verifies() {
        let tricky = [
            "plain",
            "quote \" backslash \\ slash /",
            "newline\nreturn\rtab\tbackspace\u{8}formfeed\u{c}",
            "controls \u{0}\u{1}\u{1f}\u{7f}",
            "emoji 😀🎉 non-BMP 𝄞 𠜎",
            "line separator \u{2028} paragraph \u{2029}",
            "",
        ];
        for c in tricky {
            let ev = sample(c);
            let json = ev.to_json();
            let back = Event::from_json_verified(json.as_bytes()).expect(c);
            assert_eq!(back, ev, "content {c:?}");
        }
    }

    #[test]
    fn one_bit_off_is_refused() {
        let ev = sample("flip me");
        for bit in [0usize, 7, 100, 255] {
            let mut bad = ev.clone();
            bad.id[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(bad.verify(), Err(EventError::BadId), "id bit {bit}");
        }
        for bit in [0usize, 8, 300, 511] {
            let mut bad = ev.clone();
            bad.sig[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(bad.verify(), Err(EventError::BadSignature), "sig bit {bit}");
        }
        let mut bad = ev.clone();
        bad.content.push(' ');
        assert_eq!(bad.verify(), Err(EventError::BadId));
    }

    #[test]
    fn times_beyond_the_grpc_range_are_refused() {
        // Found by fuzz/event_json: such an event parsed and verified, but its protobuf form
        // (int64) clamped the time, so orly-db refused it and a sync over orly-db that fetched
        // it failed as a whole while an embedded store took it.
        use crate::event::MAX_CREATED_AT;
        use crate::proto::orlysync::common::v1 as pb;
        let keys = Keys::from_seed(b"parse-tests", 0);
        let last = sign_event(&keys, MAX_CREATED_AT, 1, vec![], "last second");
        assert_eq!(last.verify(), Ok(()));
        let back = Event::try_from(pb::Event::from(last.clone()));
        assert_eq!(back, Ok(last), "the latest accepted time survives protobuf");
        let later = sign_event(&keys, MAX_CREATED_AT + 1, 1, vec![], "too late");
        let json = later.to_json();
        assert!(
            Event::from_json(json.as_bytes()).is_ok(),
            "still parses (stored ones stay readable)"
        );
        assert_eq!(
            Event::from_json_verified(json.as_bytes()),
            Err(EventError::TooLate(MAX_CREATED_AT + 1))
        );
        let far = sign_event(&keys, u64::MAX, 1, vec![], "far");
        assert_eq!(far.verify(), Err(EventError::TooLate(u64::MAX)));
    }

    #[test]
    fn strict_shape() {
        let ev = sample("x");
        let good: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        let mutate = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut v = good.clone();
            f(v.as_object_mut().unwrap());
            Event::from_json(v.to_string().as_bytes())
        };
        type Mutation = Box<dyn Fn(&mut serde_json::Map<String, serde_json::Value>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "short id",
                Box::new(|m| {
                    m.insert("id".into(), "ab".into());
                }),
            ),
            (
                "upper pubkey",
                Box::new(|m| {
                    let p = m["pubkey"].as_str().unwrap().to_uppercase();
                    m.insert("pubkey".into(), p.into());
                }),
            ),
            (
                "short sig",
                Box::new(|m| {
                    m.insert("sig".into(), "00".repeat(63).into());
                }),
            ),
            (
                "kind too big",
                Box::new(|m| {
                    m.insert("kind".into(), 65536.into());
                }),
            ),
            (
                "negative time",
                Box::new(|m| {
                    m.insert("created_at".into(), (-1).into());
                }),
            ),
            (
                "huge time",
                Box::new(|m| {
                    m.insert(
                        "created_at".into(),
                        serde_json::from_str("1e400").unwrap_or(serde_json::Value::Null),
                    );
                }),
            ),
            (
                "float kind",
                Box::new(|m| {
                    m.insert("kind".into(), 1.5.into());
                }),
            ),
            (
                "tag not string",
                Box::new(|m| {
                    m.insert("tags".into(), serde_json::json!([["e", 1]]));
                }),
            ),
            (
                "missing sig",
                Box::new(|m| {
                    m.remove("sig");
                }),
            ),
            (
                "unknown field",
                Box::new(|m| {
                    m.insert("extra".into(), 1.into());
                }),
            ),
        ];
        for (name, f) in cases {
            assert!(
                matches!(mutate(&*f), Err(EventError::Malformed(_))),
                "{name}"
            );
        }
        assert!(Event::from_json(b"{\"id\":").is_err());
        assert!(Event::from_json(b"\xff\xfe").is_err());
        assert!(matches!(
            Event::from_json(&vec![b' '; super::super::MAX_EVENT_BYTES + 1]),
            Err(EventError::TooLarge(_))
        ));
        let dup = format!("{{\"id\":\"{}\",{}", "00".repeat(32), &ev.to_json()[1..]);
        assert!(Event::from_json(dup.as_bytes()).is_err(), "duplicate field");
    }
}
