//! Wire messages: every variant round-trips, malformed frames are refused with the text the
//! relay sends back, and the messages agree with rust-nostr's (code nobody here wrote).

use super::*;
use nostr_sdk::prelude::JsonUtil;

fn clients() -> Vec<ClientMessage> {
    vec![
        ClientMessage::Event(json!({"id": "ab", "kind": 1})),
        ClientMessage::Req {
            sub: "s".into(),
            filters: vec![json!({"kinds": [1]}), json!({})],
        },
        ClientMessage::Close { sub: "s".into() },
        ClientMessage::Auth(json!({"kind": 22242})),
        ClientMessage::NegOpen {
            sub: "n".into(),
            filter: json!({}),
            hex: "6100".into(),
        },
        ClientMessage::NegMsg {
            sub: "n".into(),
            hex: "61".into(),
        },
        ClientMessage::NegClose { sub: "n".into() },
    ]
}

fn relays() -> Vec<RelayMessage> {
    vec![
        RelayMessage::Event {
            sub: "s".into(),
            event: json!({"id": "ab"}),
        },
        RelayMessage::Eose { sub: "s".into() },
        RelayMessage::Ok {
            id: "ab".repeat(32),
            accepted: false,
            message: "blocked: no".into(),
        },
        RelayMessage::Closed {
            sub: "s".into(),
            message: "auth-required: who are you".into(),
        },
        RelayMessage::Notice {
            message: "hello".into(),
        },
        RelayMessage::Auth {
            challenge: "c".into(),
        },
        RelayMessage::NegMsg {
            sub: "n".into(),
            hex: "61".into(),
        },
        RelayMessage::NegErr {
            sub: "n".into(),
            reason: "blocked: too many".into(),
            max: Some(100),
        },
        RelayMessage::NegErr {
            sub: "n".into(),
            reason: "closed: idle".into(),
            max: None,
        },
    ]
}

#[test]
fn every_message_round_trips() {
    for m in clients() {
        assert_eq!(ClientMessage::parse(&m.to_json()).as_ref(), Ok(&m));
        assert_eq!(
            m.to_json(),
            m.to_value().to_string(),
            "one text for every path"
        );
    }
    for m in relays() {
        assert_eq!(RelayMessage::parse(&m.to_json()).as_ref(), Ok(&m));
        assert_eq!(
            m.to_json(),
            m.to_value().to_string(),
            "one text for every path"
        );
    }
    // A NEG-MSG is written directly: its subscription id is still escaped.
    let m = RelayMessage::NegMsg {
        sub: "a\"b\\c\u{1}".into(),
        hex: "61".into(),
    };
    assert_eq!(m.to_json(), r#"["NEG-MSG","a\"b\\c\u0001","61"]"#);
    assert_eq!(RelayMessage::parse(&m.to_json()), Ok(m));
}

#[test]
fn malformed_client_messages_are_named() {
    let cases = [
        ("", "invalid: message is not JSON"),
        ("{}", "invalid: message must be a JSON array"),
        ("[1]", "invalid: first element must be the message type"),
        (
            r#"["COUNT","s"]"#,
            "invalid: unknown message type \"COUNT\"",
        ),
        (r#"["EVENT"]"#, "invalid: EVENT without an event"),
        (r#"["REQ"]"#, "invalid: REQ needs a subscription id"),
        (r#"["REQ",1,{}]"#, "invalid: REQ needs a subscription id"),
        (r#"["CLOSE"]"#, "invalid: CLOSE needs a subscription id"),
        (r#"["AUTH"]"#, "invalid: AUTH without an event"),
        (r#"["NEG-OPEN","s",{}]"#, "invalid: NEG-OPEN needs"),
        (r#"["NEG-OPEN","s",{},7]"#, "invalid: NEG-OPEN needs"),
        (r#"["NEG-MSG","s"]"#, "invalid: NEG-MSG needs"),
        (
            r#"["NEG-CLOSE"]"#,
            "invalid: NEG-CLOSE needs a subscription id",
        ),
    ];
    for (text, want) in cases {
        let got = ClientMessage::parse(text).expect_err(text).to_string();
        assert!(got.starts_with(want), "{text}: {got}");
    }
    // A REQ without filters parses: how many a relay takes is its own limit.
    assert_eq!(
        ClientMessage::parse(r#"["REQ","s"]"#),
        Ok(ClientMessage::Req {
            sub: "s".into(),
            filters: vec![]
        })
    );
}

#[test]
fn malformed_relay_messages_are_refused() {
    for bad in [
        "",
        "{}",
        "[]",
        "[1]",
        r#"["OK","x"]"#,
        r#"["OK","x","yes"]"#,
        r#"["EVENT","s"]"#,
        r#"["NEG-MSG","s",1]"#,
        r#"["AUTH"]"#,
        r#"["WAT"]"#,
    ] {
        assert!(RelayMessage::parse(bad).is_err(), "{bad}");
    }
    // Optional reasons may be missing.
    assert_eq!(
        RelayMessage::parse(r#"["OK","ab",true]"#),
        Ok(RelayMessage::Ok {
            id: "ab".into(),
            accepted: true,
            message: String::new()
        })
    );
}

#[test]
fn prefixes_are_read_only_when_they_are_words_of_the_protocol() {
    for p in Prefix::ALL {
        let m = p.reason("why");
        assert_eq!(Prefix::of(&m), Some(p), "{m}");
        assert!(p.starts(&m));
    }
    assert_eq!(Prefix::of("auth-required"), None, "no colon: free text");
    assert!(
        Prefix::AuthRequired.starts("auth-required"),
        "but the bare word is that prefix"
    );
    assert!(!Prefix::AuthRequired.starts("auth-required-ish: x"));
    assert_eq!(Prefix::of("nope: x"), None);
    assert_eq!(Prefix::of("Blocked: x"), None, "prefixes are lowercase");
    assert_eq!(Prefix::of("blocked:x"), Some(Prefix::Blocked));
    assert_eq!(Prefix::RateLimited.reason(3), "rate-limited: 3");
}

#[test]
fn messages_agree_with_rust_nostr() {
    use nostr_sdk::prelude::{
        ClientMessage as NClient, Filter as NFilter, Kind, RelayMessage as NRelay, SubscriptionId,
    };
    let sub = SubscriptionId::new("s");
    let theirs = NClient::req(sub.clone(), NFilter::new().kind(Kind::TextNote)).as_json();
    assert_eq!(
        ClientMessage::parse(&theirs),
        Ok(ClientMessage::Req {
            sub: "s".into(),
            filters: vec![json!({"kinds": [1]})]
        })
    );
    let theirs = NClient::close(sub.clone()).as_json();
    assert_eq!(
        ClientMessage::parse(&theirs),
        Ok(ClientMessage::Close { sub: "s".into() })
    );
    // Ours, read by theirs.
    for m in relays() {
        let text = m.to_json();
        let parsed = NRelay::from_json(&text);
        // rust-nostr checks the event inside EVENT; the others it reads as they are.
        if !matches!(m, RelayMessage::Event { .. }) {
            assert!(parsed.is_ok(), "{text}: {parsed:?}");
        }
    }
}

#[test]
fn frames_written_in_one_pass_read_back_as_their_messages() {
    use crate::event::{Event, Keys, sign_event};
    let keys = Keys::from_seed(b"wire-frames", 0);
    let ev = sign_event(
        &keys,
        1_700_000_000,
        1,
        vec![vec!["t".into(), "a\"b\\c\u{1}\u{7f}".into()]],
        "line\nquote\" tab\t ünï \u{0}",
    );
    // A subscription id that needs escaping (a peer chose it).
    let sub = "s \"x\" \\ ünï\u{2}";

    let text = RelayMessage::event_frame(sub, &ev);
    let Ok(RelayMessage::Event { sub: got, event }) = RelayMessage::parse(&text) else {
        panic!("{text}");
    };
    assert_eq!(got, sub);
    assert_eq!(Event::from_value(event), Ok(ev.clone()));
    // rust-nostr reads it, and checks the event inside.
    assert!(
        nostr_sdk::prelude::RelayMessage::from_json(&text).is_ok(),
        "{text}"
    );

    let text = ClientMessage::event_frame(&ev);
    let Ok(ClientMessage::Event(event)) = ClientMessage::parse(&text) else {
        panic!("{text}");
    };
    assert_eq!(Event::from_value(event), Ok(ev));
    assert!(
        nostr_sdk::prelude::ClientMessage::from_json(&text).is_ok(),
        "{text}"
    );

    // Every byte value, and the empty message; the same text as the message's own.
    for msg in [(0..=255u8).collect::<Vec<u8>>(), Vec::new()] {
        let hex = crate::negentropy::to_hex(&msg);
        let relay = RelayMessage::NegMsg {
            sub: sub.into(),
            hex: hex.clone(),
        };
        assert_eq!(RelayMessage::neg_msg_frame(sub, &msg), relay.to_json());
        assert_eq!(RelayMessage::parse(&relay.to_json()), Ok(relay));
        let client = ClientMessage::NegMsg {
            sub: sub.into(),
            hex,
        };
        assert_eq!(ClientMessage::neg_msg_frame(sub, &msg), client.to_json());
        assert_eq!(ClientMessage::parse(&client.to_json()), Ok(client));
    }
}
