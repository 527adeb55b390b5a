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
mod stack;
mod telemetry;
mod tls;
mod token;

pub use anchor::ANCHOR_HEALTH_SERVICE;
pub use audit::AuditLog;
pub use config::{AnchorConfig, AnchorRelayUrl, DEFAULT_ANCHOR_INTERVAL_SECS, SecurityConfig};
pub use gate::SecureGate;
pub use refusal::Refusal;
pub use stack::{Gateway, Incoming, Layers, Seal, Secured};
pub use tls::{ConnInfo, TlsFiles};
pub use token::{TOKEN_AUDIENCE, TOKEN_ISSUER};
