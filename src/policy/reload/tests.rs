use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{IdentityLookup, PolicyError, PolicyHandle, watcher};
use crate::tasks::Stop;

fn policy_for(name: &str) -> String {
    format!(
        "[[admin]]\nname = \"{name}\"\npeers = [\"*\"]\ndirections = [\"down\"]\n\
         max_events_per_sync = 10\nrate_per_minute = 1\nburst = 1\nmax_concurrent = 1\n"
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write policy file");
}

fn knows(handle: &PolicyHandle, name: &str) -> bool {
    matches!(
        handle.current().admin_for_identity(name),
        IdentityLookup::Admin(_)
    )
}

#[tokio::test]
async fn reload_keeps_old_policy_on_bad_file_and_takes_good_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    write(&path, &policy_for("alice"));
    let handle = PolicyHandle::load(&path).expect("initial policy");
    let before = handle.current();
    assert!(knows(&handle, "alice"));

    for bad in ["[[admin]\n", "[[admin]]\nname = \"bob\"\n", "[servce]\n"] {
        write(&path, bad);
        assert!(handle.reload().await.is_err(), "{bad:?}");
        assert!(
            Arc::ptr_eq(&before, &handle.current()),
            "old policy must stay after {bad:?}"
        );
    }

    std::fs::remove_file(&path).expect("remove");
    assert!(matches!(handle.reload().await, Err(PolicyError::Io { .. })));
    assert!(Arc::ptr_eq(&before, &handle.current()));

    write(&path, &policy_for("bob"));
    handle.reload().await.expect("good file reloads");
    assert!(knows(&handle, "bob"));
    assert!(!knows(&handle, "alice"));
    // The snapshot taken earlier is unaffected: in-flight requests finish on their policy.
    assert!(matches!(
        before.admin_for_identity("alice"),
        IdentityLookup::Admin(_)
    ));
}

#[test]
fn load_fails_closed_at_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    write(&path, "[[admin]]\nname = \"alice\"\n");
    let err = PolicyHandle::load(&path).unwrap_err();
    assert!(err.validation_errors().len() >= 5, "{err}");
}

async fn wait_for(rx: &mut tokio::sync::watch::Receiver<Arc<crate::policy::Policy>>, name: &str) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if matches!(
                rx.borrow_and_update().admin_for_identity(name),
                IdentityLookup::Admin(_)
            ) {
                return;
            }
            rx.changed().await.expect("handle alive");
        }
    })
    .await;
    assert!(found.is_ok(), "policy with {name} was not picked up");
}

#[tokio::test]
async fn watcher_reloads_on_file_change_and_survives_bad_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    write(&path, &policy_for("alice"));
    let handle = PolicyHandle::load(&path).expect("initial policy");
    let mut rx = handle.subscribe();
    let task = tokio::spawn(watcher(
        handle.clone(),
        Duration::from_millis(20),
        Stop::new(),
    ));

    write(&path, &policy_for("bob"));
    wait_for(&mut rx, "bob").await;

    let good = handle.current();
    write(&path, "this is not toml at all, and longer than before");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        Arc::ptr_eq(&good, &handle.current()),
        "bad edit must not replace the policy"
    );

    // Replace by rename, as editors do.
    let staged = dir.path().join("staged.toml");
    write(&staged, &policy_for("carol"));
    std::fs::rename(&staged, &path).expect("rename");
    wait_for(&mut rx, "carol").await;

    task.abort();
}

#[cfg(unix)]
#[tokio::test]
async fn watcher_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    write(&path, &policy_for("alice"));
    let handle = PolicyHandle::load(&path).expect("initial policy");
    let mut rx = handle.subscribe();
    // Polling effectively off: only the signal can trigger this reload.
    let task = tokio::spawn(watcher(
        handle.clone(),
        Duration::from_secs(3600),
        Stop::new(),
    ));
    // Let the task take its first fingerprint before the file changes.
    tokio::time::sleep(Duration::from_millis(100)).await;

    write(&path, &policy_for("dave"));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    wait_for(&mut rx, "dave").await;

    task.abort();
}

/// A change made after the load and before the watcher starts (a service binding its port in
/// between) is picked up, not taken for the version already loaded.
#[tokio::test]
async fn a_change_before_the_watcher_starts_is_not_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    write(&path, &policy_for("alice"));
    let handle = PolicyHandle::load(&path).expect("initial policy");
    let mut rx = handle.subscribe();
    // Replaced by rename (a new inode, whatever the clock's granularity).
    let staged = dir.path().join("staged.toml");
    write(&staged, &policy_for("bob"));
    std::fs::rename(&staged, &path).expect("rename");
    let task = tokio::spawn(watcher(
        handle.clone(),
        Duration::from_millis(20),
        Stop::new(),
    ));
    wait_for(&mut rx, "bob").await;
    task.abort();
}
