//! The validated policy: what [`super::Policy::from_toml_str`] produces and decisions read.
//!
//! Owns the in-memory shape only. Values here have passed validation, so fields are private and
//! read through accessors: nothing outside `load.rs` can build an unchecked admin.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};

use super::peer::PeerPattern;

/// Which way events move in a sync, as named in the policy and in requests: the sync's own.
pub use crate::sync::Direction;

/// The directions an admin may request.
///
/// `both` in the policy grants `down` and `up`; a `both` request needs both. `none` (a dry run)
/// is granted by any other direction too, since every sync already reveals the differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectionSet {
    down: bool,
    up: bool,
    dry_run: bool,
}

impl DirectionSet {
    /// Adds what naming `direction` in a policy grants.
    pub(super) fn grant(&mut self, direction: Direction) {
        match direction {
            Direction::Down => self.down = true,
            Direction::Up => self.up = true,
            Direction::Both => (self.down, self.up) = (true, true),
            Direction::None => self.dry_run = true,
        }
    }

    /// Whether a request in `direction` is allowed.
    pub fn allows(self, direction: Direction) -> bool {
        match direction {
            Direction::Down => self.down,
            Direction::Up => self.up,
            Direction::Both => self.down && self.up,
            Direction::None => self.dry_run || self.down || self.up,
        }
    }

    /// Whether no request direction is allowed at all.
    pub fn is_empty(self) -> bool {
        Direction::ALL.into_iter().all(|d| !self.allows(d))
    }
}

impl fmt::Display for DirectionSet {
    /// The allowed request directions, e.g. `down, none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Direction::ALL
            .into_iter()
            .filter(|d| self.allows(*d))
            .map(Direction::as_str)
            .collect();
        f.write_str(&names.join(", "))
    }
}

/// Default longest token lifetime: 30 days.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS: u64 = 30 * 24 * 3600;

/// Service-wide limits: applied before any admin is known, or to every admin alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Sustained requests per minute from one IP address, before authentication.
    pub per_ip_rate_per_minute: NonZeroU32,
    /// Requests one IP address may make at once above the sustained rate.
    pub per_ip_burst: NonZeroU32,
    /// Syncs running at once across all admins.
    pub max_concurrent_total: NonZeroU32,
    /// Longest lifetime of an admin token (`exp` minus the earlier of `iat` and `nbf`), in
    /// seconds; a longer-lived token is refused however valid it is otherwise.
    pub max_token_lifetime_seconds: NonZeroU64,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            per_ip_rate_per_minute: NonZeroU32::new(120).unwrap_or(NonZeroU32::MIN),
            per_ip_burst: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            max_concurrent_total: NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN),
            max_token_lifetime_seconds: NonZeroU64::new(DEFAULT_MAX_TOKEN_LIFETIME_SECONDS)
                .unwrap_or(NonZeroU64::MIN),
        }
    }
}

/// What an admin may see of the service beyond its own syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Sees (lists, watches) only the syncs it started. The default.
    #[default]
    Admin,
    /// Also sees every other admin's syncs (ListSyncs, GetSync), e.g. for a compliance
    /// officer; cancelling stays with the admin who started a sync.
    Auditor,
}

impl Role {
    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
        }
    }

    /// Parses a policy name (`admin`, `auditor`), exactly as written.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Admin, Self::Auditor]
            .into_iter()
            .find(|r| r.as_str() == name)
    }

    /// Whether this role sees the syncs of other admins.
    pub fn sees_all_syncs(self) -> bool {
        self == Self::Auditor
    }
}

/// What an admin may do beyond running, watching and cancelling its own syncs, each granted by
/// name in the policy's `rights` list. Default deny: an admin without a right is refused the
/// methods that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// `manage_peers`: the managed peer list and its background sync (`GetPeers`, `AddPeer`,
    /// `RemovePeer`, `TriggerSync`, `GetPeerSyncState`, `GetSyncStatus`, `Start`, `Stop`).
    /// Adding a peer also needs the admin's `peers` to allow it.
    ManagePeers,
    /// `serve_nip77`: answering NIP-77 for a relay that delegates its clients' sessions
    /// (`HandleNegOpen`, `HandleNegMsg`, `HandleNegClose`); granted to a relay's certificate
    /// identity.
    ServeNip77,
    /// `sessions`: listing and closing the sessions held for relays (`ListSessions`,
    /// `CloseSession`).
    Sessions,
}

impl Right {
    /// Every right, in the order policy files list them.
    pub const ALL: [Right; 3] = [Right::ManagePeers, Right::ServeNip77, Right::Sessions];

    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ManagePeers => "manage_peers",
            Self::ServeNip77 => "serve_nip77",
            Self::Sessions => "sessions",
        }
    }

    /// Parses a policy name, exactly as written.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One admin's quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Most events one sync may transfer; also the cap when a request names none.
    pub max_events_per_sync: NonZeroU64,
    /// Sustained requests per minute (GCRA rate).
    pub rate_per_minute: NonZeroU32,
    /// Requests above the sustained rate allowed at once (GCRA burst).
    pub burst: NonZeroU32,
    /// Syncs this admin may run at once.
    pub max_concurrent: NonZeroU32,
}

/// What one admin may do. Built only by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPolicy {
    pub(super) name: String,
    pub(super) identities: Vec<String>,
    pub(super) peers: Vec<PeerPattern>,
    pub(super) directions: DirectionSet,
    pub(super) kinds: Option<BTreeSet<u16>>,
    pub(super) authors: Option<BTreeSet<[u8; 32]>>,
    pub(super) limits: AdminLimits,
    pub(super) role: Role,
    pub(super) rights: BTreeSet<Right>,
}

impl AdminPolicy {
    /// The admin's name: the audit subject and the token `sub`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Certificate identities (SPIFFE URI, DNS SAN or CN) that are this admin.
    pub fn identities(&self) -> &[String] {
        &self.identities
    }
    /// Peer patterns this admin may sync with.
    pub fn peers(&self) -> &[PeerPattern] {
        &self.peers
    }
    /// Directions this admin may request.
    pub fn directions(&self) -> DirectionSet {
        self.directions
    }
    /// Kinds this admin may sync; `None` means any kind.
    pub fn kinds(&self) -> Option<&BTreeSet<u16>> {
        self.kinds.as_ref()
    }
    /// Authors (public keys) this admin may sync; `None` means any author.
    pub fn authors(&self) -> Option<&BTreeSet<[u8; 32]>> {
        self.authors.as_ref()
    }
    /// Quotas.
    pub fn limits(&self) -> AdminLimits {
        self.limits
    }
    /// What this admin may see beyond its own syncs.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Whether this admin holds `right`.
    pub fn has_right(&self, right: Right) -> bool {
        self.rights.contains(&right)
    }
    /// The rights this admin holds.
    pub fn rights(&self) -> impl Iterator<Item = Right> + '_ {
        self.rights.iter().copied()
    }
}

/// A validated, default-deny policy: admins, their scopes and limits, and revocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub(super) service: ServiceLimits,
    pub(super) admins: Vec<AdminPolicy>,
    pub(super) by_name: HashMap<String, usize>,
    pub(super) by_identity: HashMap<String, usize>,
    pub(super) revoked_admins: BTreeSet<String>,
    pub(super) revoked_jti: HashSet<String>,
}

impl Policy {
    /// Limits applied before authentication.
    pub fn service(&self) -> ServiceLimits {
        self.service
    }
    /// Every admin, revoked ones included, in file order.
    pub fn admins(&self) -> &[AdminPolicy] {
        &self.admins
    }
    /// Whether the admin named `name` is listed in `[revoked] admins`.
    pub fn is_admin_revoked(&self, name: &str) -> bool {
        self.revoked_admins.contains(name)
    }
    /// Whether a token id is listed in `[revoked] jti`.
    pub fn is_jti_revoked(&self, jti: &str) -> bool {
        self.revoked_jti.contains(jti)
    }
}

/// Whether `name` is acceptable as an admin name: 1–64 characters of `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit, so it is safe in a SPIFFE path, a file name and a log line.
pub fn is_valid_admin_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    first_ok
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
