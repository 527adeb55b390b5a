use super::*;

#[test]
fn announce_lines_are_recognised() {
    assert_eq!(
        parse_announce(ServiceName::Db, "orly-db listening on 127.0.0.1:50051\n"),
        Some("127.0.0.1:50051".parse().unwrap())
    );
    assert_eq!(
        parse_announce(
            ServiceName::Sync,
            "orly-sync-negentropy listening on [::1]:9"
        ),
        Some("[::1]:9".parse().unwrap())
    );
    assert_eq!(
        parse_announce(ServiceName::Relay, "orly-db listening on 127.0.0.1:1"),
        None
    );
    assert_eq!(
        parse_announce(ServiceName::Relay, "orly-relay listening on soon"),
        None
    );
}

#[test]
fn last_words_skip_routine_log_lines_and_colours() {
    let lines = [
        "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m starting".to_string(),
        "orly-relay: cannot listen on 127.0.0.1:7777: Address already in use".to_string(),
    ];
    assert_eq!(
        last_words(lines.iter()),
        "orly-relay: cannot listen on 127.0.0.1:7777: Address already in use"
    );
    assert_eq!(
        last_words(lines[..1].iter()),
        "2026-01-01T00:00:00Z  INFO starting"
    );
    assert_eq!(last_words([].iter()), "");
}

/// A stand-in service: a shell script that announces itself as orly-db, ignoring SIGTERM or not.
fn fake_service(dir: &std::path::Path, ignore_term: bool) -> ServiceSpec {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(if ignore_term { "stubborn" } else { "polite" });
    let trap = if ignore_term {
        "trap '' TERM"
    } else {
        "trap 'exit 0' TERM"
    };
    let script = format!(
        "#!/bin/sh\n{trap}\necho \"orly-db listening on $ORLY_DB_LISTEN\"\necho oops >&2\n\
         while :; do sleep 0.05; done\n"
    );
    std::fs::write(&path, script).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    ServiceSpec {
        name: ServiceName::Db,
        binary: path,
        listen_var: "ORLY_DB_LISTEN",
        listen: "127.0.0.1:4".parse().unwrap(),
        env: vec![],
        env_remove: vec![],
        probe: Probe::Nip11,
    }
}

async fn announced(child: &RunningChild) -> SocketAddr {
    for _ in 0..200 {
        if let Some(a) = child.announced() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no announce line within 5 s");
}

#[tokio::test]
async fn a_service_that_honours_sigterm_is_stopped_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let child = RunningChild::spawn(&fake_service(dir.path(), false)).expect("spawn");
    assert_eq!(announced(&child).await, "127.0.0.1:4".parse().unwrap());
    let outcome = child.stop(Duration::from_secs(10)).await;
    assert!(
        matches!(outcome, StopOutcome::Exited(s) if s.success()),
        "{outcome}"
    );
}

#[tokio::test]
async fn a_service_that_ignores_sigterm_is_killed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = RunningChild::spawn(&fake_service(dir.path(), true)).expect("spawn");
    announced(&child).await;
    assert!(child.try_exited().is_none());
    let started = std::time::Instant::now();
    let outcome = child.stop(Duration::from_millis(300)).await;
    assert!(matches!(outcome, StopOutcome::Killed(Some(_))), "{outcome}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn a_dead_service_leaves_its_last_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = RunningChild::spawn(&fake_service(dir.path(), false)).expect("spawn");
    announced(&child).await;
    let _ = child.child.start_kill();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(!status.success());
    assert_eq!(child.last_words().await, "oops");
    assert!(matches!(
        child.stop(Duration::from_secs(1)).await,
        StopOutcome::AlreadyExited(_)
    ));
}
