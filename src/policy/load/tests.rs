use std::path::PathBuf;

use crate::policy::{Direction, IdentityLookup, Policy, PolicyError, Role};

const ALICE: &str = "3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d";

const MINIMAL: &str = r#"
[[admin]]
name = "alice"
peers = ["*"]
directions = ["down"]
max_events_per_sync = 10
rate_per_minute = 1
burst = 1
max_concurrent = 1
"#;

/// The example policy lives next to Cargo.toml here and under `policy/` in the main crate.
fn example_policy_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        root.join("policy.example.toml"),
        root.join("policy/policy.example.toml"),
        root.join("policy/example.toml"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("example policy not found; looked at {candidates:?}"))
}

#[test]
fn example_policy_is_valid() {
    let policy = Policy::load(example_policy_path()).expect("example policy loads");
    assert_eq!(policy.service().per_ip_rate_per_minute.get(), 120);
    assert_eq!(policy.admins().len(), 3);
    let IdentityLookup::Admin(alice) = policy.admin_for_identity("spiffe://orly.local/admin/alice")
    else {
        panic!("alice by spiffe id");
    };
    assert_eq!(alice.kinds().map(|k| k.len()), Some(3));
    assert_eq!(alice.authors().map(|a| a.len()), Some(1));
    assert!(alice.directions().allows(Direction::Both));
    assert_eq!(alice.role(), Role::Auditor);
    use crate::policy::Right;
    let rights: Vec<Right> = alice.rights().collect();
    assert_eq!(rights, [Right::ManagePeers, Right::Sessions]);
    let IdentityLookup::Admin(relay) =
        policy.admin_for_identity("spiffe://orly.local/relay/relay-1")
    else {
        panic!("the relay by spiffe id");
    };
    assert!(relay.has_right(Right::ServeNip77));
    assert!(relay.peers().is_empty());
    assert!(matches!(
        policy.admin_for_identity("alice"),
        IdentityLookup::Unknown { .. }
    ));
    assert!(matches!(
        policy.admin_for_identity("bob"),
        IdentityLookup::Revoked(_)
    ));
    assert!(policy.is_jti_revoked("2f1c0f4e-7d1a-4c55-9a51-3c1d2e8f9b10"));
    assert!(!policy.is_jti_revoked("other"));
}

#[test]
fn minimal_policy_uses_service_defaults_and_name_as_identity() {
    let policy = Policy::from_toml_str(MINIMAL).expect("valid");
    assert_eq!(policy.service().per_ip_burst.get(), 20);
    assert_eq!(policy.service().max_concurrent_total.get(), 16);
    let admin = policy
        .admin_for_identity("alice")
        .into_result()
        .expect("alice");
    assert_eq!(admin.identities(), ["alice".to_owned()]);
    assert_eq!(admin.kinds(), None);
    assert_eq!(admin.authors(), None);
}

#[test]
fn empty_policy_is_valid_and_denies_everyone() {
    let policy = Policy::from_toml_str("").expect("valid");
    let denial = policy
        .admin_for_identity("alice")
        .into_result()
        .unwrap_err();
    assert_eq!(denial.to_string(), "unknown identity: alice");
}

#[test]
fn reports_every_validation_error_at_once() {
    let text = format!(
        r#"
[service]
per_ip_rate_per_minute = 0

[[admin]]
name = "alice"
identities = ["shared"]
peers = []
directions = ["down", "sideways"]
kinds = [1, 70000, -1]
authors = ["{ALICE}", "xyz"]
max_events_per_sync = 0
rate_per_minute = 5
burst = 1
max_concurrent = 1

[[admin]]
name = "bob"
identities = ["shared"]
peers = ["https://relay.example.com", "*"]
directions = []
rate_per_minute = 5
burst = 5
max_concurrent = 1

[[admin]]
name = "alice"
peers = ["*"]
directions = ["up"]
max_events_per_sync = 1
rate_per_minute = 1
burst = 1
max_concurrent = 1

[[admin]]
name = "bad name"
kinds = []

[revoked]
jti = [""]
admins = ["carol"]
"#
    );
    let err = Policy::from_toml_str(&text).unwrap_err();
    let got: Vec<String> = err
        .validation_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    let want = [
        "service.per_ip_rate_per_minute: must be at least 1, got 0",
        "admin \"alice\".peers: is empty",
        "admin \"alice\".directions[1]: unknown direction \"sideways\" (expected down, up, both or none)",
        "admin \"alice\".kinds[1]: 70000 is not a Nostr kind (0..=65535)",
        "admin \"alice\".kinds[2]: -1 is not a Nostr kind (0..=65535)",
        "admin \"alice\".authors[1]: must be a 64-character hex public key",
        "admin \"alice\".max_events_per_sync: must be at least 1, got 0",
        "admin \"bob\".peers[0]: \"https://relay.example.com\": scheme must be ws, wss or *",
        "admin \"bob\".directions: is empty",
        "admin \"bob\".max_events_per_sync: is required",
        "admin \"alice\": duplicate admin name",
        "admin #4.name: must be 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit",
        "admin #4.peers: is required (use [\"*\"] for any peer)",
        "admin #4.directions: is required",
        "admin #4.kinds: is empty; omit it to allow any kind",
        "admin #4.max_events_per_sync: is required",
        "admin #4.rate_per_minute: is required",
        "admin #4.burst: is required",
        "admin #4.max_concurrent: is required",
        "revoked.jti[0]: must be 1-256 printable ASCII characters",
        "revoked.admins[0]: unknown admin \"carol\"",
    ];
    assert_eq!(got, want);
    let message = err.to_string();
    assert!(
        message.starts_with("policy: invalid policy (21 errors): service."),
        "{message}"
    );
    assert!(
        message.contains("; admin \"bob\".directions: is empty; "),
        "{message}"
    );
}

#[test]
fn duplicate_identities_are_reported() {
    let text = r#"
[[admin]]
name = "alice"
identities = ["spiffe://orly.local/admin/alice", "spiffe://orly.local/admin/alice"]
peers = ["*"]
directions = ["down"]
max_events_per_sync = 1
rate_per_minute = 1
burst = 1
max_concurrent = 1

[[admin]]
name = "bob"
identities = ["alice"]
peers = ["*"]
directions = ["down"]
max_events_per_sync = 1
rate_per_minute = 1
burst = 1
max_concurrent = 1

[[admin]]
name = "alice2"
identities = ["spiffe://orly.local/admin/alice"]
peers = ["*"]
directions = ["down"]
max_events_per_sync = 1
rate_per_minute = 1
burst = 1
max_concurrent = 1
"#;
    let err = Policy::from_toml_str(text).unwrap_err();
    let got: Vec<String> = err
        .validation_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        got,
        [
            "admin \"alice\".identities[1]: duplicate identity \"spiffe://orly.local/admin/alice\"",
            "admin \"alice2\".identities: identity \"spiffe://orly.local/admin/alice\" already belongs to admin \"alice\"",
        ]
    );
}

#[test]
fn unknown_fields_and_wrong_types_are_parse_errors() {
    for (text, needle) in [
        (format!("{MINIMAL}kindz = [1]\n"), "kindz"),
        ("[service]\nper_ip_rate = 5\n".to_owned(), "per_ip_rate"),
        ("[revoked]\nadmin = []\n".to_owned(), "admin"),
        ("[servic]\n".to_owned(), "servic"),
        (MINIMAL.replace("burst = 1", "burst = \"1\""), "burst"),
        ("[[admin]\n".to_owned(), ""),
    ] {
        let err = Policy::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, PolicyError::Parse { .. }), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn load_reports_missing_and_oversized_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    assert!(matches!(
        Policy::load(&missing),
        Err(PolicyError::Io { .. })
    ));

    let big = dir.path().join("big.toml");
    let filler = "# padding\n".repeat(120_000);
    std::fs::write(&big, format!("{MINIMAL}{filler}")).expect("write");
    assert!(matches!(
        Policy::load(&big),
        Err(PolicyError::TooLarge { .. })
    ));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, MINIMAL.replace("burst = 1", "burst = 0")).expect("write");
    let err = Policy::load(&bad).unwrap_err();
    assert!(
        err.to_string().starts_with(&bad.display().to_string()),
        "{err}"
    );
}

#[test]
fn role_defaults_to_admin_and_auditor_sees_all_syncs() {
    let policy = Policy::from_toml_str(MINIMAL).expect("valid");
    let alice = policy.admin_by_name("alice").into_result().expect("alice");
    assert_eq!(alice.role(), Role::Admin);
    assert!(!alice.role().sees_all_syncs());
    let text = format!("{MINIMAL}role = \"auditor\"\n");
    let policy = Policy::from_toml_str(&text).expect("valid");
    let alice = policy.admin_by_name("alice").into_result().expect("alice");
    assert_eq!(alice.role(), Role::Auditor);
    assert!(alice.role().sees_all_syncs());
    let text = format!("{MINIMAL}role = \"root\"\n");
    let err = Policy::from_toml_str(&text).expect_err("unknown role");
    assert_eq!(
        err.validation_errors()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["admin \"alice\".role: unknown role \"root\" (expected admin or auditor)"]
    );
}

#[test]
fn token_lifetime_defaults_to_thirty_days_and_must_be_positive() {
    let policy = Policy::from_toml_str(MINIMAL).expect("valid");
    assert_eq!(
        policy.service().max_token_lifetime_seconds.get(),
        30 * 86_400
    );
    assert!(policy.check_token_lifetime(30 * 86_400).is_ok());
    let denial = policy
        .check_token_lifetime(30 * 86_400 + 1)
        .expect_err("a day too long");
    assert_eq!(
        denial.message,
        "token lifetime too long: 2592001 s, the policy allows at most 2592000 s \
         (service.max_token_lifetime_seconds)"
    );
    let text = format!("[service]\nmax_token_lifetime_seconds = 3600\n{MINIMAL}");
    let policy = Policy::from_toml_str(&text).expect("valid");
    assert!(policy.check_token_lifetime(3600).is_ok());
    assert!(policy.check_token_lifetime(3601).is_err());
    let text = format!("[service]\nmax_token_lifetime_seconds = 0\n{MINIMAL}");
    let err = Policy::from_toml_str(&text).expect_err("zero");
    assert_eq!(
        err.validation_errors()[0].to_string(),
        "service.max_token_lifetime_seconds: must be at least 1, got 0"
    );
}

/// Rights are granted by name, none by default; an unknown name is an error naming the known
/// ones; an identity holding only rights (a relay) needs no peers or directions, and is then
/// refused every sync.
#[test]
fn rights_are_named_default_to_none_and_make_syncs_optional() {
    use crate::policy::{DenialCode, Right, SyncRequestView};
    let plain = Policy::from_toml_str(MINIMAL).expect("minimal");
    for right in Right::ALL {
        let d = plain.authorize_right("alice", right).unwrap_err();
        assert_eq!(d.code, DenialCode::RightNotGranted, "{right}");
        assert!(d.message.contains(right.as_str()), "{d}");
    }

    let relay = Policy::from_toml_str(
        r#"
[[admin]]
name = "relay-1"
identities = ["spiffe://orly.local/relay/relay-1"]
rights = ["serve_nip77"]
max_events_per_sync = 1
rate_per_minute = 6000
burst = 100
max_concurrent = 1
"#,
    )
    .expect("a relay needs no peers or directions");
    assert!(relay.authorize_right("relay-1", Right::ServeNip77).is_ok());
    assert!(relay.authorize_right("relay-1", Right::Sessions).is_err());
    assert!(relay.authorize_right("nobody", Right::ServeNip77).is_err());
    let IdentityLookup::Admin(a) = relay.admin_by_name("relay-1") else {
        panic!("relay-1 is listed");
    };
    for direction in Direction::ALL {
        let view = SyncRequestView {
            peer_url: "wss://relay.example.com",
            direction,
            kinds: None,
            authors: None,
            requested_max_events: None,
        };
        assert!(relay.authorize_sync(a, &view).is_err(), "{direction}");
    }

    let err = Policy::from_toml_str(&format!("{MINIMAL}rights = [\"manage_peers\", \"root\"]\n"))
        .unwrap_err();
    let errors = err.validation_errors();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(errors[0].location, "admin \"alice\".rights[1]");
    assert!(
        errors[0]
            .message
            .contains("manage_peers, serve_nip77, sessions"),
        "{err}"
    );

    // Without rights, peers and directions stay required.
    let err = Policy::from_toml_str(
        "[[admin]]\nname = \"x\"\nmax_events_per_sync = 1\nrate_per_minute = 1\nburst = 1\nmax_concurrent = 1\n",
    )
    .unwrap_err();
    let at: Vec<&str> = err
        .validation_errors()
        .iter()
        .map(|e| e.location.as_str())
        .collect();
    assert_eq!(at, ["admin \"x\".peers", "admin \"x\".directions"]);
}

/// A revoked admin loses its rights with everything else.
#[test]
fn a_revoked_admin_holds_no_right() {
    use crate::policy::{DenialCode, Right};
    let text = format!("{MINIMAL}rights = [\"sessions\"]\n\n[revoked]\nadmins = [\"alice\"]\n");
    let p = Policy::from_toml_str(&text).expect("valid");
    let d = p.authorize_right("alice", Right::Sessions).unwrap_err();
    assert_eq!(d.code, DenialCode::AdminRevoked);
}
