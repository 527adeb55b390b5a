use super::*;

fn exe_dir_with(names: &[&str]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    for n in names {
        let p = dir.path().join(n);
        std::fs::write(&p, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

const ALL: &[&str] = &["orly-db", "orly-relay", "orly-sync-negentropy"];

#[test]
fn defaults_follow_the_orly_documents() {
    let dir = exe_dir_with(ALL);
    let env: &[(&str, &str)] = &[];
    let cfg = LauncherConfig::from_env(env, Some(dir.path())).expect("valid");
    assert_eq!(cfg.db_listen.to_string(), "127.0.0.1:50051");
    assert_eq!(cfg.relay_listen.to_string(), "127.0.0.1:7777");
    assert_eq!(cfg.sync, None);
    assert_eq!(cfg.data_dir, None);
    assert_eq!(cfg.ready_timeout, Duration::from_secs(30));
    assert_eq!(cfg.stop_timeout, Duration::from_secs(10));
    assert_eq!(cfg.start_attempts, 3);
    assert_eq!(cfg.liveness_interval, Duration::from_secs(10));
    assert_eq!(cfg.liveness_failures, 3);
    // A secret is made when none is given, and never printed.
    assert_eq!(cfg.db_token.0.len(), 64);
    assert!(!format!("{cfg:?} {cfg}").contains(&cfg.db_token.0));
    assert_eq!(cfg.binaries.db, dir.path().join("orly-db"));
    assert_eq!(cfg.binaries.sync, None);
}

#[test]
fn sync_enabled_reads_its_listen_address() {
    let dir = exe_dir_with(ALL);
    let env: &[(&str, &str)] = &[
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED", "true"),
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN", "127.0.0.1:50099"),
        ("ORLY_DATA_DIR", "/var/lib/orly"),
        ("ORLY_LAUNCHER_STOP_TIMEOUT", "2.5"),
    ];
    let cfg = LauncherConfig::from_env(env, Some(dir.path())).expect("valid");
    let sync = cfg.sync.expect("enabled");
    assert_eq!(sync.listen.to_string(), "127.0.0.1:50099");
    assert_eq!(sync.health_tls, None);
    assert_eq!(cfg.data_dir, Some(PathBuf::from("/var/lib/orly")));
    assert_eq!(cfg.stop_timeout, Duration::from_millis(2500));
    assert!(cfg.binaries.sync.is_some());
}

#[test]
fn every_error_is_reported_at_once() {
    let dir = exe_dir_with(&[]);
    let env: &[(&str, &str)] = &[
        ("ORLY_DB_LISTEN", "nowhere"),
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED", "maybe"),
        ("ORLY_LAUNCHER_STOP_TIMEOUT", "-1"),
        ("ORLY_LAUNCHER_READY_TIMEOUT", "soon"),
        ("ORLY_LAUNCHER_START_ATTEMPTS", "0"),
        ("PATH", ""),
    ];
    let err = LauncherConfig::from_env(env, Some(dir.path())).expect_err("invalid");
    let text = err.to_string();
    for needle in [
        "ORLY_DB_LISTEN",
        "ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED",
        "ORLY_LAUNCHER_STOP_TIMEOUT",
        "ORLY_LAUNCHER_READY_TIMEOUT",
        "ORLY_LAUNCHER_START_ATTEMPTS",
        "orly-db binary",
        "orly-relay binary",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    assert_eq!(err.0.len(), 7, "{text}");
}

#[test]
fn the_same_address_twice_is_refused() {
    let dir = exe_dir_with(ALL);
    let env: &[(&str, &str)] = &[
        ("ORLY_DB_LISTEN", "127.0.0.1:50051"),
        ("ORLY_RELAY_LISTEN", "0.0.0.0:50051"),
    ];
    let err = LauncherConfig::from_env(env, Some(dir.path())).expect_err("clash");
    assert!(
        err.to_string()
            .contains("ORLY_DB_LISTEN and ORLY_RELAY_LISTEN")
    );
    // Port 0 never clashes: each service gets its own port.
    let env: &[(&str, &str)] = &[
        ("ORLY_DB_LISTEN", "127.0.0.1:0"),
        ("ORLY_RELAY_LISTEN", "127.0.0.1:0"),
    ];
    LauncherConfig::from_env(env, Some(dir.path())).expect("port 0 twice is fine");
}

#[test]
fn orly_db_is_kept_on_loopback() {
    let dir = exe_dir_with(ALL);
    for addr in ["0.0.0.0:50051", "192.0.2.7:50051", "[::]:50051"] {
        let env: &[(&str, &str)] = &[("ORLY_DB_LISTEN", addr)];
        let err = LauncherConfig::from_env(env, Some(dir.path())).expect_err(addr);
        assert!(
            err.to_string().contains("not a loopback address"),
            "{addr}: {err}"
        );
    }
    let env: &[(&str, &str)] = &[("ORLY_DB_LISTEN", "[::1]:50051")];
    LauncherConfig::from_env(env, Some(dir.path())).expect("::1 is loopback");
}

#[test]
fn tls_on_the_sync_service_needs_probe_credentials() {
    let dir = exe_dir_with(ALL);
    let env: &[(&str, &str)] = &[
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED", "true"),
        ("ORLY_TLS_CERT", "/etc/orly/server.pem"),
    ];
    let err = LauncherConfig::from_env(env, Some(dir.path())).expect_err("needs creds");
    let text = err.to_string();
    assert!(
        text.contains("ORLY_LAUNCHER_HEALTH_CA (or ORLY_TLS_CLIENT_CA)"),
        "{text}"
    );
    assert!(text.contains("ORLY_LAUNCHER_HEALTH_CERT"), "{text}");
    assert!(text.contains("ORLY_LAUNCHER_HEALTH_KEY"), "{text}");

    let pki = exe_dir_with(&["ca.pem", "probe.pem", "probe.key"]);
    let f = |n: &str| pki.path().join(n).display().to_string();
    let (ca, cert, key) = (f("ca.pem"), f("probe.pem"), f("probe.key"));
    let env: &[(&str, &str)] = &[
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED", "true"),
        ("ORLY_TLS_CERT", "/etc/orly/server.pem"),
        ("ORLY_TLS_CLIENT_CA", &ca),
        ("ORLY_LAUNCHER_HEALTH_CERT", &cert),
        ("ORLY_LAUNCHER_HEALTH_KEY", &key),
    ];
    let cfg = LauncherConfig::from_env(env, Some(dir.path())).expect("valid");
    let tls = cfg.sync.and_then(|s| s.health_tls).expect("tls probe");
    assert_eq!(tls.ca, PathBuf::from(ca));
    assert_eq!(tls.server_name, None);
}

#[test]
fn binaries_beside_the_launcher_win_over_path() {
    let beside = exe_dir_with(&["orly-db"]);
    let on_path = exe_dir_with(&["orly-db", "orly-relay"]);
    let path = on_path.path().display().to_string();
    assert_eq!(
        locate("orly-db", Some(beside.path()), Some(&path)),
        Some(beside.path().join("orly-db"))
    );
    assert_eq!(
        locate("orly-relay", Some(beside.path()), Some(&path)),
        Some(on_path.path().join("orly-relay"))
    );
    assert_eq!(
        locate("orly-sync-negentropy", Some(beside.path()), Some(&path)),
        None
    );
}

#[test]
fn every_variable_named_is_documented() {
    let documented: Vec<&str> = ENV_VARS.iter().map(|(n, _)| *n).collect();
    let src = include_str!("launcher.rs");
    let mut seen = 0;
    // Every quoted variable name: what `env.get` and the helpers are called with.
    for (i, _) in src.match_indices("\"ORLY_") {
        let name: String = src[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        assert!(
            documented.contains(&name.as_str()),
            "{name} read but not in ENV_VARS"
        );
        seen += 1;
    }
    assert!(seen >= 14, "only {seen} names found");
}

#[test]
fn a_weak_db_token_is_refused() {
    let dir = exe_dir_with(ALL);
    let env: &[(&str, &str)] = &[("ORLY_DB_TOKEN", "short")];
    let err = LauncherConfig::from_env(env, Some(dir.path())).expect_err("weak secret");
    assert!(err.to_string().contains("at least 16"), "{err}");
    assert!(
        !err.to_string().contains("short\""),
        "the secret is not echoed: {err}"
    );
    let env: &[(&str, &str)] = &[("ORLY_DB_TOKEN", "0123456789abcdef0123")];
    let cfg = LauncherConfig::from_env(env, Some(dir.path())).expect("given secret");
    assert_eq!(cfg.db_token.0, "0123456789abcdef0123");
}
