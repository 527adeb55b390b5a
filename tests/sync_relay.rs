//! orly sync (direct mode) against orly-relay, real processes on loopback.

mod common;
use common::*;

fn union(a: &[Event], b: &[Event]) -> Vec<String> {
    let mut v = ids_of(a);
    v.extend(ids_of(b));
    v.sort();
    v.dedup();
    v
}

#[test]
fn both_directions_converge_and_second_run_moves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let shared = notes("shared", 40, 1_700_000_000);
    let only_local = notes("local", 25, 1_700_001_000);
    let only_remote = notes("remote", 30, 1_700_002_000);
    import(&local, &[shared.clone(), only_local.clone()].concat());
    import(&remote, &[shared.clone(), only_remote.clone()].concat());
    let relay = relay(&remote, &[]);
    let url = format!("ws://{}", relay.addr);

    let (code, out, err) = orly(&[
        "sync",
        &url,
        "--dir",
        "both",
        "--json",
        "--data-dir",
        local.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "sync failed: {err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["complete"], true);
    assert_eq!(last["fetched"], 30);
    assert_eq!(last["sent"], 25);
    assert!(
        out.lines().count() >= 2,
        "progress lines before the final one"
    );

    let want = union(&[shared.clone(), only_local].concat(), &only_remote);
    assert_eq!(ids(&local), want);
    drop(relay);
    assert_eq!(ids(&remote), want);

    let relay = common::relay(&remote, &[]);
    let url = format!("ws://{}", relay.addr);
    let (code, out, _) = orly(&[
        "sync",
        &url,
        "--dir",
        "both",
        "--json",
        "--data-dir",
        local.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["have"].as_u64(), last["need"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        (last["fetched"].as_u64(), last["sent"].as_u64()),
        (Some(0), Some(0))
    );
}
