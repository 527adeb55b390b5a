//! Rights: every method that needs a policy right is refused to an admin without it
//! (PERMISSION_DENIED naming the right) and served to one with it, each call leaving exactly one
//! audit record.

use super::common::*;
use super::gateway::*;
use super::harness::*;

use serde_json::Value;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_method_needs_its_right_and_each_call_is_audited_once() {
    tokio::time::timeout(TEST_LIMIT, rights())
        .await
        .expect("test exceeded its time limit");
}

async fn rights() {
    const PEERS: &str = "manage_peers";
    const NIP77: &str = "serve_nip77";
    const SESSIONS: &str = "sessions";
    // In an order where each call of the admin holding the right succeeds.
    let table: [(&str, Option<&str>); 14] = [
        ("Ready", None),
        ("Start", Some(PEERS)),
        ("Stop", Some(PEERS)),
        ("HandleNegOpen", Some(NIP77)),
        ("HandleNegMsg", Some(NIP77)),
        ("HandleNegClose", Some(NIP77)),
        ("GetSyncStatus", Some(PEERS)),
        ("GetPeers", Some(PEERS)),
        ("AddPeer", Some(PEERS)),
        ("GetPeerSyncState", Some(PEERS)),
        ("RemovePeer", Some(PEERS)),
        ("TriggerSync", Some(PEERS)),
        ("ListSessions", Some(SESSIONS)),
        ("CloseSession", Some(SESSIONS)),
    ];
    let fx = Fixture::with_policy(&policy_toml(
        "",
        &[
            admin("all", ALL_RIGHTS),
            admin("bare", ""),
            admin("nopeers", r#"rights = ["serve_nip77", "sessions"]"#),
            admin("nonip77", r#"rights = ["manage_peers", "sessions"]"#),
            admin("nosessions", r#"rights = ["manage_peers", "serve_nip77"]"#),
        ],
    ));
    let svc = service(&fx, &notes("rights", 10, T0), &[]);
    let mut all = Caller::new(&fx, &svc.addr, "all").await;
    let mut bare = Caller::new(&fx, &svc.addr, "bare").await;
    let mut lacking = [
        (PEERS, Caller::new(&fx, &svc.addr, "nopeers").await),
        (NIP77, Caller::new(&fx, &svc.addr, "nonip77").await),
        (SESSIONS, Caller::new(&fx, &svc.addr, "nosessions").await),
    ];
    let peer = "wss://relay.example.com/";
    let mut failures = Vec::new();

    for (method, right) in table {
        let path = format!("{SERVICE}{method}");
        // Refused to an admin without the right: with no rights, and with the other two.
        if let Some(right) = right {
            let other = &mut lacking.iter_mut().find(|(r, _)| *r == right).unwrap().1;
            for who in [&mut bare, other] {
                let before = audit_records(&fx.audit_dir).len();
                match who.call(method, peer).await {
                    Err(st) if st.code() == Code::PermissionDenied => {
                        if !st.message().contains(right) {
                            failures.push(format!(
                                "{method} by {}: the status does not name {right}: {st:?}",
                                who.name
                            ));
                        }
                    }
                    other => failures.push(format!(
                        "{method} by {} (without {right}): expected PERMISSION_DENIED, got \
                         {other:?}",
                        who.name
                    )),
                }
                let recs = new_records(&fx.audit_dir, before, 1).await;
                if let Err(e) = one_refusal(&recs, &path, right, &who.name) {
                    failures.push(format!("{method} by {}: {e}", who.name));
                }
            }
        }
        // Served to the admin with it (Ready: to the one without any right too).
        let holders: Vec<&mut Caller> = match right {
            Some(_) => vec![&mut all],
            None => vec![&mut all, &mut bare],
        };
        for who in holders {
            let before = audit_records(&fx.audit_dir).len();
            if let Err(st) = who.call(method, peer).await {
                failures.push(format!("{method} by {}: refused {st:?}", who.name));
            }
            let recs = new_records(&fx.audit_dir, before, 1).await;
            match &recs[..] {
                [r] if s(r, "event") == "decision"
                    && r.get("allowed") == Some(&Value::Bool(true))
                    && s(r, "rpc") == path
                    && s(r, "admin") == who.name => {}
                _ => failures.push(format!(
                    "{method} by {}: expected exactly one allowed decision on {path}, got {}",
                    who.name,
                    serde_json::to_string(&recs).unwrap()
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
