//! Decisions: who an identity is, and whether a sync request is within that admin's policy.
//!
//! Owns the default-deny checks and the wording of every refusal. Must not touch the audit log
//! or gRPC: callers record [`Denial`] and turn it into a status in their one mapping function.

use std::fmt;

use super::model::{AdminPolicy, Direction, Policy, Right};
use super::peer::{PeerUrl, normalize_peer_url};

/// Why a request was refused; stable for metrics labels and audit queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenialCode {
    /// No admin has the certificate identity.
    UnknownIdentity,
    /// The admin is listed in `[revoked] admins`.
    AdminRevoked,
    /// The token id is listed in `[revoked] jti`.
    TokenRevoked,
    /// The token lives longer than `service.max_token_lifetime_seconds`.
    TokenLifetimeTooLong,
    /// The peer URL is not a plain `ws`/`wss` URL (an invalid argument rather than a refusal).
    PeerUrlInvalid,
    /// No peer pattern of the admin matches the peer URL.
    PeerNotAllowed,
    /// The admin may not sync in the requested direction.
    DirectionNotAllowed,
    /// The request covers kinds outside the admin's kinds.
    KindsOutOfScope,
    /// The request covers authors outside the admin's authors.
    AuthorsOutOfScope,
    /// The request asks for more events than the admin's `max_events_per_sync`.
    EventLimitExceeded,
    /// The method needs a right (`rights` in the policy) the admin does not hold.
    RightNotGranted,
}

impl DenialCode {
    /// Snake-case name for structured logs and metrics, e.g. `peer_not_allowed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownIdentity => "unknown_identity",
            Self::AdminRevoked => "admin_revoked",
            Self::TokenRevoked => "token_revoked",
            Self::TokenLifetimeTooLong => "token_lifetime_too_long",
            Self::PeerUrlInvalid => "peer_url_invalid",
            Self::PeerNotAllowed => "peer_not_allowed",
            Self::DirectionNotAllowed => "direction_not_allowed",
            Self::KindsOutOfScope => "kinds_out_of_scope",
            Self::AuthorsOutOfScope => "authors_out_of_scope",
            Self::EventLimitExceeded => "event_limit_exceeded",
            Self::RightNotGranted => "right_not_granted",
        }
    }

    /// Human phrase that starts every [`Denial`] message, e.g. `peer not allowed`.
    pub fn phrase(self) -> &'static str {
        match self {
            Self::UnknownIdentity => "unknown identity",
            Self::AdminRevoked => "admin revoked",
            Self::TokenRevoked => "token revoked",
            Self::TokenLifetimeTooLong => "token lifetime too long",
            Self::PeerUrlInvalid => "invalid peer url",
            Self::PeerNotAllowed => "peer not allowed",
            Self::DirectionNotAllowed => "direction not allowed",
            Self::KindsOutOfScope => "kinds out of scope",
            Self::AuthorsOutOfScope => "authors out of scope",
            Self::EventLimitExceeded => "event limit exceeded",
            Self::RightNotGranted => "right not granted",
        }
    }
}

impl fmt::Display for DenialCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.phrase())
    }
}

/// A refusal: a code for machines and a message for people, e.g. `peer not allowed: wss://x/`.
/// The message is printable ASCII, bounded, and free of URL credentials or query strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What kind of refusal.
    pub code: DenialCode,
    /// `"<phrase>: <detail>"`, usable verbatim as the audit reason and gRPC message.
    pub message: String,
}

impl Denial {
    /// Builds a denial; `detail` is sanitized (control and non-ASCII characters replaced,
    /// length capped) because it may echo client input.
    pub fn new(code: DenialCode, detail: &str) -> Self {
        Self {
            code,
            message: format!("{}: {}", code.phrase(), sanitize(detail)),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Denial {}

/// Longest detail kept in a denial message, in characters.
const MAX_DETAIL: usize = 300;

fn sanitize(detail: &str) -> String {
    let mut out: String = detail
        .chars()
        .take(MAX_DETAIL)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if detail.chars().nth(MAX_DETAIL).is_some() {
        out.push_str("...");
    }
    out
}

/// Who a certificate identity (or a token subject) is under the current policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityLookup<'a> {
    /// An admin in good standing.
    Admin(&'a AdminPolicy),
    /// A known admin listed in `[revoked] admins`; audit it as such.
    Revoked(&'a AdminPolicy),
    /// No admin has this identity.
    Unknown {
        /// The identity looked up.
        identity: &'a str,
    },
}

impl<'a> IdentityLookup<'a> {
    /// The admin, or the denial to audit and return.
    pub fn into_result(self) -> Result<&'a AdminPolicy, Denial> {
        match self {
            Self::Admin(admin) => Ok(admin),
            Self::Revoked(admin) => Err(Denial::new(DenialCode::AdminRevoked, admin.name())),
            Self::Unknown { identity } => Err(Denial::new(DenialCode::UnknownIdentity, identity)),
        }
    }
}

/// The parts of a sync request the policy rules on, borrowed from the decoded request.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequestView<'a> {
    /// The peer URL as the client sent it; normalized before matching.
    pub peer_url: &'a str,
    /// Requested direction.
    pub direction: Direction,
    /// Kinds the sync filter names; `None` or empty means every kind.
    pub kinds: Option<&'a [u16]>,
    /// Authors the sync filter names; `None` or empty means every author.
    pub authors: Option<&'a [[u8; 32]]>,
    /// Event cap the client asked for; `None` means the admin's cap.
    pub requested_max_events: Option<u64>,
}

/// What an allowed sync may do: connect to exactly `peer_url`, move at most `max_events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGrant {
    /// The normalized URL that was authorized; the sync engine must use this one.
    pub peer_url: PeerUrl,
    /// The event cap in force: the request's, or the admin's when the request named none.
    pub max_events: u64,
}

impl Policy {
    /// Finds the admin a certificate identity belongs to. Identities compare exactly.
    pub fn admin_for_identity<'a>(&'a self, identity: &'a str) -> IdentityLookup<'a> {
        self.lookup(self.by_identity.get(identity).copied(), identity)
    }

    /// Finds an admin by name (a token's `sub`), with the same revocation rules.
    pub fn admin_by_name<'a>(&'a self, name: &'a str) -> IdentityLookup<'a> {
        self.lookup(self.by_name.get(name).copied(), name)
    }

    /// Refuses a token whose `jti` is revoked (see also [`Policy::is_jti_revoked`]).
    pub fn check_token_id(&self, jti: &str) -> Result<(), Denial> {
        if self.is_jti_revoked(jti) {
            return Err(Denial::new(DenialCode::TokenRevoked, jti));
        }
        Ok(())
    }

    /// Refuses a token that lives (`exp` minus the earlier of `iat` and `nbf`) longer than the
    /// policy's `service.max_token_lifetime_seconds`: a stolen long-lived token is a standing
    /// key, whatever its binding.
    pub fn check_token_lifetime(&self, lifetime_secs: u64) -> Result<(), Denial> {
        let max = self.service.max_token_lifetime_seconds.get();
        if lifetime_secs > max {
            let detail = format!(
                "{lifetime_secs} s, the policy allows at most {max} s \
                 (service.max_token_lifetime_seconds)"
            );
            return Err(Denial::new(DenialCode::TokenLifetimeTooLong, &detail));
        }
        Ok(())
    }

    /// Decides whether the admin named `name` may call a method that needs `right`: it must
    /// be in the policy, not revoked, and hold the right.
    pub fn authorize_right<'a>(
        &'a self,
        name: &'a str,
        right: Right,
    ) -> Result<&'a AdminPolicy, Denial> {
        let admin = self.admin_by_name(name).into_result()?;
        if !admin.has_right(right) {
            let detail = format!("{right} (admin {} does not hold it)", admin.name());
            return Err(Denial::new(DenialCode::RightNotGranted, &detail));
        }
        Ok(admin)
    }

    fn lookup<'a>(&'a self, index: Option<usize>, identity: &'a str) -> IdentityLookup<'a> {
        match index.and_then(|i| self.admins.get(i)) {
            Some(admin) if self.is_admin_revoked(admin.name()) => IdentityLookup::Revoked(admin),
            Some(admin) => IdentityLookup::Admin(admin),
            None => IdentityLookup::Unknown { identity },
        }
    }

    /// Decides a sync request for `admin`. Checks run in order: admin standing, peer URL,
    /// peer patterns, direction, kinds, authors, event cap; the first failure is returned.
    ///
    /// The decision uses this policy's entry for `admin.name()`, so an `AdminPolicy` kept from
    /// an older snapshot cannot outlive a reload that revoked or narrowed it.
    pub fn authorize_sync(
        &self,
        admin: &AdminPolicy,
        req: &SyncRequestView<'_>,
    ) -> Result<SyncGrant, Denial> {
        let admin = match self.admin_by_name(admin.name()) {
            IdentityLookup::Unknown { identity } => {
                let detail = format!("admin {identity} is no longer in the policy");
                return Err(Denial::new(DenialCode::UnknownIdentity, &detail));
            }
            found => found.into_result()?,
        };

        let url = normalize_peer_url(req.peer_url)
            .map_err(|e| Denial::new(DenialCode::PeerUrlInvalid, &e.to_string()))?;
        if !admin.peers().iter().any(|p| p.matches(&url)) {
            return Err(Denial::new(DenialCode::PeerNotAllowed, &url.redacted()));
        }

        if !admin.directions().allows(req.direction) {
            let detail = format!(
                "{} (admin {} may sync: {})",
                req.direction,
                admin.name(),
                admin.directions()
            );
            return Err(Denial::new(DenialCode::DirectionNotAllowed, &detail));
        }

        if let Some(allowed) = admin.kinds() {
            let listed = allowed.iter().map(u16::to_string).collect::<Vec<_>>();
            let listed = shorten(&listed);
            match req.kinds.filter(|k| !k.is_empty()) {
                None => {
                    let detail = format!(
                        "request covers every kind; admin {} may sync only kinds {listed}",
                        admin.name()
                    );
                    return Err(Denial::new(DenialCode::KindsOutOfScope, &detail));
                }
                Some(kinds) => {
                    let mut outside: Vec<u16> = kinds
                        .iter()
                        .copied()
                        .filter(|k| !allowed.contains(k))
                        .collect();
                    outside.sort_unstable();
                    outside.dedup();
                    if !outside.is_empty() {
                        let outside = outside.iter().map(u16::to_string).collect::<Vec<_>>();
                        let detail = format!("{} (allowed: {listed})", shorten(&outside));
                        return Err(Denial::new(DenialCode::KindsOutOfScope, &detail));
                    }
                }
            }
        }

        if let Some(allowed) = admin.authors() {
            match req.authors.filter(|a| !a.is_empty()) {
                None => {
                    let detail = format!(
                        "request covers every author; admin {} may sync only {} listed author(s)",
                        admin.name(),
                        allowed.len()
                    );
                    return Err(Denial::new(DenialCode::AuthorsOutOfScope, &detail));
                }
                Some(authors) => {
                    let outside: Vec<&[u8; 32]> =
                        authors.iter().filter(|a| !allowed.contains(*a)).collect();
                    if let Some(first) = outside.first() {
                        let detail = format!(
                            "{} of {} requested author(s) not allowed, first {}",
                            outside.len(),
                            authors.len(),
                            hex::encode(first)
                        );
                        return Err(Denial::new(DenialCode::AuthorsOutOfScope, &detail));
                    }
                }
            }
        }

        let cap = admin.limits().max_events_per_sync.get();
        let max_events = match req.requested_max_events {
            Some(requested) if requested > cap => {
                let detail = format!(
                    "requested {requested}, admin {} may sync at most {cap} per sync",
                    admin.name()
                );
                return Err(Denial::new(DenialCode::EventLimitExceeded, &detail));
            }
            Some(requested) => requested,
            None => cap,
        };
        Ok(SyncGrant {
            peer_url: url,
            max_events,
        })
    }
}

/// Joins at most eight items, then says how many more, so messages stay short.
fn shorten(items: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut out = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    out
}

#[cfg(test)]
mod tests;
