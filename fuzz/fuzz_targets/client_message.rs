//! Client → relay frames, as `orly-relay` reads them: parse, round-trip through our own
//! serialization, then hand each piece to the parser the relay uses next (event, filter,
//! negentropy message), none of which may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orly::event::wire::ClientMessage;
use orly::event::{Event, Filter};
use orly::negentropy::check_message;
use orly_fuzz::has_float;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = ClientMessage::parse(text) else {
        return;
    };
    let json = msg.to_json();
    let again = ClientMessage::parse(&json).expect("our own serialization parses");
    if !has_float(&msg.to_value()) {
        assert_eq!(again, msg, "{json}");
    }
    match msg {
        ClientMessage::Event(v) | ClientMessage::Auth(v) => {
            if let Ok(ev) = Event::from_value(v) {
                let _ = ev.verify();
            }
        }
        ClientMessage::Req { filters, .. } => {
            for f in &filters {
                let _ = Filter::from_value(f);
            }
        }
        ClientMessage::NegOpen { filter, hex, .. } => {
            let _ = Filter::from_value(&filter);
            if let Ok(bytes) = hex::decode(hex) {
                let _ = check_message(&bytes);
            }
        }
        ClientMessage::NegMsg { hex, .. } => {
            if let Ok(bytes) = hex::decode(hex) {
                let _ = check_message(&bytes);
            }
        }
        ClientMessage::Close { .. } | ClientMessage::NegClose { .. } => {}
    }
});
