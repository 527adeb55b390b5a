//! The gateway's input: the files it loads and watches (validated, all present), as the
//! sync service's configuration (`crate::config`) hands them over.

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
}
