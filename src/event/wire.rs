//! The NIP-01, NIP-42 and NIP-77 wire messages in both directions, parsed and serialized here
//! and nowhere else, with the machine-readable reason prefixes of `OK`, `CLOSED` and `NEG-ERR`
//! and the kinds the protocol itself gives a meaning to.
//!
//! Parsing checks the message's shape only (element types and counts); what is inside an event
//! or a filter, and whether an id or a subscription is acceptable, is for the receiver to judge.
//! Events and filters therefore travel as JSON values.

use super::Event;
use serde_json::{Value, json};
use std::fmt;

/// Kinds the protocol gives a meaning to.
pub mod kind {
    /// NIP-09 deletion request.
    pub const DELETION: u16 = 5;
    /// NIP-42 client authentication (never stored).
    pub const CLIENT_AUTH: u16 = 22242;
}

/// The machine-readable prefix of a reason (NIP-01 `OK`/`CLOSED`, NIP-42, NIP-77 `NEG-ERR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// The client must authenticate (NIP-42) first.
    AuthRequired,
    /// Refused by the relay's policy or limits (also: a negentropy set too large).
    Blocked,
    /// The message or event is not valid.
    Invalid,
    /// The relay failed.
    Error,
    /// The authenticated key may not do this.
    Restricted,
    /// Already have it.
    Duplicate,
    /// Too many requests.
    RateLimited,
    /// Not enough proof of work.
    Pow,
    /// The subscription or session was closed.
    Closed,
    /// Ignored, without telling the author.
    Mute,
}

impl Prefix {
    /// Every prefix.
    pub const ALL: [Prefix; 10] = [
        Prefix::AuthRequired,
        Prefix::Blocked,
        Prefix::Invalid,
        Prefix::Error,
        Prefix::Restricted,
        Prefix::Duplicate,
        Prefix::RateLimited,
        Prefix::Pow,
        Prefix::Closed,
        Prefix::Mute,
    ];

    /// The word as written on the wire, without the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::AuthRequired => "auth-required",
            Prefix::Blocked => "blocked",
            Prefix::Invalid => "invalid",
            Prefix::Error => "error",
            Prefix::Restricted => "restricted",
            Prefix::Duplicate => "duplicate",
            Prefix::RateLimited => "rate-limited",
            Prefix::Pow => "pow",
            Prefix::Closed => "closed",
            Prefix::Mute => "mute",
        }
    }

    /// The prefix `message` starts with (`word:`), if it is one of ours.
    pub fn of(message: &str) -> Option<Prefix> {
        let (word, _) = message.split_once(':')?;
        Prefix::ALL.into_iter().find(|p| p.as_str() == word)
    }

    /// Whether `message` starts with this prefix: `word:`, or the bare word alone (some
    /// relays send `auth-required` with nothing after it).
    pub fn starts(self, message: &str) -> bool {
        Prefix::of(message) == Some(self) || message == self.as_str()
    }

    /// `"word: text"`.
    pub fn reason(self, text: impl fmt::Display) -> String {
        format!("{}: {text}", self.as_str())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client → relay message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `["EVENT", event]`.
    Event(Value),
    /// `["REQ", sub, filter...]`.
    Req {
        /// Subscription id.
        sub: String,
        /// Filters, as sent.
        filters: Vec<Value>,
    },
    /// `["CLOSE", sub]`.
    Close {
        /// Subscription id.
        sub: String,
    },
    /// `["AUTH", event]` (NIP-42).
    Auth(Value),
    /// `["NEG-OPEN", sub, filter, hex]` (NIP-77).
    NegOpen {
        /// Subscription id.
        sub: String,
        /// The filter, as sent.
        filter: Value,
        /// The initial negentropy message, hex.
        hex: String,
    },
    /// `["NEG-MSG", sub, hex]`.
    NegMsg {
        /// Subscription id.
        sub: String,
        /// A negentropy message, hex.
        hex: String,
    },
    /// `["NEG-CLOSE", sub]`.
    NegClose {
        /// Subscription id.
        sub: String,
    },
}

/// Why a client message could not be understood; the text is the relay's `NOTICE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid: {0}")]
pub struct BadClientMessage(pub String);

/// Why a relay message could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message from relay: {0}")]
pub struct MalformedMsg(pub String);

/// `["NEG-MSG", sub, hex]` with negentropy message `msg` hex-encoded into the frame in place:
/// a message can be megabytes, which `NegMsg`'s `to_json` would copy into a `String` of hex and
/// then scan again for characters to escape (hex has none).
fn neg_msg_frame(sub: &str, msg: &[u8]) -> String {
    // A string always serializes.
    let sub = serde_json::to_string(sub).unwrap_or_default();
    let mut out = Vec::with_capacity(msg.len() * 2 + sub.len() + 16);
    out.extend_from_slice(b"[\"NEG-MSG\",");
    out.extend_from_slice(sub.as_bytes());
    out.extend_from_slice(b",\"");
    let at = out.len();
    out.resize(at + msg.len() * 2, 0);
    // The slice is exactly twice as long as `msg`: encoding cannot fail.
    let _ = const_hex::encode_to_slice(msg, &mut out[at..]);
    out.extend_from_slice(b"\"]");
    String::from_utf8(out).unwrap_or_default()
}

/// The elements of a message array, taken by position: an element's value moves out rather
/// than being copied (an event's tree of strings, megabytes of negentropy hex).
struct Elements(Vec<Value>);

impl Elements {
    fn of(v: Value) -> Option<Self> {
        match v {
            Value::Array(a) => Some(Elements(a)),
            _ => None,
        }
    }
    /// The string at `i`, moved out (`None` when absent or not a string).
    fn string(&mut self, i: usize) -> Option<String> {
        match self.0.get_mut(i) {
            Some(Value::String(s)) => Some(std::mem::take(s)),
            _ => None,
        }
    }
    /// The text at `i`, "" when absent or not a string (optional reasons).
    fn text(&mut self, i: usize) -> String {
        self.string(i).unwrap_or_default()
    }
    /// The value at `i`, moved out.
    fn value(&mut self, i: usize) -> Option<Value> {
        self.0.get_mut(i).map(Value::take)
    }
}

impl ClientMessage {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, BadClientMessage> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| BadClientMessage(format!("message is not JSON: {e}")))?;
        Self::from_value(v)
    }

    /// Reads a parsed frame.
    pub fn from_value(v: Value) -> Result<Self, BadClientMessage> {
        let bad = |m: &str| BadClientMessage(m.to_string());
        let mut e = Elements::of(v).ok_or_else(|| bad("message must be a JSON array"))?;
        let Some(verb) = e.string(0) else {
            return Err(bad("first element must be the message type"));
        };
        Ok(match verb.as_str() {
            "EVENT" => {
                ClientMessage::Event(e.value(1).ok_or_else(|| bad("EVENT without an event"))?)
            }
            "REQ" => ClientMessage::Req {
                sub: e
                    .string(1)
                    .ok_or_else(|| bad("REQ needs a subscription id of 1 to 64 characters"))?,
                filters: e.0.split_off(2.min(e.0.len())),
            },
            "CLOSE" => ClientMessage::Close {
                sub: e
                    .string(1)
                    .ok_or_else(|| bad("CLOSE needs a subscription id"))?,
            },
            "AUTH" => ClientMessage::Auth(e.value(1).ok_or_else(|| bad("AUTH without an event"))?),
            "NEG-OPEN" => match (e.string(1), e.value(2), e.string(3)) {
                (Some(sub), Some(filter), Some(hex)) => ClientMessage::NegOpen { sub, filter, hex },
                _ => {
                    return Err(bad(
                        "NEG-OPEN needs a subscription id, a filter and a message",
                    ));
                }
            },
            "NEG-MSG" => match (e.string(1), e.string(2)) {
                (Some(sub), Some(hex)) => ClientMessage::NegMsg { sub, hex },
                _ => return Err(bad("NEG-MSG needs a subscription id and a message")),
            },
            "NEG-CLOSE" => ClientMessage::NegClose {
                sub: e
                    .string(1)
                    .ok_or_else(|| bad("NEG-CLOSE needs a subscription id"))?,
            },
            other => return Err(BadClientMessage(format!("unknown message type {other:?}"))),
        })
    }

    /// `["NEG-MSG", sub, hex]` of negentropy message `msg` (the text of
    /// [`ClientMessage::NegMsg`], without the intermediate `String` of hex).
    pub fn neg_msg_frame(sub: &str, msg: &[u8]) -> String {
        neg_msg_frame(sub, msg)
    }

    /// `["EVENT", event]` for an event of ours, written in one pass: the frame of every
    /// uploaded event, where building the [`ClientMessage::Event`] tree first and copying it
    /// into the message cost more than writing the text.
    pub fn event_frame(ev: &Event) -> String {
        // Strings and integers always serialize.
        serde_json::to_string(&("EVENT", ev)).unwrap_or_default()
    }

    /// The message as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            ClientMessage::Event(ev) => json!(["EVENT", ev]),
            ClientMessage::Req { sub, filters } => {
                let mut a = Vec::with_capacity(2 + filters.len());
                a.push(json!("REQ"));
                a.push(json!(sub));
                a.extend(filters.iter().cloned());
                Value::Array(a)
            }
            ClientMessage::Close { sub } => json!(["CLOSE", sub]),
            ClientMessage::Auth(ev) => json!(["AUTH", ev]),
            ClientMessage::NegOpen { sub, filter, hex } => json!(["NEG-OPEN", sub, filter, hex]),
            ClientMessage::NegMsg { sub, hex } => json!(["NEG-MSG", sub, hex]),
            ClientMessage::NegClose { sub } => json!(["NEG-CLOSE", sub]),
        }
    }

    /// The message as a text frame.
    pub fn to_json(&self) -> String {
        match self {
            // A NEG-MSG can be megabytes of hex: written out directly, not copied into a
            // `Value` first (strings always serialize).
            ClientMessage::NegMsg { sub, hex } => serde_json::to_string(&("NEG-MSG", sub, hex))
                .unwrap_or_else(|_| self.to_value().to_string()),
            _ => self.to_value().to_string(),
        }
    }
}

/// A relay → client message.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayMessage {
    /// `["EVENT", sub, event]` (the event is checked by the receiver).
    Event {
        /// Subscription id.
        sub: String,
        /// The event, as sent.
        event: Value,
    },
    /// `["EOSE", sub]`.
    Eose {
        /// Subscription id.
        sub: String,
    },
    /// `["OK", id, accepted, message]`.
    Ok {
        /// Event id, hex.
        id: String,
        /// Whether the event was stored (or already held).
        accepted: bool,
        /// Reason, prefixed when refused.
        message: String,
    },
    /// `["CLOSED", sub, message]`.
    Closed {
        /// Subscription id.
        sub: String,
        /// Reason, prefixed.
        message: String,
    },
    /// `["NOTICE", message]`.
    Notice {
        /// Human-readable text.
        message: String,
    },
    /// `["AUTH", challenge]` (NIP-42).
    Auth {
        /// The challenge to sign.
        challenge: String,
    },
    /// `["NEG-MSG", sub, hex]`.
    NegMsg {
        /// Subscription id.
        sub: String,
        /// A negentropy message, hex.
        hex: String,
    },
    /// `["NEG-ERR", sub, reason, (max)?]` (the fourth element is strfry's record cap).
    NegErr {
        /// Subscription id.
        sub: String,
        /// Reason, prefixed.
        reason: String,
        /// The relay's cap on records, when it says.
        max: Option<u64>,
    },
}

impl RelayMessage {
    /// Parses one text frame, trusting nothing in it.
    pub fn parse(text: &str) -> Result<Self, MalformedMsg> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| MalformedMsg(format!("not JSON: {e}")))?;
        let mut e = Elements::of(v).ok_or_else(|| MalformedMsg("not a JSON array".into()))?;
        let s = |e: &mut Elements, i: usize| {
            e.string(i)
                .ok_or_else(|| MalformedMsg(format!("element {i} must be a string")))
        };
        Ok(match s(&mut e, 0)?.as_str() {
            "EVENT" => RelayMessage::Event {
                sub: s(&mut e, 1)?,
                event: e
                    .value(2)
                    .ok_or_else(|| MalformedMsg("EVENT without event".into()))?,
            },
            "EOSE" => RelayMessage::Eose { sub: s(&mut e, 1)? },
            "OK" => RelayMessage::Ok {
                id: s(&mut e, 1)?,
                accepted: e
                    .0
                    .get(2)
                    .and_then(Value::as_bool)
                    .ok_or_else(|| MalformedMsg("OK without boolean".into()))?,
                message: e.text(3),
            },
            "CLOSED" => RelayMessage::Closed {
                sub: s(&mut e, 1)?,
                message: e.text(2),
            },
            "NOTICE" => RelayMessage::Notice { message: e.text(1) },
            "AUTH" => RelayMessage::Auth {
                challenge: s(&mut e, 1)?,
            },
            "NEG-MSG" => RelayMessage::NegMsg {
                sub: s(&mut e, 1)?,
                hex: s(&mut e, 2)?,
            },
            "NEG-ERR" => RelayMessage::NegErr {
                sub: s(&mut e, 1)?,
                reason: e.text(2),
                max: e.0.get(3).and_then(Value::as_u64),
            },
            other => return Err(MalformedMsg(format!("unknown message type {other:?}"))),
        })
    }

    /// `["NEG-MSG", sub, hex]` of negentropy message `msg` (the text of
    /// [`RelayMessage::NegMsg`], without the intermediate `String` of hex).
    pub fn neg_msg_frame(sub: &str, msg: &[u8]) -> String {
        neg_msg_frame(sub, msg)
    }

    /// `["EVENT", sub, event]` for an event of ours, written in one pass (every served
    /// event's frame; see [`ClientMessage::event_frame`]).
    pub fn event_frame(sub: &str, ev: &Event) -> String {
        serde_json::to_string(&("EVENT", sub, ev)).unwrap_or_default()
    }

    /// The message as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            RelayMessage::Event { sub, event } => json!(["EVENT", sub, event]),
            RelayMessage::Eose { sub } => json!(["EOSE", sub]),
            RelayMessage::Ok {
                id,
                accepted,
                message,
            } => json!(["OK", id, accepted, message]),
            RelayMessage::Closed { sub, message } => json!(["CLOSED", sub, message]),
            RelayMessage::Notice { message } => json!(["NOTICE", message]),
            RelayMessage::Auth { challenge } => json!(["AUTH", challenge]),
            RelayMessage::NegMsg { sub, hex } => json!(["NEG-MSG", sub, hex]),
            RelayMessage::NegErr {
                sub,
                reason,
                max: Some(max),
            } => json!(["NEG-ERR", sub, reason, max]),
            RelayMessage::NegErr {
                sub,
                reason,
                max: None,
            } => json!(["NEG-ERR", sub, reason]),
        }
    }

    /// The message as a text frame.
    pub fn to_json(&self) -> String {
        match self {
            // A NEG-MSG can be megabytes of hex: written out directly, not copied into a
            // `Value` first (strings always serialize).
            RelayMessage::NegMsg { sub, hex } => serde_json::to_string(&("NEG-MSG", sub, hex))
                .unwrap_or_else(|_| self.to_value().to_string()),
            _ => self.to_value().to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
