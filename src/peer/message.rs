//! Relay → client messages of NIP-01, NIP-42 and NIP-77, parsed without trusting the relay.

use serde_json::Value;

/// One message from a relay.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayMsg {
    /// `["EVENT", sub, event]` (the event is checked by the receiver).
    Event { sub: String, event: Value },
    /// `["EOSE", sub]`.
    Eose { sub: String },
    /// `["OK", id, accepted, message]`.
    Ok {
        id: String,
        accepted: bool,
        message: String,
    },
    /// `["CLOSED", sub, message]`.
    Closed { sub: String, message: String },
    /// `["NOTICE", message]`.
    Notice { message: String },
    /// `["AUTH", challenge]` (NIP-42).
    Auth { challenge: String },
    /// `["NEG-MSG", sub, hex]`.
    NegMsg { sub: String, hex: String },
    /// `["NEG-ERR", sub, reason, (max)?]`.
    NegErr {
        sub: String,
        reason: String,
        max: Option<u64>,
    },
}

/// Why a relay message could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message from relay: {0}")]
pub struct MalformedMsg(pub String);

impl RelayMsg {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, MalformedMsg> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| MalformedMsg(format!("not JSON: {e}")))?;
        let arr = v
            .as_array()
            .ok_or_else(|| MalformedMsg("not a JSON array".into()))?;
        let s = |i: usize| -> Result<String, MalformedMsg> {
            arr.get(i)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| MalformedMsg(format!("element {i} must be a string")))
        };
        let opt_s = |i: usize| arr.get(i).and_then(Value::as_str).unwrap_or("").to_string();
        Ok(match s(0)?.as_str() {
            "EVENT" => RelayMsg::Event {
                sub: s(1)?,
                event: arr
                    .get(2)
                    .cloned()
                    .ok_or_else(|| MalformedMsg("EVENT without event".into()))?,
            },
            "EOSE" => RelayMsg::Eose { sub: s(1)? },
            "OK" => RelayMsg::Ok {
                id: s(1)?,
                accepted: arr
                    .get(2)
                    .and_then(Value::as_bool)
                    .ok_or_else(|| MalformedMsg("OK without boolean".into()))?,
                message: opt_s(3),
            },
            "CLOSED" => RelayMsg::Closed {
                sub: s(1)?,
                message: opt_s(2),
            },
            "NOTICE" => RelayMsg::Notice { message: opt_s(1) },
            "AUTH" => RelayMsg::Auth { challenge: s(1)? },
            "NEG-MSG" => RelayMsg::NegMsg {
                sub: s(1)?,
                hex: s(2)?,
            },
            "NEG-ERR" => RelayMsg::NegErr {
                sub: s(1)?,
                reason: opt_s(2),
                max: arr.get(3).and_then(Value::as_u64),
            },
            other => return Err(MalformedMsg(format!("unknown message type {other:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            RelayMsg::parse(r#"["NEG-ERR","s","blocked: too many",100]"#).unwrap(),
            RelayMsg::NegErr {
                sub: "s".into(),
                reason: "blocked: too many".into(),
                max: Some(100)
            }
        );
        assert_eq!(
            RelayMsg::parse(r#"["OK","ab",false,"blocked: no"]"#).unwrap(),
            RelayMsg::Ok {
                id: "ab".into(),
                accepted: false,
                message: "blocked: no".into()
            }
        );
        for bad in [
            "",
            "{}",
            "[]",
            "[1]",
            r#"["OK","x"]"#,
            r#"["EVENT","s"]"#,
            r#"["NEG-MSG","s",1]"#,
            r#"["WAT"]"#,
        ] {
            assert!(RelayMsg::parse(bad).is_err(), "{bad}");
        }
    }
}
