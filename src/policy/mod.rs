//! Admin policy: what each admin of the sync gateway may do, loaded from TOML and hot-reloaded.
//!
//! Owns the policy model, its validation, the decisions (identity lookup, revocation, sync
//! authorization) and reloading. Default deny: an unknown identity, a revoked admin, or a request
//! outside an admin's peers, directions, kinds, authors or event cap is refused with a
//! [`Denial`] whose text is fit for the audit log and the gRPC status as is. Beyond syncs, an
//! admin holds named [`Right`]s (managing peers, serving NIP-77 for a relay, sessions); none by
//! default.
//!
//! Must not touch: certificates and tokens (the `auth` module hands us an identity string and a
//! `jti`), rate limiting itself (the gateway builds limiters from [`AdminLimits`] and
//! [`ServiceLimits`]), audit writing, or the network.
//!
//! ```text
//! let handle = PolicyHandle::load(path)?;            // start-up: fail closed on a bad file
//! tasks.spawn(watcher(handle.clone(), Duration::from_secs(2), tasks.stop_signal()));
//! let policy = handle.current();                     // per request: a cheap snapshot
//! let admin = policy.admin_for_identity(id).into_result()?;
//! let grant = policy.authorize_sync(admin, &view)?;  // connect to grant.peer_url
//! ```

mod decide;
mod load;
mod model;
mod peer;
mod reload;
mod starter;

use std::fmt;
use std::path::PathBuf;

pub use decide::{Denial, DenialCode, IdentityLookup, SyncGrant, SyncRequestView};
pub use load::MAX_POLICY_FILE_LEN;
pub use model::{
    AdminLimits, AdminPolicy, DEFAULT_MAX_TOKEN_LIFETIME_SECONDS, Direction, DirectionSet, Policy,
    Right, Role, ServiceLimits, is_valid_admin_name,
};
pub use peer::{MAX_PEER_URL_LEN, PeerPattern, PeerUrl, PeerUrlError, normalize_peer_url};
pub(crate) use peer::{redact_quoting, redact_url, redact_urls_in};
pub use reload::{PolicyHandle, watcher};
pub use starter::{STARTER_TRUST_DOMAIN, starter_policy};

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {}: {source}", path.display())]
    Io {
        /// The policy file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_POLICY_FILE_LEN`].
    #[error("policy file {} is {len} bytes, more than the {MAX_POLICY_FILE_LEN} allowed", path.display())]
    TooLarge {
        /// The policy file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
    },
    /// Not TOML, or not this schema: a syntax error, an unknown field or a wrong type.
    #[error("{origin}: cannot parse policy: {source}")]
    Parse {
        /// The file path, or "policy" for a string.
        origin: String,
        /// The decoder's error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// Well-formed but wrong; every problem found is listed.
    #[error("{origin}: invalid policy ({} error{}): {}", errors.len(), plural(errors.len()), ErrorList(errors))]
    Invalid {
        /// The file path, or "policy" for a string.
        origin: String,
        /// Every problem found, in file order.
        errors: Vec<ValidationError>,
    },
}

impl PolicyError {
    /// The validation errors, empty unless this is [`PolicyError::Invalid`].
    pub fn validation_errors(&self) -> &[ValidationError] {
        match self {
            Self::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

/// One problem in a policy file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted location, e.g. `admin "alice".kinds[2]` or `service.per_ip_burst`.
    pub location: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Joins errors with "; " so the whole list fits one log line.
struct ErrorList<'a>(&'a [ValidationError]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
