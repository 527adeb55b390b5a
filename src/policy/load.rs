//! Reading and validating policy TOML.
//!
//! Owns the file format: raw serde shapes, every check, and the error list. Validation runs to
//! the end and reports every problem at once, so an operator fixes a file in one pass. Unknown
//! fields and wrong types are refused by the TOML decoder before validation runs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::{NonZeroU32, NonZeroU64};
use std::path::Path;

use serde::Deserialize;

use super::model::{
    AdminLimits, AdminPolicy, Direction, DirectionSet, Policy, Right, Role, ServiceLimits,
    is_valid_admin_name,
};
use super::peer::PeerPattern;
use super::{PolicyError, ValidationError};

/// Largest policy file read, in bytes; a policy is hand-written and small.
pub const MAX_POLICY_FILE_LEN: u64 = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    service: Option<RawService>,
    #[serde(default)]
    admin: Vec<RawAdmin>,
    revoked: Option<RawRevoked>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    per_ip_rate_per_minute: Option<i64>,
    per_ip_burst: Option<i64>,
    max_concurrent_total: Option<i64>,
    max_token_lifetime_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    name: Option<String>,
    identities: Option<Vec<String>>,
    peers: Option<Vec<String>>,
    directions: Option<Vec<String>>,
    kinds: Option<Vec<i64>>,
    authors: Option<Vec<String>>,
    max_events_per_sync: Option<i64>,
    rate_per_minute: Option<i64>,
    burst: Option<i64>,
    max_concurrent: Option<i64>,
    role: Option<String>,
    rights: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevoked {
    #[serde(default)]
    jti: Vec<String>,
    #[serde(default)]
    admins: Vec<String>,
}

impl Policy {
    /// Parses and validates a policy, reporting every validation error at once.
    pub fn from_toml_str(text: &str) -> Result<Self, PolicyError> {
        parse_policy(text, "policy")
    }

    /// Reads, parses and validates a policy file (at most [`MAX_POLICY_FILE_LEN`] bytes).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let io = |source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        check_len(path, len)?;
        let text = std::fs::read_to_string(path).map_err(io)?;
        parse_policy(&text, &path.display().to_string())
    }
}

pub(super) fn check_len(path: &Path, len: u64) -> Result<(), PolicyError> {
    if len > MAX_POLICY_FILE_LEN {
        return Err(PolicyError::TooLarge {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// Parses `text`; `origin` (a path, or "policy") prefixes error messages.
pub(super) fn parse_policy(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = toml::from_str(text).map_err(|source| PolicyError::Parse {
        origin: origin.to_owned(),
        source: Box::new(source),
    })?;
    let mut errors = Errors::default();
    let policy = validate(raw, &mut errors);
    if errors.0.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyError::Invalid {
            origin: origin.to_owned(),
            errors: errors.0,
        })
    }
}

#[derive(Default)]
struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            location: location.into(),
            message: message.into(),
        });
    }

    /// A required positive count; a missing `default` makes the field required.
    fn positive(&mut self, at: String, value: Option<i64>, default: Option<u64>) -> Option<u64> {
        match (value, default) {
            (Some(v), _) if v > 0 => u64::try_from(v).ok(),
            (Some(v), _) => {
                self.push(at, format!("must be at least 1, got {v}"));
                None
            }
            (None, Some(d)) => Some(d),
            (None, None) => {
                self.push(at, "is required");
                None
            }
        }
    }

    fn positive_u32(&mut self, at: String, value: Option<i64>, default: u32) -> NonZeroU32 {
        self.positive_u32_opt(at, value, Some(default))
            .unwrap_or(NonZeroU32::MIN)
    }

    fn positive_u32_opt(
        &mut self,
        at: String,
        value: Option<i64>,
        default: Option<u32>,
    ) -> Option<NonZeroU32> {
        let v = self.positive(at.clone(), value, default.map(u64::from))?;
        let v = u32::try_from(v).ok().and_then(NonZeroU32::new);
        if v.is_none() {
            self.push(at, format!("must be at most {}", u32::MAX));
        }
        v
    }
}

fn validate(raw: RawPolicy, errors: &mut Errors) -> Policy {
    let defaults = ServiceLimits::default();
    let service = match raw.service {
        None => defaults,
        Some(s) => ServiceLimits {
            per_ip_rate_per_minute: errors.positive_u32(
                "service.per_ip_rate_per_minute".into(),
                s.per_ip_rate_per_minute,
                defaults.per_ip_rate_per_minute.get(),
            ),
            per_ip_burst: errors.positive_u32(
                "service.per_ip_burst".into(),
                s.per_ip_burst,
                defaults.per_ip_burst.get(),
            ),
            max_concurrent_total: errors.positive_u32(
                "service.max_concurrent_total".into(),
                s.max_concurrent_total,
                defaults.max_concurrent_total.get(),
            ),
            max_token_lifetime_seconds: errors
                .positive(
                    "service.max_token_lifetime_seconds".into(),
                    s.max_token_lifetime_seconds,
                    Some(defaults.max_token_lifetime_seconds.get()),
                )
                .and_then(NonZeroU64::new)
                .unwrap_or(defaults.max_token_lifetime_seconds),
        },
    };

    // Names as written, even of admins that fail validation, so duplicates are caught and a
    // revocation of a broken admin does not add a second, misleading "unknown admin" error.
    let mut written_names = HashSet::new();
    let mut admins = Vec::with_capacity(raw.admin.len());
    let mut by_name = HashMap::new();
    let mut by_identity: HashMap<String, usize> = HashMap::new();
    for (i, raw_admin) in raw.admin.into_iter().enumerate() {
        let label = match &raw_admin.name {
            Some(n) if is_valid_admin_name(n) => format!("admin \"{n}\""),
            _ => format!("admin #{}", i + 1),
        };
        if let Some(name) = &raw_admin.name
            && !written_names.insert(name.clone())
        {
            errors.push(&label, "duplicate admin name");
        }
        let Some(admin) = validate_admin(raw_admin, &label, errors) else {
            continue;
        };
        let index = admins.len();
        by_name.entry(admin.name.clone()).or_insert(index);
        for identity in &admin.identities {
            if let Some(&other) = by_identity.get(identity) {
                if other == index {
                    continue; // repeated within this admin: reported by validate_admin
                }
                let owner = admins.get(other).map_or(admin.name(), AdminPolicy::name);
                let message = format!("identity {identity:?} already belongs to admin {owner:?}");
                errors.push(format!("{label}.identities"), message);
            } else {
                by_identity.insert(identity.clone(), index);
            }
        }
        admins.push(admin);
    }

    let revoked = raw.revoked.unwrap_or(RawRevoked {
        jti: Vec::new(),
        admins: Vec::new(),
    });
    let mut revoked_jti = HashSet::new();
    for (i, jti) in revoked.jti.into_iter().enumerate() {
        if jti.is_empty() || jti.len() > 256 || !jti.bytes().all(|b| b.is_ascii_graphic()) {
            errors.push(
                format!("revoked.jti[{i}]"),
                "must be 1-256 printable ASCII characters",
            );
        } else {
            revoked_jti.insert(jti);
        }
    }
    let mut revoked_admins = BTreeSet::new();
    for (i, name) in revoked.admins.into_iter().enumerate() {
        // A typo here would leave the admin active, so an unknown name is an error.
        if written_names.contains(&name) {
            revoked_admins.insert(name);
        } else {
            errors.push(
                format!("revoked.admins[{i}]"),
                format!("unknown admin {name:?}"),
            );
        }
    }

    Policy {
        service,
        admins,
        by_name,
        by_identity,
        revoked_admins,
        revoked_jti,
    }
}

fn validate_admin(raw: RawAdmin, label: &str, errors: &mut Errors) -> Option<AdminPolicy> {
    let at = |field: &str| format!("{label}.{field}");
    let name = match raw.name {
        Some(n) if is_valid_admin_name(&n) => Some(n),
        Some(_) => {
            let msg =
                "must be 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit";
            errors.push(at("name"), msg);
            None
        }
        None => {
            errors.push(at("name"), "is required");
            None
        }
    };

    let identities = match raw.identities {
        None => name.iter().cloned().collect(),
        Some(ids) if ids.is_empty() => {
            errors.push(at("identities"), "is empty; omit it to default to the name");
            Vec::new()
        }
        Some(ids) => {
            let mut seen = HashSet::new();
            for (i, id) in ids.iter().enumerate() {
                if id.is_empty() || id.len() > 1024 || id.chars().any(char::is_control) {
                    errors.push(
                        at(&format!("identities[{i}]")),
                        "must be 1-1024 characters without control characters",
                    );
                } else if !seen.insert(id) {
                    errors.push(
                        at(&format!("identities[{i}]")),
                        format!("duplicate identity {id:?}"),
                    );
                }
            }
            ids
        }
    };

    let mut rights = BTreeSet::new();
    for (i, r) in raw.rights.iter().flatten().enumerate() {
        match Right::from_name(r) {
            Some(right) => _ = rights.insert(right),
            None => errors.push(
                at(&format!("rights[{i}]")),
                format!(
                    "unknown right {r:?} (expected {})",
                    Right::ALL.map(Right::as_str).join(", ")
                ),
            ),
        }
    }
    // An identity that only holds rights (a relay serving NIP-77 through the service) need
    // not sync: without peers and directions it is refused every sync.
    let syncs_optional = !rights.is_empty();

    let mut peers = Vec::new();
    match raw.peers {
        None if syncs_optional => {}
        None => errors.push(at("peers"), "is required (use [\"*\"] for any peer)"),
        Some(list) if list.is_empty() => errors.push(at("peers"), "is empty"),
        Some(list) => {
            for (i, pattern) in list.iter().enumerate() {
                match PeerPattern::parse(pattern) {
                    Ok(p) => peers.push(p),
                    Err(why) => {
                        errors.push(at(&format!("peers[{i}]")), format!("{pattern:?}: {why}"))
                    }
                }
            }
        }
    }

    let mut directions = DirectionSet::default();
    match raw.directions {
        None if syncs_optional => {}
        None => errors.push(at("directions"), "is required"),
        Some(list) if list.is_empty() => errors.push(at("directions"), "is empty"),
        Some(list) => {
            for (i, d) in list.iter().enumerate() {
                match Direction::from_name(d) {
                    Some(d) => directions.grant(d),
                    None => errors.push(
                        at(&format!("directions[{i}]")),
                        format!("unknown direction {d:?} (expected down, up, both or none)"),
                    ),
                }
            }
        }
    }

    let kinds = raw.kinds.map(|list| {
        if list.is_empty() {
            errors.push(at("kinds"), "is empty; omit it to allow any kind");
        }
        let mut set = BTreeSet::new();
        for (i, k) in list.into_iter().enumerate() {
            match u16::try_from(k) {
                Ok(k) => _ = set.insert(k),
                Err(_) => errors.push(
                    at(&format!("kinds[{i}]")),
                    format!("{k} is not a Nostr kind (0..=65535)"),
                ),
            }
        }
        set
    });

    let authors = raw.authors.map(|list| {
        if list.is_empty() {
            errors.push(at("authors"), "is empty; omit it to allow any author");
        }
        let mut set = BTreeSet::new();
        for (i, hex_key) in list.iter().enumerate() {
            let mut key = [0u8; 32];
            match hex::decode_to_slice(hex_key, &mut key) {
                Ok(()) => _ = set.insert(key),
                Err(_) => errors.push(
                    at(&format!("authors[{i}]")),
                    "must be a 64-character hex public key",
                ),
            }
        }
        set
    });

    let role = match raw.role.as_deref().map(|r| (r, Role::from_name(r))) {
        None => Role::default(),
        Some((_, Some(role))) => role,
        Some((r, None)) => {
            errors.push(
                at("role"),
                format!("unknown role {r:?} (expected admin or auditor)"),
            );
            Role::default()
        }
    };

    let max_events = errors.positive(at("max_events_per_sync"), raw.max_events_per_sync, None);
    let rate = errors.positive_u32_opt(at("rate_per_minute"), raw.rate_per_minute, None);
    let burst = errors.positive_u32_opt(at("burst"), raw.burst, None);
    let concurrent = errors.positive_u32_opt(at("max_concurrent"), raw.max_concurrent, None);

    let limits = AdminLimits {
        max_events_per_sync: NonZeroU64::new(max_events?)?,
        rate_per_minute: rate?,
        burst: burst?,
        max_concurrent: concurrent?,
    };
    Some(AdminPolicy {
        name: name?,
        identities,
        peers,
        directions,
        kinds,
        authors,
        limits,
        role,
        rights,
    })
}

#[cfg(test)]
mod tests;
