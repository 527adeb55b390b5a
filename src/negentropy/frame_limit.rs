//! The negentropy frame size limit: the one place the rule "0 (none) or at least 4096 bytes"
//! is checked. Everything that takes a limit from outside (flags, gRPC fields, a store
//! engine's caller) builds a [`FrameLimit`]; after that nobody checks it again.

use std::fmt;

/// A negentropy frame size limit in bytes: 0 (none) or at least [`FrameLimit::MIN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameLimit(u64);

/// A limit that breaks the rule; the text completes "… must be" / "…:" in callers' messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("0 (none) or at least {}", FrameLimit::MIN)]
pub struct FrameLimitError;

impl FrameLimit {
    /// The smallest limit the protocol allows (NIP-77: at least 4096 bytes).
    pub const MIN: u64 = 4096;
    /// No limit.
    pub const NONE: FrameLimit = FrameLimit(0);

    /// `bytes` when it is 0 (none) or at least [`FrameLimit::MIN`].
    pub const fn new(bytes: u64) -> Result<Self, FrameLimitError> {
        if bytes != 0 && bytes < Self::MIN {
            return Err(FrameLimitError);
        }
        Ok(Self(bytes))
    }

    /// A real limit of `bytes`, raised to [`FrameLimit::MIN`] when below it (for limits
    /// derived from a message size, which may be small).
    pub const fn at_least_min(bytes: u64) -> Self {
        if bytes < Self::MIN {
            Self(Self::MIN)
        } else {
            Self(bytes)
        }
    }

    /// The limit in bytes (0 = none).
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FrameLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_at_least_4096() {
        assert_eq!(FrameLimit::new(0).map(FrameLimit::get), Ok(0));
        assert_eq!(FrameLimit::new(4096).map(FrameLimit::get), Ok(4096));
        assert_eq!(FrameLimit::new(u64::MAX).map(FrameLimit::get), Ok(u64::MAX));
        for bad in [1, 100, 4095] {
            assert_eq!(FrameLimit::new(bad), Err(FrameLimitError), "{bad}");
        }
        assert_eq!(
            FrameLimitError.to_string(),
            "0 (none) or at least 4096",
            "callers build their messages around this text"
        );
        assert_eq!(FrameLimit::at_least_min(0).get(), 4096);
        assert_eq!(FrameLimit::at_least_min(60_000).get(), 60_000);
    }
}
