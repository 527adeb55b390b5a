//! Config parsing through an injected environment: flags win over variables, variables over
//! defaults, and every problem of a binary's configuration is reported at once.

use super::*;
use clap::Parser;

fn sync_args(flags: &[&str]) -> SyncServiceArgs {
    SyncServiceArgs::try_parse_from(
        std::iter::once("orly-sync-negentropy").chain(flags.iter().copied()),
    )
    .expect("flags parse")
}

fn errors<T: std::fmt::Debug>(r: Result<T, ConfigErrors>) -> Vec<String> {
    r.expect_err("the configuration is refused").errors
}

fn has(errors: &[String], needle: &str) -> bool {
    errors.iter().any(|e| e.contains(needle))
}

#[test]
fn sync_service_reports_every_problem_at_once() {
    let env = [
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN", "0.0.0.0:50064"),
        ("ORLY_DB_TYPE", "sqlite"),
        ("ORLY_SYNC_AUTH_KEY", "not hex"),
    ];
    let e = errors(SyncServiceConfig::new(sync_args(&[]), &env));
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        has(&e, "ORLY_DB_TYPE must be fjall, grpc or postgres"),
        "{e:#?}"
    );
    assert!(has(&e, "ORLY_SYNC_AUTH_KEY:"), "{e:#?}");
    assert!(
        has(&e, "refusing to listen on non-loopback 0.0.0.0:50064"),
        "{e:#?}"
    );

    let env = [
        ("ORLY_DB_TYPE", "grpc"),
        ("ORLY_TLS_CERT", "/srv/server.pem"),
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN", "no-port"),
    ];
    let e = errors(SyncServiceConfig::new(sync_args(&[]), &env));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        has(&e, "ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN/--listen"),
        "{e:#?}"
    );
    assert!(
        has(&e, "ORLY_DB_TYPE=grpc needs ORLY_GRPC_SERVER"),
        "{e:#?}"
    );

    let e = errors(SyncServiceConfig::new(
        sync_args(&["--listen", "127.0.0.1:0", "--policy", "/p.toml"]),
        &[("ORLY_TLS_CERT", "/srv/server.pem")],
    ));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        has(
            &e,
            "missing ORLY_TLS_KEY, ORLY_TLS_CLIENT_CA, ORLY_TOKEN_KEYS, ORLY_AUDIT_DIR"
        ),
        "{e:#?}"
    );
}

#[test]
fn sync_service_flags_win_over_variables_and_variables_over_defaults() {
    let env = [
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN", "127.0.0.1:6000"),
        ("ORLY_DATA_DIR", "/var/lib/orly"),
        ("ORLY_TLS_CERT", "/env/server.pem"),
        ("ORLY_TLS_KEY", "/env/server.key"),
        ("ORLY_TLS_CLIENT_CA", "/env/ca.pem"),
        ("ORLY_POLICY", "/env/policy.toml"),
        ("ORLY_TOKEN_KEYS", "/env/token.pub"),
        ("ORLY_AUDIT_DIR", "/env/audit"),
    ];
    let cfg = SyncServiceConfig::new(sync_args(&["--tls-cert", "/flag/server.pem"]), &env)
        .expect("valid");
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:6000");
    assert_eq!(cfg.store, StoreConfig::Fjall("/var/lib/orly".into()));
    let sec = cfg.security.expect("secured");
    assert_eq!(sec.tls_cert, std::path::PathBuf::from("/flag/server.pem"));
    assert_eq!(sec.policy, std::path::PathBuf::from("/env/policy.toml"));
    assert!(cfg.defaults.peer.auth_keys.is_none());

    let cfg = SyncServiceConfig::new(
        sync_args(&["--listen", "127.0.0.1:7000", "--data-dir", "/flag/store"]),
        &[env[0], env[1]],
    )
    .expect("valid");
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(cfg.store, StoreConfig::Fjall("/flag/store".into()));
    assert!(
        cfg.security.is_none(),
        "loopback without security settings is plaintext"
    );

    let cfg = SyncServiceConfig::new(sync_args(&[]), &[("ORLY_DATA_DIR", "/d")]).expect("valid");
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:50064");
}

#[test]
fn the_nip42_key_is_read_once_for_service_and_cli() {
    let hex = "0000000000000000000000000000000000000000000000000000000000000001";
    let keys = sync_auth_key(None, &[("ORLY_SYNC_AUTH_KEY", hex)])
        .expect("valid")
        .expect("set");
    let cfg =
        SyncServiceConfig::new(sync_args(&[]), &[("ORLY_SYNC_AUTH_KEY", hex)]).expect("valid");
    let shown = |k: &crate::event::Keys| format!("{k:?}");
    assert_eq!(
        cfg.defaults.peer.auth_keys.as_ref().map(shown),
        Some(shown(&keys))
    );
    // The CLI's file wins over the variable.
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("key");
    std::fs::write(&f, format!("{}\n", &hex.replace('1', "2"))).expect("write");
    let from_file = sync_auth_key(Some(&f), &[("ORLY_SYNC_AUTH_KEY", "not hex")])
        .expect("the file is used")
        .expect("set");
    assert_ne!(shown(&from_file), shown(&keys));
    let missing = sync_auth_key(Some(&dir.path().join("nope")), &[]).expect_err("no file");
    assert!(missing.starts_with("cannot read "), "{missing}");
    assert!(matches!(sync_auth_key(None, &[]), Ok(None)));
}

#[test]
fn relay_reports_every_problem_at_once() {
    let args = RelayArgs::try_parse_from([
        "orly-relay",
        "--auth-pubkey",
        "xyz",
        "--auth-pubkey",
        "abcd",
    ])
    .expect("flags parse");
    let env = [("ORLY_RELAY_LISTEN", "nowhere"), ("ORLY_DB_TYPE", "grpc")];
    let e = errors(RelayServiceConfig::new(args, &env));
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(has(&e, "ORLY_RELAY_LISTEN/--listen"), "{e:#?}");
    assert!(has(&e, "ORLY_GRPC_SERVER"), "{e:#?}");
    assert!(has(&e, "--auth-pubkey xyz"), "{e:#?}");
    assert!(has(&e, "--auth-pubkey abcd"), "{e:#?}");
}

#[test]
fn db_reports_every_problem_at_once() {
    let args = DbArgs::try_parse_from(["orly-db", "--listen", "0.0.0.0:50051"]).expect("parse");
    let e = errors(DbConfig::new(args, &[("ORLY_DB_TOKEN", "short")]));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(has(&e, "refusing to listen on 0.0.0.0:50051"), "{e:#?}");
    assert!(has(&e, "ORLY_DB_TOKEN must be at least"), "{e:#?}");

    let args = DbArgs::try_parse_from(["orly-db", "--insecure"]).expect("parse");
    let cfg = DbConfig::new(
        args,
        &[
            ("ORLY_DB_LISTEN", "0.0.0.0:1"),
            ("ORLY_DATA_DIR", "/srv/orly"),
        ],
    )
    .expect("--insecure allows it");
    assert!(cfg.exposed);
    assert_eq!(cfg.data_dir, std::path::PathBuf::from("/srv/orly"));
    assert!(cfg.token.is_none());
}

#[test]
fn several_problems_are_listed_one_per_line() {
    let e = ConfigErrors {
        of: "orly-db",
        errors: vec!["first".into(), "second".into()],
    };
    assert_eq!(
        e.to_string(),
        "invalid orly-db configuration:\n  - first\n  - second"
    );
    let one = ConfigErrors {
        of: "orly-db",
        errors: vec!["only".into()],
    };
    assert_eq!(one.to_string(), "only");
}

#[test]
fn cli_sync_files_come_from_flags_then_variables() {
    let cli = Cli::try_parse_from([
        "orly",
        "sync",
        "ws://127.0.0.1:1",
        "--server",
        "127.0.0.1:2",
        "--cert",
        "/flag/me.pem",
    ])
    .expect("parse");
    let Cmd::Sync(a) = cli.cmd else {
        panic!("not sync");
    };
    let mut p = Problems::new("orly sync");
    let a = a.with_env(
        &[
            ("ORLY_SYNC_CA", "/env/ca.pem"),
            ("ORLY_SYNC_CERT", "/env/me.pem"),
            ("ORLY_SYNC_TOKEN", "/env/me.token"),
            ("ORLY_DATA_DIR", "/env/store"),
        ],
        &mut p,
    );
    assert!(p.finish(|| Some(())).is_ok());
    assert_eq!(
        a.service.ca.as_deref(),
        Some(std::path::Path::new("/env/ca.pem"))
    );
    assert_eq!(
        a.service.cert.as_deref(),
        Some(std::path::Path::new("/flag/me.pem"))
    );
    assert_eq!(a.service.key, None);
    assert_eq!(
        a.service.token_file.as_deref(),
        Some(std::path::Path::new("/env/me.token"))
    );
    assert_eq!(
        a.data.data_dir.as_deref(),
        Some(std::path::Path::new("/env/store"))
    );
}

/// Operators learn the variables from the READMEs (the launcher's own in deploy/README.md):
/// every one this module reads is there.
#[test]
fn every_variable_read_is_in_the_readme() {
    let readme = [
        include_str!("../../README.md"),
        include_str!("../../deploy/README.md"),
    ]
    .concat();
    let sources = [
        include_str!("mod.rs"),
        include_str!("cli.rs"),
        include_str!("db.rs"),
        include_str!("relay.rs"),
        include_str!("security.rs"),
        include_str!("sync_service.rs"),
        include_str!("launcher.rs"),
        include_str!("../store/db_auth.rs"),
    ];
    let mut seen = 0;
    for src in sources {
        for (i, _) in src.match_indices("\"ORLY_") {
            let name: String = src[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            assert!(
                readme.contains(&format!("`{name}`")),
                "{name} is read but documented in neither README.md nor deploy/README.md"
            );
            seen += 1;
        }
    }
    assert!(seen >= 30, "only {seen} names found");
}

#[test]
fn telemetry_settings_come_from_the_injected_environment() {
    use crate::telemetry::LogFormat;
    let env = [
        ("ORLY_LOG_FORMAT", "json"),
        ("RUST_LOG", "debug,h2=warn"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
    ];
    let s = telemetry_settings(&env).expect("valid");
    assert_eq!(s.format, LogFormat::Json);
    assert_eq!(s.filter.as_deref(), Some("debug,h2=warn"));
    assert_eq!(s.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));

    let none: [(&str, &str); 0] = [];
    let s = telemetry_settings(&none).expect("defaults");
    assert_eq!(
        (s.format, s.filter, s.otlp_endpoint),
        (LogFormat::Text, None, None)
    );

    let err = telemetry_settings(&[("ORLY_LOG_FORMAT", "jsno")]).expect_err("refused");
    assert!(
        err.contains("ORLY_LOG_FORMAT") && err.contains("jsno"),
        "{err}"
    );
}
