//! The gateway's input: the files it loads and watches (validated, all present), as the
//! sync service's configuration module hands them over.

use std::path::PathBuf;

/// Validated security settings: everything present.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Server certificate chain.
    pub tls_cert: PathBuf,
    /// Server key.
    pub tls_key: PathBuf,
    /// Client CA bundle.
    pub tls_client_ca: PathBuf,
    /// Optional CRL.
    pub tls_crl: Option<PathBuf>,
    /// Policy file.
    pub policy: PathBuf,
    /// Token keys.
    pub token_keys: PathBuf,
    /// Audit directory.
    pub audit_dir: PathBuf,
    /// Audit checkpoint key.
    pub audit_key: Option<PathBuf>,
    /// Public audit anchors, when configured.
    pub anchor: Option<AnchorConfig>,
}

/// Default of `--audit-anchor-interval`: ten minutes.
pub const DEFAULT_ANCHOR_INTERVAL_SECS: u64 = 600;

/// An anchor relay URL as given; its `Debug` hides user information and query values (the
/// effective config is logged at start-up).
#[derive(Clone, PartialEq, Eq)]
pub struct AnchorRelayUrl(pub String);

impl From<String> for AnchorRelayUrl {
    fn from(s: String) -> Self {
        Self(s.trim().to_string())
    }
}

impl std::fmt::Debug for AnchorRelayUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::policy::redact_url(&self.0))
    }
}

/// Public anchor settings, checked: a key file and at least one relay URL.
#[derive(Debug, Clone)]
pub struct AnchorConfig {
    /// The anchoring key file.
    pub key: PathBuf,
    /// The relays.
    pub relays: Vec<AnchorRelayUrl>,
    /// Longest time between anchors while records are written.
    pub interval: std::time::Duration,
}
