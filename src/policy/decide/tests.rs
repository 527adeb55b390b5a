use crate::policy::{
    AdminPolicy, Denial, DenialCode, Direction, IdentityLookup, Policy, SyncRequestView,
};

const ALLOWED_AUTHOR: [u8; 32] = [0xab; 32];
const OTHER_AUTHOR: [u8; 32] = [0xcd; 32];

fn policy_text(revoked_admins: &str) -> String {
    let author = hex::encode(ALLOWED_AUTHOR);
    format!(
        r#"
[[admin]]
name = "alice"
identities = ["spiffe://orly.local/admin/alice", "alice.admins.example"]
peers = ["wss://relay.example.com", "wss://*.example.org/*", "ws://127.0.0.1:*"]
directions = ["down", "none"]
kinds = [0, 1, 3]
authors = ["{author}"]
max_events_per_sync = 1000
rate_per_minute = 60
burst = 10
max_concurrent = 2

[[admin]]
name = "root"
peers = ["*"]
directions = ["both"]
max_events_per_sync = 1000000
rate_per_minute = 60
burst = 10
max_concurrent = 4

[[admin]]
name = "mallory"
peers = ["*"]
directions = ["both"]
max_events_per_sync = 1
rate_per_minute = 1
burst = 1
max_concurrent = 1

[revoked]
jti = ["stolen-token"]
admins = [{revoked_admins}]
"#
    )
}

fn policy() -> Policy {
    Policy::from_toml_str(&policy_text("\"mallory\"")).expect("test policy is valid")
}

fn admin<'a>(policy: &'a Policy, name: &str) -> &'a AdminPolicy {
    policy
        .admins()
        .iter()
        .find(|a| a.name() == name)
        .expect("admin exists")
}

/// A request alice may make; cases change one field at a time.
fn base() -> SyncRequestView<'static> {
    SyncRequestView {
        peer_url: "wss://relay.example.com",
        direction: Direction::Down,
        kinds: Some(&[1]),
        authors: Some(&[ALLOWED_AUTHOR]),
        requested_max_events: None,
    }
}

#[test]
fn sync_decisions() {
    let policy = policy();
    type Case = (
        &'static str,
        &'static str,
        SyncRequestView<'static>,
        Result<&'static str, &'static str>,
    );
    let b = base;
    // One case per line reads as a table; rustfmt would spread each over ten.
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("alice", "exact peer", b(), Ok("wss://relay.example.com/")),
        ("alice", "peer normalized", SyncRequestView { peer_url: "WSS://Relay.Example.com:443/", ..b() }, Ok("wss://relay.example.com/")),
        ("alice", "wildcard subdomain", SyncRequestView { peer_url: "wss://a.example.org/x", ..b() }, Ok("wss://a.example.org/x")),
        ("alice", "loopback any port", SyncRequestView { peer_url: "ws://127.0.0.1:7777", ..b() }, Ok("ws://127.0.0.1:7777/")),
        ("alice", "dry run implied", SyncRequestView { direction: Direction::None, ..b() }, Ok("wss://relay.example.com/")),
        ("alice", "kinds subset", SyncRequestView { kinds: Some(&[0, 3, 3]), ..b() }, Ok("wss://relay.example.com/")),
        ("alice", "cap within limit", SyncRequestView { requested_max_events: Some(1000), ..b() }, Ok("wss://relay.example.com/")),
        ("root", "unrestricted admin, no filter", SyncRequestView { direction: Direction::Both, kinds: None, authors: None, ..b() }, Ok("wss://relay.example.com/")),
        ("alice", "other host", SyncRequestView { peer_url: "wss://evil.example.com", ..b() }, Err("peer not allowed: wss://evil.example.com/")),
        ("alice", "other path", SyncRequestView { peer_url: "wss://relay.example.com/admin?t=secret", ..b() }, Err("peer not allowed: wss://relay.example.com/admin?<redacted>")),
        ("alice", "subdomain pattern does not cover apex", SyncRequestView { peer_url: "wss://example.org/", ..b() }, Err("peer not allowed: wss://example.org/")),
        ("alice", "userinfo", SyncRequestView { peer_url: "wss://u:secret@relay.example.com", ..b() }, Err("invalid peer url: user information (user@) is not allowed")),
        ("alice", "not a websocket", SyncRequestView { peer_url: "https://relay.example.com", ..b() }, Err("invalid peer url: scheme must be ws or wss")),
        ("alice", "up not granted", SyncRequestView { direction: Direction::Up, ..b() }, Err("direction not allowed: up (admin alice may sync: down, none)")),
        ("alice", "both needs up too", SyncRequestView { direction: Direction::Both, ..b() }, Err("direction not allowed: both (admin alice may sync: down, none)")),
        ("alice", "kind outside", SyncRequestView { kinds: Some(&[1, 7, 4, 7]), ..b() }, Err("kinds out of scope: 4, 7 (allowed: 0, 1, 3)")),
        ("alice", "no kinds means every kind", SyncRequestView { kinds: None, ..b() }, Err("kinds out of scope: request covers every kind; admin alice may sync only kinds 0, 1, 3")),
        ("alice", "empty kinds means every kind", SyncRequestView { kinds: Some(&[]), ..b() }, Err("kinds out of scope: request covers every kind; admin alice may sync only kinds 0, 1, 3")),
        ("alice", "author outside", SyncRequestView { authors: Some(&[ALLOWED_AUTHOR, OTHER_AUTHOR]), ..b() }, Err("authors out of scope: 1 of 2 requested author(s) not allowed, first cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd")),
        ("alice", "no authors means every author", SyncRequestView { authors: None, ..b() }, Err("authors out of scope: request covers every author; admin alice may sync only 1 listed author(s)")),
        ("alice", "empty authors means every author", SyncRequestView { authors: Some(&[]), ..b() }, Err("authors out of scope: request covers every author; admin alice may sync only 1 listed author(s)")),
        ("alice", "cap above limit", SyncRequestView { requested_max_events: Some(1001), ..b() }, Err("event limit exceeded: requested 1001, admin alice may sync at most 1000 per sync")),
        ("mallory", "revoked admin", SyncRequestView { kinds: None, authors: None, ..b() }, Err("admin revoked: mallory")),
    ];
    for (name, label, req, want) in cases {
        let got = policy.authorize_sync(admin(&policy, name), &req);
        match (got, want) {
            (Ok(grant), Ok(url)) => assert_eq!(grant.peer_url.as_str(), url, "{label}"),
            (Err(denial), Err(message)) => {
                assert_eq!(denial.message, message, "{label}");
                assert_eq!(denial.to_string(), message, "{label}");
                assert!(message.starts_with(denial.code.phrase()), "{label}");
            }
            (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn every_denial_code_is_reachable() {
    let policy = policy();
    let alice = admin(&policy, "alice");
    let deny = |req: SyncRequestView<'_>| policy.authorize_sync(alice, &req).unwrap_err().code;
    let b = base;
    #[rustfmt::skip]
    let codes = [
        (deny(SyncRequestView { peer_url: "ftp://x", ..b() }), DenialCode::PeerUrlInvalid),
        (deny(SyncRequestView { peer_url: "wss://x.test", ..b() }), DenialCode::PeerNotAllowed),
        (deny(SyncRequestView { direction: Direction::Up, ..b() }), DenialCode::DirectionNotAllowed),
        (deny(SyncRequestView { kinds: Some(&[2]), ..b() }), DenialCode::KindsOutOfScope),
        (deny(SyncRequestView { authors: Some(&[OTHER_AUTHOR]), ..b() }), DenialCode::AuthorsOutOfScope),
        (deny(SyncRequestView { requested_max_events: Some(u64::MAX), ..b() }), DenialCode::EventLimitExceeded),
        (policy.admin_for_identity("mallory").into_result().unwrap_err().code, DenialCode::AdminRevoked),
        (policy.admin_for_identity("eve").into_result().unwrap_err().code, DenialCode::UnknownIdentity),
        (policy.check_token_id("stolen-token").unwrap_err().code, DenialCode::TokenRevoked),
    ];
    for (got, want) in codes {
        assert_eq!(got, want);
    }
}

#[test]
fn grant_carries_effective_event_cap() {
    let policy = policy();
    let alice = admin(&policy, "alice");
    let grant = policy.authorize_sync(alice, &base()).expect("allowed");
    assert_eq!(grant.max_events, 1000);
    let req = SyncRequestView {
        requested_max_events: Some(5),
        ..base()
    };
    assert_eq!(
        policy
            .authorize_sync(alice, &req)
            .expect("allowed")
            .max_events,
        5
    );
}

#[test]
fn identity_lookup() {
    let policy = policy();
    for id in ["spiffe://orly.local/admin/alice", "alice.admins.example"] {
        assert!(
            matches!(policy.admin_for_identity(id), IdentityLookup::Admin(a) if a.name() == "alice")
        );
    }
    // Identities compare exactly, and a name is not an identity once identities are listed.
    for id in [
        "alice",
        "SPIFFE://orly.local/admin/alice",
        "spiffe://orly.local/admin/alice/",
    ] {
        assert_eq!(
            policy.admin_for_identity(id),
            IdentityLookup::Unknown { identity: id }
        );
    }
    assert!(
        matches!(policy.admin_for_identity("mallory"), IdentityLookup::Revoked(a) if a.name() == "mallory")
    );
    assert!(matches!(
        policy.admin_by_name("alice"),
        IdentityLookup::Admin(_)
    ));
    assert!(matches!(
        policy.admin_by_name("mallory"),
        IdentityLookup::Revoked(_)
    ));
}

#[test]
fn revocation_and_stale_admin_references() {
    let old = Policy::from_toml_str(&policy_text("")).expect("valid");
    let root = admin(&old, "root");
    let req = SyncRequestView {
        kinds: None,
        authors: None,
        ..base()
    };
    assert!(old.authorize_sync(root, &req).is_ok());
    assert!(old.check_token_id("stolen-token").is_err());
    assert!(old.check_token_id("fresh-token").is_ok());

    // The admin reference comes from the old snapshot; the new policy still refuses it.
    let new = Policy::from_toml_str(&policy_text("\"root\"")).expect("valid");
    let denial = new.authorize_sync(root, &req).unwrap_err();
    assert_eq!(denial.code, DenialCode::AdminRevoked);

    let gone = Policy::from_toml_str("").expect("valid");
    let denial = gone.authorize_sync(root, &req).unwrap_err();
    assert_eq!(denial.code, DenialCode::UnknownIdentity);
    assert_eq!(
        denial.message,
        "unknown identity: admin root is no longer in the policy"
    );
}

#[test]
fn denial_messages_are_sanitized_and_bounded() {
    let policy = policy();
    let hostile = format!("evil\n\u{1b}[31m{}", "x".repeat(1000));
    let denial = policy
        .admin_for_identity(&hostile)
        .into_result()
        .unwrap_err();
    assert!(
        denial
            .message
            .starts_with("unknown identity: evil??[31mxxx"),
        "{denial}"
    );
    assert!(denial.message.ends_with("..."));
    assert!(denial.message.len() < 400);
    assert!(
        denial
            .message
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic())
    );
    let token = Denial::new(DenialCode::TokenRevoked, "abc");
    assert_eq!(token.to_string(), "token revoked: abc");
}
