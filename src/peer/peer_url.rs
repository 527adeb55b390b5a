//! The relay URL a sync connects to: checked once, when it is built, to be a ws:// or wss://
//! URL with a host; after that nobody checks it again.

use super::PeerError;
use std::fmt;

/// A ws:// or wss:// URL with a host, kept exactly as given (the gateway hands over the form
/// its policy authorized, and that string is what is connected to).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerUrl(String);

impl PeerUrl {
    /// `url` when it parses as a ws:// or wss:// URL with a host.
    pub fn parse(url: &str) -> Result<Self, PeerError> {
        let u = url::Url::parse(url).map_err(|e| PeerError::BadUrl(url.into(), e.to_string()))?;
        if !matches!(u.scheme(), "ws" | "wss") {
            return Err(PeerError::BadUrl(
                url.into(),
                "scheme must be ws or wss".into(),
            ));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(PeerError::BadUrl(url.into(), "no host".into()));
        }
        Ok(Self(url.to_string()))
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PeerUrl {
    type Err = PeerError;

    fn from_str(s: &str) -> Result<Self, PeerError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_with_a_host_only() {
        for ok in ["ws://127.0.0.1:7777", "wss://relay.example.com/x?y=1"] {
            assert_eq!(
                PeerUrl::parse(ok).map(|u| u.to_string()).ok(),
                Some(ok.into())
            );
        }
        let why = |u: &str| match PeerUrl::parse(u) {
            Err(PeerError::BadUrl(_, why)) => why,
            other => panic!("{u}: {other:?}"),
        };
        assert_eq!(why("https://relay.example.com"), "scheme must be ws or wss");
        assert_eq!(why("ws://"), "empty host");
        assert!(!why("not a url").is_empty());
    }
}
