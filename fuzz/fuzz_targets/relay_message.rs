//! Relay → client frames, as `orly sync` reads a peer's: parse, round-trip through our own
//! serialization, then the pieces the sync engine reads next (event, reason prefix, negentropy
//! message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use orly::event::Event;
use orly::event::wire::{Prefix, RelayMessage};
use orly::negentropy::check_message;
use orly_fuzz::has_float;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = RelayMessage::parse(text) else {
        return;
    };
    let json = msg.to_json();
    let again = RelayMessage::parse(&json).expect("our own serialization parses");
    if !has_float(&msg.to_value()) {
        assert_eq!(again, msg, "{json}");
    }
    match msg {
        RelayMessage::Event { event, .. } => {
            if let Ok(ev) = Event::from_value(event) {
                let _ = ev.verify();
            }
        }
        RelayMessage::Ok { message, .. } | RelayMessage::Closed { message, .. } => {
            if let Some(p) = Prefix::of(&message) {
                assert!(p.starts(&message));
            }
        }
        RelayMessage::NegErr { reason, .. } => {
            let _ = Prefix::of(&reason);
        }
        RelayMessage::NegMsg { hex, .. } => {
            if let Ok(bytes) = hex::decode(hex) {
                let _ = check_message(&bytes);
            }
        }
        RelayMessage::Eose { .. } | RelayMessage::Notice { .. } | RelayMessage::Auth { .. } => {}
    }
});
