//! The security stack in front of the sync service (DESIGN.md §7): thin tower layers over the
//! domain modules `auth`, `policy` and `audit`, one concern per file, composed in `stack.rs`.
//! This module adapts; it decides nothing the domain modules don't.

mod admin_limit;
mod anchor;
mod audit;
mod audit_layer;
mod body;
mod check;
mod config;
mod door;
mod gate;
mod identity;
mod ip_limit;
mod refusal;
mod rights;
mod stack;
mod telemetry;
mod tls;
mod token;

// Unit tests of each check with a stand-in inner service (see `test_support`).
#[cfg(test)]
mod admin_limit_tests;
#[cfg(test)]
mod audit_layer_tests;
#[cfg(test)]
mod body_tests;
#[cfg(test)]
mod check_tests;
#[cfg(test)]
mod gate_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod ip_limit_tests;
#[cfg(test)]
mod rights_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod token_tests;

/// The token claims the gateway requires; `auth` owns them (the CLI mints with them too).
pub use crate::auth::{TOKEN_AUDIENCE, TOKEN_ISSUER};
pub use anchor::ANCHOR_HEALTH_SERVICE;
pub use config::{AnchorConfig, AnchorRelayUrl, DEFAULT_ANCHOR_INTERVAL_SECS, SecurityConfig};
pub use gate::SecureGate;
pub use stack::{Gateway, Incoming, Layers, Seal, Secured};
